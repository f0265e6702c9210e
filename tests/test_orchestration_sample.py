"""The sample pipeline through Dagster, as users run it: every asset of the `sample` partition with the
real stages (in-process, on a scratch copy of the project), and the entry point's multiprocess
executor on two assets (one process per step)."""
from __future__ import annotations

import shutil
import time

import pytest
from dagster import AssetKey, DagsterInstance, execute_job, materialize
from dagster._core.definitions.reconstruct import ReconstructableRepository

from cotpd.io import read_jsonl
from cotpd.params import Layout, read_params
from orchestration.assets import STAGE_ASSETS
from orchestration.checks import CHECKS
from orchestration.resources import CaptionerResource, LLMResource, MLflowResource, ProjectResource

from orchestration_helpers import scratch_project, small_params

ASSETS = {"raw_dataset", "image_captions", "cot_knowledge", "augmented_dataset", "baseline_model",
          "distilled_model", "metrics"}

pytestmark = pytest.mark.slow  # runs the real sample pipeline (about a minute or two)


@pytest.mark.timeout(900)
def test_materialize_every_asset_of_the_sample_partition(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = scratch_project(tmp_path / "proj", small_params)
    ledgers = {p: p.read_bytes() for p in sorted((root / "ledger" / "sample").glob("*.jsonl"))}
    assert ledgers, "the sample's LLM ledgers ship with the project"
    resources = {"project": ProjectResource(root=str(root)), "llm": LLMResource(), "captioner": CaptionerResource(),
                 "mlflow": MLflowResource()}
    t0 = time.perf_counter()
    result = materialize(STAGE_ASSETS + CHECKS, partition_key="sample", resources=resources,
                         instance=DagsterInstance.ephemeral())
    seconds = time.perf_counter() - t0
    print(f"materialized the sample partition in {seconds:.1f} s")
    assert result.success

    mats = {m.asset_key.path[-1]: m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert set(mats) == ASSETS
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert len(checks) == 6 and all(checks.values()), checks

    lay = Layout(root, "sample")
    assert mats["raw_dataset"]["samples"].value == sum(len(read_jsonl(p)) for p in lay.raw_dir.glob("*.jsonl"))
    assert 0 < mats["image_captions"]["coverage"].value <= 1
    know = mats["cot_knowledge"]
    # replay from the shipped ledger: every answer is a cache hit, nothing is paid twice
    assert know["cache_hits"].value > 0 and know["calls"].value == 0
    assert "sample_id" in know["preview"].value
    assert {p: p.read_bytes() for p in ledgers} == ledgers
    assert "preview" in mats["augmented_dataset"]

    # the training assets are MLflow runs tagged with this Dagster run
    import mlflow

    from cotpd.training.tracking import tracking_uri

    tparams = read_params(root)["tracking"]
    mlflow.set_tracking_uri(tracking_uri(root, tparams["uri"]))
    for asset, variant in (("baseline_model", "baseline"), ("distilled_model", "cotpd")):
        url = mats[asset]["mlflow_run"].value
        run_id = mats[asset]["mlflow_run_id"].value
        assert run_id in url
        run = mlflow.get_run(run_id)
        assert run.data.tags["dagster_run_id"] == result.run_id
        assert run.data.tags["orchestrator"] == "dagster"
        assert run.data.tags["variant"] == variant
        assert run.data.tags.get("git_commit")
    assert str(root) in mlflow.get_tracking_uri()

    metrics = mats["metrics"]
    for variant in ("baseline", "cotpd"):
        assert 0.0 <= metrics[f"f1_{variant}"].value <= 1.0
    assert "data:image/png;base64," in metrics["plot"].value


@pytest.mark.timeout(600)
def test_multiprocess_executor_runs_steps_in_their_own_processes(tmp_path, monkeypatch):
    """The entry point's job (multiprocess executor) on two cheap assets: each step a process."""
    root = scratch_project(tmp_path / "proj")
    monkeypatch.setenv("COTPD_ROOT", str(root))  # ProjectResource() finds the project through it
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recon = ReconstructableRepository.for_module("orchestration.definitions", "defs").get_reconstructable_job(
        "cotpd_pipeline")
    home = tmp_path / "dagster_home"  # the project's instance config in a scratch DAGSTER_HOME
    home.mkdir()
    shutil.copy(root / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        with execute_job(recon, instance=instance, tags={"dagster/partition": "sample"},
                         asset_selection=[AssetKey("raw_dataset"), AssetKey("image_captions")]) as result:
            assert result.success
            starts = [e for e in result.all_events if e.event_type_value == "STEP_START"]
            pids = {e.pid for e in starts}
            checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
            mats = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
            engine = [e.message for e in result.all_events if e.event_type_value == "ENGINE_EVENT"]
    assert mats == {"raw_dataset", "image_captions"}
    assert checks == {"raw_dataset_rows": True, "image_captions_coverage": True}
    assert len(pids) == len(starts) == 4  # one process per step (2 assets, their 2 checks)
    assert any("multiprocess" in (m or "").lower() for m in engine), engine
    assert Layout(root, "sample").captions.is_file()
