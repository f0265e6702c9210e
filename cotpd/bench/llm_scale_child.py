"""The client process of `cotpd bench-llm-scale` (cotpd/bench/llm_scale.py), one per run:

    python -m cotpd.bench.llm_scale_child setup  --root R --dataset D ... --out JSON
    python -m cotpd.bench.llm_scale_child record --root R --dataset D ... --out JSON
    python -m cotpd.bench.llm_scale_child replay --root R --dataset D ... --out JSON

`setup` runs the prepare and captions stages into R (untimed), `record` runs the knowledge stage
(cotpd.stages.knowledge, as `cotpd knowledge` does) per dataset with R/params.yaml's `llm` section,
and `replay` loads each knowledge ledger and answers the stage's requests from it with llm.mode
replay (the load's time and memory apart from the look-ups). A separate process because the
benchmark SIGKILLs it and reads its peak RSS from wait4(); its JSON is written only on success.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from ..errors import CotpdError
from ..io import write_json
from ..knowledge import generate
from ..llm import LLMRunner, Ledger
from ..params import Layout, dataset_params, load_params
from ..pipeline import run_stage

STAGE = "knowledge"


def rss_mb() -> float:
    """The resident set size now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise CotpdError("/proc/self/status has no VmRSS line")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def no_backend():
    raise CotpdError("replay asked for a backend: a request missed the ledger")


def record(root: Path, datasets: list[str], sets: list[str]) -> dict:
    params = load_params(root, sets=sets)
    out: dict = {"t_start": time.time(), "datasets": {}}
    for ds in datasets:
        t0 = time.perf_counter()
        summary = run_stage(STAGE, ds, root, params)
        out["datasets"][ds] = {"seconds": round(time.perf_counter() - t0, 3), "records": summary["records"],
                               "llm": summary.get("llm", {}),
                               "multimodal_skipped": summary["multimodal_skipped_no_caption"]}
    out.update(t_end=time.time(), rss_end_mb=round(rss_mb(), 1), peak_rss_mb=round(peak_rss_mb(), 1))
    return out


def replay(root: Path, datasets: list[str], sets: list[str]) -> dict:
    params = load_params(root, sets=[*sets, "llm.mode=replay"])
    out: dict = {"datasets": {}}
    for ds in datasets:
        dp = dataset_params(params, ds)
        path = Layout(root, ds).ledger_for(STAGE)
        rss0, t0 = rss_mb(), time.perf_counter()
        ledger = Ledger(path)
        t_load, rss1 = time.perf_counter() - t0, rss_mb()
        runner = LLMRunner(ledger, no_backend, mode="replay", progress=False)
        t1 = time.perf_counter()
        result = generate(dp, root, llm=runner)
        t_answer = time.perf_counter() - t1
        st = runner.stats(STAGE)
        out["datasets"][ds] = {
            "answers": len(ledger), "ledger_bytes": path.stat().st_size, "load_s": round(t_load, 3),
            "answer_s": round(t_answer, 3), "total_s": round(t_load + t_answer, 3),
            "rss_before_load_mb": round(rss0, 1), "rss_after_load_mb": round(rss1, 1),
            "records": len(result.records), "calls": st["calls"], "cache_hits": st["cache_hits"]}
        del runner, ledger, result
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def setup(root: Path, datasets: list[str], sets: list[str]) -> dict:
    params = load_params(root, sets=sets)
    return {ds: {name: run_stage(name, ds, root, params).get("seconds") for name in ("prepare", "captions")}
            for ds in datasets}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cotpd.bench.llm_scale_child", description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["setup", "record", "replay"])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--dataset", action="append", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    fn = {"setup": setup, "record": record, "replay": replay}[args.what]
    write_json(args.out, fn(args.root.resolve(), args.dataset, args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
