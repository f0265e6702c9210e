"""Every bad-input case stops the prepare stage with the file, the line and what is wrong, and
leaves no output behind (all splits are validated before anything is written)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cotpd.errors import DataError
from cotpd.params import Layout
from cotpd.stages import prepare

NER_OK = "IMGID:1\nAnna\tB-PER\nvisits\tO\nRome\tB-LOC\n\nIMGID:2\nHello\tO\n"
RE_OK = ("{'token': ['Ana', 'Lee', 'was', 'born', 'in', 'Lima'], 'h': {'name': 'Ana Lee', 'pos': [0, 2]}, "
         "'t': {'name': 'Lima', 'pos': [5, 6]}, 'img_id': 'a.jpg', 'relation': '/per/loc/place_of_birth'}\n")
REL2ID = '{"None": 0, "/per/loc/place_of_birth": 1}'


def make_dataset(root: Path, params: dict, task: str, bad_split: str, bad_text: str | bytes) -> str:
    """A dataset `bad` under root/data whose `bad_split` file holds `bad_text`, the others are valid."""
    data = root / "data"
    data.mkdir(parents=True)
    ok = NER_OK if task == "ner" else RE_OK
    for split in ("train", "valid", "test"):
        text = bad_text if split == bad_split else ok
        (data / f"{split}.txt").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    entry = {"task": task, "format": "twitter_conll" if task == "ner" else "mnre", "root": "data",
             "splits": {s: f"{s}.txt" for s in ("train", "valid", "test")}, "captions": None, "knowledge": None}
    if task == "re":
        (data / "rel2id.json").write_text(REL2ID, encoding="utf-8")
        entry["rel2id"] = "rel2id.json"
    params["datasets"]["bad"] = entry
    return "bad"


def mnre_line(**over) -> str:
    row = {"token": ["Ana", "Lee", "was", "born", "in", "Lima"], "h": {"name": "Ana Lee", "pos": [0, 2]},
           "t": {"name": "Lima", "pos": [5, 6]}, "img_id": "a.jpg", "relation": "/per/loc/place_of_birth"}
    row.update(over)
    return repr(row) + "\n"


# (task, split holding the bad line, file text, line the error must name, what the message says)
CASES = {
    "missing_tab": ("ner", "test", NER_OK + "\nIMGID:3\nfoo O\n", 10, "missing TAB"),
    "label_outside_scheme": ("ner", "test", "IMGID:3\nfoo\tO\nbar\tB-FOOD\n", 3, "outside the scheme"),
    "i_after_o_strict_iob2": ("ner", "valid", "IMGID:3\nfoo\tO\nbar\tI-PER\n", 3, "breaks strict IOB2"),
    "i_after_other_type": ("ner", "test", "IMGID:3\nfoo\tB-LOC\nbar\tI-PER\n", 3, "breaks strict IOB2"),
    "empty_token": ("ner", "test", "IMGID:3\nfoo\tO\n\tO\n", 3, "empty token"),
    "three_columns": ("ner", "train", "IMGID:3\nfoo\tO\tX\n", 2, "expected 2 TAB-separated columns, got 3"),
    "imgid_without_tokens": ("ner", "test", "IMGID:3\n\nIMGID:4\nfoo\tO\n", 1, "no token lines"),
    "not_utf8": ("ner", "test", b"IMGID:3\nfoo\tO\ncaf\xe9\tO\n", 3, "not UTF-8"),
    "empty_split": ("ner", "test", "", 1, "empty split"),
    "empty_split_blank_lines": ("re", "test", "\n\n", 1, "empty split"),
    "span_outside_tokens": ("re", "test", RE_OK + mnre_line(t={"name": "Lima", "pos": [5, 9]}), 2,
                            "outside the 6 tokens"),
    "empty_span": ("re", "test", mnre_line(h={"name": "", "pos": [2, 2]}), 1, "span [2, 2) is empty"),
    "negative_span": ("re", "test", mnre_line(h={"name": "Ana", "pos": [-1, 1]}), 1, "outside the 6 tokens"),
    "name_not_its_tokens": ("re", "valid", mnre_line(h={"name": "Ana Leeds", "pos": [0, 2]}), 1,
                            "does not match its tokens"),
    "not_a_literal": ("re", "test", RE_OK + "{'token': ['a', 'b'], 'h': \n", 2, "not a Python dict literal"),
    "json_not_python": ("re", "test", RE_OK + '{"token": ["a"], "gold": true}\n', 2, "not a Python dict literal"),
    "not_a_dict": ("re", "test", "['a', 'b']\n", 1, "expected a dict literal"),
    "missing_key": ("re", "test", RE_OK + repr({"token": ["a"], "h": {}, "t": {}, "relation": "None"}) + "\n", 2,
                    "missing key(s) ['img_id']"),
    "unknown_relation": ("re", "train", mnre_line(relation="/per/per/rival"), 1, "not in rel2id.json"),
    "mnre_not_utf8": ("re", "test", RE_OK.encode() + b"\xff\xfe\n", 2, "not UTF-8"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_file_line_and_writes_nothing(case, tmp_path, params):
    task, split, text, line, what = CASES[case]
    ds = make_dataset(tmp_path, params, task, split, text)
    with pytest.raises(DataError) as err:
        prepare.run(ds, tmp_path, params)
    msg = str(err.value)
    assert f"{split}.txt:{line}:" in msg, msg
    assert what in msg, msg
    assert (err.value.path, err.value.line) == (str(tmp_path / "data" / f"{split}.txt"), line)
    out = tmp_path / "outputs"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], "a bad dataset left output files"


@pytest.mark.parametrize("payload", ["__import__('os').system('touch {f}')",
                                     "{{'token': __import__('os').system('touch {f}'), 'h': 1}}",
                                     "{{'token': [(lambda: open('{f}', 'w'))()]}}"])
def test_code_in_a_dict_literal_is_never_run(payload, tmp_path, params):
    pwned = tmp_path / "pwned"
    ds = make_dataset(tmp_path, params, "re", "train", RE_OK + payload.format(f=pwned) + "\n")
    with pytest.raises(DataError, match=re.escape("train.txt:2: not a Python dict literal")):
        prepare.run(ds, tmp_path, params)
    assert not pwned.exists(), "a line of the data file was executed"


def test_bad_rerun_keeps_previous_outputs(tmp_path, params):
    ds = make_dataset(tmp_path, params, "ner", "test", NER_OK)
    summary = prepare.run(ds, tmp_path, params)
    assert summary["splits"]["train"]["entities"] == 2
    layout = Layout(tmp_path, ds)
    before = {s: layout.raw(s).read_bytes() for s in ("train", "valid", "test")}
    (tmp_path / "data" / "test.txt").write_text(NER_OK + "\nIMGID:9\nx\tB-BAD\n", encoding="utf-8")
    (tmp_path / "data" / "train.txt").write_text("IMGID:8\nchanged\tO\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.txt:10:"):
        prepare.run(ds, tmp_path, params)
    assert {s: layout.raw(s).read_bytes() for s in before} == before
    assert not list(layout.raw_dir.glob("*.tmp")) and not list(layout.raw_dir.glob(".*"))


def test_non_strict_iob2_repairs_and_counts(tmp_path, params):
    ds = make_dataset(tmp_path, params, "ner", "test", "IMGID:3\nfoo\tO\nbar\tI-PER\n")
    params["datasets"][ds]["strict_iob2"] = False
    summary = prepare.run(ds, tmp_path, params)
    assert summary["splits"]["test"]["iob2_repaired"] == 1
    assert summary["splits"]["test"]["entities_by_type"] == {"PER": 1}
