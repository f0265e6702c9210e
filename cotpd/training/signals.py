"""SIGTERM during a training (a preemptible machine going away, `docker stop`, a scheduler's timeout):
the loop stops at its next step boundary, saves its resume checkpoint and exits with 128 + the
signal number (143), the code a shell reports for a process ended by SIGTERM.

Kept free of torch so the command line can name `Interrupted` without importing it.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


class Interrupted(SystemExit):
    """A training stopped on request, its resume checkpoint saved.

    A SystemExit, so that no `except Exception` on the way up swallows it and an uncaught one ends
    the process with code 128 + signum and no traceback; MLflow runs it crosses end KILLED
    (cotpd.training.tracking.training_run)."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(128 + signum)
        self.signum, self.checkpoint = signum, checkpoint

    def __str__(self) -> str:
        where = f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint"
        return f"training stopped by {signal.Signals(self.signum).name} ({where})"


class StopRequest:
    """Set by the signal handler; the loop reads it between steps (a handler must not do the work:
    it runs between two bytecodes, possibly halfway through an optimizer step)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def set(self, signum: int, _frame=None) -> None:
        if self.signum is None:
            log.warning("%s received: stopping at the next step boundary to save a resume checkpoint",
                        signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[StopRequest]:
    """Turn SIGTERM into a StopRequest for the duration of the block (the previous handler comes
    back after). Outside the main thread (a Dagster op in a thread pool) Python cannot install a
    handler: the request then never comes and SIGTERM keeps its old meaning."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, stop.set)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
