"""A scratch copy of the project for orchestration tests: what a clean clone holds (git-tracked and
untracked-but-not-ignored files), so tests never touch the real outputs/ and run as a user would."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
# the environment's tools (dagster, dvc, mlflow, torchrun) sit beside the interpreter running the
# tests, whether it is .venv, a conda env or a venv that was never activated
VENV_BIN = Path(sys.executable).parent
# folders a checkout carries that the pipeline never reads (tests, docs, CI)
SKIP_TOP = {"tests", "docs", ".ci", "results"}


def clean_checkout_files(repo: Path = REPO_ROOT) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout.decode()
    return sorted(p for p in out.split("\0") if p and p.split("/", 1)[0] not in SKIP_TOP)


def scratch_project(dst: Path, edit=None, git: bool = False) -> Path:
    """Copy a clean checkout to `dst`; `edit(params)` may change params.yaml there (e.g. fewer epochs)."""
    dst.mkdir(parents=True, exist_ok=True)
    for rel in clean_checkout_files():
        src = REPO_ROOT / rel
        if not src.is_file():  # listed by git but deleted in the working tree
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)
    if edit is not None:
        path = dst / "params.yaml"
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        edit(params)
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    if git:  # DVC wants a git repository (or core.no_scm); a clone is one
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clean checkout"]):
            subprocess.run(["git", "-C", str(dst), *cmd], check=True, env=env, capture_output=True)
    return dst


def small_params(params: dict) -> None:
    """The sample pipeline, quick: one epoch, the MNER sample only (the lineage is the same)."""
    params["pipeline"]["datasets"] = ["sample"]
    params["train"]["epochs"] = 1
    params["train"]["patience"] = 1
    params["tracking"]["log_model"] = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
