"""Fixtures around the fake OpenAI-compatible server (cotpd_testing/fake_llm.py) for any test.

Use in a test module (tests/ is on sys.path under pytest's default import mode):

    from llm_server import fake_llm, llm_params  # noqa: F401  (pytest fixtures)

    def test_x(fake_llm, llm_params, tmp_path):
        runner = build_runner(llm_cfg(llm_params, max_retries=1), tmp_path / "ledger.jsonl")
        fake_llm.fail_next("429", n=1, retry_after=0)
        ... fake_llm.chat_calls ...

`fake_llm` is a fresh FakeLLMServer on 127.0.0.1 (free port) per test; set `fake_llm.responder`
to a function body_dict -> answer text to control answers (default: "yes" to yes/no questions,
else an echo of the prompt). `llm_params` is an `llm` params section (a params.yaml mapping) pointing
at it in record mode with fast retries and no progress bar; `llm_cfg` types one, with changes.
"""
from __future__ import annotations

import pytest

from cotpd.config import LLMCfg
from cotpd_testing.fake_llm import FakeLLMServer, default_responder, last_user_text, start_server

__all__ = ["FakeLLMServer", "default_responder", "fake_llm", "last_user_text", "llm_cfg", "llm_params", "start_server"]


def llm_cfg(raw: dict, **changes) -> LLMCfg:
    """The typed `llm` section of a params mapping, with `changes` applied."""
    return LLMCfg.model_validate({**raw, **changes})


@pytest.fixture
def fake_llm():
    srv = start_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def llm_params(fake_llm, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a loopback server needs no key
    return {"backend": "openai", "mode": "record", "base_url": fake_llm.base_url, "model": "fake-model",
            "temperature": 0.0, "max_tokens": 32, "seed": 0, "concurrency": 8,
            "requests_per_minute": 1_000_000, "tokens_per_minute": 1e9, "max_retries": 4,
            "timeout_s": 5, "backoff_base_s": 0.01, "batch_poll_s": 0.02, "progress": False,
            "price_per_1m_input": 0.15, "price_per_1m_output": 0.60}
