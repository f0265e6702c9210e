"""Readers for the published dataset formats, driven by a dataset's resolved params.

  read_split / read_dataset       the splits as typed records (dispatch on `dataset.format`)
  load_captions                   precomputed captions: dict image_id -> caption (+ .empty, .stats)
  load_precomputed_knowledge      PGIM ChatGPT knowledge: dict sample_id -> text (+ .stats)
  attach                          put captions / knowledge on records, with coverage counts

Image ids are image file names everywhere (`IMGID:123` -> `123.jpg`): see readers/captions.py.
Every bad line raises cotpd.errors.DataError(path, line, message).
"""
from __future__ import annotations

from pathlib import Path

from ..config import DatasetParams, Split
from ..errors import ConfigError
from ..params import Layout
from ..records import SPLITS, Sample
from .captions import IMAGE_EXTS, Captions, normalize_image_id, read_captions
from .conll import NerScheme, entity_spans, read_conll
from .mnre import read_mnre, read_rel2id
from .pgim import align, read_pgim

__all__ = ["IMAGE_EXTS", "Captions", "Knowledge", "NerScheme", "attach", "entity_spans", "input_path",
           "load_captions", "load_precomputed_knowledge", "normalize_image_id", "read_dataset", "read_rel2id",
           "read_split", "scheme"]


def input_path(dp: DatasetParams, root: str | Path, rel: str) -> Path:
    """A dataset input file: relative to the dataset's `root`, itself relative to the project root."""
    return Layout(Path(root), dp.dataset.name).resolve_input(dp, rel)


def split_path(dp: DatasetParams, root: str | Path, split: Split) -> Path:
    """The data file of one split."""
    return input_path(dp, root, getattr(dp.dataset.splits, split))


def scheme(dp: DatasetParams) -> NerScheme:
    return NerScheme.from_params(dp.dataset)


def _rel2id(dp: DatasetParams, root: str | Path) -> dict[str, int]:
    return read_rel2id(input_path(dp, root, dp.dataset.rel2id))


def read_split(dp: DatasetParams, root: str | Path, split: Split,
               rel2id: dict | None = None) -> tuple[list[Sample], dict]:
    """One split of the dataset as records with ids `<split>-<index>`, and its stats."""
    path = split_path(dp, root, split)
    if dp.dataset.format == "twitter_conll":
        return read_conll(path, split, scheme(dp))
    return read_mnre(path, split, rel2id if rel2id is not None else _rel2id(dp, root))


def read_dataset(dp: DatasetParams, root: str | Path, splits=SPLITS) -> dict[str, tuple[list[Sample], dict]]:
    """Every split, validated (the first bad line of any split raises before anything is returned)."""
    rel2id = _rel2id(dp, root) if dp.dataset.format == "mnre" else None
    return {split: read_split(dp, root, split, rel2id) for split in splits}


def load_captions(dp: DatasetParams, root: str | Path) -> Captions:
    """The dataset's precomputed captions (all splits' files): dict image_id -> caption.

    Empty captions are not in the dict (they are in `.empty`); `.stats` counts rows, empty,
    placeholder (`inf.png`) and duplicate rows. A dataset with `captions: null` gives an empty dict.
    With `captions.also` each image's caption is its captions from both sets, joined (Captions.joined).
    """
    files, caps = dp.dataset.captions, None
    while files is not None:  # captions.also: another caption set, appended to each image's caption
        more = read_captions(files.format, [input_path(dp, root, rel) for rel in files.files()])
        caps, files = (more if caps is None else caps.joined(more)), files.also
    return caps if caps is not None else Captions()


class Knowledge(dict):
    """dict sample_id -> knowledge text, with `.stats` (blocks, aligned, missing, missing_ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict = {}


def load_precomputed_knowledge(dp: DatasetParams, root: str | Path, split: Split,
                               samples: list[Sample] | None = None) -> Knowledge:
    """Published knowledge of one split, keyed by sample id (see readers/pgim.py for the alignment).

    Blocks are aligned by position to the FULL split as the prepare stage reads it. `samples` may be
    that full split (then it is used as is) or any subset of it, e.g. `cot.max_samples` of them: the
    result then holds only their ids, after checking their tokens are the split's.
    """
    files = dp.dataset.knowledge
    if files is None:
        raise ConfigError(f"dataset {dp.dataset.name!r} has no precomputed knowledge (knowledge: null)")
    path = input_path(dp, root, files.file_for(split))
    full = samples if samples is not None and _is_full_split(samples, split) else None
    data_path = split_path(dp, root, split)
    if full is None:
        full, _ = read_split(dp, root, split)
    texts, stats = align(path, read_pgim(path), full, data_path)
    out = Knowledge()
    if samples is None or samples is full:
        out.update(texts)
    else:
        by_id = {s.id: s for s in full}
        for s in samples:
            ref = by_id.get(s.id)
            if ref is None or ref.tokens != s.tokens:
                raise ConfigError(f"sample {s.id!r} is not sentence {s.id} of {data_path}: "
                                  f"knowledge is keyed by the prepare stage's ids")
            if s.id in texts:
                out[s.id] = texts[s.id]
    out.stats = {**stats, "requested": len(samples) if samples is not None else len(full), "found": len(out)}
    return out


def _is_full_split(samples: list[Sample], split: str) -> bool:
    return bool(samples) and all(s.id == f"{split}-{i}" for i, s in enumerate(samples))


def attach(samples: list[Sample], captions: dict | None = None, knowledge: dict | None = None,
           knowledge_key: str = "precomputed") -> dict:
    """Set `caption` (by image id) and `knowledge[knowledge_key]` (by sample id) on the records in
    place. Returns coverage counts; samples without either are kept, never dropped."""
    cov = {"samples": len(samples), "no_image_id": 0, "with_caption": 0, "empty_caption": 0,
           "missing_caption": 0, "with_knowledge": 0, "missing_knowledge": 0}
    missing_images: list[str] = []
    empty = getattr(captions, "empty", set())
    for s in samples:
        if captions is not None:
            cap = captions.get(s.image_id) if s.image_id else None
            if cap:
                s.caption = cap
                cov["with_caption"] += 1
            elif not s.image_id:
                cov["no_image_id"] += 1
            elif s.image_id in empty:
                cov["empty_caption"] += 1
            else:
                cov["missing_caption"] += 1
                missing_images.append(s.image_id)
        if knowledge is not None:
            text = knowledge.get(s.id)
            if text:
                s.knowledge[knowledge_key] = text
                cov["with_knowledge"] += 1
            else:
                cov["missing_knowledge"] += 1
    cov["missing_caption_ids"] = sorted(set(missing_images))[:20]
    return cov
