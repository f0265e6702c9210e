"""Image captioners: the image enters the pipeline as text (paper Sec. 3.1 uses BLIP-2 captions).

Three interchangeable implementations of ``Captioner.caption(image_ids) -> {id: CaptionResult}``:
a precomputed caption file (the default; the published datasets ship BLIP-2 captions), a BLIP-2
model run here (captions/blip2.py), and a vision LLM reached through the LLM runner, the image sent
inline as a data URL (captions/vision.py). `build_captioner` picks the one params.yaml asks for.
"""
from __future__ import annotations

from pathlib import Path

from ..config import DatasetParams
from ..errors import ConfigError
from ..llm import build_runner
from ..params import Layout
from ..readers import load_captions
from .base import BAD_IMAGE, MISSING_CAPTION, MISSING_IMAGE, OK, Captioner, CaptionResult, find_image, result
from .vision import VisionLLMCaptioner

__all__ = ["BAD_IMAGE", "MISSING_CAPTION", "MISSING_IMAGE", "OK", "CaptionResult", "Captioner",
           "PrecomputedCaptioner", "VisionLLMCaptioner", "build_captioner", "find_image"]


class PrecomputedCaptioner:
    """Captions from the dataset's caption file (read by `cotpd.readers.load_captions`)."""

    name = "precomputed"

    def __init__(self, captions: dict[str, str]):
        self.captions = captions

    @classmethod
    def from_params(cls, dp: DatasetParams, root: Path) -> "PrecomputedCaptioner":
        return cls(load_captions(dp, root))

    def _lookup(self, image_id: str) -> str | None:
        # readers key by the id the records carry; also accept the file-name spelling (`123.jpg`)
        for key in (image_id, Path(image_id).stem, f"{image_id}.jpg"):
            if key in self.captions:
                return self.captions[key]
        return None

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]:
        return {i: result(self._lookup(i)) for i in image_ids}


def build_captioner(dp: DatasetParams, root: Path, llm=None) -> Captioner:
    """The captioner params.yaml asks for (captions.captioner); `llm`: a runner to use instead of
    building one over the captions stage's ledger."""
    kind = dp.captions.captioner
    layout = Layout(Path(root), dp.dataset.name)
    if kind == "precomputed":
        if dp.dataset.captions is None:
            raise ConfigError(f"dataset {layout.dataset!r} has no caption file (datasets.*.captions); "
                              "use captions.captioner=blip2 or vision_llm")
        return PrecomputedCaptioner.from_params(dp, root)
    images_dir = layout.resolve_input(dp, dp.dataset.images)
    if images_dir is None:
        raise ConfigError(f"captions.captioner={kind} needs image files, but dataset "
                          f"{layout.dataset!r} has images: null")
    if kind == "blip2":
        from .blip2 import Blip2Captioner  # lazy: torch + transformers, only for the BLIP-2 captioner

        return Blip2Captioner.from_pretrained(dp.captions.blip2, images_dir)
    if llm is None:
        llm = build_runner(dp.llm, layout.ledger_for("captions"))
    return VisionLLMCaptioner(llm, dp.llm, dp.captions.vision_llm, images_dir, dataset=layout.dataset)
