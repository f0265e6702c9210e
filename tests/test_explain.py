"""`cotpd explain`: the disagreement counts (checked against seqeval's own strict spans), the chosen
sentences with their caption and CoT knowledge, RE instances, and the errors that name both models."""
from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from cross_helpers import trained_project  # noqa: E402
from seqeval.scheme import IOB2, Entities  # noqa: E402

from cotpd.cli import main  # noqa: E402
from cotpd.model import load_student, predict  # noqa: E402
from cotpd.records import NerSample, ReSample, Span  # noqa: E402
from cotpd.training.corpus import load_split  # noqa: E402
from cotpd.training.explain import choose, compare, esc, render  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return trained_project(tmp_path_factory)


def _strict(labels) -> set:
    return {(e.tag, e.start, e.end) for e in Entities([list(labels)], IOB2).entities[0]}


def test_explain_counts_examples_and_knowledge(project, tmp_path, capsys):
    root, params = project["root"], project["params"]
    cot, base = str(project["cotpd"]["model_dir"]), str(project["baseline"]["model_dir"])
    argv = ["explain", "--model", cot, "--baseline", base, "--dataset", "sample", "--root", str(root)]
    assert main([*argv, "--out", str(tmp_path / "all")]) == 0
    assert json.loads(capsys.readouterr().out)["report"] == str(tmp_path / "all" / "sample.md")
    summary = json.loads((tmp_path / "all" / "sample.json").read_text())
    # the counts, recomputed here from the models' predictions and seqeval's strict entities
    test = load_split("sample", root, params, "test")
    gold = [_strict(s.labels) for s in test]
    pa, pb = ([_strict(x) for x in predict(load_student(m), test)] for m in (cot, base))
    idx = [i for i in range(len(test)) if pa[i] != pb[i]]
    assert summary["n"] == len(test) == 12 and summary["disagree"] == len(idx) > 0
    assert summary["disagree_ids"] == [test[i].id for i in idx]
    assert summary["cotpd_right"] == sum(pa[i] == gold[i] for i in idx)
    assert summary["baseline_right"] == sum(pb[i] == gold[i] for i in idx)
    for t, c in summary["per_type"].items():
        def only(s, t=t):
            return {e for e in s if e[0] == t}
        on = [i for i in range(len(test)) if only(pa[i]) != only(pb[i])]
        assert (c["disagree"], c["cotpd_right"], c["baseline_right"], c["gold"]) == (
            len(on), sum(only(pa[i]) == only(gold[i]) for i in on), sum(only(pb[i]) == only(gold[i]) for i in on),
            sum(len(only(g)) for g in gold))
    # fewer than 20 disagreements: all shown, each with the caption and the knowledge its teacher read
    md = (tmp_path / "all" / "sample.md").read_text()
    assert summary["shown_ids"] == summary["disagree_ids"]
    by_id = {s.id: s for s in test}
    for k, sid in enumerate(summary["shown_ids"], start=1):
        block = md.split(f"### {k}. `{sid}`")[1].split("### ")[0]
        s = by_id[sid]
        assert f"noun: {esc('noun note on ' + s.tokens[0])}" in block
        assert f"- caption: {esc(s.caption) if s.caption else '(none)'}\n" in block
        for line in ("- gold:", "- cotpd (", "- baseline ("):
            assert line in block
    assert f"disagree on **{len(idx)} of 12 sentences**" in md and "| PER |" in md
    # --n: a seeded sample of the disagreements, in split order, the same on every run
    for out in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / out), "--n", "3"]) == 0
    shown = json.loads((tmp_path / "a" / "sample.json").read_text())["shown_ids"]
    assert len(shown) == min(3, len(idx)) and set(shown) <= set(summary["disagree_ids"])
    assert shown == [i for i in summary["disagree_ids"] if i in shown]
    assert (tmp_path / "a" / "sample.md").read_text() == (tmp_path / "b" / "sample.md").read_text()


def test_explain_errors_name_both_models(project, tmp_path, capsys):
    root = project["root"]
    cot, base = str(project["cotpd"]["model_dir"]), str(project["baseline"]["model_dir"])
    assert main(["explain", "--model", cot, "--baseline", base, "--dataset", "sample_mnre", "--root", str(root),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert cot in err and "sample_mnre" in err and "different tasks" in err
    # a baseline whose labels are other names: nothing to compare
    other = tmp_path / "renamed"
    shutil.copytree(base, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["labels"] = [lab.replace("PER", "PERSON") for lab in cfg["labels"]]
    (other / "config.json").write_text(json.dumps(cfg))
    assert main(["explain", "--model", cot, "--baseline", str(other), "--dataset", "sample", "--root", str(root),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert cot in err and str(other) in err and "different labels" in err
    assert not (tmp_path / "sample.md").exists()


def test_compare_ner_strict_spans_and_re_relations():
    gold = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "O"], ["O", "O", "O"]]
    a = [["B-PER", "I-PER", "O"], ["B-LOC", "O", "O"], ["I-ORG", "O", "O"]]  # a stray I- is no entity
    b = [["B-PER", "O", "O"], ["B-LOC", "O", "O"], ["O", "O", "O"]]
    r = compare("ner", gold, a, b)
    assert (r["disagree"], r["cotpd_right"], r["baseline_right"], r["indices"]) == (1, 1, 0, [0])
    assert r["per_type"]["PER"] == {"gold": 1, "disagree": 1, "cotpd_right": 1, "baseline_right": 0, "neither": 0}
    assert r["per_type"]["LOC"]["disagree"] == 0 and "ORG" not in r["per_type"]
    rel = compare("re", ["None", "/per/loc", "/per/loc", "/org/org"], ["None", "/per/loc", "None", "None"],
                  ["/per/loc", "None", "/org/org", "None"])
    assert (rel["disagree"], rel["cotpd_right"], rel["baseline_right"], rel["neither"]) == (3, 2, 0, 1)
    assert rel["per_type"]["/per/loc"] == {"gold": 2, "disagree": 2, "cotpd_right": 1, "baseline_right": 0,
                                           "neither": 1}
    assert choose(list(range(10)), 4, 7) == choose(list(range(10)), 4, 7) == sorted(choose(list(range(10)), 4, 7))
    assert choose([3, 5], 20, 7) == [3, 5]


def test_render_re_instance_shows_relation_caption_and_knowledge():
    s = ReSample(id="test-4", tokens=["Alice", "met", "Bob", "#news"], head=Span(0, 1, "Alice"), tail=Span(2, 3, "Bob"),
                 relation="/per/per/peer", split="test", caption="two people | talking",
                 knowledge={"sentence": "Alice and Bob are colleagues"})
    preds = {"cotpd": ["/per/per/peer"], "baseline": ["None"]}
    result = compare("re", [s.relation], preds["cotpd"], preds["baseline"])
    refs = {r: {"ref": f"{r}-dir", "variant": r, "trained_on": "mnre", "f1": 0.5} for r in ("cotpd", "baseline")}
    md = render("mnre", "test", "re", refs, result, [s], [s.relation], preds, [0], 13)
    assert "### 1. `test-4`: cotpd right" in md and "Alice met Bob \\#news" in md
    assert "- head: Alice · tail: Bob · gold relation: `/per/per/peer`" in md
    assert "- cotpd (right): `/per/per/peer`" in md and "- baseline (wrong): `None`" in md
    assert "caption: two people \\| talking" in md and "sentence: Alice and Bob are colleagues" in md
    assert "| /per/per/peer | 1 | 1 | 1 | 0 | 0 |" in md
    ner = NerSample(id="t-1", tokens=["Paris", "rocks"], labels=["B-LOC", "O"], split="test")
    md = render("s", "test", "ner", refs, compare("ner", [ner.labels], [["B-LOC", "O"]], [["O", "O"]]), [ner],
                [ner.labels], {"cotpd": [["B-LOC", "O"]], "baseline": [["O", "O"]]}, [0], 13)
    assert "- gold: Paris [LOC]" in md and "- baseline (wrong): (none)" in md and "CoT knowledge: (none)" in md
