"""Precomputed image captions, in the two published formats, keyed by one image-id spelling.

Image ids are normalized to the image FILE NAME everywhere (records, caption keys, image paths):
MNER's `IMGID:123` becomes `123.jpg` (the Twitter-2015 images are `<id>.jpg` and BLIP2_15.txt keys
them so), MNRE's `img_id` is already a file name. So a record's `image_id` is a caption key and,
joined to the dataset's `images` folder, the path of its image.
"""
from __future__ import annotations

import ast
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io import read_text_lines

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
# MNRE's caption files carry one row for `inf.png`, an image no instance refers to (a stand-in the
# CAMIM authors captioned); it is skipped and counted rather than served as a real caption.
PLACEHOLDER_IDS = frozenset({"inf.png"})
# between two captions of one image (`captions.also`); BLIP-2's captions carry no final stop
JOIN = ". "


def normalize_image_id(raw: str, default_ext: str = ".jpg") -> str:
    """The image's file name: `123` -> `123.jpg`, `x.png` -> `x.png` (extension kept, case kept)."""
    raw = raw.strip()
    return raw if raw.lower().endswith(IMAGE_EXTS) else raw + default_ext


class Captions(dict):
    """dict image_id -> non-empty caption, plus what the files held that is not a usable caption.

    `empty`: ids listed with an empty caption (a caption file covers them, but there is no text);
    `stats`: counts per kind of row, for stage summaries.
    """

    def __init__(self) -> None:
        super().__init__()
        self.empty: set[str] = set()
        self.stats: dict[str, int] = {"rows": 0, "captions": 0, "empty": 0, "placeholder": 0, "duplicate": 0}

    def add(self, path: Path, lineno: int, image_id: str, text: str) -> None:
        self.stats["rows"] += 1
        if image_id in PLACEHOLDER_IDS:
            self.stats["placeholder"] += 1
            return
        text = text.strip()
        previous = self.get(image_id, "" if image_id in self.empty else None)
        if previous is not None:
            if previous != text:  # two different captions for one image: which is right is unknowable
                raise DataError(path, lineno, f"image {image_id!r} already has a different caption")
            self.stats["duplicate"] += 1
            return
        if text:
            self[image_id] = text
            self.stats["captions"] += 1
        else:
            self.empty.add(image_id)
            self.stats["empty"] += 1

    def joined(self, other: "Captions") -> "Captions":
        """Both sets' captions of each image, this set's first (`captions.also`): an image with a caption
        in only one set keeps that one; it is empty only where neither set has text."""
        out = Captions()
        out.stats = {k: self.stats[k] + other.stats[k] for k in self.stats}
        for image_id in dict.fromkeys([*self, *other]):
            texts = [t for t in (self.get(image_id), other.get(image_id)) if t]
            out[image_id] = JOIN.join([*(t.rstrip(" .") for t in texts[:-1]), texts[-1]])
        out.empty = (self.empty | other.empty) - set(out)
        return out


def read_jpg_colon(path: str | Path, into: Captions | None = None) -> Captions:
    """`<id>.jpg :<caption>` lines (BLIP2_15.txt). Split on the FIRST ` :` (captions may hold ` :`)."""
    path, caps = Path(path), into if into is not None else Captions()
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        key, sep, text = line.partition(" :")
        if not sep or not key.strip():
            raise DataError(path, lineno, "expected '<image file> :<caption>'")
        caps.add(path, lineno, normalize_image_id(key), text)
    return caps


def read_dict_literal(path: str | Path, into: Captions | None = None) -> Captions:
    """`{'img_id': ..., 'text': ...}` lines (CAMIM caption files), parsed with ast.literal_eval only."""
    path, caps = Path(path), into if into is not None else Captions()
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        row = literal_dict(path, lineno, line)
        if not isinstance(row.get("img_id"), str) or not isinstance(row.get("text"), str):
            raise DataError(path, lineno, "expected string values for keys 'img_id' and 'text'")
        caps.add(path, lineno, normalize_image_id(row["img_id"]), row["text"])
    return caps


def literal_dict(path: Path, lineno: int, line: str) -> dict:
    """One Python dict literal. `ast.literal_eval` evaluates literals only: a call such as
    `__import__('os').system(...)` is refused, never run. Never replace this with `eval`."""
    try:
        value = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise DataError(path, lineno, f"not a Python dict literal ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise DataError(path, lineno, f"expected a dict literal, got {type(value).__name__}")
    return value


READERS = {"jpg_colon": read_jpg_colon, "dict_literal": read_dict_literal}


def read_captions(fmt: str, paths: list[Path]) -> Captions:
    """Captions from one or more files of one format (MNRE has one file per split)."""
    if fmt not in READERS:
        raise ConfigError(f"unknown caption format {fmt!r} (known: {sorted(READERS)})")
    caps = Captions()
    for p in paths:
        READERS[fmt](p, caps)
    return caps
