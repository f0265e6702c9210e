"""`cotpd bench`: the benchmark grid on the real data, one command to the results table.

    cotpd bench --quick                # 2 CPU cores, < 60 min: reduced grid (said so in the report)
    cotpd bench --full --seeds 3       # a GPU: the whole grid
    cotpd bench --smoke                # seconds: the embedded samples, a tiny encoder (tests)

Grid (cotpd.bench.spec): datasets x variants (baseline, knowledge view, CoTPD) x seeds; data efficiency
(10/25/50% of train; cotpd.bench.efficiency); ablations the data allows; transfer between NER datasets
(cotpd.bench.cross). Every training is an MLflow run. Upstream stages run in a work folder (<out>/runs,
git-ignored) where their output is missing. Writes <out>/README.md, results.json and PNG plots.

A finished training is saved as <out>/runs/done/<key>.json with a hash of what decides its result
(resolved params, seed, fraction, grains); a later `cotpd bench` with the same --out reuses it, so a grid
too long for one sitting is built over several, and --variants/--groups choose what trains this time
(--fresh retrains). A fresh clone takes the records behind a committed <out>/results.json back into
runs/done, so a committed report can be extended, or written again (--report-only), without training.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from ..args import root_of, setup_logging
from ..config import DatasetParams
from ..errors import CotpdError
from ..io import read_json, read_jsonl, shown, write_json, write_jsonl, write_yaml
from ..model.encoder import build_tiny_encoder
from ..params import Layout, absolute_roots, apply_set, as_params, dataset_params, read_params, resolve_dataset
from ..pipeline import run_stage
from ..training.job import prepare_training
from ..training.registry import register_champions
from ..training.tracking import training_run
from .args import BenchArgs, bench_args, build_parser
from . import cross, lanes, levers, progress, saved, twostage
from .claims import take_claim
from .identity import config_hash
from .report import GridResult, command_line, commit_label, report_dirs, write_report, write_side_reports
from .spec import MODES, RunSpec, plan_grid
from .speed import machine_label, measure_speed

log = logging.getLogger("cotpd.bench")
STAGE_OUTPUT = {"prepare": lambda lay: lay.raw("test"), "captions": lambda lay: lay.captions,
                "knowledge": lambda lay: lay.knowledge, "augment": lambda lay: lay.augmented}


class Bench:
    """One invocation: plans the grid, reuses or trains each run, collects `result` (the report's input).
    `params`: params.yaml as a mapping the bench edits (roots, mode, --set); each training validates it."""

    def __init__(self, root: Path, out: Path, args: BenchArgs):
        self.root, self.out, self.args = root, out, args
        self.mode = MODES[args.mode]
        self.seeds = args.seeds or self.mode.seeds
        self.datasets = args.datasets or list(self.mode.datasets)
        budget_min = args.budget_min if args.budget_min is not None else self.mode.budget_min
        self.budget_s = 60 * (budget_min if budget_min is not None else 1e9)
        self.work = out / "runs"
        self.done_dir = self.work / "done"
        # --report-only runs nothing, speed loops included; lanes.run clears `trains` only (its lanes trained)
        self.trains, self.measures_speed = not args.report_only, args.speed and not args.report_only
        self.commit = commit_label(root, *report_dirs(root, out, args))
        self.params = self._params(args.data)
        typed = as_params(self.params)  # a bad --set stops the bench here, before any stage runs
        self.base_seed = typed.file.seed
        self.t0 = time.perf_counter()
        self.result = GridResult(root, out, args, self.mode, self.datasets, self.seeds, self.base_seed,
                                 tasks={ds: typed.dataset(ds).task for ds in self.datasets}, commit=self.commit)

    # --- setup -------------------------------------------------------------------------------------
    def _params(self, data: Path | None) -> dict:
        """params.yaml with dataset roots made absolute (the work folder is elsewhere), --data applied
        to the real datasets (by their folder name) and the mode's train overrides merged."""
        params = read_params(self.root)
        absolute_roots(params, self.root, data)
        params["train"].update(copy.deepcopy(self.mode.train))
        for ds in self.datasets:  # the mode wins over a dataset's own train overrides
            if ds not in params["datasets"]:
                raise CotpdError(f"unknown dataset {ds!r}; params.yaml defines {sorted(params['datasets'])}")
            over = params["datasets"][ds].setdefault("overrides", {}) or {}
            params["datasets"][ds]["overrides"] = over
            over["train"] = {**(over.get("train") or {}), **copy.deepcopy(self.mode.train),
                             **self.mode.train_by_dataset.get(ds, {})}
        return apply_set(params, self.args.overrides)

    def prepare(self) -> None:
        """Run the upstream stages whose output is missing in the work folder."""
        if self.mode.tiny_encoder:
            enc = self.work / "tiny_encoder"
            if not (enc / "config.json").exists():
                build_tiny_encoder(enc)
            self.params["train"]["encoder"] = str(enc)
            for ds in self.datasets:
                self.params["datasets"][ds]["overrides"]["train"]["encoder"] = str(enc)
            self.result.notes.append("smoke mode: a tiny randomly initialised encoder, scores are meaningless")
        for ds in self.datasets:
            src, dst = self.root / "ledger" / ds, self.work / "ledger" / ds
            if src.is_dir() and not dst.exists():
                shutil.copytree(src, dst)  # replay the committed LLM answers
            lay = Layout(self.work, ds)
            for stage, output in STAGE_OUTPUT.items():
                if self.args.rebuild or not output(lay).exists():
                    log.info("[%s] stage %s", ds, stage)
                    run_stage(stage, ds, self.work, self.params)
        self.write_params()

    def write_params(self) -> None:
        """The params this bench applied, as `<out>/runs/params.yaml`: the work folder is then a project
        root, so `cotpd evaluate --root <out>/runs --model ...` scores the kept students on the data the
        bench prepared (the repo root has none unless `cotpd prepare` ran there)."""
        write_yaml(self.work / "params.yaml", self.params,
                   "# written by `cotpd bench`: params.yaml with dataset roots absolute, the mode and --set\n"
                   "# merged (a lever's own --set is in its run record, not here)\n")

    # --- the grid ----------------------------------------------------------------------------------
    def grid(self) -> list[RunSpec]:
        names = levers.resolve(self.args.levers, self.mode.train) if self.mode.screen or self.args.levers else []
        plan = plan_grid(self.mode, self.datasets, [self.base_seed + i for i in range(self.seeds)], self.work, names)
        self.result.grains.update(plan.grains)
        self.result.notes.extend(plan.notes)
        return plan.specs

    def data_root_for(self, spec: RunSpec) -> Path:
        """The work folder, or for a grain ablation a copy whose knowledge.jsonl keeps one grain."""
        if not spec.knowledge_grains:
            return self.work
        alt = self.work / "ablations" / spec.key
        src, dst = Layout(self.work, spec.dataset), Layout(alt, spec.dataset)
        if dst.base.exists():
            shutil.rmtree(dst.base)
        shutil.copytree(src.base, dst.base, ignore=shutil.ignore_patterns("models", "knowledge.jsonl"))
        write_jsonl(dst.knowledge, [r for r in read_jsonl(src.knowledge) if r.get("grain") in spec.knowledge_grains])
        return alt

    def spec_params(self, spec: RunSpec, legacy: bool = False) -> tuple[dict, DatasetParams, str]:
        """(params, typed dataset params, config hash) of one training. The hash covers what
        decides its result (cotpd.bench.identity), so a resumed grid reuses it."""
        params = copy.deepcopy(self.params)
        over = params["datasets"][spec.dataset]["overrides"]["train"]
        base_frac = float(self.mode.base_fraction.get(spec.dataset, 1.0))  # 1.0: the whole train split
        over.update(spec.train, data_fraction=round(base_frac * spec.fraction, 6))
        params["seed"] = spec.seed
        # the hash is of the mapping as written (not of the schema's defaults), so saved results
        # stay valid when the schema gains a key
        chash = config_hash(resolve_dataset(params, spec.dataset), spec.variant, spec.key, spec.knowledge_grains, legacy)
        return params, dataset_params(params, spec.dataset), chash

    # --- saved results -----------------------------------------------------------------------------
    def adopt_report(self) -> list[str]:
        """Take <out>/results.json's records back into runs/done (cotpd.bench.saved); --fresh adopts nothing."""
        return [] if self.args.fresh else saved.adopt(self.out / "results.json", self.done_dir)

    def done_record(self, spec: RunSpec) -> dict | None:
        """The saved result for exactly this configuration, if any: of an earlier invocation, or under
        --fresh of this one only (e.g. the knowledge model that a two-stage CoTPD borrows)."""
        if self.args.fresh:
            chash = self.spec_params(spec)[2]
            return next((r for r in self.result.records
                         if r.get("config_hash") == chash and saved.spec_of(r).key == spec.key), None)
        path = self.done_dir / f"{spec.key}.json"
        rec, chash = read_json(path) if path.exists() else {}, self.spec_params(spec)[2]
        if rec and rec.get("config_hash") != chash and rec.get("config_hash") == self.spec_params(spec, legacy=True)[2]:
            log.info("%s: saved result re-keyed to its variant's config hash", spec.key)
            rec["config_hash"] = chash
            write_json(path, rec)
        if rec.get("config_hash") == chash:
            return rec
        if rec:  # --adopt-from may still hold this configuration's training
            log.info("%s: saved result is for other params", spec.key)
        return saved.same_training(self, spec, chash, path)

    def reuse(self, spec: RunSpec) -> bool:
        """Take the saved result of `spec` into this report, if there is one for its params."""
        done = self.done_record(spec)
        if done is not None:
            self.result.records.append(done)
            self.result.reused.append(spec.key)
        return done is not None

    # --- trainings ---------------------------------------------------------------------------------
    def selected(self, spec: RunSpec) -> bool:
        a = self.args
        return self.trains and (not a.variants or spec.variant in a.variants) \
            and (not a.groups or spec.group in a.groups)

    def run_one(self, spec: RunSpec) -> dict:
        params, dp, chash = self.spec_params(spec)
        over = params["datasets"][spec.dataset]["overrides"]["train"]
        borrowed = twostage.borrow_teacher(self, spec, over)  # two stages: this seed's knowledge model
        data_root = self.data_root_for(spec)
        model_dir = self.work / "models" / spec.key
        tags = {"bench": self.args.mode, "bench_group": spec.group, "bench_label": spec.label or None}
        t0 = time.perf_counter()  # a half-done training of an earlier invocation resumes (its MLflow run too)
        job = prepare_training(spec.dataset, spec.variant, params, data_root, spec.seed, model_dir, self.args.fresh)
        with training_run(self.root, spec.dataset, spec.variant, dp, tags=tags, seed=spec.seed,
                          run_name=spec.key, data_root=data_root, resume_run_id=job.resume_run_id) as tr:
            res = job.run(on_epoch_end=tr.log_epoch, progress=False, run_id=tr.run_id)
            tr.log_result(res)
            if self.args.log_models:
                tr.log_student_model(res.model_dir, dp.task)
        keep_all = self.mode.screen or self.args.levers or self.args.keep_models
        if spec.group != "main" or (spec.seed != self.base_seed and not keep_all
                                    and not twostage.is_teacher(spec, dp.train.distill.teacher)):
            twostage.drop_model(model_dir)  # one model per dataset/variant (speed), and the teachers
        if spec.knowledge_grains:
            shutil.rmtree(data_root, ignore_errors=True)
        test = res.test or {}
        seconds = time.perf_counter() - t0 + res.timings["earlier_s"]  # a resumed training: its earlier runs too
        return {"dataset": spec.dataset, "variant": spec.variant, "seed": spec.seed, "group": spec.group,
                "label": spec.label, "fraction": spec.fraction, "data_fraction": over["data_fraction"],
                "test_f1": test.get("f1"), "test_precision": test.get("precision"), "test_recall": test.get("recall"),
                "dev_f1": res.best_dev.get("f1"), "per_type": test.get("per_type") or test.get("per_relation") or {},
                "view": test.get("view"), "train_tokens_per_s": res.train_tokens_per_s, "n_train": res.n_train,
                "best_epoch": res.best_epoch, "resumed_from_epoch": res.resumed_from_epoch,
                "teacher_s": borrowed["seconds"] if borrowed else res.timings.get("teacher_s"),  # cost_s: a user's,
                "cost_s": round(seconds + (borrowed["seconds"] if borrowed else 0.0), 1),  # teacher too
                "seconds": round(seconds, 1), "model_dir": shown(model_dir, self.root) if model_dir.exists() else None,
                "mlflow_run_id": tr.run_id, "mlflow_url": tr.url, "mlflow_model_id": tr.model_id, "config_hash": chash,
                "git_commit": self.commit, "hardware": machine_label(), "overrides": self.args.overrides}

    def measure_speed(self) -> dict:
        return measure_speed(self.mode.speed, self.root, self.work, self.params, self.datasets[0], self.result.records)

    def run(self, argv: list[str]) -> Path:
        res = self.result
        self.adopt_report()
        self.prepare()
        specs = self.grid()
        log.info("bench %s: %d trainings planned", self.args.mode, len(specs))
        speed_done = False
        for i, spec in enumerate(specs):
            if not speed_done and spec.group != "main" and self.measures_speed:
                res.speed, speed_done = self.measure_speed(), True  # after the main grid
            if self.reuse(spec):
                continue
            if not self.selected(spec):
                res.not_selected.append(spec.key)
                continue
            elapsed = time.perf_counter() - self.t0
            if elapsed + progress.estimate(res.records, spec) > self.budget_s:
                res.skipped.append(f"{spec.key} (would pass the time budget of {self.budget_s / 60:.0f} min)")
                continue
            claim = self.done_dir / f"{spec.key}.claim"
            if not take_claim(claim):  # another invocation sharing --out is training it right now
                res.elsewhere.append(spec.key)
                continue
            try:
                if self.reuse(spec):  # another invocation may have finished it since the check above
                    continue
                log.info("[%d/%d] %s (%.0f s elapsed)", i + 1, len(specs), spec.key, elapsed)
                rec = self.run_one(spec)
                write_json(self.done_dir / f"{spec.key}.json", rec)  # atomic: a killed run leaves no half record
                res.records.append(rec)
                # left: all but what would be reused (not under --fresh, nor a result of other params)
                left = [s for s in specs[i + 1:] if self.selected(s) and self.done_record(s) is None]
                log.info(progress.finished_line(spec.key, rec, len(res.records) - len(res.reused),
                                                [progress.estimate(res.records, s) for s in left], time.perf_counter() - self.t0))
            finally:
                claim.unlink(missing_ok=True)
        res.records += cross.run(self)  # scores the main-grid models kept above: after every training
        if not self.measures_speed:  # --report-only keeps the section as last measured; --no-speed has none
            res.speed = saved.speed(self.out / "results.json") if self.args.speed else None
        elif not speed_done:
            res.speed = self.measure_speed()
        res.champions = register_champions(self.root, as_params(self.params).file.tracking, res.records)
        res.wall_s = time.perf_counter() - self.t0
        res.commit = commit_label(self.root, *report_dirs(self.root, self.out, self.args))  # the code as the report is written
        report = write_report(res, argv)
        write_side_reports(res, command_line(argv))
        return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    setup_logging(ns)
    try:
        root = root_of(ns)
        out = ns.out if ns.out.is_absolute() else (Path.cwd() / ns.out)
        bench = Bench(root, out.resolve(), bench_args(ns))
        failed = lanes.run(bench, argv, ns.lanes) if ns.lanes > 1 and not ns.report_only else []
        report = bench.run(argv)
    except CotpdError as exc:
        print(f"cotpd bench: error: {exc}", file=sys.stderr)
        return 2
    res = bench.result
    print(json.dumps({"report": str(report), "trainings": len(res.records), "reused": len(res.reused),
                      "not_selected": len(res.not_selected), "elsewhere": len(res.elsewhere),
                      "skipped": len(res.skipped), "wall_s": round(res.wall_s, 1), "champions": res.champions,
                      "failed_lanes": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
