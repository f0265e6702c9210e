"""Dagster around an LLM that fails: a step whose requests outlast the client's own retries runs again
under the LLM assets' RetryPolicy (asking only what the ledger lacks), a failure no retry can fix
fails at once, and re-executing that run from failure reruns only the failed step. The real stages
run on a scratch project against the loopback fake LLM server (tests/llm_server.py)."""
from __future__ import annotations

import pytest
from dagster import (AssetKey, DagsterInstance, Definitions, ReexecutionOptions, RetryPolicy, define_asset_job,
                     execute_job, in_process_executor, materialize, reconstructable)

from cotpd.io import read_jsonl
from cotpd.params import Layout
from orchestration import assets as A
from orchestration.resources import CaptionerResource, LLMResource, MLflowResource, ProjectResource

from llm_server import fake_llm, llm_params  # noqa: F401  (pytest fixtures)
from orchestration_helpers import scratch_project, small_params

CHAIN = [A.raw_dataset, A.image_captions, A.cot_knowledge]


@pytest.fixture
def project(tmp_path, llm_params, monkeypatch):
    """The sample in record mode against the fake server; the client tries each request once, so one
    injected fault outlasts its retries as a long outage would outlast the real budget."""
    def edit(params):
        small_params(params)
        params["llm"].update(llm_params, max_retries=0)
        params["cot"]["max_samples"] = 2
    root = scratch_project(tmp_path / "proj", edit)
    monkeypatch.setenv("COTPD_ROOT", str(root))  # ProjectResource() finds the project through it
    # the policy's waits (up to 30 s for a first retry) are real time: none in a test
    monkeypatch.setattr(RetryPolicy, "calculate_delay", lambda self, attempt_num: 0)
    return root


def _resources():
    return {"project": ProjectResource(), "llm": LLMResource(), "captioner": CaptionerResource(),
            "mlflow": MLflowResource()}


def _events(result, kind: str) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == kind]


def test_llm_assets_retry_with_backoff():
    for a in (A.image_captions, A.cot_knowledge, A.augmented_dataset):
        policy = a.op.retry_policy
        assert policy == A.LLM_RETRY and policy.max_retries >= 2 and policy.backoff.value == "EXPONENTIAL"
    assert A.raw_dataset.op.retry_policy is None and A.metrics.op.retry_policy is None


def test_a_step_that_outlasts_the_client_retries_succeeds_on_the_asset_retry(project, fake_llm):
    fake_llm.fail_next("500", n=1)
    result = materialize(CHAIN, partition_key="sample", resources=_resources(), raise_on_error=False)
    assert result.success
    assert _events(result, "STEP_UP_FOR_RETRY") == ["cot_knowledge"]
    assert _events(result, "STEP_RESTARTED") == ["cot_knowledge"]
    # one request more than answers: the faulted one, asked again by the retry; every answer of the
    # first attempt came from the ledger then (each prompt answered once)
    assert fake_llm.chat_calls == sum(fake_llm.prompts.values()) + 1
    assert set(fake_llm.prompts.values()) == {1}
    knowledge = read_jsonl(Layout(project, "sample").knowledge)
    assert knowledge and all(r["source"] == "llm" for r in knowledge)


def chain_job():
    """The three assets as an in-process job (execute_job takes a reconstructable job)."""
    job = define_asset_job("llm_chain", selection=[a.key for a in CHAIN], executor_def=in_process_executor)
    return Definitions(assets=CHAIN, jobs=[job], resources=_resources()).resolve_job_def("llm_chain")


def test_a_permanent_failure_is_not_retried_and_reexecution_reruns_only_it(project, fake_llm, tmp_path):
    fake_llm.fail_next("401", n=1)  # a rejected key: retrying cannot help
    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        with execute_job(reconstructable(chain_job), instance, tags={"dagster/partition": "sample"},
                         raise_on_error=False) as failed:
            assert not failed.success
            assert _events(failed, "STEP_FAILURE") == ["cot_knowledge"]
            assert not _events(failed, "STEP_RESTARTED")
            first_run = failed.run_id
        calls = fake_llm.chat_calls
        # execute_job does not carry the parent run's partition tag over: name the partition again
        with execute_job(reconstructable(chain_job), instance, tags={"dagster/partition": "sample"},
                         raise_on_error=False,
                         reexecution_options=ReexecutionOptions.from_failure(first_run, instance)) as again:
            assert again.success
            assert _events(again, "STEP_START") == ["cot_knowledge"]  # the upstream assets were kept
            mats = {e.asset_key for e in again.get_asset_materialization_events()}
    assert mats == {AssetKey("cot_knowledge")}
    assert fake_llm.chat_calls > calls
