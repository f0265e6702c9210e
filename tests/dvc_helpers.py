"""`dvc` as a user runs it (the venv's dvc, one thread), and one clean checkout reproduced once per
test session, shared by tests/test_dvc.py and tests/test_dvc_exp.py (which works on a copy)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from orchestration_helpers import VENV_BIN, scratch_project, small_params


def dvc(root, *args, check=True, env_extra=None):
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    env.pop("COTPD_ROOT", None)
    res = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True,
                         timeout=1200)
    if check and res.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def reproduced_clone(base: Path) -> tuple:
    """(root, ledger bytes before, the first `dvc repro`'s result, its seconds) of a clean checkout."""
    root = scratch_project(base / "proj", small_params, git=True)
    assert not (root / "outputs").exists() and not (root / "data").exists()
    assert not (root / ".dvc" / "cache").exists()
    ledgers = {p: p.read_bytes() for p in sorted((root / "ledger").rglob("*.jsonl"))}
    t0 = time.perf_counter()
    first = dvc(root, "repro")
    return root, ledgers, first, time.perf_counter() - t0
