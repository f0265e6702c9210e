"""The `cotpd` command line: one subcommand per pipeline stage, plus run / predict / bench."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .errors import CotpdError
from .args import common, params_of, root_of, setup_logging
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
    "predict": ("cotpd.serving.predict", "predict entities / relations for text with a trained student"),
    "bench": ("cotpd.bench.grid", "run the benchmark grid on real data and write results/README.md"),
    "bench-llm": ("cotpd.bench.llm", "benchmark the LLM client against a local test server"),
    "bench-llm-scale": ("cotpd.bench.llm_scale", "rehearse recording all CoT knowledge on loopback: faults, kill, resume"),
    "plan": ("cotpd.plan", "what recording the LLM stages would send, cost and take (sends nothing)"),
    "ledger": ("cotpd.ledgers", "LLM ledger stats, and gc of answers to old prompt versions"),
    "explain": ("cotpd.training.explain", "where CoTPD and the baseline disagree: counts per type and examples "
                                          "with the caption and CoT knowledge"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotpd", description=__doc__, parents=[common()])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run every stage on the pipeline's datasets (the embedded sample by default)",
                       parents=[common()])
    p.add_argument("--dataset", action="append", help="dataset key in params.yaml (repeatable)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), help="only these stages")
    p = sub.add_parser("params", help="print the validated params a stage would see (defaults, overrides and "
                                      "--set applied) as JSON", parents=[common()])
    p.add_argument("--dataset", default=None, help="resolve one dataset's view (default: params.yaml as a whole)")
    for name in STAGES:
        p = sub.add_parser(name, help=STAGE_HELP[name], parents=[common()])
        p.add_argument("--dataset", required=True, help="dataset key in params.yaml")
        if name == "train":
            p.add_argument("--variant", default="cotpd", choices=VARIANTS)
            p.add_argument("--fresh", action="store_true",
                           help="train from scratch, ignoring the resume checkpoint of an interrupted training")
        if name == "evaluate":
            p.add_argument("--trained-on", metavar="DATASET", default=None,
                           help="cross-dataset: score the students trained on DATASET on this dataset's "
                                "test split (entity types mapped through both datasets' type_map)")
            p.add_argument("--model", metavar="MODEL", action="append", default=None,
                           help="score this one student instead (a trained folder or an MLflow runs:/<id>/model "
                                "URI) on any dataset of its task; writes outputs/<ds>/metrics/cross/<model>.json. "
                                "Repeated: the students' majority vote, each member scored beside it "
                                "(cotpd.training.ensemble)")
            p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="with --model")
            p.add_argument("--out", type=Path, default=None, help="with --model: where the metrics JSON goes")
            p.add_argument("--unmapped", default="error", choices=["error", "miss"],
                           help="with --model: a gold type no type_map maps to a model type is an error, or "
                                "its entities count as misses")
    for name, (_, help_) in EXTERNAL.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # external subcommands own their arguments (their modules load torch or mlflow: imported by name
    # only when chosen, so `cotpd --help` stays fast)
    if argv and argv[0] in EXTERNAL:
        return int(importlib.import_module(EXTERNAL[argv[0]][0]).main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    if args.command == "evaluate" and args.model and args.trained_on:
        parser.error("evaluate: give --model or --trained-on, not both")
    if args.command == "evaluate" and not args.model and (args.split != "test" or args.out or args.unmapped != "error"):
        parser.error("evaluate: --split, --out and --unmapped go with --model")
    setup_logging(args)
    try:
        root, params = root_of(args), params_of(args)
        if args.command == "params":
            typed = params.dataset(args.dataset) if args.dataset else params.file
            summary = typed.model_dump(mode="json", by_alias=True)
        elif args.command == "run":
            datasets = args.dataset or params.file.pipeline.datasets
            summary = run_all(datasets, root, params, stages=args.stages)
        else:
            kw = {"variant": args.variant, "fresh": args.fresh} if args.command == "train" else {}
            if args.command == "evaluate" and args.trained_on:
                kw["cross_from"] = args.trained_on
            if args.command == "evaluate" and args.model and len(args.model) > 1:  # loads torch: by name
                summary = importlib.import_module("cotpd.training.ensemble").evaluate_ensemble(
                    args.dataset, root, params, args.model, args.split, args.out, args.unmapped)
            elif args.command == "evaluate" and args.model:  # one model, not the stage (loads torch: by name)
                summary = importlib.import_module("cotpd.training.cross").evaluate_model(
                    args.dataset, root, params, args.model[0], args.split, args.out, args.unmapped)
            else:
                summary = run_stage(args.command, args.dataset, root, params, **kw)
    except CotpdError as exc:
        print(f"cotpd: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
