"""Levers for a bigger distillation gain, screened on dev: `cotpd bench --screen` (issue #19).

A lever is one named change of train.* params, trained as CoTPD at every seed of the grid next to
the default CoTPD, the baseline and the knowledge view of the same (dataset, seed, subset), so its
gain is paired. The screen mode trains on a subset for fewer epochs (cotpd.bench.spec.MODES) and a
lever is judged on dev F1 only; test F1 is reported beside it, never used to choose. The winner is
then confirmed on the full grid. `write` makes <ablations-out>/README.md and results.json: one row
per lever (those that did not help too), with its exact --set, dev and test F1, paired gains and
the training time against the default CoTPD's (a lever that doubles the cost says so).
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import ConfigError
from ..io import write_json
from ..model.teacher import KNOWLEDGE
from .stats import pm, signed

# name -> train.* overrides; the defaults of every key are in cotpd/config.py. Order: the report's.
LEVERS: dict[str, dict] = {
    # two stages: distil from the trained knowledge view of the same seed, its logits cached
    # (cotpd.model.teacher); its cost is given without and with the teacher's training (the knowledge row)
    "twostage": {"distill": {"teacher": "auto"}},
    # the teacher: 58% of Twitter-2015's knowledge-view inputs pass 192 subwords (p90: 246, max < 384)
    "kmax320": {"knowledge_max_length": 320},
    # the knowledge's "name (type)" list matched onto the text words as typed hints (cotpd.model.hints)
    "hints": {"knowledge_hints": True},
    "warmup1": {"distill": {"warmup_epochs": 1}},          # knowledge view alone for one epoch first
    # what is distilled
    "marginals": {"distill": {"target": "marginals"}},     # CRF posteriors instead of emission softmax
    "hidden": {"distill": {"hidden_weight": 1.0}},         # align the two views' hidden states
    "ramp": {"distill": {"lambda_ramp": 0.5}},             # lambda from 0 over the first half
    "lambda2": {"distill": {"lambda": 2.0}},
    "T1": {"distill": {"temperature": 1.0}},
    "teacher_grad": {"distill": {"teacher_grad": True}},   # the KL also moves the knowledge view
    # the two that held over three screen seeds on Twitter-2015 (stop 38), together
    "T1_teacher_grad": {"distill": {"temperature": 1.0, "teacher_grad": True}},
    # the prompt generator reads the encoder's contextual states of the text (one more text pass)
    "contextual": {"prompt": {"source": "contextual"}},
    # RE only: the entity markers start at brackets' pretrained embeddings, not all at the mean one
    "markers": {"marker_init": "punct"},
    # the schedule: every full-size Twitter-2015 CoTPD of results/full was best at its last (4th) epoch
    "epochs6": {"epochs": 6},
}
COST_FLAG = 2.0  # a lever whose training takes at least this many times the default CoTPD's is flagged


def resolve(names: list[str] | None, mode_keys: Iterable[str] = ()) -> list[str]:
    """The levers asked for, in table order; an unknown name is refused with the list. When None: all
    but those that set a train.* key the mode sets itself (`mode_keys`): in the screen `epochs6` would
    replace the screen's 2 epochs (×3 its cost) instead of lengthening params.yaml's schedule. Asked for
    by name, a lever runs in any mode."""
    if names is None:
        mode_keys = set(mode_keys)
        return [n for n, over in LEVERS.items() if not over.keys() & mode_keys]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise ConfigError(f"unknown lever(s) {unknown}; known: {', '.join(LEVERS)}")
    return [n for n in LEVERS if n in names]


def set_args(over: Mapping, prefix: str = "train") -> list[str]:
    """The --set words that reproduce a lever, e.g. ['train.distill.target=marginals']."""
    out = []
    for k, v in over.items():
        key = f"{prefix}.{k}"
        out += set_args(v, key) if isinstance(v, Mapping) else [f"{key}={str(v).lower() if isinstance(v, bool) else v}"]
    return out


def _own_s(rec: dict) -> float | None:
    """A training's seconds without its teacher's: a two-stage CoTPD that trained its teacher in its own
    job (no knowledge model to borrow, e.g. under --fresh) has it in `seconds`; cost_s always has it."""
    if rec.get("teacher_s") and rec.get("cost_s"):
        return rec["cost_s"] - rec["teacher_s"]
    return rec.get("seconds")


def _with_teacher_s(rec: dict, know: dict | None) -> float | None:
    """What a user without a knowledge model pays: cost_s, else (older records) the seed's knowledge training."""
    if rec.get("teacher_s") and rec.get("cost_s"):
        return rec["cost_s"]
    return rec["seconds"] + know["seconds"] if rec.get("seconds") and (know or {}).get("seconds") else None


def _cost(secs: dict[int, float | None], ref: dict[int, float]) -> float | None:
    """Training time against the default CoTPD's at the same seeds: a one-seed lever is not measured
    against a three-seed mean (the seeds' machines and neighbours differ)."""
    seeds = [s for s, t in secs.items() if t and s in ref]
    return sum(secs[s] for s in seeds) / sum(ref[s] for s in seeds) if seeds else None


def _by_seed(recs: list[dict], **where) -> dict[int, dict]:
    return {r["seed"]: r for r in recs if all(r.get(k) == v for k, v in where.items()) and r.get("dev_f1") is not None}


def rows(records: list[dict], dataset: str) -> list[dict]:
    """One summary row per configuration of `dataset`: the main-grid references, then each lever."""
    main = {v: _by_seed(records, dataset=dataset, group="main", variant=v) for v in ("baseline", "knowledge", "cotpd")}
    ref_s = {s: r["seconds"] for s, r in main["cotpd"].items() if r.get("seconds")}
    configs = [(f"{v} (default)" if v == "cotpd" else v, v, main[v], []) for v in ("baseline", "knowledge", "cotpd")]
    configs += [(name, "cotpd", _by_seed(records, dataset=dataset, group="levers", label=name), set_args(LEVERS[name]))
                for name in LEVERS]
    out = []
    for label, variant, runs, sets in configs:
        if not runs:
            continue
        seeds = sorted(runs)
        secs = [t for t in (_own_s(runs[s]) for s in seeds) if t]
        # two stages: the knowledge model of the seed is its teacher; a user without one trains it too
        know = main["knowledge"] if (sets and f"train.distill.teacher={KNOWLEDGE}" in sets) else {}
        out.append({
            "dataset": dataset, "config": label, "variant": variant, "set": sets, "seeds": seeds,
            "dev_f1": [100 * runs[s]["dev_f1"] for s in seeds], "test_f1": [100 * runs[s]["test_f1"] for s in seeds],
            # paired by seed: the lever against the default CoTPD (dev: what chooses) and the baseline
            "dev_vs_cotpd": [100 * (runs[s]["dev_f1"] - main["cotpd"][s]["dev_f1"]) for s in seeds if s in main["cotpd"]],
            "dev_vs_baseline": [100 * (runs[s]["dev_f1"] - main["baseline"][s]["dev_f1"]) for s in seeds if s in main["baseline"]],
            "test_vs_baseline": [100 * (runs[s]["test_f1"] - main["baseline"][s]["test_f1"])
                                 for s in seeds if s in main["baseline"]],
            "seconds": statistics.fmean(secs) if secs else None,
            "cost_vs_cotpd": _cost({s: _own_s(runs[s]) for s in seeds}, ref_s),
            "cost_with_teacher": _cost({s: _with_teacher_s(runs[s], know.get(s)) for s in seeds}, ref_s) if know else None})
    return out


def write(records: list[dict], out: Path, command: str, commit: str, mode_line: str, notes: Path | None = None,
          bench_out: str | None = None) -> Path:
    """<out>/README.md (a table per dataset) and <out>/results.json (the rows and the raw records);
    `bench_out`: the --out whose records these are."""
    datasets = sorted({r["dataset"] for r in records if r.get("group") == "levers"})
    table = [row for ds in datasets for row in rows(records, ds)]
    L = ["# Levers for a bigger distillation gain, chosen on dev", "",
         f"- command: `{command}` (one lever: add `--levers NAME`; each row's `--set` also works on "
         "`cotpd train` and `cotpd bench --full`)",
         f"- git commit of this report: `{commit}`; trainings by commit: "
         + ", ".join(f"`{c}`" for c in sorted({str(r.get('git_commit')) for r in records if r.get("group") in ("main", "levers")
                                              and r["dataset"] in datasets})),
         f"- setting: {mode_line}",
         "- a lever is trained as CoTPD at every seed beside the default CoTPD, the baseline and the knowledge "
         "view on the same subset; gains are paired by seed. **Choose on the dev columns**; test is reported once.",
         f"- cost: training seconds against the default CoTPD's at the same seeds (×{COST_FLAG:g} or more is flagged)", ""]
    for ds in datasets:
        L += [f"## {ds}", "", "| Configuration | `--set` | Seeds | Dev F1 | Δ dev vs CoTPD | Δ dev vs baseline "
              "| Test F1 | Δ test vs baseline | Train s/run | Cost vs CoTPD |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in table if r["dataset"] == ds):
            cost = "n/a" if r["cost_vs_cotpd"] is None else f"×{r['cost_vs_cotpd']:.2f}" + (
                " **(≥ ×2: doubles the cost)**" if r["cost_vs_cotpd"] >= COST_FLAG else "")
            if r.get("cost_with_teacher") is not None:
                cost += f"; ×{r['cost_with_teacher']:.2f} with its teacher's training" + (
                    " **(≥ ×2)**" if r["cost_with_teacher"] >= COST_FLAG else "")
            sets = " ".join(f"`--set {s}`" for s in r["set"]) or "params.yaml"
            secs = "n/a" if r["seconds"] is None else f"{r['seconds']:.0f}"
            L.append(f"| {r['config']} | {sets} | {len(r['seeds'])} | {pm(r['dev_f1'], 1)} | {signed(r['dev_vs_cotpd'], 1)} "
                     f"| {signed(r['dev_vs_baseline'], 1)} | {pm(r['test_f1'], 1)} | {signed(r['test_vs_baseline'], 1)} "
                     f"| {secs} | {cost} |")
        L.append("")
    if notes is not None and notes.exists():  # hand-written rows of levers measured elsewhere (their commands inside)
        L += [notes.read_text(encoding="utf-8").rstrip(), ""]
    out.mkdir(parents=True, exist_ok=True)
    runs = [r for r in records if r.get("group") in ("main", "levers") and r["dataset"] in datasets]
    write_json(out / "results.json", {"bench_out": bench_out, "rows": table, "runs": runs})
    (out / "README.md").write_text("\n".join(L), encoding="utf-8")
    return out / "README.md"
