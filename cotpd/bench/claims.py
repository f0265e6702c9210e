"""Claims that keep invocations of `cotpd bench` sharing one --out from training the same run twice."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


def take_claim(path: Path) -> bool:
    """Claim one training for this process: `path` is created exclusively (O_EXCL, atomic on a local or
    NFS folder) and holds host and pid. A claim left by a dead process on this host is taken over;
    False while a live invocation, here or on another host sharing the folder, holds it."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):  # being written right now: its owner is alive
                return False
            if held.get("host") != me["host"] or _alive(int(held.get("pid", -1))):
                return False
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        return True
    return False


def _alive(pid: int) -> bool:
    if pid <= 0:  # no pid recorded; and os.kill(0 or -1, 0) would probe process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
