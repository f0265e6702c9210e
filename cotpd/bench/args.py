"""The command line of `cotpd bench`, typed: `BenchArgs` and the parser that builds it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import get_args

from ..args import common
from ..config import Variant
from ..errors import CotpdError
from ..params import parse_set
from ..pipeline import VARIANTS
from .spec import Group, ModeName


def _arg(default, help: str):
    """A field of an arguments dataclass with its command-line help (as in Hugging Face's examples)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class BenchArgs:
    """What one `cotpd bench` invocation is asked: its command line, typed (built in grid.main)."""
    mode: ModeName = _arg("quick", "smoke | quick | full | screen")
    seeds: int | None = _arg(None, "seeds per configuration (default: by mode)")
    datasets: list[str] | None = _arg(None, "dataset keys (default: by mode)")
    data: Path | None = _arg(None, "folder holding twitter2015/ and mnre/ (default: params.yaml)")
    budget_min: float | None = _arg(None, "skip trainings after this many minutes")
    log_models: bool = _arg(False, "also log every student as an MLflow model")
    keep_models: bool = _arg(False, "keep every main-grid student in <out>/runs/models (default: the first seed's "
                                    "only), e.g. for `cotpd evaluate --model` x3, the seeds' ensemble")
    speed: bool = _arg(True, "measure the speed section (--no-speed: skip it)")
    rebuild: bool = _arg(False, "rerun upstream stages even where outputs exist")
    variants: list[Variant] | None = _arg(None, "train only these variants now "
                                                 "(saved results of others are still reported)")
    groups: list[Group] | None = _arg(None, "train only these parts of the grid now")
    fresh: bool = _arg(False, "retrain even where <out>/runs/done holds a result")
    report_only: bool = _arg(False, "train nothing: write the report from the saved results "
                                    "(e.g. of parallel invocations)")
    efficiency_out: Path | None = _arg(None, "where the data-efficiency report goes when the grid has fraction "
                                             "trainings (default: <out>/efficiency)")
    levers: list[str] | None = _arg(None, "train these levers (cotpd.bench.levers) beside the grid; --screen: "
                                          "all of them unless named")
    ablations_out: Path | None = _arg(None, "where the levers table goes (default: <out>/ablations)")
    adopt_from: list[Path] | None = _arg(None, "take from these other --out folders the trainings that were this "
                                               "grid's exactly (same dataset, variant, seed and params), e.g. a "
                                               "lever's, once params.yaml makes it the default")
    # --set KEY=VALUE, parsed: the last word over params.yaml, the mode and each dataset's overrides
    overrides: dict = field(default_factory=dict, metadata={
        "help": "override a params.yaml entry for every training, e.g. --set train.epochs=6 "
                "(the config hash changes, so give such a grid its own --out)"})


HELP = {f.name: f.metadata["help"] for f in fields(BenchArgs)}


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _reports(outs: list[Path] | None) -> list[Path] | None:
    """--adopt-from folders, as --out is given (relative to the working directory), each with its results.json."""
    outs = [p.resolve() for p in outs] if outs else None
    missing = [str(p) for p in outs or () if not (p / "results.json").is_file()]
    if missing:
        raise CotpdError(f"--adopt-from: no results.json in {', '.join(missing)}")
    return outs


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cotpd bench", description=description, parents=[common()])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="reduced grid, 2 CPU cores < 60 min")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the whole grid (a GPU)")
    mode.add_argument("--screen", dest="mode", action="store_const", const="screen",
                      help="screen the levers on a subset, fewer epochs (judge on dev, confirm with --full)")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help="embedded samples, tiny encoder")
    p.add_argument("--data", type=Path, default=None, help=HELP["data"])
    p.add_argument("--seeds", type=int, default=None, help=HELP["seeds"])
    p.add_argument("--out", type=Path, default=Path("results"), help="report folder (default results/)")
    p.add_argument("--datasets", nargs="+", default=None, help=HELP["datasets"])
    p.add_argument("--budget-min", type=float, default=None, help=HELP["budget_min"])
    p.add_argument("--log-models", action="store_true", help=HELP["log_models"])
    p.add_argument("--keep-models", action="store_true", help=HELP["keep_models"])
    p.add_argument("--no-speed", dest="speed", action="store_false", help="skip the speed section")
    p.add_argument("--rebuild", action="store_true", help=HELP["rebuild"])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, help=HELP["variants"])
    p.add_argument("--groups", nargs="+", choices=get_args(Group), default=None, help=HELP["groups"])
    p.add_argument("--fresh", action="store_true", help=HELP["fresh"])
    p.add_argument("--efficiency-out", type=Path, default=None, help=HELP["efficiency_out"])
    p.add_argument("--levers", nargs="+", default=None, help=HELP["levers"])
    p.add_argument("--ablations-out", type=Path, default=None, help=HELP["ablations_out"])
    p.add_argument("--report-only", action="store_true", help=HELP["report_only"])
    p.add_argument("--adopt-from", nargs="+", type=Path, default=None, metavar="OUT", help=HELP["adopt_from"])
    p.add_argument("--lanes", type=_positive, default=1, metavar="N",
                   help="train in N processes sharing --out (cotpd.bench.lanes), then write one report; "
                        "e.g. several lanes on one GPU, or one per core at OMP_NUM_THREADS=1")
    return p


def bench_args(ns: argparse.Namespace) -> BenchArgs:
    """The parsed command line as BenchArgs (--set parsed into a nested mapping)."""
    return BenchArgs(mode=ns.mode or "quick", seeds=ns.seeds, datasets=ns.datasets,
                     data=ns.data.resolve() if ns.data else None, budget_min=ns.budget_min,
                     log_models=ns.log_models, keep_models=ns.keep_models, speed=ns.speed, rebuild=ns.rebuild,
                     variants=ns.variants,
                     groups=ns.groups, fresh=ns.fresh, report_only=ns.report_only,
                     efficiency_out=ns.efficiency_out, levers=ns.levers, ablations_out=ns.ablations_out,
                     adopt_from=_reports(ns.adopt_from),
                     overrides=parse_set(getattr(ns, "set", None) or []))
