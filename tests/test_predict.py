"""`cotpd predict`: text only, from a trained model folder; NER and RE; sentences and files."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from tracking_helpers import tracked_training  # noqa: E402

from cotpd import cli  # noqa: E402
from cotpd.serving import predict as P  # noqa: E402


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    return tracked_training(tmp_path_factory)


def _jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_entity_offsets_follow_the_raw_text(monkeypatch, tracked):
    """Character offsets survive irregular whitespace (labels fixed so the mapping is what is tested)."""
    pred = P.Predictor(tracked["ner"]["model_dir"])
    text = "  New   York is\tbig , says Ann Lee"
    fixed = ["B-LOC", "I-LOC", "O", "O", "O", "O", "B-PER", "I-PER"]
    monkeypatch.setattr(P, "predict", lambda model, samples, *a, **k: [fixed for _ in samples])
    (ents,) = pred.ner([text])
    assert [(e["text"], e["type"], e["token_start"], e["token_end"]) for e in ents] == [
        ("New   York", "LOC", 0, 2), ("Ann Lee", "PER", 6, 8)]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in ents)


def test_predict_sentences_and_file_ner(tracked, tmp_path, capsys):
    model = tracked["ner"]["model_dir"]
    sentences = ["Barack Obama visits Paris", "the weather in London today"]
    assert cli.main(["predict", "--model", model, *sentences]) == 0
    rows = _jsonl(capsys.readouterr().out)
    assert [r["text"] for r in rows] == sentences
    assert rows == [{"text": t, "entities": e} for t, e in zip(sentences, P.Predictor(model).ner(sentences))]
    # a file: JSONL rows and plain text lines give the same answers
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences), encoding="utf-8")
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert cli.main(["predict", "--model", model, "--file", str(tmp_path / "in.jsonl")]) == 0
    assert _jsonl(capsys.readouterr().out) == rows
    assert cli.main(["predict", "--model", model, "--file", str(tmp_path / "in.txt"), "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert sentences[0] in table and table.count("->") == 2


def test_predict_relation_from_args_and_file(tracked, tmp_path, capsys):
    model = tracked["re"]["model_dir"]
    labels = P.Predictor(model).student.labels
    assert cli.main(["predict", "--model", model, "Alice met Bob in Rome", "--head", "Alice", "--tail", "Bob"]) == 0
    (row,) = _jsonl(capsys.readouterr().out)
    assert row["relation"] in labels and 0 < row["score"] <= 1 and (row["head"], row["tail"]) == ("Alice", "Bob")
    f = tmp_path / "re.jsonl"
    f.write_text(json.dumps({"text": "Alice met Bob in Rome", "head": "Alice", "tail": "Bob"}) + "\n"
                 + json.dumps({"text": "Rome is in Italy", "head": "Rome", "tail": "Italy"}) + "\n", encoding="utf-8")
    assert cli.main(["predict", "--model", model, "--file", str(f)]) == 0
    rows = _jsonl(capsys.readouterr().out)
    assert rows[0] == row and len(rows) == 2


def test_predict_bad_input_names_file_and_line(tracked, tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\n{"txt": "no text field"}\n', encoding="utf-8")
    assert cli.main(["predict", "--model", tracked["ner"]["model_dir"], "--file", str(f)]) == 2
    assert f"{f}:2" in capsys.readouterr().err
    # RE: the tail must occur in the text
    assert cli.main(["predict", "--model", tracked["re"]["model_dir"], "Alice met Bob", "--head", "Alice",
                     "--tail", "Carol"]) == 2
    assert "tail 'Carol'" in capsys.readouterr().err
    # not a model folder
    assert cli.main(["predict", "--model", str(tmp_path), "hello"]) == 2
    assert "config.json" in capsys.readouterr().err
