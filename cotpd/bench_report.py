"""The speed section and the written report of `cotpd bench` (results/README.md, results.json, plots)."""
from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .io import atomic_write, write_json
from .pipeline import VARIANTS

log = logging.getLogger("cotpd.bench")

# published test scores (entity-level / micro F1), XLM-R-large-style students on GPU, full data
ANCHORS = {
    "ner": ("Twitter-2015", [("UMT", 73.41), ("ITA", 78.03), ("MoRe", 77.79), ("PGIM", 79.33)]),
    "re": ("MNRE", [("MEGA", 66.41), ("IFAformer", 81.67), ("I2SRM", 84.12)]),
}
# measured on this kind of machine (shared/data/README.md): all-MiniLM-L6-v2, 2 CPU cores, one seed
LOCAL_REFERENCE = {"twitter2015": [("MiniLM text only, 4 epochs", 70.4), ("MiniLM + caption + ChatGPT knowledge, 3 epochs", 72.1)]}
INPUT = {"baseline": "text", "knowledge": "text + caption + CoT (knowledge view)",
         "cotpd": "text only (prompt view)"}


def _input(b, ds: str, variant: str) -> str:
    """The inference input of a row; a knowledge view without CoT (MNRE: captions only) says so."""
    if variant == "knowledge" and not b.grains.get(ds):
        return "text + caption (knowledge view, no CoT)"
    return INPUT[variant]


# --- speed -------------------------------------------------------------------------------------------
def speed(bench, cfg: dict) -> dict:
    """Training loop vs a bare PyTorch loop, text-only inference, LLM client, `dvc repro` no-op."""
    out: dict = {}
    t0 = time.perf_counter()
    out["train"] = _train_speed(bench, cfg)
    out["inference"] = _inference_speed(bench, cfg)
    out["llm"] = _llm_speed(cfg.get("llm") or {})
    out["dvc"] = _dvc_noop(bench.root) if cfg.get("dvc") else {"skipped": "not in this mode"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _train_speed(bench, cfg: dict) -> dict:
    """Our `train()` for one epoch vs `bare_loop_throughput` (forward/backward/AdamW only) on the same
    samples, batch size and seed, hence the same bucketed batches: the overhead of our loop."""
    from .model.corpus import load_corpus
    from .model.student import build_student
    from .train import bare_loop_throughput, resolve_device, train

    ds = bench.datasets[0]
    corpus = load_corpus(ds, bench.work, copy.deepcopy(bench.params))
    tp = {**corpus.dparams["train"], "epochs": 1}
    device = resolve_device(tp.get("device", "auto"))
    bs, steps = int(tp["batch_size"]), int(cfg["bare_steps"])
    samples = corpus.train[: bs * steps]
    res = {"dataset": ds, "steps": steps, "batch_size": bs, "device": str(device)}

    def bare(variant: str, n_steps: int | None) -> float:
        model = build_student(tp["encoder"], corpus.task, corpus.labels, variant, tp).to(device)
        return bare_loop_throughput(model, samples, bs, n_steps, lr=float(tp["lr"]), seed=0, bf16=bool(tp.get("bf16", True)))

    bare("baseline", 2)  # warm-up (allocator, kernels), not reported
    for variant in ("baseline", "cotpd"):
        row = {"bare_loop_tokens_per_s": bare(variant, None)}
        with tempfile.TemporaryDirectory() as tmp:
            r = train(samples, samples[:bs], task=corpus.task, labels=corpus.labels, variant=variant, tparams=tp,
                      model_dir=tmp, seed=0, progress=False)
        row["our_loop_tokens_per_s"] = r.train_tokens_per_s
        row["ratio"] = row["our_loop_tokens_per_s"] / row["bare_loop_tokens_per_s"]
        main = [x for x in bench.records if (x["dataset"], x["variant"], x["group"]) == (ds, variant, "main")]
        if main:
            row["training_run_tokens_per_s"] = main[0]["train_tokens_per_s"]
        res[variant] = row
    return res


def _inference_speed(bench, cfg: dict) -> dict:
    from .model.corpus import load_split
    from .model.infer import predict
    from .model.student import load_student
    from .records import NerSample

    res = {}
    for rec in bench.records:
        # only seed-0 main runs keep their model (bench.run_one); Path("") would be the cwd, so test first
        if rec["group"] != "main" or rec["variant"] == "knowledge" or not rec.get("model_dir") \
                or not Path(rec["model_dir"]).is_dir():
            continue
        test = load_split(rec["dataset"], bench.work, bench.params, "test")[: int(cfg["infer_n"])]
        for s in test:  # text only: what a deployed model receives
            s.caption, s.knowledge = None, {}
        model = load_student(rec["model_dir"])
        predict(model, test[:8], "prompt", 32)  # warm-up
        t0 = time.perf_counter()
        predict(model, test, "prompt", 32)
        secs = time.perf_counter() - t0
        n_tok = sum(len(s.tokens) for s in test if isinstance(s, NerSample)) or sum(len(s.tokens) for s in test)
        res[f"{rec['dataset']}/{rec['variant']}"] = {"sentences": len(test), "seconds": round(secs, 3),
                                                     "sentences_per_s": len(test) / secs, "words_per_s": n_tok / secs}
        del model
    return res


def _llm_speed(cfg: dict) -> dict:
    try:
        from .llm import bench as llm_bench
    except ImportError as exc:
        return {"skipped": f"cotpd.llm.bench not available ({exc})"}
    r = llm_bench.bench(cfg.get("calls", 1000), cfg.get("concurrency", 32), cfg.get("latency", 0.2),
                        cfg.get("seq_calls", 30), cfg.get("replay_n", 20000))
    r["table"] = llm_bench.render(r)
    return r


def _dvc_noop(root: Path) -> dict:
    if not (root / "dvc.yaml").exists():
        return {"skipped": f"no dvc.yaml in {root}"}
    bindir = Path(sys.executable).parent
    dvc = bindir / "dvc"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    runs = []
    for attempt in ("first (may build)", "second (no-op)"):
        t0 = time.perf_counter()
        p = subprocess.run([str(dvc if dvc.exists() else "dvc"), "repro"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=3600)
        runs.append({"run": attempt, "seconds": round(time.perf_counter() - t0, 2), "rc": p.returncode,
                     "tail": (p.stdout + p.stderr)[-600:]})
        if p.returncode != 0:
            break
    ok = len(runs) == 2 and runs[1]["rc"] == 0
    return {"runs": runs, "noop_seconds": runs[1]["seconds"] if ok else None}


# --- report ----------------------------------------------------------------------------------------
def hardware() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "device": f"cuda ({gpu})" if gpu else "cpu", "python": platform.python_version(),
            "platform": platform.platform()}


def machine_label() -> str:
    """What a training ran on, kept in its record: throughput is only comparable on the same machine."""
    hw = hardware()
    return f"{hw['cpu']}, {hw['torch_threads']} thread(s), {hw['device']}"


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed, which `pm` prints without a ±)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs: list, scale: float = 100.0) -> str:
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "n/a"
    m, s = mean_std(xs)
    # one seed has no spread: "74.20 ± 0.00" would read as three seeds that agreed exactly
    return f"{m:.2f} ± {s:.2f}" if len(xs) > 1 else f"{m:.2f}"


def _rows(records: list[dict], **match) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def _set_label(over: dict | None, prefix: str = "") -> str:
    """{"train": {"epochs": 6}} -> "train.epochs=6"; none -> "none" (params.yaml as committed)."""
    items = []
    for k, v in sorted((over or {}).items()):
        items += [_set_label(v, f"{prefix}{k}.")] if isinstance(v, dict) else [f"{prefix}{k}={v}"]
    joined = ", ".join(i for i in items if i)  # an empty section ({"train": {}}) adds nothing
    return joined or ("" if prefix else "none")


def _mode_line(b) -> str:
    cfg = b.cfg
    parts = [f"{b.seeds} seed(s) for the main grid; data-efficiency and ablation runs use the first seed"]
    if cfg["train"]:
        parts.append("train overrides " + ", ".join(f"{k}={v}" for k, v in cfg["train"].items()))
    for ds, over in (cfg.get("train_by_dataset") or {}).items():
        parts.append(f"{ds}: " + ", ".join(f"{k}={v}" for k, v in over.items()))
    for ds, f in (cfg.get("base_fraction") or {}).items():
        parts.append(f"{ds}: training on a {f:.0%} random subset of its train split (data fractions are of that subset)")
    parts.append("dev and test sets are complete")
    return "; ".join(parts)


def commit_label(root: Path, out: Path | None = None) -> str:
    """HEAD, marked when tracked files differ from it (a number from uncommitted code says so). The
    report folder `out` does not count: an earlier invocation's report is not a change of code."""
    from .tracking import git_commit

    cmd = ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]
    if out is not None and Path(out).resolve().is_relative_to(Path(root).resolve()):
        cmd += ["--", ".", f":(exclude){Path(out).resolve().relative_to(Path(root).resolve())}"]
    dirty = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    return git_commit(root) + (" (with uncommitted changes)" if dirty else "")


def short_commit(label: str) -> str:
    """A commit label with its hash cut to 12 digits and its "(with uncommitted changes)" mark kept."""
    sha, _, mark = label.partition(" ")
    return f"{sha[:12]} {mark}" if mark else sha[:12]


def write(b, argv: list[str]) -> Path:
    from . import plots

    out = b.out
    out.mkdir(parents=True, exist_ok=True)
    recs, hw = b.records, hardware()
    commit = commit_label(b.root, b.out)
    command = "cotpd bench " + " ".join(argv)
    by_commit = Counter(r.get("git_commit") or "unknown" for r in recs)
    by_machine = Counter(r.get("hardware") or "not recorded" for r in recs)
    by_set = Counter(_set_label(r.get("overrides")) for r in recs)
    reused = len(getattr(b, "reused", []))
    train_min = sum(r.get("seconds") or 0 for r in recs) / 60
    L = [f"# cotpd benchmark results ({b.mode} mode)", ""]
    if b.mode != "full":
        L += [f"**{b.mode.upper()} MODE — reduced grid, not comparable to full-data numbers:** {_mode_line(b)}.", ""]
    L += [f"- command: `{command}`", f"- git commit: `{commit}`",
          f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
          f"- wall time: {b.wall_s / 60:.1f} min this invocation ({len(recs) - reused} trainings, "
          f"{reused} reused from earlier invocations, {len(b.skipped)} skipped); "
          f"{train_min:.1f} min of training behind the reported runs",
          "- trainings by commit: " + ", ".join(f"`{short_commit(c)}` ({n})" for c, n in by_commit.most_common()),
          "- trainings by `--set` overrides of params.yaml: " + ", ".join(f"{o} ({n})" for o, n in by_set.most_common()),
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
          "| Dataset | Model | Inference input | Test F1 | Precision | Recall | Dev F1 | Seeds | Train tokens/s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for ds in b.datasets:
        for v in VARIANTS:
            rs = _rows(recs, dataset=ds, variant=v, group="main")
            if rs:
                tok = statistics.fmean(r["train_tokens_per_s"] for r in rs)
                L.append(f"| {ds} | {v} | {_input(b, ds, v)} | {pm([r['test_f1'] for r in rs])} | "
                         f"{pm([r['test_precision'] for r in rs])} | {pm([r['test_recall'] for r in rs])} | "
                         f"{pm([r['dev_f1'] for r in rs])} | {len(rs)} | {tok:.0f} |")
    L += _gains(b, recs)
    L += ["", "Scores reported by others on the Twitter-2015 / MNRE test sets (larger students, GPU, full data), "
          "and local reference points:", "", "| Benchmark | Method | Test F1 (reported) |", "|---|---|---|"]
    for task in sorted({b.params["datasets"][ds]["task"] for ds in b.datasets}):
        bench_name, anchors = ANCHORS[task]
        L += [f"| {bench_name} | {name} | {f1:.2f} |" for name, f1 in anchors]
    for ds in b.datasets:
        L += [f"| {ds} | {name} (shared/data/README.md) | {f1:.1f} |" for name, f1 in LOCAL_REFERENCE.get(ds, [])]
    L += _fractions(b, recs, out, plots) + _ablations(b, recs) + _per_type(b, recs, out, plots)
    L += _speed_lines(getattr(b, "speed", None))
    not_selected, elsewhere = getattr(b, "not_selected", []), getattr(b, "elsewhere", [])
    if b.notes or b.skipped or not_selected or elsewhere:
        L += ["", "## Notes and skipped runs", ""] + [f"- {n}" for n in b.notes] + [f"- skipped: {s}" for s in b.skipped]
        if not_selected:
            L.append(f"- not run yet (outside --variants/--groups, no saved result): {len(not_selected)} trainings: "
                     + ", ".join(not_selected))
        if elsewhere:
            L.append(f"- being trained by another invocation sharing this folder: {', '.join(elsewhere)}")
    with atomic_write(out / "README.md") as fh:
        fh.write("\n".join(L) + "\n")
    write_json(out / "results.json", {"mode": b.mode, "command": command, "git_commit": commit, "hardware": hw,
                                      "wall_s": b.wall_s, "runs": recs, "skipped": b.skipped, "notes": b.notes,
                                      "reused": getattr(b, "reused", []), "not_run": not_selected,
                                      "elsewhere": elsewhere,
                                      "speed": getattr(b, "speed", None)})
    return out / "README.md"


def _gains(b, recs) -> list[str]:
    """Test-F1 gain of each variant over the baseline of the same seed (paired, so seed noise that
    moves both runs cancels), mean ± sample std over the seeds that have both."""
    L = []
    for ds in b.datasets:
        base = {r["seed"]: r["test_f1"] for r in _rows(recs, dataset=ds, variant="baseline", group="main")}
        for v in [v for v in VARIANTS if v != "baseline"]:
            diffs = [r["test_f1"] - base[r["seed"]] for r in _rows(recs, dataset=ds, variant=v, group="main")
                     if r["seed"] in base and r["test_f1"] is not None and base[r["seed"]] is not None]
            if diffs:
                sign = "+" if statistics.fmean(diffs) >= 0 else ""
                L.append(f"- {ds}: {v} − baseline, paired by seed: {sign}{pm(diffs)} test F1 ({len(diffs)} seed(s))")
    return ["", "Gain over the text-only baseline:", ""] + L if L else []


def _fractions(b, recs, out: Path, plots) -> list[str]:
    L, seed0 = [], int(b.params.get("seed", 13))
    for ds in b.datasets:
        fr = _rows(recs, dataset=ds, group="fraction")
        if not fr:
            continue
        series: dict[str, list] = {}
        for v in ("baseline", "cotpd"):
            pts = [(r["fraction"], r["test_f1"] * 100, 0.0) for r in _rows(fr, variant=v)]
            pts += [(1.0, r["test_f1"] * 100, 0.0) for r in _rows(recs, dataset=ds, variant=v, group="main", seed=seed0)]
            series[v] = sorted(pts)
        png = out / f"f1_vs_data_fraction_{ds}.png"
        plots.save(plots.f1_vs_fraction(series, title=f"{ds}: test F1 vs training data"), png)
        L += ["", f"## Data efficiency: {ds} (seed {seed0})", "", "| Train data | baseline F1 | cotpd F1 |", "|---|---|---|"]
        fracs = sorted({p[0] for pts in series.values() for p in pts})
        for f in fracs:
            cell = {v: next((f"{p[1]:.2f}" for p in series[v] if p[0] == f), "n/a") for v in series}
            L.append(f"| {f:.0%} | {cell['baseline']} | {cell['cotpd']} |")
        L += ["", f"![F1 vs data fraction]({png.name})"]
    return L


def _ablations(b, recs) -> list[str]:
    ab = [r for r in recs if r["group"] == "ablation"]
    if not ab:
        return []
    L = ["", "## Ablations (cotpd, first seed)", "", "| Dataset | Ablation | Test F1 | Δ vs full cotpd |", "|---|---|---|---|"]
    for r in ab:
        ref = _rows(recs, dataset=r["dataset"], variant="cotpd", group="main", seed=r["seed"])
        delta = f"{(r['test_f1'] - ref[0]['test_f1']) * 100:+.2f}" if ref else "n/a"
        L.append(f"| {r['dataset']} | {r['label']} | {r['test_f1'] * 100:.2f} | {delta} |")
    return L


def _per_type(b, recs, out: Path, plots) -> list[str]:
    L = []
    for ds in b.datasets:
        series = {}
        for v in VARIANTS:
            rs = _rows(recs, dataset=ds, variant=v, group="main")
            types = sorted({t for r in rs for t in r["per_type"]})
            if rs and types:
                series[v] = {t: statistics.fmean(r["per_type"].get(t, {}).get("f1", 0.0) for r in rs) for t in types}
        if series:
            png = out / f"per_type_f1_{ds}.png"
            plots.save(plots.per_type_f1(series, title=f"{ds}: per-type test F1 (mean over seeds)"), png)
            L += ["", f"## Per-type F1: {ds}", "", f"![per-type F1]({png.name})"]
    return L


def _speed_lines(sp: dict | None) -> list[str]:
    if not sp:
        return ["", "## Speed", "", "skipped (--no-speed)"]
    L = ["", "## Speed", ""]
    tr = sp.get("train") or {}
    if tr:
        L += [f"Training throughput on {tr['dataset']} ({tr['steps']} steps of batch {tr['batch_size']}, {tr['device']}):",
              "", "| Variant | bare PyTorch loop tokens/s | our train(), same batches | ratio | whole training run |",
              "|---|---|---|---|---|"]
        for v in ("baseline", "cotpd"):
            r = tr.get(v) or {}
            if r:
                run = f"{r['training_run_tokens_per_s']:.0f}" if "training_run_tokens_per_s" in r else "n/a"
                L.append(f"| {v} | {r['bare_loop_tokens_per_s']:.0f} | {r['our_loop_tokens_per_s']:.0f} | "
                         f"{r['ratio']:.2f} | {run} |")
    inf = sp.get("inference") or {}
    if inf:
        L += ["", "Inference, text only (batch 32, after a warm-up):", "",
              "| Dataset/model | sentences | sentences/s | words/s |", "|---|---|---|---|"]
        L += [f"| {k} | {r['sentences']} | {r['sentences_per_s']:.1f} | {r['words_per_s']:.0f} |" for k, r in inf.items()]
    llm = sp.get("llm") or {}
    L += ["", "LLM stage client against the local OpenAI-compatible test server (`cotpd bench-llm`):", ""]
    L += ["```", llm["table"], "```"] if "table" in llm else [f"skipped: {llm.get('skipped')}"]
    dvc = sp.get("dvc") or {}
    if dvc.get("noop_seconds") is not None:
        L += ["", f"`dvc repro` with nothing changed: {dvc['noop_seconds']:.1f} s "
              f"(first run {dvc['runs'][0]['seconds']:.1f} s)."]
    else:
        L += ["", f"`dvc repro` no-op: {dvc.get('skipped') or 'failed: ' + str((dvc.get('runs') or [{}])[-1].get('tail'))}"]
    return L
