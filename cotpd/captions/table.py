"""The captions stage's output as later stages read it: outputs/<ds>/captions.jsonl."""
from __future__ import annotations

from ..io import read_jsonl
from ..params import Layout


def read_caption_table(layout: Layout) -> dict[str, str]:
    """image id -> caption, for the images that got one. No captions.jsonl (the captions stage has
    not run) reads as no captions: every sample then counts as text-only."""
    if not layout.captions.exists():
        return {}
    return {r["image_id"]: r["caption"] for r in read_jsonl(layout.captions) if (r.get("caption") or "").strip()}
