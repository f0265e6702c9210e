"""Trying a hyperparameter with DVC experiments, as the README shows: `dvc exp run -S key=value` on
the committed pipeline state reruns only what the key feeds, `dvc exp show` lists the experiment
beside the workspace with its params and metrics, `dvc metrics diff` / `dvc plots diff` compare it
with HEAD, and its MLflow runs carry the experiment's name."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from dvc_helpers import dvc

pytestmark = pytest.mark.slow  # a copy of the reproduced sample pipeline, then one experiment (a minute)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
EXP = "lambda-half"


def _row(shown: list, rev: str | None = None, name: str | None = None) -> dict:
    """The `dvc exp show --json` entry of a revision (workspace, the baseline) or an experiment."""
    for base in shown:
        if rev is not None and base["rev"] == rev:
            return base["data"]
        for exp in base.get("experiments") or []:
            for r in exp.get("revs") or []:
                if name is not None and r.get("name") == name:
                    return r["data"]
    raise AssertionError(f"{rev or name} not in dvc exp show: {json.dumps(shown)[:2000]}")


def _value(data: dict, kind: str, file: str, key: str):
    return data[kind][file]["data"][key]


@pytest.mark.timeout(1500)
def test_an_experiment_tries_lambda_beside_the_committed_pipeline(dvc_repro, tmp_path):
    root = tmp_path / "proj"
    shutil.copytree(dvc_repro[0], root, symlinks=True)  # the shared clone stays as test_dvc reads it
    # `dvc exp run` starts from HEAD's pipeline state: the lock of the reproduced pipeline is committed
    for cmd in (["add", "dvc.lock"], ["commit", "-qm", "the sample pipeline, reproduced"]):
        subprocess.run([*GIT, "-C", str(root), *cmd], check=True, capture_output=True)
    run = dvc(root, "exp", "run", "-n", EXP, "-S", "train.distill.lambda=0.5")
    for stage in ("prepare@sample", "captions@sample", "knowledge@sample", "augment@sample"):
        assert f"Stage '{stage}' didn't change, skipping" in run.stdout, stage
    for stage in ("train@sample-cotpd", "evaluate@sample"):
        assert f"Running stage '{stage}'" in run.stdout, stage
    assert f"Ran experiment(s): {EXP}" in run.stdout

    check_experiment(root, tmp_path / "plots")


def check_experiment(root, plots):
    """What a person compares after `dvc exp run`: exp show, metrics diff, plots diff, MLflow runs."""
    shown = json.loads(dvc(root, "exp", "show", "--json").stdout)
    metrics = "outputs/sample/metrics.json"
    exp, head, ws = _row(shown, name=EXP), _row(shown, rev=shown[1]["rev"]), _row(shown, rev="workspace")
    assert _value(exp, "params", "params.yaml", "train")["distill"]["lambda"] == 0.5
    assert _value(head, "params", "params.yaml", "train")["distill"]["lambda"] == 1.0
    assert 0.0 <= _value(exp, "metrics", metrics, "cotpd.f1") <= 1.0
    assert ws["metrics"] == exp["metrics"]  # the experiment was applied to the workspace

    diff = json.loads(dvc(root, "metrics", "diff", "HEAD", EXP, "--json").stdout or "{}")
    old, new = _value(head, "metrics", metrics, "cotpd.f1"), _value(exp, "metrics", metrics, "cotpd.f1")
    if old != new:  # the diff lists what changed (the tiny sample may leave F1 where it was)
        assert diff[metrics]["cotpd.f1"] == {"old": old, "new": new, "diff": pytest.approx(new - old)}
    assert all(k.startswith("cotpd.") for k in diff.get(metrics, {})), diff  # the baseline ignores lambda
    dvc(root, "plots", "diff", "HEAD", EXP, "-o", str(plots))
    html = (plots / "index.html").read_text(encoding="utf-8")
    assert EXP in html and "HEAD" in html and "per_type_f1" in html

    import mlflow  # lazy: only this check needs it

    from cotpd.params import read_params
    from cotpd.training.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(root, read_params(root)["tracking"]["uri"]))
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.dvc_exp = '{EXP}'",
                              output_format="list")
    assert {r.data.tags["variant"] for r in runs} == {"baseline", "cotpd"}
