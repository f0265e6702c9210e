"""The augment stage end to end: a real HTTP LLM (fake server), the ledger, GE validation, blocking."""
from __future__ import annotations

import re

import pytest

from augment_helpers import ner, ner_train, re_train
from cotpd.augment import AugmentResult
from cotpd.errors import CotpdError
from cotpd.io import read_jsonl, write_jsonl
from cotpd_testing.fake_llm import last_user_text
from cotpd.params import Layout
from cotpd.records import read_records, write_records
from cotpd.stages import augment as stage
from llm_server import fake_llm, llm_params  # noqa: F401  (fixtures)


def tweet(body) -> str:
    return re.search(r"<tweet>\s*(.*?)\s*</tweet>", last_user_text(body["messages"]), re.S).group(1)


def responder(body) -> str:
    text = last_user_text(body["messages"])
    if "Twitter style" in text:
        return f'Here is the tweet in Twitter style:\n"{tweet(body)} !! #news"'
    if "answer yes or no" in text:
        return "Yes." if "Berlin" not in tweet(body) else "No, Berlin is not plausible here."
    if "possible image" in text:
        return "A crowd waving flags in a city square."
    return "Somebody"


def setup(root, dataset, train, heldout):
    layout = Layout(root, dataset)
    write_records(layout.raw("train"), train)
    write_records(layout.raw("valid"), heldout)
    write_records(layout.raw("test"), [])
    write_jsonl(layout.captions, [{"image_id": "img0", "caption": "a man at a podium", "source": "x", "status": "ok"}])
    return layout


@pytest.mark.parametrize("dataset,train", [("sample", ner_train()), ("sample_mnre", re_train())])
def test_stage_records_then_replays_and_validates(tmp_path, params, fake_llm, llm_params, dataset, train):  # noqa: F811
    fake_llm.responder = responder
    layout = setup(tmp_path, dataset, train, [])
    params["llm"] = llm_params
    params["augment"] = {"seed": 2, "style": {"n": 3}, "entity": {"n": 3, "source": "inventory"},
                         "image": {"n": 2, "second_view": False}}
    params["datasets"][dataset].pop("overrides", None)
    first = stage.run(dataset, tmp_path, params)
    assert first["validation"] == {"success": True, "failed": [], "n_rows": first["kept"], "n_failed": 0}
    assert first["types"]["style"]["kept"] >= 1 and first["types"]["image"]["kept"] >= 1
    assert first["calls"] == fake_llm.chat_calls > 0 and first["cache_hits"] == 0
    out = read_records(layout.augmented)
    assert len(out) == first["kept"] and {s.meta["aug"] for s in out} <= {"style", "entity", "image"}
    assert all(s.meta["origin"].startswith("train-") for s in out)
    rejected = read_jsonl(layout.rejected)
    assert len(rejected) == first["rejected"]
    for r in rejected:  # every refusal keeps the LLM's own words
        assert r["reason"] and r["answers"]
    assert read_jsonl(layout.quarantine) == []
    assert first["paths"]["data_docs"] == str(layout.base / "data_docs" / "index.html")
    assert (layout.base / "data_docs" / "index.html").is_file()
    assert layout.ledger_for("augment").exists()

    # replay: the same run from the ledger alone, without the server
    fake_llm.reset_counts()
    params["llm"] = dict(llm_params, mode="replay", base_url="http://127.0.0.1:9/v1")
    second = stage.run(dataset, tmp_path, params)
    assert fake_llm.chat_calls == 0 and second["calls"] == 0 and second["cache_hits"] == first["calls"]
    assert [s.id for s in read_records(layout.augmented)] == [s.id for s in out]


def test_entity_fact_check_no_is_rejected_with_answer(tmp_path, params, fake_llm, llm_params):  # noqa: F811
    fake_llm.responder = responder
    layout = setup(tmp_path, "sample", ner_train(), [])
    params["llm"] = llm_params
    params["augment"] = {"seed": 2, "style": {"n": 0}, "entity": {"n": 5}, "image": {"n": 0}}
    summary = stage.run("sample", tmp_path, params)
    no = [r for r in read_jsonl(layout.rejected) if r["reason"] == "fact_check_not_yes"]
    assert no and all(r["answers"]["check"].startswith("No, Berlin") for r in no)
    assert all("Berlin" not in s.tokens for s in read_records(layout.augmented))
    assert summary["types"]["entity"]["rejected"].get("fact_check_not_yes") == len(no)


def test_validation_failure_blocks_after_quarantine(tmp_path, params, monkeypatch):
    train = ner_train()
    valid = [ner(0, "Obama in Paris", "B-PER O B-LOC", split="valid")]
    layout = setup(tmp_path, "sample", train, valid)
    params["augment"] = {"seed": 1, "style": {"n": 0}, "entity": {"n": 0}, "image": {"n": 0}}
    clean = stage.run("sample", tmp_path, params)  # all types off: no LLM needed, empty set passes
    assert clean["kept"] == 0 and clean["validation"]["success"] and clean["calls"] == 0

    def leaky(train_, captions, cfg, ctx):  # a bug that lets a valid sample through
        bad = ner(0, "Obama in Paris !!", "B-PER O B-LOC O", split="train")
        bad.id, bad.meta = "valid-0~style", {"origin": "valid-0", "origin_split": "valid", "aug": "style"}
        return AugmentResult(samples=[bad], rejections=[], counts={})

    monkeypatch.setattr(stage, "augment_train", leaky)
    with pytest.raises(CotpdError, match="origin_in_train"):
        stage.run("sample", tmp_path, params)
    q = read_jsonl(layout.quarantine)
    assert [r["id"] for r in q] == ["valid-0~style"] and "origin_in_train" in q[0]["failed"]
    assert "expect_column_values_to_be_in_set" in q[0]["expectations"]
    assert (layout.base / "data_docs" / "index.html").is_file()  # built for the failed run too
