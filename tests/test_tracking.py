"""MLflow tracking of a real (tiny) training: params + hash, tags, per-epoch metrics, artifacts."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pytest  # noqa: E402
from tracking_helpers import tracked_training  # noqa: E402

from cotpd.params import Layout, dataset_params, params_hash  # noqa: E402
from cotpd.training import tracking  # noqa: E402


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    return tracked_training(tmp_path_factory)


def _client(tracked):
    tracking.setup(tracked["root"], dataset_params(tracked["params"], "sample").tracking)
    return mlflow.tracking.MlflowClient()


def test_store_and_artifacts_live_under_the_project_root(tracked):
    root = tracked["root"]
    assert (root / "mlruns" / "mlflow.db").is_file()
    run = _client(tracked).get_run(tracked["ner"]["mlflow_run_id"])
    assert run.info.artifact_uri.startswith((root / "mlruns" / "artifacts").resolve().as_uri())
    assert tracked["ner"]["mlflow_url"].endswith(f"/runs/{run.info.run_id}")


def test_run_has_params_hash_and_tags(tracked):
    root, params = tracked["root"], tracked["params"]
    run = _client(tracked).get_run(tracked["ner"]["mlflow_run_id"])
    dp = dataset_params(params, "sample")
    p, tags = run.data.params, run.data.tags
    assert p["train.epochs"] == "2" and p["train.max_length"] == "32"
    assert p["dataset.task"] == "ner" and p["variant"] == "cotpd"
    assert p["params_hash"] == params_hash(dp)
    assert run.info.run_name == f"sample-cotpd-s{dp.seed}"
    assert tags["git_commit"] == tracked["commit"]
    assert (tags["dataset"], tags["variant"], tags["seed"]) == ("sample", "cotpd", str(dp.seed))
    assert tags["orchestrator"] == "dagster" and tags["dagster_run_id"] == "dg-run-42"
    lay = Layout(root, "sample")
    assert tags["data.raw.train"] == tracking.sha256(lay.raw("train"))
    assert tags["data.captions"] == tracking.sha256(lay.captions)
    # the RE run was started from the command-line path: default orchestrator
    re_tags = _client(tracked).get_run(tracked["re"]["mlflow_run_id"]).data.tags
    assert re_tags["orchestrator"] == "cli" and re_tags["dataset"] == "sample_mnre"


def test_per_epoch_and_final_metrics(tracked):
    client = _client(tracked)
    rid = tracked["ner"]["mlflow_run_id"]
    history = client.get_metric_history(rid, "epoch/dev_f1")
    assert sorted(m.step for m in history) == [0, 1]  # one point per epoch of the 2
    assert len(client.get_metric_history(rid, "epoch/loss")) == 2
    # the final dev_f1 is the best epoch's, logged once
    best = client.get_metric_history(rid, "dev_f1")
    assert len(best) == 1 and best[0].value == pytest.approx(max(m.value for m in history))
    metrics = client.get_run(rid).data.metrics
    for name in ("test_f1", "test_precision", "test_recall", "dev_f1", "train_tokens_per_s", "best_epoch"):
        assert name in metrics, name
    assert metrics["test_f1"] == pytest.approx(tracked["ner"]["test_f1"])
    assert metrics["train_tokens_per_s"] > 0
    # the same names for RE, so runs of both tasks line up in the MLflow UI
    re_metrics = client.get_run(tracked["re"]["mlflow_run_id"]).data.metrics
    assert {"test_f1", "test_precision", "test_recall", "dev_f1"} <= set(re_metrics)


def test_artifacts_plots_result_and_model(tracked):
    client = _client(tracked)
    rid = tracked["ner"]["mlflow_run_id"]
    top = {a.path for a in client.list_artifacts(rid)}
    assert {"result.json", "plots"} <= top
    assert "plots/per_type_f1.png" in {a.path for a in client.list_artifacts(rid, "plots")}
    re_plots = {a.path for a in client.list_artifacts(tracked["re"]["mlflow_run_id"], "plots")}
    assert "plots/confusion.png" in re_plots  # RE metrics carry a confusion matrix
    info = mlflow.models.get_model_info(f"runs:/{rid}/model")
    assert "python_function" in info.flavors
    assert [c.name for c in info.signature.inputs.inputs] == ["text"]


def test_flatten_drops_secrets_and_truncates_long_values():
    flat = tracking.flatten({"llm": {"api_key": "sk-123", "base_url": "http://x", "auth_token": "t",
                                     "nested": {"client_secret": "s"}},
                             "train": {"lr": 1e-3, "grains": ["noun", "sentence"], "long": "x" * 10000}})
    assert not any("key" in k or "token" in k or "secret" in k for k in flat)
    assert "sk-123" not in "".join(flat.values())
    assert flat["llm.base_url"] == "http://x" and flat["train.lr"] == "0.001"
    assert flat["train.grains"] == '["noun", "sentence"]'
    assert len(flat["train.long"]) == tracking.MAX_PARAM_LEN and flat["train.long"].endswith("[truncated]")


def test_relative_sqlite_uri_resolves_against_root(tmp_path):
    uri = tracking.tracking_uri(tmp_path, "sqlite:///mlruns/mlflow.db")
    assert uri == f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').resolve()}"
    assert tracking.tracking_uri(tmp_path, "sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert tracking.tracking_uri(tmp_path, "http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_git_commit_unknown_outside_a_repo(tmp_path):
    assert tracking.git_commit(tmp_path / "nowhere") == "unknown"


def test_failing_training_marks_run_failed(tracked):
    params = tracked["params"]
    dp = dataset_params(params, "sample")
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.training_run(tracked["root"], "sample", "baseline", dp, seed=7) as tr:
            tr.log_epoch(0, {"loss": 1.5, "improved": True, "note": "text is skipped"})
            raise RuntimeError("boom")
    run = _client(tracked).get_run(tr.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["seed"] == "7" and run.data.params["seed"] == "7"
    assert run.data.metrics["epoch/loss"] == 1.5 and "epoch/note" not in run.data.metrics
