"""Dagster wiring: definitions load, resources reach the stages, metadata is safe, prompts version
the LLM assets. The stage functions are replaced by small fakes here (the real sample pipeline runs
in test_orchestration_sample.py), so these tests say whether the orchestration layer is right."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, Definitions, EnvVar, materialize

from cotpd import pipeline
from cotpd.io import write_json, write_jsonl
from cotpd.params import Layout
from cotpd.prompts import PROMPTS_DIR, stage_prompts
from orchestration import assets as A
from orchestration.checks import CHECKS
from orchestration.definitions import defs
from orchestration.resources import CaptionerResource, LLMResource, MLflowResource, ProjectResource

from orchestration_helpers import scratch_project

RUN_CONFIGS = Path(A.__file__).parent / "run_configs"
SECRET = "sk-test-" + "x7" * 20
ASSETS = ["raw_dataset", "image_captions", "cot_knowledge", "augmented_dataset", "baseline_model",
          "distilled_model", "metrics"]


class FakeStages:
    """Stand-ins for cotpd.stages.*: write the files each stage owns, record how they were called."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict, dict]] = []

    def __call__(self, name):
        def run(dataset, root, params, **kw):
            self.calls.append((name, dataset, params, kw))
            lay = Layout(root, dataset)
            if name == "prepare":
                for split in ("train", "valid", "test"):
                    write_jsonl(lay.raw(split), [{"id": f"{split}-0", "tokens": ["Hi", "Denver"], "labels": ["O", "B-LOC"],
                                                 "image_id": "1.jpg", "split": split, "task": "ner"}])
                return {"samples": 3, "note": f"key is {SECRET}"}
            if name == "captions":
                write_jsonl(lay.captions, [{"image_id": "1.jpg", "caption": "a city", "source": "fake", "status": "ok"}])
                return {"images": 1, "captioned": 1, "coverage": 1.0, "path": str(lay.captions)}
            if name == "knowledge":
                write_jsonl(lay.knowledge, [{"sample_id": "train-0", "split": "train", "grain": "noun",
                                             "text": "Denver | a city", "source": "llm"}])
                return {"records": 1, "calls": 0, "cache_hits": 1, "tokens": 12, "api_key": SECRET}
            if name == "augment":
                write_jsonl(lay.augmented, [])
                write_jsonl(lay.rejected, [])
                return {"kept": 0, "rejected": 0}
            if name == "train":
                variant = kw["variant"]
                write_json(lay.model_dir(variant) / "config.json", {"dev_f1": 0.5, "best_epoch": 1, "params": {"lr": 1e-3}})
                return {"variant": variant, "dev_f1": 0.5, "mlflow_url": f"http://127.0.0.1:5000/#/runs/{variant}"}
            if name == "evaluate":
                write_json(lay.metrics_summary, {"baseline.f1": 0.25, "cotpd.f1": 0.3, "cotpd.precision": 0.5})
                return {"f1": {"baseline": 0.25, "cotpd": 0.3}, "metrics": str(lay.metrics_summary)}
            raise AssertionError(name)

        return run


@pytest.fixture
def fake(monkeypatch):
    f = FakeStages()
    monkeypatch.setattr(pipeline, "stage", f)
    return f


@pytest.fixture
def project(tmp_path):
    return scratch_project(tmp_path / "proj")


def resources(root, **llm):
    return {"project": ProjectResource(root=str(root)), "llm": LLMResource(**llm), "captioner": CaptionerResource(),
            "mlflow": MLflowResource()}


def test_definitions_load_with_every_asset_partitioned_by_dataset():
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(ASSETS)
    datasets = list(ProjectResource().params()["datasets"])
    for name in ASSETS:
        node = graph.get(AssetKey(name))
        assert node.partitions_def.get_partition_keys() == datasets
        assert node.description and "\n" not in node.description.strip()  # a one-line docstring
    assert {"sample", "sample_mnre", "twitter2015", "mnre"} <= set(datasets)
    # the LLM steps share one concurrency pool; training/evaluation do not
    assert graph.get(AssetKey("cot_knowledge")).pools == {"llm"}
    assert graph.get(AssetKey("augmented_dataset")).pools == {"llm"}
    assert graph.get(AssetKey("distilled_model")).pools == graph.get(AssetKey("baseline_model")).pools == {"train"}
    assert not graph.get(AssetKey("metrics")).pools
    check = {c.key.name: c for c in (spec for cd in CHECKS for spec in cd.check_specs)}
    assert check["augmented_dataset_expectations"].blocking


def test_api_key_resource_reads_the_environment_variable(monkeypatch):
    from orchestration.resources import default_resources

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    res = default_resources()["llm"]
    assert isinstance(res.api_key, EnvVar) or res.api_key == EnvVar("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    assert default_resources()["llm"].api_key is None


def test_materialize_passes_resources_and_keeps_secrets_out_of_metadata(fake, project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    res = resources(project, mode="record", base_url="http://127.0.0.1:9/v1", api_key=SECRET)
    res["mlflow"] = MLflowResource(experiment="orchestration-test")
    result = materialize(A.STAGE_ASSETS + CHECKS, partition_key="sample", resources=res,
                         instance=DagsterInstance.ephemeral())
    assert result.success
    names = [c[0] for c in fake.calls]
    assert names.index("prepare") < names.index("captions") < names.index("knowledge") < names.index("augment")
    assert names.count("train") == 2 and names[-1] == "evaluate"
    for name, dataset, params, kw in fake.calls:
        assert dataset == "sample"
        # an asset's resources override params.yaml for its stage (each asset takes only the
        # resources it uses), and nothing else changes
        dp = params.dataset(dataset)
        if name in ("captions", "knowledge", "augment"):
            assert dp.llm.mode == "record" and dp.llm.base_url == "http://127.0.0.1:9/v1"
        else:
            assert dp.llm.mode == "replay"  # the LLM resource is not an input of this asset
        assert dp.tracking.experiment == ("orchestration-test" if name == "train" else "cotpd")
        assert params.raw["train"] == ProjectResource(root=str(project)).params()["train"]
    tracker = {kw["variant"]: kw["tracker"] for n, _, _, kw in fake.calls if n == "train"}
    assert set(tracker) == {"baseline", "cotpd"}
    assert tracker["cotpd"]["dagster_run_id"] == result.run_id
    assert tracker["cotpd"]["orchestrator"] == "dagster"
    assert tracker["cotpd"]["dagster_asset"] == "distilled_model"

    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert set(mats) == set(ASSETS)
    all_meta = json.dumps({k: str(m.materialization.metadata) for k, m in mats.items()})
    assert SECRET not in all_meta and "api_key" not in all_meta
    know = mats["cot_knowledge"].materialization.metadata
    assert know["cache_hits"].value == 1 and know["tokens"].value == 12
    assert "Denver" in know["preview"].value  # the first rows as a markdown table
    assert mats["distilled_model"].materialization.metadata["mlflow_run"].value.endswith("/runs/cotpd")
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {c: True for c in ("raw_dataset_rows", "image_captions_coverage", "augmented_dataset_expectations",
                                        "baseline_model_finite_scores", "distilled_model_finite_scores",
                                        "metrics_finite")}


def test_failing_expectations_block_training(fake, project, monkeypatch):
    """A row that breaks the suite (labels not aligned with tokens) stops the models."""
    real = fake("augment")

    def bad_augment(dataset, root, params, **kw):
        real(dataset, root, params, **kw)
        write_jsonl(Layout(root, dataset).augmented, [{"id": "aug-0", "tokens": ["a", "b"], "labels": ["O"],
                                                       "split": "train", "task": "ner",
                                                       "meta": {"origin": "train-0", "aug": "style"}}])
        return {"kept": 1}

    monkeypatch.setattr(pipeline, "stage", lambda n: bad_augment if n == "augment" else fake(n))
    result = materialize(A.STAGE_ASSETS + CHECKS, partition_key="sample", resources=resources(project),
                         instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["augmented_dataset_expectations"] is False
    done = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
    assert "augmented_dataset" in done and not done & {"baseline_model", "distilled_model", "metrics"}


def test_prompt_edit_changes_code_version_and_marks_downstream_stale(fake, project, tmp_path):
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    before = A.code_version("knowledge", prompts)
    assert before == A.code_version("knowledge")  # same files, same version
    target = prompts / f"{stage_prompts('knowledge')[0]}.txt"
    target.write_text(target.read_text(encoding="utf-8") + "\nBe brief.\n", encoding="utf-8")
    after = A.code_version("knowledge", prompts)
    assert after != before
    assert A.code_version("augment", prompts) == A.code_version("augment")  # other stages untouched

    instance = DagsterInstance.ephemeral()
    all_defs = A.STAGE_ASSETS
    assert materialize(all_defs, partition_key="sample", resources=resources(project), instance=instance).success
    fresh = get_stale_status_resolver(instance, all_defs)
    assert fresh.get_status(AssetKey("augmented_dataset"), "sample") == StaleStatus.FRESH
    edited = [a.map_asset_specs(lambda s: s.replace_attributes(code_version=after)) if a is A.cot_knowledge else a
              for a in all_defs]
    stale = get_stale_status_resolver(instance, edited)
    assert stale.get_status(AssetKey("cot_knowledge"), "sample") == StaleStatus.STALE
    assert [c.reason for c in stale.get_stale_causes(AssetKey("cot_knowledge"), "sample")] == ["has a new code version"]
    assert stale.get_status(AssetKey("image_captions"), "sample") == StaleStatus.FRESH

    # the edited prompt asks new questions: re-materialized knowledge has new content, so a new data
    # version (a hash of knowledge.jsonl), and everything downstream of it turns stale
    real = fake("knowledge")

    def new_answers(dataset, root, params, **kw):
        out = real(dataset, root, params, **kw)
        write_jsonl(Layout(root, dataset).knowledge, [{"sample_id": "train-0", "split": "train", "grain": "noun",
                                                       "text": "Denver | the capital of Colorado", "source": "llm"}])
        return out

    pipeline_stage = pipeline.stage
    pipeline.stage = lambda n: new_answers if n == "knowledge" else pipeline_stage(n)
    try:
        assert materialize(edited, partition_key="sample", resources=resources(project), instance=instance,
                           selection=["cot_knowledge"]).success
    finally:
        pipeline.stage = pipeline_stage
    after_run = get_stale_status_resolver(instance, edited)
    assert after_run.get_status(AssetKey("cot_knowledge"), "sample") == StaleStatus.FRESH
    for downstream in ("augmented_dataset", "distilled_model", "baseline_model"):  # its direct dependents
        assert after_run.get_status(AssetKey(downstream), "sample") == StaleStatus.STALE, downstream
    assert after_run.get_status(AssetKey("image_captions"), "sample") == StaleStatus.FRESH


def test_run_configs_validate_and_reach_the_stages(fake, project):
    """The run config files a user passes with -c: the local ones validate against the entry
    point's job, and resource config in run config overrides params.yaml for that run only."""
    from dagster import validate_run_config

    from orchestration.definitions import EXECUTORS, executor

    job = defs.resolve_job_def("cotpd_pipeline")
    configs = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in RUN_CONFIGS.glob("*.yaml")}
    assert {"local", "record_vllm", "celery", "k8s"} <= set(configs)
    for name in ("local", "record_vllm"):
        assert validate_run_config(job, configs[name])
    assert executor("in_process").name == "in_process" and executor().name == "multiprocess"
    with pytest.raises(ValueError, match="COTPD_DAGSTER_EXECUTOR"):
        executor("slurm")
    assert set(EXECUTORS) >= {"celery", "k8s"}

    result = materialize(A.STAGE_ASSETS, partition_key="sample", resources=resources(project),
                         instance=DagsterInstance.ephemeral(), selection=["cot_knowledge"],
                         run_config={"resources": configs["record_vllm"]["resources"]})
    assert result.success
    (name, _, params, _), = fake.calls
    assert name == "knowledge"
    llm = params.dataset("sample").llm
    assert llm.mode == "record" and llm.backend == "openai"
    assert llm.base_url == configs["record_vllm"]["resources"]["llm"]["config"]["base_url"]


def test_cli_parses_string_asset_selections():
    """`--select '*'` goes through Dagster's ANTLR grammar (broken by a wrong antlr4 runtime pin)."""
    import subprocess

    from orchestration_helpers import REPO_ROOT, VENV_BIN

    out = subprocess.run([str(VENV_BIN / "dagster"), "asset", "list", "--select", "*", "-m", "orchestration.definitions"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(out.stdout.split()) == sorted(ASSETS)
