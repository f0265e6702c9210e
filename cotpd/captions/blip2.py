"""BLIP-2 (Li et al. 2023) run here, the captioner of the paper (Sec. 3.1): batched, on CUDA in bf16
when present, else CPU fp32. Imported only for `captions.captioner: blip2` (it loads torch)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from ..config import Blip2Cfg
from .base import BAD_IMAGE, MISSING_IMAGE, CaptionResult, find_image, open_rgb, result


def device_dtype(device: str) -> tuple[torch.device, torch.dtype]:
    """(torch.device, dtype): `auto` picks CUDA when present; bf16 on CUDA, fp32 on CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


class Blip2Captioner:
    name = "blip2"

    def __init__(self, model, processor, images_dir: Path | None, cfg: Blip2Cfg):
        self.device, dtype = device_dtype(cfg.device)
        if model.dtype != dtype and dtype.is_floating_point and model.dtype.itemsize > dtype.itemsize:
            model = model.to(dtype=dtype)  # an fp32 model on CUDA: run it in bf16
        self.model = model.to(self.device).eval()
        self.dtype = self.model.dtype
        self.processor = processor
        self.images_dir = images_dir
        self.batch_size = max(1, cfg.batch_size)
        self.max_new_tokens = cfg.max_new_tokens

    @classmethod
    def from_pretrained(cls, cfg: Blip2Cfg, images_dir: Path | None) -> "Blip2Captioner":
        """`cfg.model` (a hub name or a folder)."""
        processor = Blip2Processor.from_pretrained(cfg.model)
        # load straight into the run dtype (bf16 on CUDA): no fp32 copy of a multi-GB model first
        model = Blip2ForConditionalGeneration.from_pretrained(cfg.model, dtype=device_dtype(cfg.device)[1])
        return cls(model, processor, images_dir, cfg)

    def _prompt_ids(self, n: int) -> torch.Tensor:
        """Image placeholder tokens then BOS, as BLIP-2's own generate builds them, made explicit so
        we know how many leading ids to cut from the output."""
        cfg = self.model.config
        ids = [cfg.image_token_index] * cfg.num_query_tokens + [cfg.text_config.bos_token_id]
        return torch.tensor([ids] * n, dtype=torch.long, device=self.device)

    def caption(self, image_ids: list[str]) -> dict[str, CaptionResult]:
        out: dict[str, CaptionResult] = {}
        ready = []  # (id, PIL image)
        for i in image_ids:
            path = find_image(self.images_dir, i)
            img = open_rgb(path) if path else None
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
                out[i] = result(text)
        return {i: out[i] for i in image_ids}
