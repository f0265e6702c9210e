"""The options every `cotpd` command line shares (`--root`, `--set`, `-v`), in one parent parser.

Each command's parser adds it with `parents=[common()]`, so `cotpd <cmd> --help` lists them the same
way everywhere, and `setup(args)` turns them into logging and validated params.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .params import Params, find_root, load_params

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def common(params: bool = True) -> argparse.ArgumentParser:
    """The parent parser: pass as `parents=[common()]` (`params=False`: only -v, for commands that read
    no params.yaml, such as `cotpd sample`).
    Unset options stay off the namespace (SUPPRESS), so `cotpd -v train` and `cotpd train -v` both
    count: a subcommand's default would otherwise overwrite what was given before it."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("common options")
    if params:
        g.add_argument("--root", type=Path, help="project root (default: the nearest folder holding params.yaml)")
        g.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a params.yaml entry for this run, e.g. --set train.epochs=2 (repeatable; "
                            "an unknown key or a wrong type is refused before any work)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def setup_logging(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO, format=LOG_FORMAT)


def root_of(args: argparse.Namespace) -> Path:
    root = getattr(args, "root", None)
    return (root or find_root()).resolve()


def params_of(args: argparse.Namespace) -> Params:
    """params.yaml under --root with every --set applied, validated once."""
    return load_params(root_of(args), sets=getattr(args, "set", None))
