"""The data-efficiency report (the paper's low-resource claim): F1 against the fraction of training data.

Reads bench records (the `fraction` group at 10/25/50% and the main grid as the 100% point), and
writes <out>/README.md (a table per dataset: mean ± std per variant, and the CoTPD − baseline gain
paired by seed), <out>/f1_vs_data_fraction.png (one panel per dataset) and <out>/results.json (one
record per training). Every variant of a (fraction, seed) trained on the same subset: the subset is
drawn from the training seed (cotpd.training.corpus.subset).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from .. import plots
from .stats import mean_std, signed
from ..io import atomic_write, write_json

VARIANTS = ("baseline", "knowledge", "cotpd")
LABELS = {"baseline": "baseline (text)", "knowledge": "knowledge view", "cotpd": "CoTPD (text only)"}
FIELDS = ("dataset", "variant", "seed", "fraction", "dev_f1", "test_f1", "git_commit", "seconds", "n_train",
          "config_hash")


def efficiency_records(records: Iterable[dict]) -> list[dict]:
    """The records of the curve: fraction trainings and the main grid (fraction 1.0), trimmed to FIELDS."""
    out = []
    for r in records:
        if r.get("group") not in ("fraction", "main") or r.get("test_f1") is None:
            continue
        rec = {k: r.get(k) for k in FIELDS}
        rec["fraction"] = float(r.get("fraction") or 1.0)
        out.append(rec)
    return sorted(out, key=lambda r: (r["dataset"], r["fraction"], VARIANTS.index(r["variant"]), r["seed"]))


def fmt(xs: Sequence[float]) -> str:
    """`74.22 ± 0.08 (3)` in percent; one value alone; an empty cell as a dash."""
    if not xs:
        return "–"
    m, s = mean_std([100 * x for x in xs])
    return f"{m:.2f}" + (f" ± {s:.2f}" if len(xs) > 1 else "") + f" ({len(xs)})"


def paired_gain(recs: list[dict], key: str = "test_f1") -> list[float]:
    """CoTPD − baseline per seed trained at both (a seed missing either is left out)."""
    by = {(r["variant"], r["seed"]): r[key] for r in recs if r.get(key) is not None}
    return [by[("cotpd", s)] - by[("baseline", s)] for v, s in by if v == "cotpd" and ("baseline", s) in by]


def table(recs: list[dict], dataset: str) -> list[str]:
    rows = [r for r in recs if r["dataset"] == dataset]
    lines = [f"### {dataset}", "",
             "| training data | baseline | knowledge view | CoTPD (text only) | CoTPD − baseline (paired) | dev F1: baseline / CoTPD |",
             "|---|---|---|---|---|---|"]
    for frac in sorted({r["fraction"] for r in rows}):
        at = [r for r in rows if r["fraction"] == frac]
        test = {v: [r["test_f1"] for r in at if r["variant"] == v] for v in VARIANTS}
        dev = {v: [r["dev_f1"] for r in at if r["variant"] == v and r["dev_f1"] is not None] for v in VARIANTS}
        gain = paired_gain(at)
        n = len(gain)
        gain_s = signed(gain, empty="–") + (f" ({n} {'seed' if n == 1 else 'seeds'})" if gain else "")
        lines.append(f"| {frac:.0%} | {fmt(test['baseline'])} | {fmt(test['knowledge'])} | {fmt(test['cotpd'])} "
                     f"| {gain_s} | {fmt(dev['baseline'])} / {fmt(dev['cotpd'])} |")
    return lines + [""]


def write(records: Iterable[dict], out: Path, command: str, bench_out: str | None = None,
          banner: Sequence[str] = ()) -> Path:
    """Write the report; returns the README path. `bench_out`: the --out whose records these are;
    `banner`: a reduced mode's lines (cotpd.bench.report.banner), which change params.yaml's schedule."""
    recs = efficiency_records(records)
    out.mkdir(parents=True, exist_ok=True)
    datasets = sorted({r["dataset"] for r in recs})
    panels = {}
    for ds in datasets:
        series = {}
        for v in ("baseline", "cotpd", "knowledge"):
            pts = []
            for frac in sorted({r["fraction"] for r in recs if r["dataset"] == ds and r["variant"] == v}):
                xs = [100 * r["test_f1"] for r in recs if (r["dataset"], r["variant"], r["fraction"]) == (ds, v, frac)]
                pts.append((frac, *mean_std(xs)))
            if pts:
                series[LABELS[v]] = pts
        panels[ds] = series
    png = out / "f1_vs_data_fraction.png"
    if panels:
        plots.save(plots.f1_vs_fraction_panels(panels), png)
    # a full hash is cut to 7 characters; a label such as "abc1234 (with uncommitted changes)" is kept
    commits = sorted({c if " " in c else c[:7] for c in (str(r["git_commit"]) for r in recs)})
    lines = ["# Data efficiency: test F1 against the fraction of training data", "", *banner,
             "Each cell: mean ± std of test F1 (%) over seeds (the count in brackets). The 100% row is the main "
             "grid. A (fraction, seed) is one seeded subset of the training split, shared by every variant; dev "
             f"and test sets are whole. Schedule: params.yaml's{', changed as above' if banner else ''}. The gain "
             "is CoTPD − baseline paired by seed.", "",
             f"Command: `{command}`", "", f"Trainings: {len(recs)}, at commit(s) {', '.join(commits) or '–'}.", ""]
    for ds in datasets:
        lines += table(recs, ds)
    if panels:
        lines += [f"![F1 against training data]({png.name})", ""]
    write_json(out / "results.json", {"bench_out": bench_out, "runs": recs})
    readme = out / "README.md"
    with atomic_write(readme) as fh:
        fh.write("\n".join(lines))
    return readme
