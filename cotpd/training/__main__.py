"""`python -m cotpd.training` / `torchrun ... -m cotpd.training`: train one variant of one dataset."""
import sys

from .job import main

sys.exit(main())
