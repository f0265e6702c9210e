"""The written report of `cotpd bench`: <out>/README.md, <out>/results.json and the plots, from a
`GridResult` (what one invocation found and did)."""
from __future__ import annotations

import datetime as dt
import shlex
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .. import plots
from ..errors import CotpdError
from ..io import atomic_write, read_json, shown, write_json
from ..pipeline import VARIANTS
from ..training.tracking import git_commit
from .args import BenchArgs
from . import efficiency, levers, saved
from .cross import cross_lines
from .spec import Mode
from .stats import mean_std, pm  # noqa: F401 (pm: the tests and callers know it from here)
from .speed import hardware, speed_lines


@dataclass
class GridResult:
    """What one invocation found and did: the whole input of the written report."""
    root: Path
    out: Path
    args: BenchArgs
    mode: Mode
    datasets: list[str]                     # of this invocation
    seeds: int                              # per configuration of the main grid
    base_seed: int                          # params.yaml's seed: the grid's first seed
    tasks: dict[str, str]                   # dataset -> ner | re
    commit: str                             # the code's commit label as the report is written
    records: list[dict] = field(default_factory=list)     # one per reported training
    reused: list[str] = field(default_factory=list)       # saved by an earlier invocation
    skipped: list[str] = field(default_factory=list)      # with the reason
    not_selected: list[str] = field(default_factory=list)  # outside --variants/--groups, none saved
    elsewhere: list[str] = field(default_factory=list)    # claimed by another invocation sharing --out
    notes: list[str] = field(default_factory=list)
    grains: dict[str, list[str]] = field(default_factory=dict)  # CoT grains in each knowledge.jsonl
    speed: dict | None = None
    wall_s: float = 0.0
    champions: dict[str, str] = field(default_factory=dict)  # dataset -> models:/cotpd-<ds>@champion


# published test scores (entity-level / micro F1), XLM-R-large-style students on GPU, full data
ANCHORS = {
    "ner": ("Twitter-2015", [("UMT", 73.41), ("ITA", 78.03), ("MoRe", 77.79), ("PGIM", 79.33)]),
    "re": ("MNRE", [("MEGA", 66.41), ("IFAformer", 81.67), ("I2SRM", 84.12)]),
}
# measured on this kind of machine (shared/data/README.md): all-MiniLM-L6-v2, 2 CPU cores, one seed
LOCAL_REFERENCE = {"twitter2015": [("MiniLM text only, 4 epochs", 70.4), ("MiniLM + caption + ChatGPT knowledge, 3 epochs", 72.1)]}
INPUT = {"baseline": "text", "knowledge": "text + caption + CoT (knowledge view)",
         "cotpd": "text only (prompt view)"}


def _input(res: GridResult, ds: str, variant: str) -> str:
    """The inference input of a row; a knowledge view without CoT (MNRE: captions only) says so."""
    if variant == "knowledge" and not res.grains.get(ds):
        return "text + caption (knowledge view, no CoT)"
    return INPUT[variant]


def _rows(records: list[dict], **match) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _set_label(over: dict | None, prefix: str = "") -> str:
    """{"train": {"epochs": 6}} -> "train.epochs=6"; none -> "none" (params.yaml as committed)."""
    items = []
    for k, v in sorted((over or {}).items()):
        items += [_set_label(v, f"{prefix}{k}.")] if isinstance(v, dict) else [f"{prefix}{k}={v}"]
    joined = ", ".join(i for i in items if i)  # an empty section ({"train": {}}) adds nothing
    return joined or ("" if prefix else "none")


def train_minutes(rs: list[dict]) -> str:
    """Mean minutes per training, as a user pays it: a two-stage CoTPD counts its teacher's training
    (cost_s; records from before it: seconds)."""
    secs = [r.get("cost_s") or r.get("seconds") for r in rs]
    return f"{statistics.fmean(secs) / 60:.0f}" if secs and all(secs) else "n/a"


def banner(res: GridResult) -> list[str]:
    """Heads every report of a reduced grid (its side reports too), so a quick number is never read as a full one."""
    mode = res.args.mode
    return [] if mode == "full" else [f"**{mode.upper()} MODE — reduced grid, not comparable to full-data numbers:** "
                                      f"{mode_line(res)}.", ""]


def mode_line(res: GridResult) -> str:
    mode = res.mode
    parts = [f"{res.seeds} seed(s) for the main grid; data-efficiency and ablation runs use the first seed"]
    if mode.train:
        parts.append("train overrides " + ", ".join(f"{k}={v}" for k, v in mode.train.items()))
    for ds, over in mode.train_by_dataset.items():
        parts.append(f"{ds}: " + ", ".join(f"{k}={v}" for k, v in over.items()))
    for ds, f in mode.base_fraction.items():
        parts.append(f"{ds}: training on a {f:.0%} random subset of its train split (data fractions are of that subset)")
    parts.append("dev and test sets are complete")
    return "; ".join(parts)


def commit_label(root: Path, *reports: Path) -> str:
    """HEAD, marked when tracked files differ from it (a number from uncommitted code says so). The
    report folders (--out and the side reports' folders) do not count: an earlier invocation's report
    is not a change of code."""
    cmd = ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "."]
    base = Path(root).resolve()
    inside = [p for p in (Path(r).resolve() for r in reports) if p.is_relative_to(base) and p != base]
    cmd += [f":(exclude){p.relative_to(base)}" for p in inside]
    dirty = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    return git_commit(root) + (" (with uncommitted changes)" if dirty else "")


def short_commit(label: str) -> str:
    """A commit label with its hash cut to 12 digits and its "(with uncommitted changes)" mark kept."""
    sha, _, mark = label.partition(" ")
    return f"{sha[:12]} {mark}" if mark else sha[:12]


def command_line(argv: list[str]) -> str:
    """The invocation as a shell line a user can paste (a `--set` value with spaces stays one word)."""
    return shlex.join(["cotpd", "bench", *argv])


def write_report(res: GridResult, argv: list[str]) -> Path:
    """<out>/README.md (the tables, beside the literature), results.json and the PNG plots."""
    out, mode = res.out, res.args.mode
    out.mkdir(parents=True, exist_ok=True)
    recs, hw, commit = res.records, hardware(), res.commit
    command = command_line(argv)
    by_commit = Counter(r.get("git_commit") or "unknown" for r in recs)
    by_machine = Counter(r.get("hardware") or "not recorded" for r in recs)
    by_set = Counter(_set_label(r.get("overrides")) for r in recs)
    reused = len(res.reused)
    train_min = sum(r.get("seconds") or 0 for r in recs) / 60
    L = [f"# cotpd benchmark results ({mode} mode)", "", *banner(res)]
    L += [f"- command: `{command}`", f"- git commit: `{commit}`",
          f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
          f"- wall time: {res.wall_s / 60:.1f} min this invocation ({len(recs) - reused} trainings, "
          f"{reused} reused from earlier invocations, {len(res.skipped)} skipped); "
          f"{train_min:.1f} min of training behind the reported runs",
          "- trainings by commit: " + ", ".join(f"`{short_commit(c)}` ({n})" for c, n in by_commit.most_common()),
          "- trainings by `--set` overrides of params.yaml: " + ", ".join(f"{o} ({n})" for o, n in by_set.most_common()),
          *[f"- {saved.spec_of(r).key}: the same training as `{r['adopted_from']}` (--adopt-from)"
            for r in recs if r.get("adopted_from")],
          "- trainings by hardware (tokens/s compare only within one): "
          + ", ".join(f"{m} ({n})" for m, n in by_machine.most_common()),
          f"- hardware of this invocation: {hw['cpu']}, {hw['usable_cores']} usable of {hw['cores']} cores, "
          f"device {hw['device']}, "
          f"torch {hw['torch']} ({hw['torch_threads']} threads, OMP_NUM_THREADS={hw['OMP_NUM_THREADS']}), "
          f"Python {hw['python']}",
          "- metrics: NER entity-level F1 (seqeval strict IOB2), RE micro-F1 over non-None relations; "
          "in percent, mean ± sample std over seeds (a lone value: one seed)",
          "- every training is an MLflow run (`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`); "
          "run ids in results.json", ""]
    L += ["## Main results (test set)", "",
          "| Dataset | Model | Inference input | Test F1 | Precision | Recall | Dev F1 | Seeds | Train tokens/s "
          "| Train min/run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in res.datasets:
        for v in VARIANTS:
            rs = _rows(recs, dataset=ds, variant=v, group="main")
            if rs:
                tok = statistics.fmean(r["train_tokens_per_s"] for r in rs)
                L.append(f"| {ds} | {v} | {_input(res, ds, v)} | {pm([r['test_f1'] for r in rs])} | "
                         f"{pm([r['test_precision'] for r in rs])} | {pm([r['test_recall'] for r in rs])} | "
                         f"{pm([r['dev_f1'] for r in rs])} | {len(rs)} | {tok:.0f} | {train_minutes(rs)} |")
    L += _gains(res)
    L += ["", "Scores reported by others on the Twitter-2015 / MNRE test sets (larger students, GPU, full data), "
          "and local reference points:", "", "| Benchmark | Method | Test F1 (reported) |", "|---|---|---|"]
    for task in sorted({res.tasks[ds] for ds in res.datasets}):
        bench_name, anchors = ANCHORS[task]
        L += [f"| {bench_name} | {name} | {f1:.2f} |" for name, f1 in anchors]
    for ds in res.datasets:
        L += [f"| {ds} | {name} (shared/data/README.md) | {f1:.1f} |" for name, f1 in LOCAL_REFERENCE.get(ds, [])]
    L += _fractions(res) + _ablations(recs) + cross_lines(res) + _per_type(res) + speed_lines(res.speed)
    not_selected, elsewhere = res.not_selected, res.elsewhere
    if res.notes or res.skipped or not_selected or elsewhere:
        L += ["", "## Notes and skipped runs", ""] + [f"- {n}" for n in res.notes] \
            + [f"- skipped: {s}" for s in res.skipped]
        if not_selected:
            L.append(f"- not run yet (outside --variants/--groups, no saved result): {len(not_selected)} trainings: "
                     + ", ".join(not_selected))
        if elsewhere:
            L.append(f"- being trained by another invocation sharing this folder: {', '.join(elsewhere)}")
    with atomic_write(out / "README.md") as fh:
        fh.write("\n".join(L) + "\n")
    write_json(out / "results.json", {"mode": mode, "command": command, "git_commit": commit, "hardware": hw,
                                      "wall_s": res.wall_s, "runs": recs, "skipped": res.skipped, "notes": res.notes,
                                      "reused": res.reused, "not_run": not_selected, "elsewhere": elsewhere,
                                      "speed": res.speed})
    return out / "README.md"


def _gains(res: GridResult) -> list[str]:
    """Test-F1 gain of each variant over the baseline of the same seed (paired, so seed noise that
    moves both runs cancels), mean ± sample std over the seeds that have both."""
    L, recs = [], res.records
    for ds in res.datasets:
        base = {r["seed"]: r["test_f1"] for r in _rows(recs, dataset=ds, variant="baseline", group="main")}
        for v in [v for v in VARIANTS if v != "baseline"]:
            diffs = [r["test_f1"] - base[r["seed"]] for r in _rows(recs, dataset=ds, variant=v, group="main")
                     if r["seed"] in base and r["test_f1"] is not None and base[r["seed"]] is not None]
            if diffs:
                sign = "+" if statistics.fmean(diffs) >= 0 else ""
                L.append(f"- {ds}: {v} − baseline, paired by seed: {sign}{pm(diffs)} test F1 ({len(diffs)} seed(s))")
    return ["", "Gain over the text-only baseline:", ""] + L if L else []


def _fractions(res: GridResult) -> list[str]:
    L, recs, seed0 = [], res.records, res.base_seed
    for ds in res.datasets:
        fr = _rows(recs, dataset=ds, group="fraction")
        if not fr:
            continue
        series: dict[str, list] = {}
        for v in ("baseline", "cotpd"):
            pts = [(r["fraction"], r["test_f1"] * 100, 0.0) for r in _rows(fr, variant=v)]
            pts += [(1.0, r["test_f1"] * 100, 0.0) for r in _rows(recs, dataset=ds, variant=v, group="main", seed=seed0)]
            series[v] = sorted(pts)
        png = res.out / f"f1_vs_data_fraction_{ds}.png"
        plots.save(plots.f1_vs_fraction(series, title=f"{ds}: test F1 vs training data"), png)
        L += ["", f"## Data efficiency: {ds} (seed {seed0})", "", "| Train data | baseline F1 | cotpd F1 |", "|---|---|---|"]
        fracs = sorted({p[0] for pts in series.values() for p in pts})
        for f in fracs:
            cell = {v: next((f"{p[1]:.2f}" for p in series[v] if p[0] == f), "n/a") for v in series}
            L.append(f"| {f:.0%} | {cell['baseline']} | {cell['cotpd']} |")
        L += ["", f"![F1 vs data fraction]({png.name})"]
    return L


def _ablations(recs: list[dict]) -> list[str]:
    ab = [r for r in recs if r["group"] == "ablation"]
    if not ab:
        return []
    L = ["", "## Ablations (cotpd, first seed)", "", "| Dataset | Ablation | Test F1 | Δ vs full cotpd |", "|---|---|---|---|"]
    for r in ab:
        ref = _rows(recs, dataset=r["dataset"], variant="cotpd", group="main", seed=r["seed"])
        delta = f"{(r['test_f1'] - ref[0]['test_f1']) * 100:+.2f}" if ref else "n/a"
        L.append(f"| {r['dataset']} | {r['label']} | {r['test_f1'] * 100:.2f} | {delta} |")
    return L


def _per_type(res: GridResult) -> list[str]:
    L, recs = [], res.records
    for ds in res.datasets:
        series = {}
        for v in VARIANTS:
            rs = _rows(recs, dataset=ds, variant=v, group="main")
            types = sorted({t for r in rs for t in r["per_type"]})
            if rs and types:
                series[v] = {t: statistics.fmean(r["per_type"].get(t, {}).get("f1", 0.0) for r in rs) for t in types}
        if series:
            png = res.out / f"per_type_f1_{ds}.png"
            plots.save(plots.per_type_f1(series, title=f"{ds}: per-type test F1 (mean over seeds)"), png)
            L += ["", f"## Per-type F1: {ds}", "", f"![per-type F1]({png.name})"]
    return L


def _side_out(root: Path, out: Path, path: Path | None, default: str) -> Path:
    """--efficiency-out / --ablations-out (relative to the root), else <out>/<default>."""
    return out / default if path is None else path if path.is_absolute() else root / path


def report_dirs(root: Path, out: Path, args) -> tuple[Path, Path, Path]:
    """Every folder a bench invocation writes its reports to: --out, the efficiency and the levers report."""
    return out, _side_out(root, out, args.efficiency_out, "efficiency"), _side_out(root, out, args.ablations_out, "ablations")


def check_side_out(folder: Path, owner: str, flag: str) -> None:
    """A side report shows the records of one --out only, so another --out writing over it would drop
    them, e.g. `--quick` (--out results) over the full grid's data-efficiency report. Refuse: the trainings
    are saved by then, and the main report is written."""
    report = folder / "results.json"
    prior = read_json(report).get("bench_out") if report.exists() else None
    if prior not in (None, owner):
        raise CotpdError(f"{folder} holds the report of `cotpd bench --out {prior}`, not of --out {owner}: "
                         f"not overwritten; give {flag} a folder of its own (add --report-only to write it without training)")


def write_side_reports(res: GridResult, command: str) -> None:
    """The data-efficiency report (fraction trainings) and the levers table (issue #19), where the grid has them.
    Their command is the one that trains them: a --report-only rewrite names the training command."""
    command = command.replace(" --report-only", "")
    _, efficiency_out, ablations_out = report_dirs(res.root, res.out, res.args)
    owner = shown(res.out, res.root)
    fraction, lever = (any(r.get("group") == g for r in res.records) for g in ("fraction", "levers"))
    for on, folder, flag in ((fraction, efficiency_out, "--efficiency-out"), (lever, ablations_out, "--ablations-out")):
        if on:  # both checked before either is written
            check_side_out(folder, owner, flag)
    if fraction:
        efficiency.write(res.records, efficiency_out, command, owner, banner(res))
    if lever:
        levers.write(res.records, ablations_out, command, res.commit, mode_line(res), ablations_out / "notes.md", owner)
