"""`cotpd plan`: the stages' own requests, counted against the ledger, estimated, nothing sent."""
from __future__ import annotations

import json
import math

import pytest

from cotpd.cli import main
from cotpd.params import Params, apply_set, parse_set
from cotpd.plan import plan_dataset
from cotpd.plan_estimate import make_counter


def _plans(params: dict, root, dataset: str = "sample", sets=()):
    dp = Params(apply_set(params, parse_set(list(sets)))).dataset(dataset)
    stages, inputs = plan_dataset(dp, root, make_counter())
    return {sp.stage: sp for sp in stages}, inputs


@pytest.mark.parametrize("dataset", ["sample", "sample_mnre"])
def test_plan_rebuilds_the_recorded_requests_and_its_input_estimate_is_within_25_percent(params, repo_root, dataset):
    """The shipped sample ledgers were recorded by the local backend with usage: every request the
    plan builds is one of them (same keys as the stages), and the estimate is close to the usage."""
    plans, _ = _plans(params, repo_root, dataset)
    for stage in ("knowledge", "augment"):
        sp, est = plans[stage], plans[stage].estimate
        assert len(sp.requests) > 10 and est.answered == len(sp.requests) and est.to_send == 0, stage
        recorded, estimated = est.answered_input_tokens_recorded, est.answered_input_tokens_estimated
        assert recorded > 1000 and abs(estimated / recorded - 1) <= 0.25, (stage, estimated, recorded)
    assert plans["captions"].requests == [] and "precomputed" in plans["captions"].note


def test_plan_cli_counts_what_the_ledger_lacks_and_prices_it(repo_root, capsys):
    """A changed answer budget makes every knowledge request new: all to send, priced, batched."""
    sets = ["--set", "cot.max_tokens=40", "--set", "llm.backend=openai", "--set", "llm.batch_api=true",
            "--set", "llm.batch_max_requests=50", "--set", "llm.price_per_1m_input=1",
            "--set", "llm.price_per_1m_output=2", "--set", "llm.requests_per_minute=60"]
    assert main(["plan", "--root", str(repo_root), "--dataset", "sample", "--json", *sets]) == 0
    out = json.loads(capsys.readouterr().out)
    know = next(r for r in out["stages"] if r["stage"] == "knowledge")
    n = know["requests"]
    assert n > 100 and know["answered"] == 0 and know["to_send"] == n
    assert know["output_tokens_max"] == 40 * n
    assert know["output_tokens_typical"] < know["output_tokens_max"]  # learnt from the recorded answers
    assert know["cost_usd_max"] == pytest.approx((know["input_tokens"] * 1 + 40 * n * 2) / 1e6 / 2, abs=1e-4)
    assert know["batches"] == math.ceil(n / 50)
    assert know["wall_bound"] == "requests_per_minute" and know["wall_online_s"] == pytest.approx(n, rel=0.01)
    aug = next(r for r in out["stages"] if r["stage"] == "augment")
    assert aug["to_send"] == 0 and aug["answered"] == aug["requests"] > 0  # augment keys did not change
    assert out["token_estimator"].startswith(("characters / 4", "tiktoken"))


def test_plan_counts_the_fact_checks_that_follow_unanswered_proposals(params, repo_root):
    plans, _ = _plans(params, repo_root, sets=["augment.entity.source=llm"])
    versions = [r.prompt_version.split(":")[0] for r in plans["augment"].requests]
    n = params["augment"]["entity"]["n"]
    assert versions.count("aug_entity_propose") == n and versions.count("aug_entity_check") == n
    assert "placeholder" in plans["augment"].note
