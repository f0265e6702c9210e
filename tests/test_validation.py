"""The Great Expectations gate over augmented data: bad rows are named, quarantined and block training."""
from __future__ import annotations

import copy

from augment_helpers import FakeRunner, LLM_CFG, ner, ner_train, re_train, user_text, tweet_of
from cotpd.augment import Context, augment_train
from cotpd.augment.validation import CHECKS, scheme_of, validate_samples
from cotpd.config import AugmentCfg
from cotpd.io import read_jsonl
from cotpd.records import to_dict

ENTITY_TYPES = ["PER", "LOC", "ORG", "OTHER"]


def good_answers(req) -> str:
    text = user_text(req)
    if "Twitter style" in text:
        return tweet_of(req) + " !! #news"
    if "answer yes or no" in text:
        return "Yes."
    return "A photo of a busy street."


def augmented(train, n=3):
    ctx = Context(llm=FakeRunner(good_answers), llm_cfg=LLM_CFG, dataset="t")
    cfg = AugmentCfg.model_validate({"seed": 3, "style": {"n": n}, "entity": {"n": n}, "image": {"n": n}})
    return [to_dict(s) for s in augment_train(train, {}, cfg, ctx).samples]


def test_pipeline_output_passes_and_bad_rows_are_quarantined(tmp_path):
    train = ner_train()
    valid = [ner(0, "Obama in Paris", "B-PER O B-LOC", split="valid")]
    rows = augmented(train)
    assert {r["meta"]["aug"] for r in rows} == {"style", "entity", "image"}
    heldout = {s.id for s in valid}
    scheme = scheme_of(ENTITY_TYPES, train)
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
    by_name = {}  # check -> the rows any of its expectations failed
    for r in report.results:
        by_name.setdefault(r.name, set()).update(r.failed_ids)
    for name, row in bad.items():
        assert row["id"] in by_name[name], (name, by_name[name])
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
    scheme = scheme_of(None, train)
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


def test_bad_row_fails_a_named_expectation_and_data_docs_are_built(tmp_path):
    """A defect is reported by the expectation that states its rule (custom or built-in), the
    quarantine names both, and the Data Docs site is written."""
    train = ner_train()
    rows = augmented(train, n=2)
    style = next(r for r in rows if r["meta"]["aug"] == "style")
    b = copy.deepcopy(style)
    b["id"], b["labels"] = "bad-iob", ["I-LOC"] + b["labels"][1:]  # I- after nothing
    unchecked = copy.deepcopy(next(r for r in rows if r["meta"]["aug"] == "entity"))
    unchecked["id"], unchecked["meta"]["fact_check"]["answer"] = "bad-check", "Yes, but only in fiction"
    docs = tmp_path / "data_docs"
    report = validate_samples(rows + [b, unchecked], train, set(), scheme_of(ENTITY_TYPES, train),
                              quarantine=tmp_path / "q.jsonl", docs_dir=docs)
    failing = {(r.name, r.expectation): r.failed_ids for r in report.results if not r.success}
    assert failing[("well_formed", "expect_labels_to_be_valid_iob2")] == ["bad-iob"]  # custom
    assert failing[("fact_checked", "expect_column_values_to_match_regex")] == ["bad-check"]  # built-in
    q = {r["id"]: r for r in read_jsonl(tmp_path / "q.jsonl")}
    assert "expect_labels_to_be_valid_iob2" in q["bad-iob"]["expectations"] and "well_formed" in q["bad-iob"]["failed"]
    assert report.data_docs == str(docs / "index.html")
    index = (docs / "index.html").read_text(encoding="utf-8")
    assert "augmented_dataset" in index
    pages = [p.read_text(encoding="utf-8") for p in (docs / "validations").rglob("*.html")]
    assert len(pages) == 1 and "well_formed: labels are valid IOB2" in pages[0]
    # a rebuild leaves only the latest run's pages
    validate_samples(rows, train, set(), scheme_of(ENTITY_TYPES, train), docs_dir=docs)
    assert len(list((docs / "validations").rglob("*.html"))) == 1
