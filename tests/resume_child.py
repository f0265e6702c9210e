"""Runs a cotpd command line in this process, pausing where a test of tests/test_resume.py wants to
signal it: the process then dies for real (SIGKILL) or stops for real (SIGTERM), at a known point.

    python tests/resume_child.py checkpoint:1 MARK -- -m cotpd.training --dataset sample ...
    python tests/resume_child.py step:6 MARK -- train --dataset sample ...      (the `cotpd` CLI)

checkpoint:N  pause right after the resume checkpoint of epoch N is written
step:N        pause before the N-th training step of the run (1-based, counted over epochs)
MARK          a file written when the pause begins; the pause lasts until SIGTERM arrives (then the
              loop goes on to its next step boundary) or 120 s pass.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from cotpd.training import checkpoint, job, loop  # noqa: E402


def pause(mark: Path) -> None:
    mark.write_text(str(os.getpid()), encoding="utf-8")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        handler = signal.getsignal(signal.SIGTERM)
        if bool(getattr(handler, "__self__", None)):  # the loop's StopRequest was set: go on
            return
        time.sleep(0.02)


def main() -> int:
    where, mark, sep, *argv = sys.argv[1:]
    assert sep == "--", sys.argv
    kind, n = where.split(":")
    mark, n = Path(mark), int(n)
    if kind == "checkpoint":
        save = checkpoint.save

        def save_then_pause(path, model, opt, sched, prog, *rest):
            save(path, model, opt, sched, prog, *rest)
            if prog.epoch == n and prog.step == 0:
                pause(mark)
        checkpoint.save = save_then_pause
    else:
        collate, calls = loop.collate, [0]

        def collate_then_pause(*args, **kw):
            calls[0] += 1
            if calls[0] == n:
                pause(mark)
            return collate(*args, **kw)
        loop.collate = collate_then_pause
    if argv[:2] == ["-m", "cotpd.training"]:
        return job.main(argv[2:])
    from cotpd.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
