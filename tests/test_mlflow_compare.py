"""MLflow runs worth comparing: each split a dataset input whose digest is the run's data hash, the
student a LoggedModel carrying its dev/test scores, plain `test_f1` / `dev_f1` run metrics."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pytest  # noqa: E402
from tracking_helpers import tracked_training  # noqa: E402

from cotpd.params import Layout, dataset_params  # noqa: E402
from cotpd.training import tracking  # noqa: E402
from cotpd.training.mlflow_log import DIGEST_LEN  # noqa: E402


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    return tracked_training(tmp_path_factory)


@pytest.fixture(scope="module")
def client(tracked):
    tracking.setup(tracked["root"], dataset_params(tracked["params"], "sample").tracking)
    return mlflow.tracking.MlflowClient()


def test_each_split_is_a_dataset_input_with_the_data_hash(tracked, client):
    root = tracked["root"].resolve()
    for key, ds in (("ner", "sample"), ("re", "sample_mnre")):
        run = client.get_run(tracked[key]["mlflow_run_id"])
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert set(inputs) == {f"{ds}.train", f"{ds}.valid", f"{ds}.test"}
        for split, context in (("train", "training"), ("valid", "validation"), ("test", "test")):
            inp = inputs[f"{ds}.{split}"]
            full = run.data.tags[f"data.raw.{split}"]
            assert len(full) == 64 and inp.dataset.digest == full[:DIGEST_LEN]
            assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == context
            assert json.loads(inp.dataset.source)["uri"] == str(Layout(root, ds).raw(split))


def test_student_is_a_logged_model_with_its_scores(tracked, client):
    rid = tracked["ner"]["mlflow_run_id"]
    run = client.get_run(rid)
    outputs = run.outputs.model_outputs
    assert len(outputs) == 1
    model = mlflow.get_logged_model(outputs[0].model_id)
    assert model.name == "model" and model.source_run_id == rid
    scores = {m.key: m for m in model.metrics}
    assert scores["test_f1"].value == pytest.approx(tracked["ner"]["test_f1"])
    assert scores["dev_f1"].value == pytest.approx(tracked["ner"]["dev_f1"])
    # the run keeps plain test_f1 / dev_f1 (columns and sort keys), one point each despite the model link
    assert run.data.metrics["test_f1"] == pytest.approx(tracked["ner"]["test_f1"])
    for name in ("test_f1", "dev_f1"):
        assert len(client.get_metric_history(rid, name)) == 1, name
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], filter_string="metrics.test_f1 >= 0",
                                        order_by=[{"field_name": "metrics.test_f1", "ascending": False}], output_format="list")
    assert model.model_id in {m.model_id for m in found}
