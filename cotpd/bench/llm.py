"""`cotpd bench-llm`: throughput of the LLM client against the local fake server, and replay speed.

Starts cotpd_testing.fake_llm on 127.0.0.1 with a fixed latency per call, records N calls at the
configured concurrency into a temporary ledger, compares the wall time with the ideal
N * latency / concurrency, measures a few sequential calls and extrapolates them to N (said so in
the output), and replays a synthetic ledger of 20,000 responses (time and HTTP calls made).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cotpd_testing.fake_llm import ServerProcess

from ..args import common, setup_logging
from ..config import LLMCfg
from ..io import write_json
from ..llm import build_runner, make_request
from ..llm.ledger import Ledger

# the first `import openai` of a process takes 1-2 s here: a one-off start-up cost, not a per-call
# one, so it is paid (and reported) here, before any clock of the benchmark starts
_t_import = time.perf_counter()
import openai  # noqa: E402,F401
OPENAI_IMPORT_S = time.perf_counter() - _t_import


def _requests(llm: LLMCfg, n: int, tag: str) -> list:
    return [make_request(llm, [{"role": "system", "content": "You are a helpful assistant."},
                               {"role": "user", "content": f"{tag}: explain the sentence number {i}."}],
                         "bench:1", f"bench-{i}") for i in range(n)]


def _timed_record(llm: LLMCfg, ledger: Path, reqs: list, **overrides) -> tuple[float, dict]:
    runner = build_runner(llm, ledger, **overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    runner.run(reqs, "bench")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    runner.close()
    return wall, {**runner.stats("bench"), "cpu_s": cpu}


def bench(calls: int = 1000, concurrency: int = 32, latency: float = 0.2, seq_calls: int = 30,
          replay_n: int = 20_000, progress: bool = False) -> dict:
    os.environ.pop("OPENAI_API_KEY", None)  # the loopback server needs none; never send a real one
    srv = ServerProcess(latency=latency)  # its own process: the client gets this interpreter to itself
    # no rate limits and no price: the loopback server is the one being measured against
    llm = LLMCfg(backend="openai", mode="record", base_url=srv.base_url, model="bench-model", concurrency=concurrency,
                 requests_per_minute=1e9, tokens_per_minute=1e12, max_retries=3, timeout_s=30, progress=progress,
                 price_per_1m_input=0.0, price_per_1m_output=0.0)
    out: dict = {"calls": calls, "concurrency": concurrency, "latency_s": latency}
    try:
        with tempfile.TemporaryDirectory(prefix="cotpd-bench-") as tmp:
            tmp = Path(tmp)
            wall, stats = _timed_record(llm, tmp / "concurrent.jsonl", _requests(llm, calls, "c"))
            ideal = calls * latency / concurrency
            out.update(record_wall_s=round(wall, 3), ideal_s=round(ideal, 3), ratio_to_ideal=round(wall / ideal, 3),
                       server_calls=srv.chat_calls, recorded=stats["calls"], errors=stats["errors"],
                       client_cpu_ms_per_call=round(stats["cpu_s"] / calls * 1000, 2),
                       openai_import_s=round(OPENAI_IMPORT_S, 2),
                       load_average_1m=round(os.getloadavg()[0], 2), cpu_count=os.cpu_count())
            seq_wall, _ = _timed_record(llm, tmp / "sequential.jsonl", _requests(llm, seq_calls, "s"), concurrency=1)
            seq_est = seq_wall / seq_calls * calls
            out.update(sequential_calls_measured=seq_calls, sequential_measured_s=round(seq_wall, 3),
                       sequential_extrapolated_s=round(seq_est, 2), speedup=round(seq_est / wall, 1))
            # replay: a synthetic ledger of replay_n responses, answered with zero HTTP calls
            reqs = _requests(llm, replay_n, "r")
            Ledger(tmp / "replay.jsonl").append_rows([
                {"key": r.key, "stage": "bench", "request": r.canonical(), "created": 0.0, "backend": "synthetic",
                 "response": {"text": f"answer {i}", "prompt_tokens": 20, "completion_tokens": 5, "model": "m"}}
                for i, r in enumerate(reqs)])
            reqs = _requests(llm, replay_n, "r")  # fresh objects: nothing precomputed
            before = srv.total_calls
            t0, c0 = time.perf_counter(), time.process_time()
            replayed = build_runner(llm, tmp / "replay.jsonl", mode="replay").run(reqs, "bench")
            out.update(replay_n=len(replayed), replay_s=round(time.perf_counter() - t0, 3),
                       replay_cpu_s=round(time.process_time() - c0, 3),
                       replay_http_calls=srv.total_calls - before)
    finally:
        srv.stop()
    return out


def render(r: dict) -> str:
    rows = [
        ("record (concurrent)", f"{r['calls']} calls, concurrency {r['concurrency']}, {r['latency_s'] * 1000:.0f} ms/call",
         f"{r['record_wall_s']:.2f} s"),
        ("ideal", f"{r['calls']} x {r['latency_s']} s / {r['concurrency']}", f"{r['ideal_s']:.2f} s"),
        ("ratio to ideal", "target <= 1.5", f"{r['ratio_to_ideal']:.2f}x"),
        ("start-up (untimed)", "first `import openai` of the process", f"{r['openai_import_s']:.2f} s"),
        ("client CPU", f"per call (machine: {r['cpu_count']} cores, load {r['load_average_1m']})",
         f"{r['client_cpu_ms_per_call']:.2f} ms"),
        ("sequential (extrapolated)", f"{r['sequential_calls_measured']} calls measured "
         f"({r['sequential_measured_s']:.2f} s), scaled to {r['calls']}", f"{r['sequential_extrapolated_s']:.1f} s"),
        ("speed-up over sequential", "", f"{r['speedup']:.1f}x"),
        ("replay", f"{r['replay_n']} responses from the ledger (load + hash + look up)",
         f"{r['replay_s']:.2f} s wall, {r['replay_cpu_s']:.2f} s CPU, {r['replay_http_calls']} HTTP calls"),
    ]
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cotpd bench-llm", description=__doc__.split("\n")[0],
                                 parents=[common(params=False)])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the fake server takes per call")
    ap.add_argument("--seq-calls", type=int, default=30, help="sequential calls measured (then extrapolated)")
    ap.add_argument("--replay", type=int, default=20_000, help="responses in the replayed ledger")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    setup_logging(args)
    r = bench(args.calls, args.concurrency, args.latency, args.seq_calls, args.replay, args.progress)
    print(render(r))
    if args.json:
        write_json(args.json, r)
    return 0 if r["errors"] == 0 and r["replay_http_calls"] == 0 else 1
