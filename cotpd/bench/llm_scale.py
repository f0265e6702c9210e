"""`cotpd bench-llm-scale`: a full-scale rehearsal of recording CoT knowledge, on loopback.

The knowledge stage (its real prompts, request builder, runner and ledger; llm.backend openai,
llm.mode record) records all three grains for every split of the chosen datasets against the fake
OpenAI-compatible server (cotpd_testing.fake_llm --load: lognormal latency with a Pareto tail, random
429s with Retry-After, 5xx and dropped connections; it counts every paid answer per request body).
Per path -- `chat` (the async client at llm.concurrency) and `batch` (llm.batch_api: /v1/files +
/v1/batches, split at llm.batch_max_requests and 200 MB, resumed from <ledger>.batches.json) --
it runs (1) a clean record from an empty ledger: wall time vs ideal, client peak RSS, ledger size;
(2) a record SIGKILLed at a random moment and its rerun: nothing lost, nothing paid twice; then
(3) a replay of the clean chat ledger: time, memory after the load, 0 requests at the server.

Everything is written under --scratch (a new temporary folder by default): never the repo's ledger/
or outputs/. The client runs in its own process (cotpd/bench/llm_scale_child.py), the server in
another (so neither shares a GIL with the other).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cotpd_testing.fake_llm import ServerProcess
from cotpd_testing.fake_llm_load import LoadProfile

from ..args import setup_logging
from ..errors import CotpdError
from ..io import read_json, write_json, write_yaml
from ..params import Layout, absolute_roots, find_root, read_params
from .llm_scale_check import STAGE, check_complete, check_kill, paid_between, read_ledgers

PATHS = ("chat", "batch")


def scratch_params(repo: Path, datasets: list[str], llm: dict, max_samples: int | None) -> dict:
    """The repo's params.yaml for a scratch root: dataset roots made absolute, CoT from the LLM."""
    raw = absolute_roots(read_params(repo), repo)
    raw["pipeline"]["datasets"] = list(datasets)
    for ds in datasets:
        raw["datasets"][ds].setdefault("overrides", {})["cot"] = {"source": "llm", "max_samples": max_samples}
    raw["llm"].update(llm)
    return raw


class Child:
    """One client process (llm_scale_child), its wall time and its peak RSS (from wait4)."""

    def __init__(self, what: str, root: Path, datasets: list[str], log: Path):
        self.out = root / f"{what}-{time.time_ns()}.json"
        cmd = [sys.executable, "-m", "cotpd.bench.llm_scale_child", what, "--root", str(root), "--out", str(self.out)]
        cmd += [a for ds in datasets for a in ("--dataset", ds)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("OPENAI_API_KEY", None)  # the loopback server needs none; never send a real one
        self.t0 = time.time()
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait(self) -> dict:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return {"rc": self.proc.returncode, "process_wall_s": round(time.time() - self.t0, 3),
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "result": read_json(self.out) if self.proc.returncode == 0 else None}

    def wait_for(self, trigger: Path, timeout_s: float = 3600) -> float:
        """The time `trigger` first holds something (the first answer, or the first batch's state)."""
        deadline = time.time() + timeout_s
        while not (trigger.exists() and trigger.stat().st_size > 0):
            if self.proc.poll() is not None or time.time() > deadline:
                raise CotpdError(f"the client ended (rc {self.proc.returncode}) before {trigger} was written")
            time.sleep(0.02)
        return time.time()

    def kill_after(self, trigger: Path, delay_s: float) -> float:
        """SIGKILL `delay_s` after `trigger` holds something."""
        self.wait_for(trigger)
        time.sleep(delay_s)
        t = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        return t

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_child(what: str, root: Path, datasets: list[str], log: Path) -> dict:
    child = Child(what, root, datasets, log)
    try:
        r = child.wait()
    finally:
        child.stop()
    if r["rc"] != 0:
        raise CotpdError(f"{what} in {root} exited with {r['rc']}: see {log}")
    return r


def settled(srv: ServerProcess, timeout_s: float) -> dict:
    """/_stats once the server has finished what a killed client left in flight (a tail latency
    can outlive the client by seconds): those answers belong to the killed run, not the rerun."""
    deadline = time.time() + timeout_s
    while (s := srv.stats(detail=True))["inflight"] and time.time() < deadline:
        time.sleep(0.2)
    return s


def new_root(scratch: Path, name: str, base: Path, params: dict) -> Path:
    """A scratch project root: the prepared samples and captions of `base`, an empty ledger."""
    root = scratch / name
    shutil.copytree(base / "outputs", root / "outputs")
    write_yaml(root / "params.yaml", params)
    return root


def rehearse_path(path: str, scratch: Path, base: Path, params: dict, datasets: list[str], srv: ServerProcess,
                  rng: random.Random, log: Path) -> dict:
    out: dict = {}
    # (1) clean: from an empty ledger to the end
    root = new_root(scratch, f"{path}-clean", base, params)
    trigger = Layout(root, datasets[0]).ledger_for(STAGE)
    trigger = trigger if path == "chat" else Path(f"{trigger}.batches.json")
    s0, cpu0 = srv.stats(detail=True), srv.cpu_s()
    child = Child("record", root, datasets, log)
    try:
        t_trigger = child.wait_for(trigger)
        clean = child.wait()
    finally:
        child.stop()
    if clean["rc"] != 0:
        raise CotpdError(f"record in {root} exited with {clean['rc']}: see {log}")
    s1 = srv.stats(detail=True)
    ledgers = read_ledgers(root, datasets)
    res = clean["result"]
    out["clean"] = {**check_complete(ledgers["keys"], ledgers["keys"], paid_between(s0, s1)),
                    "stage_wall_s": round(res["t_end"] - res["t_start"], 3), "process_wall_s": clean["process_wall_s"],
                    "client_peak_rss_mb": clean["peak_rss_mb"], "client_cpu_s": clean["cpu_s"],
                    "server_cpu_s": round(srv.cpu_s() - cpu0, 2), "datasets": res["datasets"],
                    "http_requests": sum(s1["counts"].values()) - sum(s0["counts"].values()),
                    "ledger_bytes": ledgers["bytes"], "ledger_lines": ledgers["lines"],
                    "ledger_files": ledgers["files"], "files_under_ledger": ledgers["all_files"],
                    "batches": s1["load"]["batches"][len(s0["load"]["batches"]):]}
    out["clean"]["requests_built"] = sum(d["records"] for d in res["datasets"].values())
    # (2) SIGKILL at a random moment after the first answer (chat) / first batch (batch), then
    # rerun; the moment is drawn within the clean run's time from that trigger to its end
    kroot = new_root(scratch, f"{path}-kill", base, params)
    trigger = Path(str(trigger).replace(str(root), str(kroot), 1))
    delay = rng.uniform(0.05, 0.9) * max(0.2, res["t_end"] - t_trigger)
    s2 = srv.stats(detail=True)
    child = Child("record", kroot, datasets, log)
    try:
        kill_t = child.kill_after(trigger, delay)
        killed = child.wait()
    finally:
        child.stop()
    after_kill = read_ledgers(kroot, datasets)
    state = sorted(str(p.relative_to(kroot)) for p in kroot.rglob("*.batches.json"))
    s3 = settled(srv, timeout_s=params["llm"]["timeout_s"])
    rerun = run_child("record", kroot, datasets, log)
    s4 = srv.stats(detail=True)
    final = read_ledgers(kroot, datasets)
    out["kill"] = {**check_kill(ledgers["keys"], after_kill["keys"], final["keys"], paid_between(s2, s3),
                                paid_between(s3, s4), kill_t),
                   "kill_after_trigger_s": round(delay, 2), "killed_rc": killed["rc"],
                   "killed_at_s": round(kill_t - child.t0, 2), "cut_lines_after_kill": after_kill["cut_lines"],
                   "batch_state_after_kill": state, "rerun_process_wall_s": rerun["process_wall_s"],
                   "batches_created": len(s4["load"]["batches"]) - len(s2["load"]["batches"]),
                   "same_answers_as_clean": final["keys"].keys() == ledgers["keys"].keys()}
    out["root"] = str(root)
    return out


def rehearse(datasets: list[str], scratch: Path, profile: LoadProfile, concurrency: int = 64,
             paths: tuple = PATHS, max_samples: int | None = None, batch_max_requests: int = 10_000,
             batch_poll_s: float = 2.0, seed: int = 13) -> dict:
    repo = find_root()
    scratch.mkdir(parents=True, exist_ok=True)
    log = scratch / "clients.log"
    rng = random.Random(seed)
    srv = ServerProcess(load=profile)
    out: dict = {"datasets": datasets, "concurrency": concurrency, "scratch": str(scratch)}
    try:
        llm = {"backend": "openai", "mode": "record", "base_url": srv.base_url, "model": "rehearsal-model",
               "concurrency": concurrency, "requests_per_minute": 1e7, "tokens_per_minute": 1e11,
               "max_retries": 8, "timeout_s": 60, "progress": False, "batch_api": False,
               "batch_poll_s": batch_poll_s, "batch_max_requests": batch_max_requests}
        base = scratch / "base"
        base.mkdir()
        write_yaml(base / "params.yaml", scratch_params(repo, datasets, llm, max_samples))
        t0 = time.perf_counter()
        run_child("setup", base, datasets, log)
        out["setup_s"] = round(time.perf_counter() - t0, 1)
        for path in paths:
            params = scratch_params(repo, datasets, {**llm, "batch_api": path == "batch"}, max_samples)
            out[path] = rehearse_path(path, scratch, base, params, datasets, srv, rng, log)
        if "chat" in paths:  # (3) replay the clean chat ledger: nothing may reach the server
            before = srv.stats()
            replay = run_child("replay", Path(out["chat"]["root"]), datasets, log)
            out["replay"] = {**replay["result"], "process_wall_s": replay["process_wall_s"],
                             "server_requests": sum(srv.stats()["counts"].values()) - sum(before["counts"].values())}
            out["replay"]["total_s"] = round(sum(d["total_s"] for d in out["replay"]["datasets"].values()), 3)
        out["server"] = {k: v for k, v in srv.stats()["load"].items() if k != "batches"}
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        srv.stop()
    if "chat" in out:
        c = out["chat"]["clean"]
        c["ideal_s"] = round(c["requests"] * profile.median_s / concurrency, 2)
        c["ratio_to_ideal"] = round(c["stage_wall_s"] / c["ideal_s"], 3)
        c["ideal_at_mean_latency_s"] = round(c["requests"] * out["server"]["latency_s"]["mean"] / concurrency, 2)
    return out


def render(r: dict) -> str:
    lines = [f"datasets {', '.join(r['datasets'])}; concurrency {r['concurrency']}; load {r['load_average']}"]
    lat = r["server"]["latency_s"]
    lines.append(f"server: latency p50 {lat['p50']} s, p99 {lat['p99']} s, mean {lat['mean']} s, max {lat['max']} s; "
                 f"faults {r['server']['faults']} of {r['server']['draws']} requests")
    for path in PATHS:
        if path not in r:
            continue
        c, k = r[path]["clean"], r[path]["kill"]
        lines.append(f"[{path}] clean: {c['answered']}/{c['requests']} answered in {c['stage_wall_s']} s"
                     + (f" (ideal {c['ideal_s']} s: {c['ratio_to_ideal']}x)" if "ideal_s" in c else "")
                     + f", paid {c['paid']}, paid twice {c['paid_twice']}, client peak RSS {c['client_peak_rss_mb']} MB, "
                     f"ledger {c['ledger_bytes'] / 1e6:.1f} MB in {c['ledger_files']}")
        lines.append(f"[{path}] kill at {k['killed_at_s']} s ({k['recorded_before_kill']} recorded) + rerun: "
                     f"lost {k['lost']}, re-asked from ledger {k['reasked_from_ledger']}, paid twice {k['paid_twice']} "
                     f"({k['paid_twice_answered_before_kill']} answered before the kill, "
                     f"{k['paid_twice_answered_after_kill']} after)")
    if "replay" in r:
        p = r["replay"]
        lines.append(f"[replay] {p['total_s']} s for {sum(d['answers'] for d in p['datasets'].values())} answers, "
                     f"{p['server_requests']} requests at the server; " + "; ".join(
                         f"{ds}: load {d['load_s']} s, RSS {d['rss_before_load_mb']} -> {d['rss_after_load_mb']} MB "
                         f"for {d['ledger_bytes'] / 1e6:.1f} MB" for ds, d in p["datasets"].items()))
    return "\n".join(lines)


def ok(r: dict) -> bool:
    checks = [r[p]["clean"]["lost"] == 0 and r[p]["clean"]["paid_twice"] == 0 and r[p]["kill"]["lost"] == 0
              and r[p]["kill"]["reasked_from_ledger"] == 0 and r[p]["kill"]["killed_rc"] == -signal.SIGKILL
              for p in PATHS if p in r]
    return all(checks) and ("replay" not in r or r["replay"]["server_requests"] == 0)


def main(argv: list[str] | None = None) -> int:
    d = LoadProfile()
    ap = argparse.ArgumentParser(prog="cotpd bench-llm-scale", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", action="append", help="params.yaml dataset (default: twitter2015 and mnre)")
    ap.add_argument("--max-samples", type=int, default=None, help="per split (default: all)")
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--median", type=float, default=d.median_s, help="median latency, seconds")
    ap.add_argument("--p429", type=float, default=d.p429)
    ap.add_argument("--p5xx", type=float, default=d.p5xx)
    ap.add_argument("--pdrop", type=float, default=d.pdrop)
    ap.add_argument("--retry-after", type=int, default=d.retry_after_s, help="seconds, sent with every 429")
    ap.add_argument("--batch-delay", type=float, default=d.batch_delay_s, help="seconds a batch takes")
    ap.add_argument("--batch-max-requests", type=int, default=10_000, help="llm.batch_max_requests")
    ap.add_argument("--batch-poll", type=float, default=2.0, help="llm.batch_poll_s")
    ap.add_argument("--seed", type=int, default=13, help="server faults and kill moments")
    ap.add_argument("--scratch", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cotpd-llm-scale-"))
    if scratch.exists() and any(scratch.iterdir()):
        raise CotpdError(f"--scratch {scratch} is not empty")
    profile = LoadProfile(median_s=args.median, p429=args.p429, p5xx=args.p5xx, pdrop=args.pdrop,
                          retry_after_s=args.retry_after, batch_delay_s=args.batch_delay, seed=args.seed)
    r = rehearse(args.dataset or ["twitter2015", "mnre"], scratch, profile, args.concurrency, tuple(args.paths),
                 args.max_samples, args.batch_max_requests, args.batch_poll, args.seed)
    print(render(r))
    if args.json:
        write_json(args.json, r)
    return 0 if ok(r) else 1
