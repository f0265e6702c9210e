"""The `cotpd` command line: stages listed, --set overrides, errors as exit code 2 with a message."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cotpd.cli import main
from cotpd.errors import CotpdError
from cotpd.params import parse_set
from cotpd.pipeline import STAGES


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "cotpd.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in [*STAGES, "run", "predict", "bench", "sample"]:
        assert f"\n    {name} " in out or f"\n    {name}\n" in out, name


def test_set_parses_nested_yaml_values():
    assert parse_set(["train.epochs=2", "llm.mode=record", "cot.grains=[noun]", "llm.base_url=null"]) == {
        "train": {"epochs": 2}, "llm": {"mode": "record", "base_url": None}, "cot": {"grains": ["noun"]}}
    with pytest.raises(CotpdError, match="key.path=value"):
        parse_set(["train.epochs"])


def test_set_wins_over_a_datasets_own_overrides():
    """mnre's overrides say epochs: 4; `--set train.epochs=6` must still reach it (it is the last word),
    while a `--set datasets.<key>...` edits that one dataset only."""
    from cotpd.params import apply_set, dataset_params, read_params

    params = read_params()
    assert dataset_params(params, "mnre").train.epochs == 4
    longer = apply_set(params, parse_set(["train.epochs=6"]))
    assert {ds: dataset_params(longer, ds).train.epochs for ds in ("mnre", "twitter2015", "sample")} == {
        "mnre": 6, "twitter2015": 6, "sample": 6}
    assert dataset_params(longer, "mnre").train.max_length == 96  # its other overrides stay
    one = apply_set(params, parse_set(["datasets.mnre.overrides.train.epochs=2"]))
    assert dataset_params(one, "mnre").train.epochs == 2 and dataset_params(one, "twitter2015").train.epochs == 4
    assert dataset_params(params, "mnre").train.epochs == 4  # the input is not changed


def test_unknown_dataset_is_a_clear_error(repo_root, capsys):
    assert main(["prepare", "--dataset", "nope", "--root", str(repo_root)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "sample" in err


def test_prepare_on_a_copy_of_the_project(repo_root, tmp_path, capsys):
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(repo_root / "cotpd" / "sample", tmp_path / "cotpd" / "sample")
    assert main(["prepare", "--dataset", "sample_mnre", "--root", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    for split in ("train", "valid", "test"):
        written = sum(1 for _ in (tmp_path / "outputs" / "sample_mnre" / "raw" / f"{split}.jsonl").open())
        assert written > 0 and summary["splits"][split]["instances"] == written
