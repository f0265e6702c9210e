"""The `cotpd` command line: one subcommand per pipeline stage, plus run / predict / bench."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from .errors import CotpdError
from .params import apply_set, find_root, load_params, parse_set
from .pipeline import STAGES, VARIANTS, run_all, run_stage

STAGE_HELP = {
    "prepare": "read the raw dataset and write normalized JSONL",
    "captions": "caption every image (precomputed file, BLIP-2 or a vision LLM)",
    "knowledge": "ask the LLM for chain-of-thought knowledge (noun, sentence, multimodal)",
    "augment": "LLM data augmentation (style, entity + fact check, image) and validation",
    "train": "train the student (variant: baseline | knowledge | cotpd)",
    "evaluate": "evaluate trained students on the test split (text-only inference)",
}

# subcommands that live in their own modules: name -> (module, help)
EXTERNAL = {
    "sample": ("cotpd.sample", "write the embedded sample dataset"),
    "predict": ("cotpd.predict", "predict entities / relations for text with a trained student"),
    "bench": ("cotpd.bench", "run the benchmark grid on real data and write results/README.md"),
    "bench-llm": ("cotpd.llm.bench", "benchmark the LLM client against a local test server"),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None, help="project root (default: nearest params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params.yaml entry for this run, e.g. --set llm.mode=record")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotpd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run every stage on the pipeline's datasets (the embedded sample by default)")
    p.add_argument("--dataset", action="append", help="dataset key in params.yaml (repeatable)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), help="only these stages")
    _common(p)
    for name in STAGES:
        p = sub.add_parser(name, help=STAGE_HELP[name])
        p.add_argument("--dataset", required=True, help="dataset key in params.yaml")
        if name == "train":
            p.add_argument("--variant", default="cotpd", choices=VARIANTS)
        if name == "evaluate":
            p.add_argument("--trained-on", metavar="DATASET", default=None,
                           help="cross-dataset: score the students trained on DATASET on this dataset's "
                                "test split (entity types mapped through this dataset's type_map)")
        _common(p)
    for name, (_, help_) in EXTERNAL.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # external subcommands own their arguments
    if argv and argv[0] in EXTERNAL:
        return int(importlib.import_module(EXTERNAL[argv[0]][0]).main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        root = (args.root or find_root()).resolve()
        params = apply_set(load_params(root), parse_set(args.set))
        if args.command == "run":
            datasets = args.dataset or params["pipeline"]["datasets"]
            summary = run_all(datasets, root, params, stages=args.stages)
        else:
            kw = {"variant": args.variant} if args.command == "train" else {}
            if args.command == "evaluate" and args.trained_on:
                kw["cross_from"] = args.trained_on
            summary = run_stage(args.command, args.dataset, root, params, **kw)
    except CotpdError as exc:
        print(f"cotpd: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
