"""The speed section of `cotpd bench`: our training loop against a bare PyTorch loop on the same
batches, text-only inference, the LLM client against the fake server, a `dvc repro` no-op; and the
hardware label every training record carries."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..model.infer import predict
from ..model.student import load_student
from ..records import NerSample
from ..training.corpus import load_corpus, load_split
from ..training.loop import resolve_device
from . import llm as llm_bench
from .spec import LLMLoad, SpeedPlan
from .student import throughput_comparison


def measure_speed(plan: SpeedPlan, root: Path, work: Path, params: dict, dataset: str, records: list[dict]) -> dict:
    """The section's numbers: training on `dataset`, inference of the kept models of `records`."""
    out: dict = {}
    t0 = time.perf_counter()
    out["train"] = _train_speed(plan, work, params, dataset, records)
    out["inference"] = _inference_speed(plan, root, work, params, records)
    out["llm"] = _llm_speed(plan.llm)
    out["dvc"] = _dvc_noop(root) if plan.dvc else {"skipped": "not in this mode"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _train_speed(plan: SpeedPlan, work: Path, params: dict, ds: str, records: list[dict]) -> dict:
    """Our `train()` for one epoch vs a bare loop (forward/backward/AdamW only) on the same samples,
    batch size and seed, hence the same bucketed batches: the overhead of our loop."""
    corpus = load_corpus(ds, work, params)
    cfg = corpus.dparams.train
    samples = corpus.train[: cfg.batch_size * plan.bare_steps]
    res = {"dataset": ds, "steps": plan.bare_steps, "batch_size": cfg.batch_size,
           "device": str(resolve_device(cfg.device))}
    for variant in ("baseline", "cotpd"):
        c = throughput_comparison(samples, corpus.task, corpus.labels, variant, cfg, seed=0)
        row = {"bare_loop_tokens_per_s": c["bare_tokens_per_s"], "our_loop_tokens_per_s": c["ours_tokens_per_s"],
               "ratio": c["ratio"]}
        main = [x for x in records if (x["dataset"], x["variant"], x["group"]) == (ds, variant, "main")]
        if main:
            row["training_run_tokens_per_s"] = main[0]["train_tokens_per_s"]
        res[variant] = row
    return res


def _inference_speed(plan: SpeedPlan, root: Path, work: Path, params: dict, records: list[dict]) -> dict:
    """Text-only prediction speed of each kept student (batch 32, after a warm-up); a record names its
    model relative to the project `root` (cotpd.io.shown), an older one by its absolute path."""
    res = {}
    for rec in records:
        # only the first seed's main runs keep their model (Bench.run_one); Path("") would be the cwd, so test first
        if rec["group"] != "main" or rec["variant"] == "knowledge" or not rec.get("model_dir") \
                or not (root / rec["model_dir"]).is_dir():
            continue
        test = load_split(rec["dataset"], work, params, "test")[: plan.infer_n]
        for s in test:  # text only: what a deployed model receives
            s.caption, s.knowledge = None, {}
        model = load_student(root / rec["model_dir"])
        predict(model, test[:8], "prompt", 32)  # warm-up
        t0 = time.perf_counter()
        predict(model, test, "prompt", 32)
        secs = time.perf_counter() - t0
        n_tok = sum(len(s.tokens) for s in test if isinstance(s, NerSample)) or sum(len(s.tokens) for s in test)
        res[f"{rec['dataset']}/{rec['variant']}"] = {"sentences": len(test), "seconds": round(secs, 3),
                                                     "sentences_per_s": len(test) / secs, "words_per_s": n_tok / secs}
        del model
    return res


def _llm_speed(load: LLMLoad) -> dict:
    r = llm_bench.bench(load.calls, load.concurrency, load.latency, load.seq_calls, load.replay_n)
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


def hardware() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # no /proc (not Linux): platform's name stands
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


def speed_lines(sp: dict | None) -> list[str]:
    """The report's speed section from `measure_speed`'s numbers (None: --no-speed)."""
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
    L += ["", "LLM stage client against the local OpenAI-compatible test server (`cotpd bench-llm`):", "",
          "```", sp["llm"]["table"], "```"]
    dvc = sp.get("dvc") or {}
    if dvc.get("noop_seconds") is not None:
        L += ["", f"`dvc repro` with nothing changed: {dvc['noop_seconds']:.1f} s "
              f"(first run {dvc['runs'][0]['seconds']:.1f} s)."]
    else:
        L += ["", f"`dvc repro` no-op: {dvc.get('skipped') or 'failed: ' + str((dvc.get('runs') or [{}])[-1].get('tail'))}"]
    return L
