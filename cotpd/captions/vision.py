"""A vision LLM behind the LLM runner (ledger, cache, retries): the image goes inline as a base64
data URL in an OpenAI-style content list."""
from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..config import LLMCfg, VisionLLMCfg
from ..llm import ChatRequest, make_request
from ..prompts import load
from .base import BAD_IMAGE, MISSING_IMAGE, CaptionResult, find_image, open_rgb, result

log = logging.getLogger(__name__)
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


def data_url(path: Path) -> str | None:
    """The image as a `data:` URL, or None when the file is not a readable image."""
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except (UnidentifiedImageError, OSError) as exc:
        log.warning("%s: not a readable image (%s)", path, exc)
        return None
    if fmt in MIME:
        data, mime = path.read_bytes(), MIME[fmt]
    else:  # an unusual format: re-encode as PNG (lossless) so any vision endpoint accepts it
        buf = io.BytesIO()
        open_rgb(path).save(buf, format="PNG")
        data, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class VisionLLMCaptioner:
    name = "vision_llm"

    def __init__(self, runner, llm: LLMCfg, vision: VisionLLMCfg, images_dir: Path | None, dataset: str = "",
                 prompt_dir=None):
        self.runner, self.llm, self.vision = runner, llm, vision
        self.images_dir, self.dataset = images_dir, dataset
        self.prompt = load("caption_image", prompt_dir)

    def request(self, image_id: str, path: Path) -> ChatRequest | None:
        """The ChatRequest for one image, or None when the file is not a readable image."""
        url = data_url(path)
        if url is None:
            return None
        *system, user = self.prompt.messages()
        content = [{"type": "text", "text": user["content"]}, {"type": "image_url", "image_url": {"url": url}}]
        return make_request(self.llm, (*system, {"role": "user", "content": content}), self.prompt.version,
                            f"{self.dataset}:image:{image_id}", max_tokens=self.vision.max_tokens,
                            model=self.vision.model)

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]:
        out: dict[str, CaptionResult] = {}
        asked, requests = [], []
        for i in image_ids:
            path = find_image(self.images_dir, i)
            req = self.request(i, path) if path else None
            if path is None:
                out[i] = CaptionResult(None, MISSING_IMAGE)
            elif req is None:
                out[i] = CaptionResult(None, BAD_IMAGE)
            else:
                asked.append(i)
                requests.append(req)
        for i, resp in zip(asked, self.runner.run(requests, "captions") if requests else []):
            out[i] = result(resp.text)
        return {i: out[i] for i in image_ids}
