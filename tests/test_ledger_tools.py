"""Bad lines in a ledger, and `cotpd ledger stats | gc`."""
from __future__ import annotations

import json
import shutil

import pytest
from llm_server import fake_llm, llm_cfg, llm_params  # noqa: F401  (fixtures)

from cotpd.cli import main
from cotpd.errors import DataError
from cotpd.llm import ChatRequest, ChatResponse, Ledger, build_runner, make_request
from cotpd.prompts import load


def _req(i: int, version: str = "p:1") -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": f"question {i}"},), model="m",
                       prompt_version=version, sample_key=f"train-{i}")


def _write(path, reqs, backend="openai"):
    led = Ledger(path)
    for r in reqs:
        led.append(r, ChatResponse(key=r.key, text=f"a {r.sample_key}", prompt_tokens=100, completion_tokens=10,
                                   model="m"), "knowledge", backend=backend)
    led.close()


def test_a_truncated_line_is_skipped_counted_and_asked_again(fake_llm, llm_params, tmp_path, caplog):  # noqa: F811
    cfg = llm_cfg(llm_params)
    reqs = [make_request(cfg, [{"role": "user", "content": f"q {i}"}], "p:1", f"train-{i}") for i in range(3)]
    path = tmp_path / "ledger.jsonl"
    build_runner(cfg, path).run(reqs, "knowledge")
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:40] + "\n"  # killed mid-write, then a later append started a fresh line
    path.write_text("".join(lines))
    fake_llm.reset_counts()
    runner = build_runner(cfg, path)
    assert runner.ledger.skipped_lines == 1 and "ledger.jsonl:2: undecodable line skipped" in caplog.text
    out = runner.run(reqs, "knowledge")
    assert [r.key for r in out] == [r.key for r in reqs]
    assert fake_llm.chat_calls == 1 and runner.stats("knowledge")["cache_hits"] == 2  # only the lost one
    assert Ledger(path).get(reqs[1].key).text == out[1].text


def test_a_line_holding_another_requests_key_stops_the_run(tmp_path, capsys, repo_root):
    root = tmp_path / "proj"
    path = root / "ledger" / "x" / "knowledge.jsonl"
    path.parent.mkdir(parents=True)
    shutil.copy(repo_root / "params.yaml", root / "params.yaml")
    _write(path, [_req(1), _req(2)])
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[1]["key"] = rows[0]["key"]  # valid JSON, but the answer is filed under request 1's key
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"knowledge\.jsonl:2: stored key [0-9a-f]{16}\.\.\. is not the hash"):
        Ledger(path)
    assert main(["ledger", "stats", "--root", str(root)]) == 2
    assert "knowledge.jsonl:2: stored key" in capsys.readouterr().err


def test_stats_counts_tokens_cost_and_prompt_versions(tmp_path, repo_root, capsys):
    root = tmp_path / "proj"
    folder = root / "ledger" / "sample"
    folder.mkdir(parents=True)
    shutil.copy(repo_root / "params.yaml", root / "params.yaml")
    noun = load("cot_noun").version
    _write(folder / "knowledge.jsonl", [_req(1, noun), _req(2, "cot_noun:00000000")], backend="openai http://x")
    _write(folder / "knowledge.jsonl", [_req(3, noun)], backend="openai-batch http://x")
    _write(folder / "augment.jsonl", [_req(4, "aug_style:1")], backend="local SmolLM2")
    assert main(["ledger", "stats", "--root", str(root), "--dataset", "sample", "--json"]) == 0
    out = {r["stage"]: r for r in json.loads(capsys.readouterr().out)}
    k = out["knowledge"]
    assert k["answers"] == 3 and k["prompt_tokens"] == 300 and k["completion_tokens"] == 30
    per = (100 * 0.15 + 10 * 0.60) / 1e6  # params.yaml prices; the batch answer at half
    assert k["cost_usd"] == pytest.approx(2.5 * per, abs=1e-6) and out["augment"]["cost_usd"] == 0.0
    assert k["versions"] == {noun: {"answers": 2, "state": "current"},
                             "cot_noun:00000000": {"answers": 1, "state": "stale"}}
    assert out["augment"]["versions"]["aug_style:1"]["state"] == "stale"


def test_gc_keeps_current_answers_backs_up_and_rewrites_the_file(tmp_path, repo_root, capsys):
    root = tmp_path / "proj"
    path = root / "ledger" / "sample" / "knowledge.jsonl"
    path.parent.mkdir(parents=True)
    shutil.copy(repo_root / "params.yaml", root / "params.yaml")
    noun = load("cot_noun").version
    keep, stale, foreign = _req(1, noun), _req(2, "cot_noun:00000000"), _req(3, "custom:1")
    _write(path, [keep, stale, foreign, keep])  # the second `keep` line is a duplicate
    with path.open("a") as fh:
        fh.write('{"truncated": \n')
    before, inode = path.read_bytes(), path.stat().st_ino
    writer = Ledger(path)  # a stage holding the ledger open while gc runs
    writer.append(_req(9, noun), ChatResponse(key=_req(9, noun).key, text="x"), "knowledge")
    before = path.read_bytes()
    assert main(["ledger", "gc", "--keep-current", "--root", str(root), "--dataset", "sample", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["kept"] == 3 and report["dropped_lines"] == 3  # stale, duplicate, truncated
    assert path.stat().st_ino != inode  # replaced (DVC sees new content), never appended to
    kept = [json.loads(x)["key"] for x in path.read_text().splitlines()]
    assert kept == [keep.key, foreign.key, _req(9, noun).key]  # a foreign prompt is not ours to drop
    backups = list(path.parent.glob("knowledge.jsonl.*.bak"))
    assert [b.read_bytes() for b in backups] == [before] and report["backup"] == str(backups[0])
    writer.append(_req(10, noun), ChatResponse(key=_req(10, noun).key, text="y"), "knowledge")
    writer.close()
    assert Ledger(path).get(_req(10, noun).key).text == "y"  # the open writer followed the new file
    assert main(["ledger", "gc", "--keep-current", "--root", str(root), "--dataset", "sample"]) == 0
    assert len(list(path.parent.glob("*.bak"))) == 1  # nothing to drop: no rewrite, no new backup


def test_gc_keeps_a_refreshed_answer_where_it_was_first_seen_and_each_line_as_it_was(tmp_path):
    """compact re-reads the file (the ledger holds answers, not rows): the newest refreshed answer,
    in the place of the key's first line, with the bytes the line had (ASCII-escaped, unsorted)."""
    path = tmp_path / "knowledge.jsonl"
    a, b = _req(1), _req(2)
    led = Ledger(path)
    led.append(a, ChatResponse(key=a.key, text="old é"), "knowledge")
    led.append(b, ChatResponse(key=b.key, text="b"), "knowledge")
    led.append(a, ChatResponse(key=a.key, text="new é"), "knowledge", refresh=True)
    led.close()
    lines = path.read_text().splitlines()
    lines[1] = json.dumps(json.loads(lines[1]))  # as another tool may have written it
    path.write_text("\n".join(lines) + "\n")
    kept, dropped = Ledger(path).compact(lambda row: row["request"]["prompt_version"] == "p:1", tmp_path / "bak")
    assert (kept, dropped) == (2, 1)
    assert path.read_text().splitlines() == [lines[2], lines[1]]
    again = Ledger(path)
    assert again.get(a.key).text == "new é" and again.get(b.key).text == "b" and again.lines == 2
