"""Shared fixtures: the repo root, a fresh copy of params.yaml, and the real data folder (or a skip)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from cotpd.params import read_params

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it, as on the dev machine (params.yaml says ../shared/data)
REAL_DATA_CANDIDATES = (REPO_ROOT.parent / "shared" / "data",)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def _repo_params() -> dict:
    return read_params(REPO_ROOT)


@pytest.fixture
def params(_repo_params) -> dict:
    """params.yaml of the repo, deep-copied so a test may edit it freely."""
    return copy.deepcopy(_repo_params)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real benchmark data folder; skips the test (with where it looked) when absent."""
    for d in REAL_DATA_CANDIDATES:
        if (d / "twitter2015" / "train.txt").is_file() and (d / "mnre" / "mnre_train.txt").is_file():
            return d
    pytest.skip("real data not found (looked in " + ", ".join(map(str, REAL_DATA_CANDIDATES)) + ")")



@pytest.fixture(scope="session")
def dvc_repro(tmp_path_factory):
    """A clean checkout after its first `dvc repro` (minutes): test_dvc reads it, test_dvc_exp copies it."""
    from dvc_helpers import reproduced_clone

    return reproduced_clone(tmp_path_factory.mktemp("clone"))
