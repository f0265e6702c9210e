"""Readers on small hand-written files: parsing, normalization, counted (not fatal) oddities."""
from __future__ import annotations

from pathlib import Path

import pytest

from cotpd import readers
from cotpd.config import DatasetParams
from cotpd.errors import DataError
from cotpd.params import dataset_params
from cotpd.readers.captions import normalize_image_id, read_dict_literal, read_jpg_colon
from cotpd.readers.conll import NerScheme, entity_spans, read_conll
from cotpd.readers.mnre import read_mnre
from cotpd.readers.pgim import align, read_pgim

REL2ID = {"None": 0, "/per/loc/place_of_birth": 1, "/per/org/member_of": 2}


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def test_conll_ids_images_nbsp_and_type_map(tmp_path):
    p = write(tmp_path / "valid.txt", "IMGID:17\nAnna\tB-PER\nin\tO\nRome\tB-LOC\n\n"
              "IMGID:18\n\u00a0\tO\nEuro\tB-MISC\nCup\tI-MISC\n")
    samples, stats = read_conll(p, "valid")
    assert [s.id for s in samples] == ["valid-0", "valid-1"]
    assert [s.image_id for s in samples] == ["17.jpg", "18.jpg"]
    assert samples[1].tokens == ["\u00a0", "Euro", "Cup"]  # the lone no-break space stays a token
    assert samples[1].labels == ["O", "B-OTHER", "I-OTHER"]  # MISC -> OTHER (Twitter-2017 -> 2015)
    assert stats["sentences"] == 2 and stats["entities"] == 3
    assert stats["entities_by_type"] == {"LOC": 1, "OTHER": 1, "PER": 1}


def test_conll_other_types_and_no_imgid(tmp_path):
    p = write(tmp_path / "t.txt", "Saw\tO\nthe\tO\nMoon\tB-CELESTIAL\n\n\nOk\tO\n")
    scheme = NerScheme(entity_types=("CELESTIAL",), type_map={})
    samples, stats = read_conll(p, "test", scheme)
    assert [s.image_id for s in samples] == [None, None] and stats["no_image_id"] == 2
    assert scheme.labels == ["O", "B-CELESTIAL", "I-CELESTIAL"]
    with pytest.raises(DataError, match=r"t\.txt:3: label 'B-CELESTIAL' is outside"):
        read_conll(p, "test")  # the default PER/LOC/ORG/OTHER scheme refuses it


@pytest.mark.parametrize("mode,labels,count", [("repair", ["B-PER", "O", "B-LOC", "I-LOC", "B-ORG"], "iob2_repaired"),
                                               ("keep", ["B-PER", "O", "I-LOC", "I-LOC", "I-ORG"], "iob2_kept")])
def test_conll_non_strict_iob2(tmp_path, mode, labels, count):
    p = write(tmp_path / "t.txt", "IMGID:1\na\tB-PER\nb\tO\nc\tI-LOC\nd\tI-LOC\ne\tI-ORG\n")
    samples, stats = read_conll(p, "train", NerScheme(strict_iob2=False, invalid_iob2=mode))
    assert samples[0].labels == labels
    assert stats[count] == 2
    # an I- with no B- before it is no entity (seqeval strict), so `keep` counts 1 entity, `repair` 3
    assert stats["entities"] == (3 if mode == "repair" else 1)


def test_entity_spans_strict_semantics():
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "B-ORG"]) == \
        [("PER", 0, 2), ("LOC", 4, 5), ("ORG", 6, 7)]


def test_mnre_types_from_relation_and_name_spacing(tmp_path):
    p = write(tmp_path / "mnre_val.txt",
              "{'token': ['Ana', 'Lee', 'born', 'in', 'New', 'York'], 'h': {'name': 'Ana Lee', 'pos': [0, 2]}, "
              "'t': {'name': 'New  York', 'pos': [4, 6]}, 'img_id': 'a.jpg', 'relation': '/per/loc/place_of_birth'}\n"
              "\n"
              "{'token': ['Ana', 'and', 'Bo'], 'h': {'name': 'Ana', 'pos': (0, 1)}, "
              "'t': {'name': 'Bo', 'pos': [2, 3]}, 'img_id': 'b.png', 'relation': 'None'}\n")
    samples, stats = read_mnre(p, "valid", REL2ID)
    a, b = samples
    assert (a.id, a.head.type, a.tail.type, a.tail.name, a.image_id) == ("valid-0", "per", "loc", "New York", "a.jpg")
    assert (b.head.type, b.relation, b.image_id) == (None, "None", "b.png")
    assert stats["name_spacing"] == 1 and stats["relations"] == {"/per/loc/place_of_birth": 1, "None": 1}


def test_captions_both_formats(tmp_path):
    jc = write(tmp_path / "caps.txt", "1.jpg :a dog : running\n2.jpg :\n\n3 :a cat\n")
    caps = read_jpg_colon(jc)
    assert caps == {"1.jpg": "a dog : running", "3.jpg": "a cat"}  # split on the first " :" only
    assert caps.empty == {"2.jpg"} and caps.stats["empty"] == 1
    dl = write(tmp_path / "blip_val.txt", "{'img_id': 'x.jpg', 'text': 'a hat'}\n{'img_id': 'inf.png', 'text': 'a veil'}\n"
               "{'img_id': 'y.jpg', 'text': ''}\n{'img_id': 'x.jpg', 'text': 'a hat'}\n")
    caps = read_dict_literal(dl)
    assert dict(caps) == {"x.jpg": "a hat"}
    assert caps.stats == {"rows": 4, "captions": 1, "empty": 1, "placeholder": 1, "duplicate": 1}
    assert normalize_image_id("IMG_1") == "IMG_1.jpg" and normalize_image_id("a.PNG") == "a.PNG"


def test_conflicting_caption_is_an_error(tmp_path):
    p = write(tmp_path / "caps.txt", "1.jpg :a dog\n1.jpg :a cat\n")
    with pytest.raises(DataError, match=r"caps\.txt:2: image '1\.jpg' already has a different caption"):
        read_jpg_colon(p)


PGIM = "A\tB-PER\nruns\tO\n<EOS>\tX\nA\tX\nis\tX\na\tX\nrunner.\tX\n\nHi\tO\n<EOS>\tX\ngreeting\tX\n\n"


def test_pgim_crlf_alignment_and_missing_last(tmp_path):
    data = write(tmp_path / "train.txt", "IMGID:1\nA\tB-PER\nruns\tO\n\nIMGID:2\nHi\tO\n\nIMGID:3\nBye\tO\n")
    samples, _ = read_conll(data, "train")
    kn = write(tmp_path / "k.txt", PGIM, newline="\r\n")
    blocks = read_pgim(kn)
    assert [(b.line, b.tokens) for b in blocks] == [(1, ["A", "runs"]), (9, ["Hi"])]
    texts, stats = align(kn, blocks, samples)
    assert texts == {"train-0": "A is a runner.", "train-1": "greeting"}
    assert stats["missing"] == 1 and stats["missing_ids"] == ["train-2"]
    with pytest.raises(DataError, match=r"k\.txt:1: 3 knowledge blocks for only 2"):
        align(kn, blocks + blocks[:1], samples[:2])


def test_pgim_token_mismatch_names_file_and_line(tmp_path):
    data = write(tmp_path / "train.txt", "IMGID:1\nA\tB-PER\nruns\tO\n\nIMGID:2\nHello\tO\n")
    samples, _ = read_conll(data, "train")
    kn = write(tmp_path / "k.txt", PGIM, newline="\r\n")
    with pytest.raises(DataError, match=r"k\.txt:9: knowledge block 2 does not match sentence train-1"):
        align(kn, read_pgim(kn), samples)
    bad = write(tmp_path / "bad.txt", PGIM.replace("is\tX", "is X"))
    with pytest.raises(DataError, match=r"bad\.txt:5: expected a knowledge word<TAB>X"):
        read_pgim(bad)


def _ner_params(tmp_path: Path, params: dict) -> DatasetParams:
    for split, text in {"train": "IMGID:1\nA\tB-PER\nruns\tO\n\nIMGID:2\nHi\tO\n\nIMGID:3\nBye\tO\n",
                        "valid": "IMGID:4\nOk\tO\n", "test": "IMGID:5\nNo\tO\n"}.items():
        write(tmp_path / "ds" / f"{split}.txt", text)
    write(tmp_path / "ds" / "k_train.txt", PGIM, newline="\r\n")
    write(tmp_path / "ds" / "caps.txt", "1.jpg :a runner\n2.jpg :\n")
    params["datasets"]["tiny"] = {
        "task": "ner", "format": "twitter_conll", "root": str(tmp_path / "ds"),
        "splits": {s: f"{s}.txt" for s in ("train", "valid", "test")},
        "captions": {"format": "jpg_colon", "path": "caps.txt"},
        "knowledge": {"format": "pgim", "path": "k_train.txt"}}  # only train's knowledge is read
    return dataset_params(params, "tiny")


def test_load_knowledge_for_a_subset_and_attach(tmp_path, params):
    dp = _ner_params(tmp_path, params)
    samples, _ = readers.read_split(dp, tmp_path, "train")
    kn = readers.load_precomputed_knowledge(dp, tmp_path, "train", [samples[1]])  # e.g. cot.max_samples
    assert dict(kn) == {"train-1": "greeting"} and kn.stats["aligned"] == 2 and kn.stats["found"] == 1
    full = readers.load_precomputed_knowledge(dp, tmp_path, "train", samples)
    cov = readers.attach(samples, readers.load_captions(dp, tmp_path), full)
    assert samples[0].caption == "a runner" and samples[0].knowledge == {"precomputed": "A is a runner."}
    assert samples[2].caption is None and samples[2].knowledge == {}  # kept, not dropped
    assert {k: cov[k] for k in ("with_caption", "empty_caption", "missing_caption", "with_knowledge",
                                "missing_knowledge")} == {"with_caption": 1, "empty_caption": 1, "missing_caption": 1,
                                                          "with_knowledge": 2, "missing_knowledge": 1}
    assert cov["missing_caption_ids"] == ["3.jpg"]


def test_second_caption_set_is_appended_per_image(tmp_path, params):
    """captions.also (issue #19: MNRE's BLIP-2 and LLaVA-NeXT captions together): each image gets both
    captions, the first set's first; an image captioned in one set only keeps that caption."""
    root = tmp_path / "mnre"
    for split in ("train", "val", "test"):
        write(root / f"blip_{split}.txt", f"{{'img_id': '{split}1.jpg', 'text': 'a man on a stage'}}\n"
              f"{{'img_id': '{split}2.jpg', 'text': ''}}\n")
        write(root / f"llava_{split}.txt", f"{{'img_id': '{split}1.jpg', 'text': 'The image shows a singer.'}}\n"
              f"{{'img_id': '{split}2.jpg', 'text': 'A crowd at night.'}}\n{{'img_id': '{split}3.jpg', 'text': ''}}\n")
    files = {s: f"{{prefix}}_{f}.txt" for s, f in (("train", "train"), ("valid", "val"), ("test", "test"))}
    raw = {"task": "re", "format": "mnre", "root": str(root), "splits": {"train": "t", "valid": "v", "test": "x"},
           "captions": {"format": "dict_literal", "path": {s: f.format(prefix="blip") for s, f in files.items()},
                        "also": {"format": "dict_literal", "path": {s: f.format(prefix="llava") for s, f in files.items()}}}}
    params["datasets"]["m"] = raw
    dp = dataset_params(params, "m")
    caps = readers.load_captions(dp, tmp_path)
    assert caps["train1.jpg"] == "a man on a stage. The image shows a singer."
    assert caps["val2.jpg"] == "A crowd at night."           # empty in the first set, captioned in the second
    assert "test3.jpg" not in caps and caps.empty == {"train3.jpg", "val3.jpg", "test3.jpg"}
    assert caps.stats["rows"] == 15 and caps.stats["captions"] == 9
    dp.dataset.captions.also = None                           # without `also`: the first set alone
    assert readers.load_captions(dp, tmp_path)["train1.jpg"] == "a man on a stage"
