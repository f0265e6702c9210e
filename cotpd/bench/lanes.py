"""`cotpd bench --lanes N`: N invocations of the same command sharing --out, started and awaited here.

One small student leaves most of a GPU idle (and a CPU training at one thread leaves the other cores
idle): six lanes on one H200 trained the Twitter-2015 main grid (3 seeds x baseline, CoTPD) in 3.5 min,
against about 10 min one after another, estimated from two side by side (results/gpu/README.md).
The lanes divide the grid through the bench's claims (cotpd.bench.claims), as lanes started by hand
do; this module only starts them, gives each its share of the CPU threads (and a GPU of its own where
there are several), forwards a SIGTERM or Ctrl-C to them, and says which one failed. The caller then
writes one report from what they saved.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("cotpd.bench")


@dataclass
class Lane:
    index: int
    proc: subprocess.Popen
    log_path: Path


def lane_argv(argv: list[str]) -> list[str]:
    """The command line of one lane: the user's, less --lanes, and without the speed section (measured
    once, by the caller, after the lanes: timings taken beside N trainings would say little)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--lanes":
            skip = True
        elif not a.startswith("--lanes="):
            out.append(a)
    return out if "--no-speed" in out else out + ["--no-speed"]


def lane_env(index: int, n: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of lane `index` of `n`: OMP_NUM_THREADS the user's, else the cores split evenly
    (torch on oversubscribed cores runs 3-5x slower); with several visible GPUs and no
    CUDA_VISIBLE_DEVICES, one GPU per lane, round robin."""
    env = dict(os.environ if env is None else env)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in env:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    return env


def start(argv: list[str], n: int, log_dir: Path) -> list[Lane]:
    """Start `n` lanes of `cotpd bench <argv>`; each writes <log_dir>/lane-<i>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cotpd", "bench", *lane_argv(argv)]
    lanes = []
    for i in range(n):
        path = log_dir / f"lane-{i + 1}.log"
        with open(path, "wb") as fh:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=lane_env(i, n))
        lanes.append(Lane(i + 1, proc, path))
    log.info("%d lanes started (%s): logs in %s", n, " ".join(cmd[3:]), log_dir)
    return lanes


def wait(lanes: list[Lane]) -> list[str]:
    """Wait for every lane; a SIGTERM or Ctrl-C here is passed on to them (a training checkpoints and
    stops, cotpd.training.signals) before this process goes. Returns one line per failed lane."""
    def forward(signum, _frame):
        for lane in lanes:
            if lane.proc.poll() is None:
                lane.proc.send_signal(signal.SIGTERM)
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for lane in lanes:
            lane.proc.wait()
    finally:
        for lane in lanes:  # after a forwarded signal: let the trainings save their checkpoints
            lane.proc.wait()
        for s, h in old.items():
            signal.signal(s, h)
    failed = [f"lane {lane.index} exited with status {lane.proc.returncode}: see {lane.log_path}"
              for lane in lanes if lane.proc.returncode != 0]
    for line in failed:
        log.error(line)
    return failed


def run(bench, argv: list[str], n: int) -> list[str]:
    """Train `bench`'s grid in `n` lanes: the saved results and the upstream stages first, here, so the
    lanes do not race to write them; then the lanes; then `bench` (a cotpd.bench.grid.Bench) is left to
    write the report only. Returns the failed lanes' lines."""
    bench.adopt_report()
    bench.prepare()
    before = {p.name for p in bench.done_dir.glob("*.json")}
    failed = wait(start(argv, n, bench.work / "lanes"))
    bench.trains = False  # the user's arguments stay as given: the speed section is still measured
    new = len({p.name for p in bench.done_dir.glob("*.json")} - before)
    # the report counts them as reused (this process trained none): say who trained them
    bench.result.notes.append(f"{new} of the reused trainings were trained just now by this command's {n} lanes "
                              f"(logs: {bench.work / 'lanes'})" + (f"; {len(failed)} lane(s) failed" if failed else ""))
    return failed
