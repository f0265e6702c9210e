"""Image captioners: the image enters the pipeline as text (paper Sec. 3.1 uses BLIP-2 captions).

Three interchangeable implementations of ``Captioner.caption(image_ids) -> {id: CaptionResult}``:
a precomputed caption file (the default; the published datasets ship BLIP-2 captions), a BLIP-2
model run here, and a vision LLM reached through the LLM runner (image sent inline as a data URL).
A missing image or caption is a status on its result, never an exception: the stage counts them.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import ConfigError

log = logging.getLogger(__name__)

OK, MISSING_IMAGE, MISSING_CAPTION, BAD_IMAGE = "ok", "missing_image", "missing_caption", "bad_image"
IMAGE_EXTENSIONS = ("", ".jpg", ".jpeg", ".png", ".gif", ".webp")
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


@dataclass
class CaptionResult:
    caption: str | None
    status: str  # ok | missing_image | missing_caption | bad_image


class Captioner(Protocol):
    name: str  # goes into captions.jsonl `source`

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]: ...


def _clean(text: str | None) -> str | None:
    text = " ".join((text or "").split())
    return text or None


def find_image(images_dir: Path | None, image_id: str) -> Path | None:
    """The file of `image_id` under `images_dir` (the id as is, or with a usual image extension)."""
    if images_dir is None:
        return None
    for ext in IMAGE_EXTENSIONS:
        p = images_dir / f"{image_id}{ext}"
        if p.is_file():
            return p
    return None


def _open_rgb(path: Path):
    """The image as RGB, or None when the file is not a readable image (logged, counted as bad)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        log.warning("%s: not a readable image (%s)", path, exc)
        return None


def _device_dtype(device: str):
    """(torch.device, dtype): `auto` picks CUDA when present; bf16 on CUDA, fp32 on CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


class PrecomputedCaptioner:
    """Captions from the dataset's caption file (read by `cotpd.readers.load_captions`)."""

    name = "precomputed"

    def __init__(self, captions: dict[str, str]):
        self.captions = captions

    @classmethod
    def from_params(cls, dparams: dict, root: Path) -> "PrecomputedCaptioner":
        from .readers import load_captions

        return cls(load_captions(dparams, root))

    def _lookup(self, image_id: str) -> str | None:
        # readers key by the id the records carry; also accept the file-name spelling (`123.jpg`)
        for key in (image_id, Path(image_id).stem, f"{image_id}.jpg"):
            if key in self.captions:
                return self.captions[key]
        return None

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]:
        out = {}
        for i in image_ids:
            text = _clean(self._lookup(i))
            out[i] = CaptionResult(text, OK if text else MISSING_CAPTION)
        return out


class Blip2Captioner:
    """BLIP-2 (Li et al. 2023) run here: batched, on CUDA in bf16 when present, else CPU fp32."""

    name = "blip2"

    def __init__(self, model, processor, images_dir: Path | None, batch_size: int = 8,
                 max_new_tokens: int = 30, device: str = "auto"):
        self.device, dtype = _device_dtype(device)
        if model.dtype != dtype and dtype.is_floating_point and model.dtype.itemsize > dtype.itemsize:
            model = model.to(dtype=dtype)  # an fp32 model on CUDA: run it in bf16
        self.model = model.to(self.device).eval()
        self.dtype = self.model.dtype
        self.processor = processor
        self.images_dir = images_dir
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)

    @classmethod
    def from_pretrained(cls, name_or_path: str, images_dir: Path | None, **kw) -> "Blip2Captioner":
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        processor = Blip2Processor.from_pretrained(name_or_path)
        # load straight into the run dtype (bf16 on CUDA): no fp32 copy of a multi-GB model first
        model = Blip2ForConditionalGeneration.from_pretrained(name_or_path, dtype=_device_dtype(kw.get("device", "auto"))[1])
        return cls(model, processor, images_dir, **kw)

    def _prompt_ids(self, n: int):
        """Image placeholder tokens then BOS, as BLIP-2's own generate builds them, made explicit so
        we know how many leading ids to cut from the output."""
        import torch

        cfg = self.model.config
        ids = [cfg.image_token_index] * cfg.num_query_tokens + [cfg.text_config.bos_token_id]
        return torch.tensor([ids] * n, dtype=torch.long, device=self.device)

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]:
        import torch

        out: dict[str, CaptionResult] = {}
        ready = []  # (id, PIL image)
        for i in image_ids:
            path = find_image(self.images_dir, i)
            img = _open_rgb(path) if path else None
            if path is None:
                out[i] = CaptionResult(None, MISSING_IMAGE)
            elif img is None:
                out[i] = CaptionResult(None, BAD_IMAGE)
            else:
                ready.append((i, img))
        tok = self.processor.tokenizer
        for b in range(0, len(ready), self.batch_size):
            batch = ready[b:b + self.batch_size]
            pix = self.processor.image_processor([im for _, im in batch], return_tensors="pt")["pixel_values"]
            prompt = self._prompt_ids(len(batch))
            with torch.inference_mode():
                gen = self.model.generate(pixel_values=pix.to(self.device, self.dtype), input_ids=prompt,
                                          attention_mask=torch.ones_like(prompt),
                                          max_new_tokens=self.max_new_tokens, do_sample=False)
            # decoder-only generate returns prompt + new tokens; keep only the new ones
            new = gen[:, prompt.shape[1]:] if gen.shape[1] > prompt.shape[1] else gen
            for (i, _), text in zip(batch, tok.batch_decode(new, skip_special_tokens=True)):
                text = _clean(text)
                out[i] = CaptionResult(text, OK if text else MISSING_CAPTION)
        return {i: out[i] for i in image_ids}


class VisionLLMCaptioner:
    """A vision LLM behind the LLM runner (ledger, cache, retries): the image goes inline as a
    base64 data URL in an OpenAI-style content list."""

    name = "vision_llm"

    def __init__(self, runner, model: str, images_dir: Path | None, max_tokens: int = 60,
                 temperature: float = 0.0, seed: int | None = 0, dataset: str = "", prompt_dir=None):
        from .prompts import load

        self.runner, self.model, self.images_dir = runner, model, images_dir
        self.max_tokens, self.temperature, self.seed, self.dataset = max_tokens, temperature, seed, dataset
        self.prompt = load("caption_image", prompt_dir)

    def request(self, image_id: str, path: Path):
        """The ChatRequest for one image, or None when the file is not a readable image."""
        from PIL import Image, UnidentifiedImageError

        from .llm.base import ChatRequest

        try:
            with Image.open(path) as im:
                fmt = im.format
                im.verify()
        except (UnidentifiedImageError, OSError) as exc:
            log.warning("%s: not a readable image (%s)", path, exc)
            return None
        if fmt not in _MIME:
            # an unusual format: re-encode as PNG (lossless) so any vision endpoint accepts it
            import io

            buf = io.BytesIO()
            _open_rgb(path).save(buf, format="PNG")
            data, mime = buf.getvalue(), "image/png"
        else:
            data, mime = path.read_bytes(), _MIME[fmt]
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        system, user = self.prompt.messages()[:-1], self.prompt.messages()[-1]
        content = [{"type": "text", "text": user["content"]}, {"type": "image_url", "image_url": {"url": url}}]
        return ChatRequest(messages=(*system, {"role": "user", "content": content}), model=self.model,
                           temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed,
                           prompt_version=self.prompt.version, sample_key=f"{self.dataset}:image:{image_id}")

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
            text = _clean(resp.text)
            out[i] = CaptionResult(text, OK if text else MISSING_CAPTION)
        return {i: out[i] for i in image_ids}


def build_captioner(dparams: dict, root: Path, llm=None) -> Captioner:
    """The captioner params.yaml asks for (captions.captioner)."""
    from .params import Layout

    cfg = dparams["captions"]
    kind = cfg.get("captioner", "precomputed")
    layout = Layout(Path(root), dparams["dataset"]["name"])
    images_dir = layout.resolve_input(dparams, dparams["dataset"].get("images"))
    if kind == "precomputed":
        if not dparams["dataset"].get("captions"):
            raise ConfigError(f"dataset {layout.dataset!r} has no caption file (datasets.*.captions); "
                              "use captions.captioner=blip2 or vision_llm")
        return PrecomputedCaptioner.from_params(dparams, root)
    if images_dir is None:
        raise ConfigError(f"captions.captioner={kind} needs image files, but dataset "
                          f"{layout.dataset!r} has images: null")
    if kind == "blip2":
        b = cfg.get("blip2") or {}
        return Blip2Captioner.from_pretrained(b["model"], images_dir, batch_size=b.get("batch_size", 8),
                                              max_new_tokens=b.get("max_new_tokens", 30),
                                              device=b.get("device", "auto"))
    if kind == "vision_llm":
        v, llm_cfg = cfg.get("vision_llm") or {}, dparams["llm"]
        if llm is None:
            from .llm import build_runner

            llm = build_runner(dparams, layout.ledger_for("captions"))
        return VisionLLMCaptioner(llm, v.get("model") or llm_cfg["model"], images_dir,
                                  max_tokens=v.get("max_tokens", 60), temperature=llm_cfg.get("temperature", 0.0),
                                  seed=llm_cfg.get("seed", 0), dataset=layout.dataset)
    raise ConfigError(f"captions.captioner must be precomputed | blip2 | vision_llm, got {kind!r}")
