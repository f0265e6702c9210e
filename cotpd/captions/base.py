"""What every captioner shares: the result statuses, the protocol, and finding an image's file.

A missing image or caption is a status on its result, never an exception: the stage counts them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, UnidentifiedImageError

from ..readers.captions import IMAGE_EXTS

log = logging.getLogger(__name__)

OK, MISSING_IMAGE, MISSING_CAPTION, BAD_IMAGE = "ok", "missing_image", "missing_caption", "bad_image"


@dataclass
class CaptionResult:
    caption: str | None
    status: str  # ok | missing_image | missing_caption | bad_image


class Captioner(Protocol):
    name: str  # goes into captions.jsonl `source`

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]: ...


def clean(text: str | None) -> str | None:
    """One line of single-spaced text, or None when nothing is left."""
    text = " ".join((text or "").split())
    return text or None


def result(text: str | None) -> CaptionResult:
    """The result of a captioner's answer: OK with its cleaned text, or MISSING_CAPTION when blank."""
    text = clean(text)
    return CaptionResult(text, OK if text else MISSING_CAPTION)


def find_image(images_dir: Path | None, image_id: str) -> Path | None:
    """The file of `image_id` under `images_dir` (the id as is, or with a usual image extension)."""
    if images_dir is None:
        return None
    for ext in ("", *IMAGE_EXTS):
        p = images_dir / f"{image_id}{ext}"
        if p.is_file():
            return p
    return None


def open_rgb(path: Path) -> Image.Image | None:
    """The image as RGB, or None when the file is not a readable image (logged, counted as bad)."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        log.warning("%s: not a readable image (%s)", path, exc)
        return None
