"""Evaluation metrics against hand-computed values."""
from __future__ import annotations

import pytest

from cotpd.training.evaluate import flat, map_types, ner_metrics, re_metrics


def test_strict_iob2_differs_from_default_seqeval():
    from seqeval.metrics import f1_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]  # starts with I-: an entity only in lenient (conlleval) mode
    m = ner_metrics(gold, pred)
    assert m["scheme"] == "seqeval strict IOB2"
    assert (m["precision"], m["recall"]) == (1.0, 0.5)  # LOC found; the I-PER run is not an entity
    assert m["f1"] == pytest.approx(2 / 3)
    assert f1_score(gold, pred) == 1.0  # default mode would count PER as correct

    pred2 = [["B-PER", "I-LOC", "O", "O"]]  # type switch inside a span
    m2 = ner_metrics(gold, pred2)
    assert m2["n_pred_entities"] == 1  # strict: only PER(0..0); the stray I-LOC is dropped
    assert m2["precision"] == 0.0 and m2["recall"] == 0.0 and m2["f1"] == 0.0


def test_ner_overall_and_per_type_hand_computed():
    gold = [["B-PER", "O", "B-LOC", "I-LOC"], ["B-ORG"], ["O", "O"]]
    pred = [["B-PER", "O", "B-LOC", "O"], ["B-ORG"], ["B-PER", "O"]]
    m = ner_metrics(gold, pred)
    # gold: PER, LOC(2-3), ORG; pred: PER, LOC(2), ORG, PER -> 2 correct of 4 predicted, of 3 gold
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert m["per_type"]["LOC"]["f1"] == 0.0 and m["per_type"]["LOC"]["support"] == 1
    assert m["per_type"]["ORG"]["f1"] == 1.0
    assert (m["n"], m["n_gold_entities"], m["n_pred_entities"]) == (3, 3, 4)
    f = flat(m, "cotpd.")
    assert f["cotpd.f1"] == m["f1"] and f["cotpd.f1_LOC"] == 0.0 and "cotpd.scheme" not in f


def test_ner_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sequence 0"):
        ner_metrics([["O", "O"]], [["O"]])


def test_re_micro_f1_excludes_none():
    gold = ["None", "a", "b", "a", "None"]
    pred = ["a", "a", "None", "b", "None"]
    m = re_metrics(gold, pred, labels=["None", "a", "b"])
    # correct non-None: 1 (index 1); non-None predicted: 3; non-None gold: 3
    assert (m["precision"], m["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert m["f1"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(2 / 5)  # the correct None counts for accuracy only
    assert m["confusion"] == {"labels": ["None", "a", "b"], "matrix": [[1, 1, 0], [0, 1, 1], [1, 0, 0]]}
    assert m["per_relation"]["a"]["gold"] == 2 and m["per_relation"]["a"]["pred"] == 2
    assert m["per_relation"]["a"]["correct"] == 1
    # all-None: perfect accuracy but no relation found -> F1 0, not 1
    m0 = re_metrics(["None", "None"], ["None", "None"])
    assert m0["accuracy"] == 1.0 and m0["f1"] == 0.0


def test_map_types_for_cross_dataset_evaluation():
    seqs = [["B-MISC", "I-MISC", "O", "B-PER", "B-EVENT"]]
    mapped, unknown = map_types(seqs, {"MISC": "OTHER"}, ["PER", "LOC", "ORG", "OTHER"])
    assert mapped == [["B-OTHER", "I-OTHER", "O", "B-PER", "B-EVENT"]]
    assert unknown == {"EVENT": 1}
