"""`cotpd bench`: the benchmark grid on the real data, one command to the results table.

    cotpd bench --quick                # 2 CPU cores, < 60 min: reduced grid (said so in the report)
    cotpd bench --full --seeds 3       # a GPU: the whole grid
    cotpd bench --smoke                # seconds: the embedded samples, a tiny encoder (tests)

Grid: datasets (Twitter-2015, MNRE) x variants (baseline = text only, knowledge = knowledge view,
cotpd = distilled, text-only inference) x seeds; data efficiency (baseline and cotpd on 10/25/50/100%
of train); ablations where the data allows (each CoT grain alone when knowledge.jsonl has several
grains; no augmentation and each augmentation type left out when augmented.jsonl has them).
Every training is an MLflow run in the project's store. Upstream stages run in a work folder
(<out>/runs, git-ignored) and only where their output is missing. Writes <out>/README.md (mean ±
std beside the literature), <out>/results.json and PNG plots.

A finished training is saved as <out>/runs/done/<key>.json with a hash of everything that decides
its result (resolved params, seed, fraction, grains); a later `cotpd bench` with the same --out
reuses it instead of training again, so a grid too long for one sitting (the full grid on a CPU)
is built over several, and --variants/--groups choose what trains this time. --fresh retrains.
The records behind a committed <out>/results.json are taken back into <out>/runs/done where it has
none (a fresh clone), so a report that is in git can be extended without training its runs again.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .claims import take_claim
from .errors import CotpdError
from .io import read_json, read_jsonl, write_json
from .params import Layout, apply_set, dataset_params, find_root, load_params, params_hash, parse_set
from .pipeline import VARIANTS

log = logging.getLogger("cotpd.bench")
STAGE_OUTPUT = {"prepare": lambda lay: lay.raw("test"), "captions": lambda lay: lay.captions,
                "knowledge": lambda lay: lay.knowledge, "augment": lambda lay: lay.augmented}
FRACTIONS = (0.1, 0.25, 0.5, 1.0)

# what each mode changes in params.yaml's train section (per dataset where it differs); the report
# prints this, so a quick number is never mistaken for a full one
MODES = {
    "smoke": {"datasets": ["sample", "sample_mnre"], "seeds": 2, "fractions": (0.5, 1.0), "budget_min": None,
              "train": {"epochs": 1, "max_length": 32, "knowledge_max_length": 48, "batch_size": 8,
                        "prompt": {"k": 2, "layers": 1, "heads": 2}, "device": "cpu"},
              "tiny_encoder": True, "fraction_datasets": ["sample"], "speed": {"bare_steps": 3, "infer_n": 32,
              "llm": {"calls": 40, "concurrency": 8, "latency": 0.01, "seq_calls": 4, "replay_n": 200}, "dvc": False}},
    "quick": {"datasets": ["twitter2015", "mnre"], "seeds": 1, "fractions": FRACTIONS, "budget_min": 55,
              "train": {"epochs": 2, "patience": 2, "max_length": 48, "knowledge_max_length": 96},
              # RE keeps room for the 4 entity markers (a marker cut off falls back to [CLS])
              "train_by_dataset": {"mnre": {"max_length": 64}},
              "base_fraction": {"twitter2015": 0.25, "mnre": 0.1}, "fraction_datasets": ["twitter2015"],
              "speed": {"bare_steps": 10, "infer_n": 500,
                        "llm": {"calls": 1000, "concurrency": 32, "latency": 0.2, "seq_calls": 30, "replay_n": 20000},
                        "dvc": True}},
    "full": {"datasets": ["twitter2015", "mnre"], "seeds": 3, "fractions": FRACTIONS, "budget_min": None,
             "train": {}, "fraction_datasets": ["twitter2015", "mnre"],
             "speed": {"bare_steps": 30, "infer_n": 2000,
                       "llm": {"calls": 1000, "concurrency": 32, "latency": 0.2, "seq_calls": 30, "replay_n": 20000},
                       "dvc": True}},
}


@dataclass
class RunSpec:
    dataset: str
    variant: str
    seed: int
    group: str = "main"            # main | fraction | ablation
    label: str = ""                # e.g. "50%", "grain=noun", "no style"
    train: dict = field(default_factory=dict)     # extra train.* overrides
    knowledge_grains: list[str] | None = None     # keep only these grains in knowledge.jsonl
    fraction: float = 1.0

    @property
    def key(self) -> str:
        tail = f"-{self.label}".replace(" ", "_").replace("=", "-").replace("%", "pct") if self.label else ""
        return f"{self.dataset}-{self.group}-{self.variant}{tail}-s{self.seed}"


class Bench:
    def __init__(self, root: Path, out: Path, mode: str, seeds: int | None = None, datasets: list[str] | None = None,
                 data: Path | None = None, budget_min: float | None = None, log_models: bool = False,
                 speed: bool = True, rebuild: bool = False, variants: list[str] | None = None,
                 groups: list[str] | None = None, fresh: bool = False, report_only: bool = False,
                 overrides: dict | None = None):
        self.root, self.out, self.mode = root, out, mode
        self.overrides = overrides or {}  # --set: win over params.yaml, the mode and dataset overrides
        self.cfg = copy.deepcopy(MODES[mode])
        self.seeds = seeds or self.cfg["seeds"]
        self.datasets = datasets or self.cfg["datasets"]
        self.budget_s = 60 * (budget_min if budget_min is not None else (self.cfg["budget_min"] or 1e9))
        self.log_models, self.speed_on, self.rebuild = log_models, speed, rebuild
        self.variants, self.groups, self.fresh, self.report_only = variants, groups, fresh, report_only
        self.work = out / "runs"
        self.done_dir = self.work / "done"
        from .bench_report import commit_label

        self.commit = commit_label(root, out)
        self.params = self._params(data)
        self.t0 = time.perf_counter()
        self.records: list[dict] = []
        self.skipped: list[str] = []
        self.reused: list[str] = []
        self.not_selected: list[str] = []
        self.elsewhere: list[str] = []  # claimed by another invocation that shares --out
        self.notes: list[str] = []
        self.grains: dict[str, list[str]] = {}  # CoT grains in each dataset's knowledge.jsonl
        self.speed: dict | None = None
        self.wall_s = 0.0

    # --- setup -------------------------------------------------------------------------------------
    def _params(self, data: Path | None) -> dict:
        """params.yaml with dataset roots made absolute (the work folder is elsewhere), --data applied
        to the real datasets (by their folder name) and the mode's train overrides merged."""
        params = load_params(self.root)
        for name, ds in params["datasets"].items():
            rel = Path(ds["root"])
            if data is not None and ".." in rel.parts:  # a real dataset: <data>/<its folder name>
                ds["root"] = str((data / rel.name).resolve())
            elif not rel.is_absolute():
                ds["root"] = str((self.root / rel).resolve())
        for k, v in self.cfg["train"].items():
            params["train"][k] = v
        for ds in self.datasets:  # the mode wins over a dataset's own train overrides
            if ds not in params["datasets"]:
                raise CotpdError(f"unknown dataset {ds!r}; params.yaml defines {sorted(params['datasets'])}")
            over = params["datasets"][ds].setdefault("overrides", {}) or {}
            params["datasets"][ds]["overrides"] = over
            over["train"] = {**(over.get("train") or {}), **self.cfg["train"],
                             **(self.cfg.get("train_by_dataset") or {}).get(ds, {})}
        return apply_set(params, self.overrides)

    def prepare(self) -> None:
        """Run the upstream stages whose output is missing in the work folder."""
        from .pipeline import run_stage

        if self.cfg.get("tiny_encoder"):
            from .model.encoder import build_tiny_encoder

            enc = self.work / "tiny_encoder"
            if not (enc / "config.json").exists():
                build_tiny_encoder(enc)
            self.params["train"]["encoder"] = str(enc)
            for ds in self.datasets:
                self.params["datasets"][ds]["overrides"]["train"]["encoder"] = str(enc)
            self.notes.append("smoke mode: a tiny randomly initialised encoder, scores are meaningless")
        for ds in self.datasets:
            src, dst = self.root / "ledger" / ds, self.work / "ledger" / ds
            if src.is_dir() and not dst.exists():
                shutil.copytree(src, dst)  # replay the committed LLM answers
            lay = Layout(self.work, ds)
            for stage, output in STAGE_OUTPUT.items():
                if self.rebuild or not output(lay).exists():
                    log.info("[%s] stage %s", ds, stage)
                    run_stage(stage, ds, self.work, self.params)

    # --- the grid ----------------------------------------------------------------------------------
    def grid(self) -> list[RunSpec]:
        base_seed = int(self.params.get("seed", 13))
        seeds = [base_seed + i for i in range(self.seeds)]
        specs = [RunSpec(ds, v, s) for s in seeds for ds in self.datasets for v in VARIANTS]
        # data efficiency: baseline and CoTPD at every seed, the knowledge view at the first; the
        # subset is drawn from the training seed, so every variant of a (fraction, seed) sees the
        # same sentences. Smallest fractions first: they are the cheapest points of the curve.
        for frac in [f for f in self.cfg["fractions"] if f < 1.0]:  # 100% is the main grid's run
            for ds in [d for d in self.cfg["fraction_datasets"] if d in self.datasets]:
                specs += [RunSpec(ds, v, s, "fraction", f"{frac:.0%}", fraction=frac)
                          for s in seeds for v in ("baseline", "cotpd")]
                specs.append(RunSpec(ds, "knowledge", seeds[0], "fraction", f"{frac:.0%}", fraction=frac))
        for ds in self.datasets:
            specs += self.ablations(ds, seeds[0])
        return specs

    def ablations(self, ds: str, seed: int) -> list[RunSpec]:
        lay = Layout(self.work, ds)
        grains = sorted({r["grain"] for r in read_jsonl(lay.knowledge) if (r.get("text") or "").strip()}) \
            if lay.knowledge.exists() else []
        self.grains[ds] = grains  # the report says whether the knowledge view had any CoT
        specs = []
        if len(grains) > 1:
            specs += [RunSpec(ds, "cotpd", seed, "ablation", f"grain={g}", knowledge_grains=[g]) for g in grains]
        else:
            self.notes.append(f"{ds}: CoT grain ablation skipped (knowledge grains present: {grains or 'none'})")
        kinds = sorted({(r.get("meta") or {}).get("aug") for r in read_jsonl(lay.augmented)} - {None}) \
            if lay.augmented.exists() else []
        if kinds:
            specs.append(RunSpec(ds, "cotpd", seed, "ablation", "no augmentation", train={"use_augmented": False}))
            specs += [RunSpec(ds, "cotpd", seed, "ablation", f"no {k}",
                              train={"use_augmented": True, "augment_types": [x for x in kinds if x != k]})
                      for k in kinds]
        else:
            self.notes.append(f"{ds}: augmentation ablation skipped (no augmented samples in {lay.augmented.name})")
        return specs

    def data_root_for(self, spec: RunSpec) -> Path:
        """The work folder, or for a grain ablation a copy whose knowledge.jsonl keeps one grain."""
        if not spec.knowledge_grains:
            return self.work
        alt = self.work / "ablations" / spec.key
        src, dst = Layout(self.work, spec.dataset), Layout(alt, spec.dataset)
        if dst.base.exists():
            shutil.rmtree(dst.base)
        shutil.copytree(src.base, dst.base, ignore=shutil.ignore_patterns("models", "knowledge.jsonl"))
        from .io import write_jsonl

        write_jsonl(dst.knowledge, [r for r in read_jsonl(src.knowledge) if r.get("grain") in spec.knowledge_grains])
        return alt

    def spec_params(self, spec: RunSpec) -> tuple[dict, dict, str]:
        """(params, resolved dataset params, config hash) of one training. The hash covers what
        decides its result, not where its files or MLflow runs go, so a resumed grid reuses it."""
        params = copy.deepcopy(self.params)
        over = params["datasets"][spec.dataset]["overrides"]["train"]
        base_frac = float((self.cfg.get("base_fraction") or {}).get(spec.dataset, 1.0))
        over.update(spec.train, data_fraction=round(base_frac * spec.fraction, 6))
        params["seed"] = spec.seed
        dp = dataset_params(params, spec.dataset)
        decisive = {k: v for k, v in dp.items() if k not in ("tracking", "pipeline", "llm", "captions", "augment")}
        return params, dp, params_hash({"params": decisive, "grains": spec.knowledge_grains, "key": spec.key})

    def adopt_report(self) -> list[str]:
        """Save the records of <out>/results.json that runs/done lacks (a fresh clone: the work folder
        is git-ignored, the report is not). Each keeps its config hash, so done_record still retrains
        one whose params have changed since; --fresh adopts nothing."""
        report = self.out / "results.json"
        if self.fresh or not report.exists():
            return []
        adopted = []
        for i, rec in enumerate(read_json(report).get("runs") or []):
            try:
                spec = RunSpec(rec["dataset"], rec["variant"], int(rec["seed"]), rec["group"], rec.get("label") or "")
                if "config_hash" not in rec:
                    raise KeyError("config_hash")
            except (KeyError, TypeError, ValueError) as exc:
                raise CotpdError(f"{report}: runs[{i}] is not a bench record (missing or bad {exc})") from exc
            path = self.done_dir / f"{spec.key}.json"
            if not path.exists():
                write_json(path, rec)  # atomic, like a finished training's record
                adopted.append(spec.key)
        if adopted:
            log.info("took %d saved results back from %s", len(adopted), report)
        return adopted

    def done_record(self, spec: RunSpec) -> dict | None:
        """The saved result of an earlier invocation for exactly this configuration, if any."""
        path = self.done_dir / f"{spec.key}.json"
        if self.fresh or not path.exists():
            return None
        rec = read_json(path)
        if rec.get("config_hash") != self.spec_params(spec)[2]:
            log.info("%s: saved result is for other params, training again", spec.key)
            return None
        return rec

    def reuse(self, spec: RunSpec) -> bool:
        """Take the saved result of `spec` into this report, if there is one for its params."""
        done = self.done_record(spec)
        if done is not None:
            self.records.append(done)
            self.reused.append(spec.key)
        return done is not None

    def selected(self, spec: RunSpec) -> bool:
        return not self.report_only and (not self.variants or spec.variant in self.variants) \
            and (not self.groups or spec.group in self.groups)

    def run_one(self, spec: RunSpec) -> dict:
        from . import bench_report
        from .tracking import training_run
        from .train import train_and_evaluate

        params, dp, chash = self.spec_params(spec)
        over = params["datasets"][spec.dataset]["overrides"]["train"]
        data_root = self.data_root_for(spec)
        model_dir = self.work / "models" / spec.key
        tags = {"bench": self.mode, "bench_group": spec.group, "bench_label": spec.label or None}
        t0 = time.perf_counter()
        with training_run(self.root, spec.dataset, spec.variant, dp, tags=tags, seed=spec.seed,
                          run_name=spec.key, data_root=data_root) as tr:
            res = train_and_evaluate(spec.dataset, spec.variant, params, data_root, spec.seed,
                                     on_epoch_end=tr.log_epoch, model_dir=model_dir, progress=False)
            tr.log_result(res)
            if self.log_models:
                tr.log_student_model(res.model_dir, dp["dataset"]["task"])
        if spec.group != "main" or spec.seed != int(self.params.get("seed", 13)):
            shutil.rmtree(model_dir, ignore_errors=True)  # keep one model per dataset/variant (speed section)
        if spec.knowledge_grains:
            shutil.rmtree(data_root, ignore_errors=True)
        test = res.test or {}
        return {"dataset": spec.dataset, "variant": spec.variant, "seed": spec.seed, "group": spec.group,
                "label": spec.label, "fraction": spec.fraction, "data_fraction": over["data_fraction"],
                "test_f1": test.get("f1"), "test_precision": test.get("precision"), "test_recall": test.get("recall"),
                "dev_f1": res.best_dev.get("f1"), "per_type": test.get("per_type") or test.get("per_relation") or {},
                "view": test.get("view"), "train_tokens_per_s": res.train_tokens_per_s, "n_train": res.n_train,
                "best_epoch": res.best_epoch, "seconds": round(time.perf_counter() - t0, 1),
                "model_dir": str(model_dir) if model_dir.exists() else None,
                "mlflow_run_id": tr.run_id, "mlflow_url": tr.url, "config_hash": chash,
                "git_commit": self.commit, "hardware": bench_report.machine_label(),
                "overrides": self.overrides}

    def estimate(self, spec: RunSpec) -> float:
        """Expected seconds of a training from the main-grid runs of the same dataset and variant
        (evaluation on the full dev/test sets does not shrink with the training fraction)."""
        past = [r["seconds"] for r in self.records
                if (r["dataset"], r["variant"], r["group"]) == (spec.dataset, spec.variant, "main")]
        return (sum(past) / len(past)) * max(spec.fraction, 0.4) if past else 0.0

    def run(self, argv: list[str]) -> Path:
        from . import bench_report

        self.adopt_report()
        self.prepare()
        specs = self.grid()
        log.info("bench %s: %d trainings planned", self.mode, len(specs))
        speed_done = False
        for i, spec in enumerate(specs):
            if not speed_done and spec.group != "main" and self.speed_on:
                self.speed = bench_report.speed(self, self.cfg["speed"])  # after the main grid
                speed_done = True
            if self.reuse(spec):
                continue
            if not self.selected(spec):
                self.not_selected.append(spec.key)
                continue
            elapsed = time.perf_counter() - self.t0
            if elapsed + self.estimate(spec) > self.budget_s:
                self.skipped.append(f"{spec.key} (would pass the time budget of {self.budget_s / 60:.0f} min)")
                continue
            claim = self.done_dir / f"{spec.key}.claim"
            if not take_claim(claim):  # another invocation sharing --out is training it right now
                self.elsewhere.append(spec.key)
                continue
            try:
                if self.reuse(spec):  # another invocation may have finished it since the check above
                    continue
                log.info("[%d/%d] %s (%.0f s elapsed)", i + 1, len(specs), spec.key, elapsed)
                rec = self.run_one(spec)
                write_json(self.done_dir / f"{spec.key}.json", rec)  # atomic: a killed run leaves no half record
                self.records.append(rec)
            finally:
                claim.unlink(missing_ok=True)
        if not speed_done and self.speed_on:
            self.speed = bench_report.speed(self, self.cfg["speed"])
        self.wall_s = time.perf_counter() - self.t0
        return bench_report.write(self, argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="cotpd bench", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="reduced grid, 2 CPU cores < 60 min")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the whole grid (a GPU)")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help="embedded samples, tiny encoder")
    p.add_argument("--data", type=Path, default=None, help="folder holding twitter2015/ and mnre/ (default: params.yaml)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default: by mode)")
    p.add_argument("--out", type=Path, default=Path("results"), help="report folder (default results/)")
    p.add_argument("--datasets", nargs="+", default=None, help="dataset keys (default: by mode)")
    p.add_argument("--budget-min", type=float, default=None, help="skip trainings after this many minutes")
    p.add_argument("--root", type=Path, default=None, help="project root (default: nearest params.yaml)")
    p.add_argument("--log-models", action="store_true", help="also log every student as an MLflow model")
    p.add_argument("--no-speed", dest="speed", action="store_false", help="skip the speed section")
    p.add_argument("--rebuild", action="store_true", help="rerun upstream stages even where outputs exist")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="train only these variants now (saved results of others are still reported)")
    p.add_argument("--groups", nargs="+", choices=("main", "fraction", "ablation"), default=None,
                   help="train only these parts of the grid now")
    p.add_argument("--fresh", action="store_true", help="retrain even where <out>/runs/done holds a result")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a params.yaml entry for every training, e.g. --set train.epochs=6 "
                        "(the config hash changes, so give such a grid its own --out)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the saved results (e.g. of parallel invocations)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        root = (args.root or find_root()).resolve()
        out = args.out if args.out.is_absolute() else (Path.cwd() / args.out)
        bench = Bench(root, out.resolve(), args.mode or "quick", args.seeds, args.datasets,
                      args.data.resolve() if args.data else None, args.budget_min, args.log_models, args.speed,
                      args.rebuild, args.variants, args.groups, args.fresh, args.report_only,
                      parse_set(args.set))
        report = bench.run(argv)
    except CotpdError as exc:
        print(f"cotpd bench: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"report": str(report), "trainings": len(bench.records), "reused": len(bench.reused),
                      "not_selected": len(bench.not_selected), "elsewhere": len(bench.elsewhere),
                      "skipped": len(bench.skipped),
                      "wall_s": round(bench.wall_s, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
