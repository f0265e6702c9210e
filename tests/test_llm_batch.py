"""The OpenAI Batch API path against the fake server's /v1/files and /v1/batches."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from llm_server import fake_llm, llm_cfg, llm_params  # noqa: F401  (fixtures)

from cotpd.errors import CotpdError
from cotpd.llm import batch, build_runner, make_request


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


def _state(tmp_path) -> dict:
    path = tmp_path / "ledger.jsonl.batches.json"
    return json.loads(path.read_text())["batches"] if path.exists() else {}


def test_a_job_is_split_into_batches_of_at_most_batch_max_requests(fake_llm, llm_params, tmp_path):
    cfg = llm_cfg(llm_params, batch_api=True, batch_max_requests=2)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    reqs = _reqs(cfg, 6)
    out = runner.run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs] and len(runner.ledger) == 6
    assert fake_llm.counts["/v1/batches"] == 3 and fake_llm.chat_calls == 0
    inputs = [f["data"].decode().splitlines() for f in fake_llm.files.values() if f["meta"]["purpose"] == "batch"]
    assert [[json.loads(x)["custom_id"] for x in lines] for lines in inputs] == \
        [[r.key for r in reqs[i:i + 2]] for i in (0, 2, 4)]
    assert _state(tmp_path) == {}  # every batch's answers recorded: nothing left to resume


def test_the_input_file_size_limit_splits_too(monkeypatch):
    cfg = llm_cfg({"model": "m"})
    reqs = _reqs(cfg, 5)
    line = len(batch.encode_line(reqs[0]))
    chunks = batch.split_batches(reqs, max_requests=50_000, max_bytes=2 * line + 1)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert all(sum(len(x) for _, x in c) <= 2 * line + 1 for c in chunks)
    with pytest.raises(CotpdError, match="over the 10-byte file limit"):
        batch.split_batches(reqs, max_requests=50_000, max_bytes=10)


def test_each_batch_resumes_after_an_interrupted_run(fake_llm, llm_params, tmp_path):
    """A run stopped while polling (here: out of batch_max_wait_s; a kill leaves the same state file)
    is resumed batch by batch: a rerun polls the batches already paid for and submits only the rest."""
    fake_llm.batch_polls = 10 ** 6  # never finishes during the first run
    cfg = llm_cfg(llm_params, batch_api=True, batch_max_requests=2, batch_max_wait_s=0.2)
    reqs = _reqs(cfg, 6)
    with pytest.raises(CotpdError, match=r"batches \['batch_1', 'batch_2'\] still running"):
        build_runner(cfg, tmp_path / "ledger.jsonl").run(reqs[:4], "knowledge")
    state = _state(tmp_path)
    assert {b: v["keys"] for b, v in state.items()} == {"batch_1": [r.key for r in reqs[:2]],
                                                        "batch_2": [r.key for r in reqs[2:4]]}
    fake_llm.batch_polls = 0  # the provider finishes them now
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    out = runner.run(reqs, "knowledge")  # the two pending batches + one new one for the last two
    assert [r.key for r in out] == [r.key for r in reqs] and len(runner.ledger) == 6
    assert fake_llm.counts["/v1/batches"] == 3  # batch_1 and batch_2 were not submitted again
    third = [f for f in fake_llm.files.values() if f["meta"]["purpose"] == "batch"][-1]
    assert [json.loads(x)["custom_id"] for x in third["data"].decode().splitlines()] == [r.key for r in reqs[4:]]
    assert _state(tmp_path) == {}


def test_result_rows_for_unknown_custom_ids_are_reported_never_recorded(fake_llm, llm_params, tmp_path, caplog):
    run_batch = fake_llm.run_batch

    def with_a_stranger(b):  # the provider's output file also holds a row this batch never sent
        run_batch(b)
        out = fake_llm.files[b["output_file_id"]]
        stranger = json.loads(out["data"].decode().splitlines()[0])
        stranger["custom_id"] = "f" * 64
        out["data"] += (json.dumps(stranger) + "\n").encode()

    fake_llm.run_batch = with_a_stranger
    cfg = llm_cfg(llm_params, batch_api=True)
    runner = build_runner(cfg, tmp_path / "ledger.jsonl")
    reqs = _reqs(cfg, 3)
    assert len(runner.run(reqs, "knowledge")) == 3
    rows = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in reqs)  # the stranger is not merged
    assert "1 result rows for custom_ids this batch never sent were NOT recorded" in caplog.text
    assert "f" * 64 in caplog.text and "batch_1" in caplog.text


# -- issue #23: a kill between batches.create and the state write pays nothing twice ----------------

CHILD = """
import json, os, signal, sys
from cotpd.config import LLMCfg
from cotpd.llm import batch, build_runner, make_request

def killed(self, batch_id, keys, chunk=None):  # batches.create has returned; its id is not saved yet
    os.kill(os.getpid(), signal.SIGKILL)

batch.BatchState.add = killed
cfg = LLMCfg.model_validate(json.loads(sys.argv[1]))
reqs = [make_request(cfg, [{"role": "user", "content": f"batch question {i}"}], "b:1", f"train-{i}")
        for i in range(int(sys.argv[3]))]
build_runner(cfg, sys.argv[2]).run(reqs, "knowledge")
"""


def _killed_in_the_window(cfg, ledger, n) -> int:
    """Run the batch path in a child that SIGKILLs itself right after the first batches.create."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, cfg.model_dump_json(), str(ledger), str(n)],
                            cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _paid(fake) -> list[int]:
    """How often each request was answered, once the provider has run every batch it accepted."""
    for b in list(fake.batches.values()):
        if b["status"] in ("validating", "in_progress"):  # a batch runs whether or not anyone polls it
            fake.run_batch(b)
    return sorted(fake.prompts.values())


@pytest.mark.parametrize("state_lost", [False, True])
def test_a_kill_after_batches_create_pays_nothing_twice(fake_llm, llm_params, tmp_path, state_lost):
    cfg = llm_cfg(llm_params, batch_api=True, batch_max_requests=2)
    reqs, ledger = _reqs(cfg, 6), tmp_path / "ledger.jsonl"
    assert _killed_in_the_window(cfg, ledger, 6) == -signal.SIGKILL
    assert list(fake_llm.batches) == ["batch_1"]  # created and paid for; its id never reached the state
    chunks = [batch.chunk_id([r.key for r in reqs[i:i + 2]]) for i in (0, 2, 4)]
    state = json.loads((tmp_path / "ledger.jsonl.batches.json").read_text())
    assert state == {"batches": {}, "submitting": {chunks[0]: {"keys": [r.key for r in reqs[:2]],
                                                               "at": pytest.approx(time.time(), abs=60),
                                                               "file": fake_llm.batches["batch_1"]["input_file_id"]}}}
    if state_lost:  # no intent: the still-running batch is found by its chunk id alone
        (tmp_path / "ledger.jsonl.batches.json").unlink()
    else:  # the provider finished it while nobody watched: the intent adopts a completed batch too
        fake_llm.run_batch(fake_llm.batches["batch_1"])
    runner = build_runner(cfg, ledger)
    out = runner.run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs] and len(runner.ledger) == 6
    assert all(f"batch question {i}" in r.text for i, r in enumerate(out))
    # one batch per chunk in all, and the rerun formed the same chunks as a clean split
    assert [b["metadata"] for b in fake_llm.batches.values()] == [{"cotpd_chunk": c} for c in chunks]
    assert fake_llm.counts["/v1/batches"] == 3 and _paid(fake_llm) == [1] * 6  # nothing paid twice
    assert _state(tmp_path) == {} and not (tmp_path / "ledger.jsonl.batches.json").exists()


@pytest.mark.parametrize("status", ["failed", "expired", "cancelled"])
def test_a_batch_that_ended_without_answers_is_not_adopted(fake_llm, llm_params, tmp_path, status):
    cfg = llm_cfg(llm_params, batch_api=True, batch_max_requests=2)
    reqs, ledger = _reqs(cfg, 6), tmp_path / "ledger.jsonl"
    assert _killed_in_the_window(cfg, ledger, 6) == -signal.SIGKILL
    fake_llm.batches["batch_1"]["status"] = status  # the provider gave up on it: nothing paid
    out = build_runner(cfg, ledger).run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs]
    assert list(fake_llm.batches) == ["batch_1", "batch_2", "batch_3", "batch_4"]
    assert fake_llm.batches["batch_2"]["metadata"] == fake_llm.batches["batch_1"]["metadata"]  # sent anew
    assert fake_llm.batches["batch_1"]["output_file_id"] is None and _paid(fake_llm) == [1] * 6
    assert _state(tmp_path) == {}


def test_a_create_whose_answer_was_lost_is_found_not_sent_again(fake_llm, llm_params, tmp_path):
    fake_llm.drop_creates = 1  # the server creates the batch, then drops the connection
    cfg = llm_cfg(llm_params, batch_api=True)
    reqs = _reqs(cfg, 3)
    out = build_runner(cfg, tmp_path / "ledger.jsonl").run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs]
    assert list(fake_llm.batches) == ["batch_1"] and fake_llm.counts["/v1/batches"] == 1
    assert fake_llm.counts["GET /v1/batches"] == 2  # the run's lookup, then the retry's
    assert _paid(fake_llm) == [1] * 3


@pytest.mark.parametrize("uploaded", [False, True])
def test_an_interrupted_submission_never_adopts_another_runs_batch(fake_llm, llm_params, tmp_path, uploaded):
    """Another project asked the same requests on the same key: its completed batch carries our
    chunk's id but was made from its own file, and paid by that run. Our intent (killed before
    batches.create) must not adopt it: the chunk is sent anew (seen as the flaky accounting of
    `cotpd bench-llm-scale`'s kill rehearsal, whose clean run made the same chunks)."""
    cfg = llm_cfg(llm_params, batch_api=True)
    reqs = _reqs(cfg, 3)
    build_runner(cfg, tmp_path / "a" / "ledger.jsonl").run(reqs, "knowledge")
    assert list(fake_llm.batches) == ["batch_1"] and fake_llm.batches["batch_1"]["status"] == "completed"
    ours = fake_llm.add_file(b"{}\n", "in.jsonl", "batch")["id"] if uploaded else None
    ledger = tmp_path / "b" / "ledger.jsonl"
    ledger.parent.mkdir()
    state = batch.BatchState(f"{ledger}.batches.json")
    cid = batch.chunk_id([r.key for r in reqs])
    state.intend(cid, [r.key for r in reqs])
    if uploaded:
        state.uploaded(cid, ours)
    out = build_runner(cfg, ledger).run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs]
    assert list(fake_llm.batches) == ["batch_1", "batch_2"] and _paid(fake_llm) == [2] * 3
    assert not Path(f"{ledger}.batches.json").exists()


def test_chunks_are_deterministic_and_the_server_list_pages_newest_first(fake_llm, llm_params):
    cfg = llm_cfg(llm_params, batch_api=True)
    reqs = _reqs(cfg, 7)
    keys = lambda chunks: [[r.key for r, _ in c] for c in chunks]  # noqa: E731
    # greedy over what is left: a rerun without the first chunk forms the same later chunks
    assert keys(batch.split_batches(reqs[2:], 2)) == keys(batch.split_batches(reqs, 2))[1:]
    a, b = [r.key for r in reqs[:2]], [r.key for r in reqs[2:4]]
    assert batch.chunk_id(a) == batch.chunk_id(list(a)) != batch.chunk_id(a[::-1]) != batch.chunk_id(b)
    client = openai.OpenAI(api_key="x", base_url=fake_llm.base_url, max_retries=0)
    fid = client.files.create(file=("in.jsonl", b"{}\n", "application/jsonl"), purpose="batch").id
    for i in range(5):
        client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={"cotpd_chunk": f"c{i % 3}"})
    assert [x.id for x in client.batches.list(limit=2)] == [f"batch_{i}" for i in (5, 4, 3, 2, 1)]
    assert fake_llm.counts["GET /v1/batches"] == 3  # three pages of two
    fake_llm.batches["batch_5"]["status"] = "expired"
    backend = batch.BatchBackend(cfg)
    since = time.time() - 60

    async def listed(since):
        aclient = openai.AsyncOpenAI(api_key="x", base_url=fake_llm.base_url, max_retries=0)
        try:
            return await backend._list_chunks(aclient, since, lambda make: make(), page_size=2)
        finally:
            await aclient.close()

    found = asyncio.run(listed(since))
    assert {c: [x.id for x in xs] for c, xs in found.items()} == {
        "c0": ["batch_4", "batch_1"], "c2": ["batch_3"], "c1": ["batch_2"]}
    fake_llm.batches["batch_1"]["created_at"] -= 3600  # too old to consider, and listing stops there
    assert [x.id for x in asyncio.run(listed(since))["c0"]] == ["batch_4"]
    fake_llm.batches["batch_4"]["created_at"] = fake_llm.batches["batch_3"]["created_at"] = since - 1
    assert set(asyncio.run(listed(since))) == set()  # newest first: the first too old one ends the list
