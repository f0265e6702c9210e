"""The OpenAI Batch API path against the fake server's /v1/files and /v1/batches."""
from __future__ import annotations

import json

import pytest
from llm_server import fake_llm, llm_cfg, llm_params  # noqa: F401  (fixtures)

from cotpd.errors import CotpdError
from cotpd.llm import build_runner, make_request


def _reqs(cfg, n):
    return [make_request(cfg, [{"role": "user", "content": f"batch question {i}"}], "b:1", f"train-{i}")
            for i in range(n)]


def test_batch_api_records_every_answer_under_its_key(fake_llm, llm_params, tmp_path):
    fake_llm.batch_polls = 2  # the batch reports in_progress twice before completing
    cfg = llm_cfg(llm_params, batch_api=True)
    ledger = tmp_path / "ledger.jsonl"
    runner = build_runner(cfg, ledger)
    reqs = _reqs(cfg, 6)
    out = runner.run(reqs, "augment")
    assert [r.key for r in out] == [r.key for r in reqs]
    assert all(f"batch question {i}" in r.text for i, r in enumerate(out))
    assert fake_llm.chat_calls == 0  # no per-request calls: all went through the batch
    assert fake_llm.counts["/v1/files"] == 1 and fake_llm.counts["/v1/batches"] == 1
    assert fake_llm.counts["/v1/batches/batch_1"] == 3  # polled until completed
    # the uploaded input is the documented Batch API format, custom_id = ledger key
    lines = [json.loads(x) for x in fake_llm.files["file-1"]["data"].decode().splitlines()]
    assert [x["custom_id"] for x in lines] == [r.key for r in reqs]
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["body"]["model"] == cfg.model
    rows = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in reqs)
    assert all(r["backend"].startswith("openai-batch") for r in rows)
    st = runner.stats("augment")
    full = (st["prompt_tokens"] * 0.15 + st["completion_tokens"] * 0.60) / 1e6
    assert st["calls"] == 6 and st["cost_usd"] == pytest.approx(full / 2, abs=1e-6)  # half price
    assert not (tmp_path / "ledger.jsonl.batches.json").exists() or \
        json.loads((tmp_path / "ledger.jsonl.batches.json").read_text()) == {}


def test_failed_batch_lines_are_reported_and_the_rest_recorded(fake_llm, llm_params, tmp_path):
    cfg = llm_cfg(llm_params, batch_api=True)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    fake_llm.fail_next("500", n=1)  # the first line of the batch lands in the error file
    reqs = _reqs(cfg, 4)
    with pytest.raises(CotpdError, match=r"(?s)1 of 4 LLM requests.*train-0.*injected 500"):
        runner.run(reqs, "augment")
    assert len(runner.ledger) == 3
    out = runner.run(reqs, "augment")  # the rerun submits a batch of the missing one only
    assert len(out) == 4 and len(runner.ledger) == 4
    assert fake_llm.counts["/v1/batches"] == 2
    second = fake_llm.files["file-4"]["data"].decode().splitlines()  # files 1-3: input, output, errors
    assert [json.loads(x)["custom_id"] for x in second] == [reqs[0].key]
