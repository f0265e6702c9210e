"""The Great Expectations gate over augmented data: bad rows are named, quarantined and block training."""
from __future__ import annotations

import copy

import pytest

from augment_helpers import FakeRunner, LLM_CFG, ner, ner_train, re_train, user_text, tweet_of
from cotpd.augment import Context, augment_train
from cotpd.io import read_jsonl
from cotpd.records import to_dict
from cotpd.validation import CHECKS, scheme_of, validate_samples

DPARAMS = {"dataset": {"entity_types": ["PER", "LOC", "ORG", "OTHER"]}}


def good_answers(req) -> str:
    text = user_text(req)
    if "Twitter style" in text:
        return tweet_of(req) + " !! #news"
    if "answer yes or no" in text:
        return "Yes."
    return "A photo of a busy street."


def augmented(train, n=3):
    ctx = Context(llm=FakeRunner(good_answers), llm_cfg=LLM_CFG, dataset="t")
    cfg = {"seed": 3, "style": {"n": n}, "entity": {"n": n}, "image": {"n": n}}
    return [to_dict(s) for s in augment_train(train, {}, cfg, ctx).samples]


def test_pipeline_output_passes_and_bad_rows_are_quarantined(tmp_path):
    train = ner_train()
    valid = [ner(0, "Obama in Paris", "B-PER O B-LOC", split="valid")]
    rows = augmented(train)
    assert {r["meta"]["aug"] for r in rows} == {"style", "entity", "image"}
    heldout = {s.id for s in valid}
    scheme = scheme_of(DPARAMS, train)
    ok = validate_samples(rows, train, heldout, scheme, quarantine=tmp_path / "q_ok.jsonl")
    assert ok.success and ok.n_failed == 0 and ok.n_rows == len(rows)
    assert read_jsonl(tmp_path / "q_ok.jsonl") == []

    # a hand-made bad set: one defect per row, on top of a good row that must stay out of quarantine
    style = next(r for r in rows if r["meta"]["aug"] == "style")
    ent = next(r for r in rows if r["meta"]["aug"] == "entity")
    bad = {}
    bad["aligned"] = dict(copy.deepcopy(style), id="bad-len", labels=style["labels"][:-1])
    b = copy.deepcopy(style)
    b["labels"][b["labels"].index("B-PER") if "B-PER" in b["labels"] else 0] = "I-LOC"
    bad["well_formed"] = dict(b, id="bad-iob")
    bad["in_scheme"] = dict(copy.deepcopy(style), id="bad-scheme", labels=["B-XYZ"] + style["labels"][1:])
    leak = dict(copy.deepcopy(style), id="bad-leak")
    leak["meta"] = dict(leak["meta"], origin="valid-0", origin_split="valid")
    bad["origin_in_train"] = leak
    bad["not_duplicate"] = dict(to_dict(train[0]), id="bad-dup", meta={"origin": "train-0", "origin_split": "train",
                                                                       "aug": "style"})
    unchecked = copy.deepcopy(ent)
    unchecked["meta"]["fact_check"] = {"verdict": "yes", "answer": "Yes, but only in fiction"}
    bad["fact_checked"] = dict(unchecked, id="bad-check")
    bad["text_non_empty"] = dict(copy.deepcopy(style), id="bad-empty", tokens=[], labels=[])
    rows_bad = [rows[0]] + list(bad.values())
    report = validate_samples(rows_bad, train, heldout, scheme, quarantine=tmp_path / "q.jsonl")
    assert not report.success
    by_name = {r.name: r for r in report.results}
    for name, row in bad.items():
        assert row["id"] in by_name[name].failed_ids, (name, by_name[name])
    assert rows[0]["id"] not in {i for r in report.results for i in r.failed_ids}
    assert set(report.failed) >= set(bad)
    quarantined = {q["id"]: q for q in read_jsonl(tmp_path / "q.jsonl")}
    assert set(quarantined) == {r["id"] for r in bad.values()}
    assert "aligned" in quarantined["bad-len"]["failed"] and "origin_in_train" in quarantined["bad-leak"]["failed"]
    assert quarantined["bad-dup"]["record"]["tokens"] == train[0].tokens
    assert report.n_failed == len(bad)
    # duplicate ids and unknown augmentation types are caught by native expectations too
    twice = validate_samples([rows[0], dict(rows[0]), dict(rows[1], meta=dict(rows[1]["meta"], aug="magic"))],
                             train, heldout, scheme)
    assert {"unique_id", "aug_type_known"} <= set(twice.failed)


def test_relation_rows_and_empty_set():
    train = re_train()
    rows = augmented(train, n=2)
    scheme = scheme_of({"dataset": {}}, train)
    assert scheme == {s.relation for s in train}
    bad = copy.deepcopy(next(r for r in rows if r["meta"]["aug"] == "entity"))
    bad["id"] = "bad-span"
    bad["head"]["name"] = "Somebody Else"  # the span no longer holds the name it claims
    report = validate_samples(rows + [bad], train, set(), scheme)
    assert report.failed == ["aligned", "entities_preserved"]
    assert [r.failed_ids for r in report.results if not r.success] == [["bad-span"], ["bad-span"]]
    empty = validate_samples([], train, set(), scheme)
    assert empty.success and empty.n_rows == 0
    assert set(CHECKS) <= {r.name for r in empty.results}
