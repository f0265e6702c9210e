"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1: retries, fail-fast, replay."""
from __future__ import annotations

import asyncio
import time

import pytest
from llm_server import fake_llm, llm_cfg, llm_params  # noqa: F401  (fixtures)

from cotpd.errors import CotpdError, LedgerMiss
from cotpd.llm import build_runner, make_request
from cotpd.llm.client import FatalLLMError, RateLimiter, parse_retry_after


def _reqs(cfg, n, tag="q"):
    return [make_request(cfg, [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": f"{tag} number {i}"}], "test:1", f"train-{i}")
            for i in range(n)]


@pytest.mark.parametrize("fault", ["429", "500", "drop", "malformed", "timeout"])
def test_transient_failures_are_retried(fake_llm, llm_params, tmp_path, fault):
    cfg = llm_cfg(llm_params, timeout_s=0.5)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    fake_llm.fail_next(fault, n=2, retry_after=0, sleep=1.5)
    reqs = _reqs(cfg, 3)
    out = runner.run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs]
    assert all(r.text.startswith("answer ") and f"q number {i}" in r.text for i, r in enumerate(out))
    st = runner.stats("knowledge")
    assert st["calls"] == 3 and st["retries"] == 2 and st["errors"] == 0
    assert fake_llm.chat_calls == 5  # 3 answers + 2 injected failures, each retried once


def test_retry_after_is_honoured(fake_llm, llm_params, tmp_path):
    runner = build_runner(llm_cfg(llm_params), tmp_path / "ledger.jsonl")
    fake_llm.fail_next("429", n=1, retry_after=1)
    t0 = time.monotonic()
    runner.run(_reqs(llm_cfg(llm_params), 1), "s")
    assert time.monotonic() - t0 >= 1.0  # backoff_base_s is 0.01: only Retry-After explains a 1 s wait
    assert fake_llm.chat_calls == 2


def test_out_of_retries_records_successes_then_raises(fake_llm, llm_params, tmp_path):
    cfg = llm_cfg(llm_params, max_retries=1, concurrency=1)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    reqs = _reqs(cfg, 4)
    runner.run(reqs[:1], "s")  # warm: the next failure hits request 2 (the run's first request)
    fake_llm.fail_next("500", n=2)
    with pytest.raises(CotpdError, match=r"1 of 3 LLM requests of stage 's' failed") as err:
        runner.run(reqs, "s")
    assert "train-1" in str(err.value) and "HTTP 500" in str(err.value)
    assert runner.stats("s")["errors"] == 1
    # the two that succeeded are in the ledger: a rerun asks only for the failed one
    fake_llm.reset_counts()
    assert len(runner.run(reqs, "s")) == 4 and fake_llm.chat_calls == 1


def test_401_fails_fast_with_one_request_and_no_key_in_message(fake_llm, llm_params, tmp_path, monkeypatch):
    fake_llm.api_key = "sk-right-key"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-XYZ123")
    runner = build_runner(llm_cfg(llm_params, max_retries=6), tmp_path / "ledger.jsonl")
    with pytest.raises(FatalLLMError, match=r"authentication failed for http://127\.0\.0\.1:\d+/v1: "
                                            r"check OPENAI_API_KEY") as err:
        runner.run(_reqs(llm_cfg(llm_params), 20), "s")
    assert fake_llm.chat_calls == 1
    assert "sk-canary" not in str(err.value) and "sk-canary" not in repr(runner.backend)


def test_400_fails_that_request_only_and_404_aborts(fake_llm, llm_params, tmp_path):
    runner = build_runner(llm_cfg(llm_params), tmp_path / "ledger.jsonl")
    fake_llm.fail_next("400")
    with pytest.raises(CotpdError, match="(?s)1 of 3 .*HTTP 400"):
        runner.run(_reqs(llm_cfg(llm_params), 3), "s")
    assert fake_llm.chat_calls == 3  # never retried; the other two were answered
    wrong = llm_cfg(llm_params, base_url=fake_llm.base_url + "/nowhere")  # every call is a 404
    fake_llm.reset_counts()
    with pytest.raises(FatalLLMError, match="HTTP 404"):
        build_runner(wrong, tmp_path / "l2.jsonl").run(_reqs(llm_cfg(llm_params), 5, tag="x"), "s")
    assert fake_llm.total_calls == 1  # the probe request fails, the other four are never sent


def test_replay_makes_zero_calls_and_names_the_missing_prompt(fake_llm, llm_params, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    reqs = _reqs(llm_cfg(llm_params), 10)
    recorded = build_runner(llm_cfg(llm_params), ledger).run(reqs, "knowledge")
    fake_llm.reset_counts()
    replay = build_runner(llm_cfg(llm_params, mode="replay", base_url="http://127.0.0.1:9/v1"), ledger)
    out = replay.run(reqs, "knowledge")
    assert [r.text for r in out] == [r.text for r in recorded] and all(r.cached for r in out)
    assert fake_llm.total_calls == 0 and replay._backend is None  # no client was even built
    assert replay.stats("knowledge")["cache_hits"] == 10 and replay.stats("knowledge")["calls"] == 0
    new = _reqs(llm_cfg(llm_params), 1, tag="unseen question")[0]
    with pytest.raises(LedgerMiss, match=r"1 of 11 .*sample_key='train-0' prompt_version='test:1' "
                                         r"prompt='unseen question number 0'"):
        replay.run(reqs + [new], "knowledge")
    assert fake_llm.total_calls == 0


def test_dedup_order_stats_and_cost(fake_llm, llm_params, tmp_path):
    runner = build_runner(llm_cfg(llm_params), tmp_path / "ledger.jsonl")
    reqs = _reqs(llm_cfg(llm_params), 5)
    mixed = [reqs[3], reqs[0], reqs[3], reqs[1], reqs[0]]
    out = runner.run(mixed, "augment")
    assert [r.key for r in out] == [r.key for r in mixed] and out[0].text == out[2].text
    assert fake_llm.chat_calls == 3
    st = runner.stats("augment")
    assert st["calls"] == 3 and st["cache_hits"] == 2 and st["prompt_tokens"] > 0
    expected = (st["prompt_tokens"] * 0.15 + st["completion_tokens"] * 0.60) / 1e6
    assert st["cost_usd"] == pytest.approx(expected, abs=1e-6) and st["cost_usd"] > 0
    assert runner.stats("other")["calls"] == 0 and runner.stats()["calls"] == 3


def test_refresh_calls_again_and_newest_answer_wins(fake_llm, llm_params, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    reqs = _reqs(llm_cfg(llm_params), 2)
    build_runner(llm_cfg(llm_params), ledger).run(reqs, "s")
    fake_llm.responder = lambda body: "refreshed"
    fake_llm.reset_counts()
    refresher = build_runner(llm_cfg(llm_params, mode="refresh"), ledger)
    out = refresher.run(reqs, "s")
    assert fake_llm.chat_calls == 2 and [r.text for r in out] == ["refreshed"] * 2
    refresher.run(reqs, "s")  # the same runner does not re-ask what it already refreshed
    assert fake_llm.chat_calls == 2
    replay = build_runner(llm_cfg(llm_params, mode="replay"), ledger).run(reqs, "s")
    assert [r.text for r in replay] == ["refreshed"] * 2
    assert len(ledger.read_text().splitlines()) == 4  # append-only: the old answers stay on disk


def test_api_key_never_written(fake_llm, llm_params, tmp_path, monkeypatch, caplog):
    canary = "sk-canary-XYZ123"
    monkeypatch.setenv("OPENAI_API_KEY", canary)
    fake_llm.api_key = canary
    caplog.set_level("DEBUG")
    runner = build_runner(llm_cfg(llm_params), tmp_path / "ledger.jsonl")
    fake_llm.fail_next("500")
    runner.run(_reqs(llm_cfg(llm_params), 4), "s")
    assert fake_llm.chat_calls == 5
    fake_llm.fail_next("400")
    with pytest.raises(CotpdError) as err:
        runner.run(_reqs(llm_cfg(llm_params), 1, tag="other"), "s")
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert blobs and not any(canary.encode() in b for b in blobs)
    assert canary not in caplog.text and canary not in str(err.value) and canary not in repr(runner.backend)


def test_many_concurrent_connections(fake_llm, llm_params, tmp_path):
    fake_llm.latency = 0.2
    cfg = llm_cfg(llm_params, concurrency=32)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    t0 = time.monotonic()
    out = runner.run(_reqs(cfg, 64), "s")
    wall = time.monotonic() - t0
    assert len(out) == 64 and fake_llm.chat_calls == 64
    assert fake_llm.max_inflight == 32  # the semaphore's limit is reached and never exceeded
    assert wall < 64 * 0.2 / 2  # sequential takes 12.8 s; 32-way ~0.6 s (+ the probe) when idle


def test_rate_limiter_and_retry_after_parsing():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None

    async def go():
        lim = RateLimiter(rpm=600, tpm=1e9)  # 10 requests/s, burst 10
        t0 = time.monotonic()
        for _ in range(20):
            await lim.acquire(1)
        return time.monotonic() - t0

    assert 0.8 <= asyncio.run(go()) <= 2.0  # 10 from the burst, 10 more at 10/s
