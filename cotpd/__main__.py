"""`python -m cotpd` is the `cotpd` command."""
import sys

from .cli import main

sys.exit(main())
