"""The `cross` group of `cotpd bench`: train on A, test on B, for every ordered pair of NER datasets.

No training: once the grid's trainings are done, the first seed's main-grid baseline and CoTPD of A
(kept under <out>/runs/models/) are scored on B's test split, text only as deployed, with B's gold
types mapped into A's through both datasets' type_map (cotpd.training.cross); a gold type no map
covers counts as a miss, and the report says which. Each result is saved under <out>/runs/done like
a training's, with a hash of the model's config hash and B's dataset params, so a later invocation
reuses it; a pair whose model is not on this machine (a fresh clone) is listed as skipped.

Adding a second MNER benchmark as a `datasets:` entry of params.yaml (its `type_map` naming how its
types relate to the published ones) and passing both to `cotpd bench --datasets` gives the table.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..io import read_json, shown, write_json
from ..model.student import load_student
from ..params import dataset_params, params_hash, resolve_dataset
from ..training.cross import score
from ..training.loop import resolve_device
from .spec import RunSpec, cross_specs
from .speed import machine_label

log = logging.getLogger("cotpd.bench")


def main_spec(spec: RunSpec) -> RunSpec:
    """The main-grid training whose model a cross spec scores."""
    return RunSpec(spec.dataset, spec.variant, spec.seed)


def config_hash(bench, spec: RunSpec) -> str:
    """What decides a cross result: the model (its training's config hash) and the test dataset."""
    test = resolve_dataset(bench.params, spec.test_on)
    return params_hash({"model": bench.spec_params(main_spec(spec))[2], "key": spec.key,
                        "test_on": {k: test[k] for k in ("dataset", "eval") if k in test}})


def evaluate(bench, spec: RunSpec, model_dir: Path, chash: str) -> dict:
    t0 = time.perf_counter()
    model = load_student(model_dir, resolve_device(dataset_params(bench.params, spec.dataset).train.device))
    m = score(model, str(model_dir), spec.test_on, bench.work, bench.params, "test", unmapped="miss")
    return {"dataset": spec.dataset, "variant": spec.variant, "seed": spec.seed, "group": "cross",
            "label": spec.label, "test_on": spec.test_on, "fraction": 1.0, "test_f1": m["f1"],
            "test_precision": m["precision"], "test_recall": m["recall"], "per_type": m.get("per_type") or {},
            "view": m["view"], "type_map": m["type_map"], "unknown_gold_types": m["unknown_gold_types"],
            "n_test": m["n"], "seconds": round(time.perf_counter() - t0, 1), "model_dir": shown(model_dir, bench.root),
            "mlflow_run_id": None, "config_hash": chash, "git_commit": bench.commit, "hardware": machine_label(),
            "overrides": bench.args.overrides}


def run(bench) -> list[dict]:
    """The cross records of this report: saved ones reused, the selected others evaluated now."""
    res, out = bench.result, []
    for spec in cross_specs(bench.datasets, res.tasks, bench.base_seed):
        chash, done = config_hash(bench, spec), bench.done_dir / f"{spec.key}.json"
        if not bench.args.fresh and done.exists() and read_json(done).get("config_hash") == chash:
            out.append(read_json(done))
            res.reused.append(spec.key)
            continue
        if not bench.selected(spec):
            res.not_selected.append(spec.key)
            continue
        model_dir = bench.work / "models" / main_spec(spec).key
        if not (model_dir / "config.json").exists():
            res.skipped.append(f"{spec.key} (no main-grid model at {model_dir}: models stay only where they "
                               f"were trained; `--groups main --fresh` retrains them)")
            continue
        log.info("cross: %s %s on %s", spec.dataset, spec.variant, spec.test_on)
        rec = evaluate(bench, spec, model_dir, chash)
        # atomic; no claim: an evaluation takes seconds and two invocations would write the same record
        write_json(done, rec)
        out.append(rec)
    return out


def _cell(rec: dict | None) -> str:
    return f"{rec['test_f1'] * 100:.2f}" if rec and rec.get("test_f1") is not None else "n/a"


def cross_lines(res) -> list[str]:
    """The transfer table of the report: each ordered pair, with each dataset's in-domain score."""
    recs = [r for r in res.records if r.get("group") == "cross"]
    if not recs:
        return []

    def find(**match) -> dict | None:
        return next((r for r in res.records if all(r.get(k) == v for k, v in match.items())), None)

    L = ["", f"## Cross-dataset transfer (seed {res.base_seed}, test F1, text-only inference)", "",
         "Each main-grid model of the first seed, scored on another NER dataset's test split; the in-domain "
         "rows are the main table's runs of that seed. Gold types are mapped into the model's through "
         "both datasets' `type_map`.", "",
         "| Trained on | Tested on | baseline | cotpd | cotpd − baseline |", "|---|---|---|---|---|"]
    pairs = sorted({(r["dataset"], r["test_on"]) for r in recs})
    for a in sorted({p[0] for p in pairs} | {p[1] for p in pairs}):
        rows = [(a, a, {v: find(dataset=a, variant=v, group="main", seed=res.base_seed) for v in ("baseline", "cotpd")})]
        rows += [(a, b, {v: find(dataset=a, variant=v, group="cross", test_on=b) for v in ("baseline", "cotpd")})
                 for x, b in pairs if x == a]
        for src, dst, by in rows:
            base, cot = by["baseline"], by["cotpd"]
            delta = (f"{(cot['test_f1'] - base['test_f1']) * 100:+.2f}"
                     if base and cot and None not in (base["test_f1"], cot["test_f1"]) else "n/a")
            name = f"{dst} (in-domain)" if src == dst else dst
            L.append(f"| {src} | {name} | {_cell(base)} | {_cell(cot)} | {delta} |")
    missing = sorted({f"{r['dataset']} on {r['test_on']}: {t} ({n} gold entities)"
                      for r in recs for t, n in (r.get("unknown_gold_types") or {}).items() if n})
    if missing:
        L += ["", "Gold types no type map covers, counted as misses: " + "; ".join(missing) + "."]
    return L
