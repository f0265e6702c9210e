"""The params schema (cotpd/config.py) is the one home of every default and type.

A new hyperparameter is one typed line there: the CLI's --set, the Dagster resources and DVC's
staleness all see it with no other edit. Bad keys and types stop a run before any work."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cotpd.config import TrainCfg
from cotpd.errors import ConfigError
from cotpd.params import Params, apply_set, load_params, parse_set, read_params
from cotpd.pipeline import STAGES
from orchestration import assets as A
from orchestration_helpers import VENV_BIN, scratch_project

ROOT = Path(__file__).resolve().parents[1]
NEW = "    warmup_floor: int = 7          # a new hyperparameter, added in this one place\n"


def _cotpd(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "COTPD_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "cotpd", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def project_with_new_key(tmp_path_factory) -> Path:
    """A clean checkout whose schema gained one field, `train.warmup_floor`, and nothing else."""
    root = scratch_project(tmp_path_factory.mktemp("newkey"), git=True)
    config = root / "cotpd" / "config.py"
    text = config.read_text()
    anchor = "class TrainCfg(Section):\n"
    assert anchor in text
    config.write_text(text.replace(anchor, anchor + NEW))
    return root


def test_a_new_key_reaches_the_cli_with_its_default_and_its_type(project_with_new_key):
    root = project_with_new_key
    seen = json.loads(_cotpd(root, "params", "--dataset", "sample").stdout)
    assert seen["train"]["warmup_floor"] == 7  # the default, from the schema alone
    seen = json.loads(_cotpd(root, "params", "--dataset", "mnre", "--set", "train.warmup_floor=3").stdout)
    assert seen["train"]["warmup_floor"] == 3  # --set reaches a dataset that has its own train overrides
    bad = _cotpd(root, "params", "--set", "train.warmup_floor=lots")
    assert bad.returncode == 2 and "train.warmup_floor" in bad.stderr
    # in the unchanged checkout the same key is unknown
    assert _cotpd(ROOT, "params", "--set", "train.warmup_floor=3").returncode == 2


def test_a_new_key_reaches_the_dagster_resources_and_code_versions(project_with_new_key):
    root = project_with_new_key
    probe = ("from orchestration.resources import ProjectResource, resolved_params;"
             "print(resolved_params(ProjectResource()).dataset('sample').train.warmup_floor)")
    env = {**os.environ, "PYTHONPATH": str(root), "COTPD_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "7", out.stderr[-2000:]
    # the schema is code every stage depends on: each asset shows a new code version
    for st in STAGES:
        assert A.code_version(st, root=root) != A.code_version(st), st


def test_dvc_sees_the_new_key_as_a_param_of_training(project_with_new_key):
    root = project_with_new_key
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["warmup_floor"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([str(VENV_BIN / "dvc"), "params", "diff", "--md"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"train\.warmup_floor\s*\|\s*-\s*\|\s*5", out.stdout), out.stdout
    # and the edited schema is a code dependency of the train stage (dvc.yaml, from cotpd.pipeline)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert "cotpd/config.py" in stages["train"]["deps"]


@pytest.mark.parametrize("item, where", [
    ("train.epocs=3", "train.epocs: unknown key (allowed: "),
    ("train.lr=fast", "train.lr: Input should be a valid number"),
    ("train.distill.reduction=mean", "train.distill.reduction: Input should be 'sentence' or 'token'"),
    ("datasets.mnre.overrides.train.epocs=3", "datasets.mnre.overrides.train.epocs: unknown key"),
    ("datasets.sample.task=ocr", "datasets.sample.task: Input should be 'ner' or 're'"),
])
def test_a_bad_key_or_type_is_refused_naming_its_path(item, where):
    with pytest.raises(ConfigError) as err:
        load_params(ROOT, sets=[item])
    assert where in str(err.value)
    assert item in str(err.value)  # the --set that caused it


def test_defaults_come_from_the_schema_and_values_from_params_yaml():
    raw = read_params(ROOT)
    del raw["train"]["patience"]
    params = Params(raw)
    assert params.dataset("sample").train.patience == TrainCfg.model_fields["patience"].default
    assert params.dataset("mnre").train.epochs == raw["datasets"]["mnre"]["overrides"]["train"]["epochs"]
    assert params.dataset("sample").train.distill.lambda_ == raw["train"]["distill"]["lambda"]


def test_set_is_validated_after_dataset_overrides():
    params = Params(apply_set(read_params(ROOT), parse_set(["train.epochs=2"])))
    assert {params.dataset(d).train.epochs for d in params.datasets} == {2}
