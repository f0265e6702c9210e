"""A tiny tracked training shared by test_tracking, test_serving and test_predict (built once per
session): a temporary project root that is its own git repo, the embedded samples prepared there,
a tiny random encoder, and the train stage run with MLflow tracking for NER (cotpd) and RE."""
from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from cotpd.params import read_params  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
_CACHE: dict[str, dict] = {}


def project_params(encoder: str | Path) -> dict:
    """params.yaml with the samples' roots made absolute and a tiny, fast training."""
    params = copy.deepcopy(read_params(REPO_ROOT))
    for ds in ("sample", "sample_mnre"):
        entry = params["datasets"][ds]
        entry["root"] = str(REPO_ROOT / entry["root"])
    params["train"].update(encoder=str(encoder), epochs=2, batch_size=8, max_length=32, knowledge_max_length=48,
                           prompt={"k": 2, "layers": 1, "heads": 2}, device="cpu", use_augmented=True)
    params["tracking"]["system_metrics_interval_s"] = 1
    return params


def git_init(root: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    (root / "README.md").write_text("tmp\n", encoding="utf-8")
    for cmd in (["git", "init", "-q"], ["git", "add", "README.md"], ["git", "commit", "-q", "-m", "init"]):
        subprocess.run(cmd, cwd=root, check=True, env=env, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def tracked_training(tmp_path_factory) -> dict:
    """{root, params, commit, ner: train summary, re: train summary}; built on first use."""
    if "run" in _CACHE:
        return _CACHE["run"]
    from cotpd.model import build_tiny_encoder
    from cotpd.pipeline import run_stage

    base = tmp_path_factory.mktemp("tracked")
    root = base / "project"
    root.mkdir()
    commit = git_init(root)
    encoder = build_tiny_encoder(base / "tiny_encoder")
    params = project_params(encoder)
    for ds in ("sample", "sample_mnre"):
        for stage in ("prepare", "captions"):
            run_stage(stage, ds, root, params)
    out = {"root": root, "params": params, "commit": commit, "encoder": encoder}
    out["ner"] = run_stage("train", "sample", root, params, variant="cotpd",
                           tracker={"orchestrator": "dagster", "dagster_run_id": "dg-run-42"})
    out["re"] = run_stage("train", "sample_mnre", root, params, variant="baseline")
    _CACHE["run"] = out
    return out
