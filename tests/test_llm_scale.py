"""`cotpd bench-llm-scale` at a small scale: the embedded sample datasets (about 360 knowledge
requests), the same fault rates as the full rehearsal (1% 429 with Retry-After, 0.5% 5xx, 0.2%
dropped connections) with a seed whose first 120 draws hold each kind, both paths (chat client,
Batch API at a small llm.batch_max_requests), a SIGKILL at a random moment and a rerun each, and a
replay. The fake server runs in its own process, started and stopped (by PID) by the command."""
from __future__ import annotations

import json

import pytest

from cotpd.bench import llm_scale
from cotpd_testing.fake_llm_load import Load, LoadProfile

SEED = 44  # Load(LoadProfile(seed=44)): its first 120 draws hold 2 x 429, 2 x 5xx and 2 drops
BATCH_MAX = 50


def test_seed_draws_every_fault_kind_early():
    load = Load(LoadProfile(seed=SEED))
    for _ in range(120):
        load.draw()
    assert all(load.faults[k] >= 1 for k in ("429", "5xx", "drop")), dict(load.faults)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llm-scale")
    rc = llm_scale.main(["--dataset", "sample", "--dataset", "sample_mnre", "--median", "0.02",
                         "--concurrency", "16", "--batch-delay", "1", "--batch-poll", "0.2",
                         "--batch-max-requests", str(BATCH_MAX), "--seed", str(SEED),
                         "--scratch", str(tmp / "scratch"), "--json", str(tmp / "r.json")])
    return rc, json.loads((tmp / "r.json").read_text())


def test_every_request_is_answered_and_paid_once(rehearsal):
    rc, r = rehearsal
    assert rc == 0
    faults = r["server"]["faults"]
    assert all(faults.get(k, 0) >= 1 for k in ("429", "5xx", "drop")), faults
    for path in ("chat", "batch"):
        c = r[path]["clean"]
        assert c["requests"] == c["requests_built"] > 300  # three grains of the two samples' splits
        assert c["answered"] == c["requests"] and c["lost"] == 0
        assert c["paid"] == c["requests"] and c["paid_twice"] == 0 and c["paid_not_asked"] == 0
        assert c["files_under_ledger"] == ["ledger/sample/knowledge.jsonl", "ledger/sample_mnre/knowledge.jsonl"]
        assert sum(d["llm"]["errors"] for d in c["datasets"].values()) == 0
    assert sum(d["llm"]["retries"] for d in r["chat"]["clean"]["datasets"].values()) >= 1


def test_kill_and_rerun_lose_nothing_and_reask_nothing_recorded(rehearsal):
    _, r = rehearsal
    for path in ("chat", "batch"):
        k = r[path]["kill"]
        assert k["killed_rc"] == -9 and k["lost"] == 0 and k["same_answers_as_clean"]
        assert k["reasked_from_ledger"] == 0
        # every answer paid twice is one the killed client never recorded: in flight at the kill
        assert k["paid_twice"] == k["paid_twice_answered_before_kill"] + k["paid_twice_answered_after_kill"]
        assert k["paid"] == k["requests"] + k["paid_twice"]
    assert r["batch"]["kill"]["paid_twice"] == 0  # a submitted batch is resumed, never paid again


def test_batches_honour_batch_max_requests(rehearsal):
    _, r = rehearsal
    c = r["batch"]["clean"]
    lines = [b["lines"] for b in c["batches"]]
    assert max(lines) <= BATCH_MAX and len(lines) >= 4  # both datasets need more than one batch
    assert sum(lines) == c["requests"]


def test_replay_sends_nothing(rehearsal):
    _, r = rehearsal
    p = r["replay"]
    assert p["server_requests"] == 0
    for d in p["datasets"].values():
        assert d["calls"] == 0 and d["cache_hits"] == d["answers"] == d["records"]
