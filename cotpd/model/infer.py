"""Batched prediction with a trained student: text only (prompt view) unless asked otherwise."""
from __future__ import annotations

from typing import Sequence

import torch

from ..records import NerSample, Sample
from .data import Featurizer, bucket_batches, collate


def featurizer_for(model) -> Featurizer:
    return Featurizer(model.tokenizer, model.task, model.labels, model.max_length, model.knowledge_max_length,
                      case_features=model.case_features, knowledge_hints=model.knowledge_hints)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA only; a no-op context on CPU (fp32 there)."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bf16)


@torch.no_grad()
def predict(model, samples: Sequence[Sample], view: str = "prompt", batch_size: int = 32,
            bf16: bool = True) -> list:
    """NER: a label list per sample, always len(sample.tokens) long (words cut by max_length get "O");
    RE: one relation label per sample. `view`: prompt (text only, as deployed) | knowledge."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    fv, _ = model.eval_view(view)
    feats = featurizer_for(model).features(samples, [fv], check=False) if samples else []
    pad = model.tokenizer.pad_token_id or 0
    out: list = [None] * len(samples)
    try:
        for idx in bucket_batches([f["length"] for f in feats], batch_size, shuffle=False):
            batch = to_device(collate([feats[i] for i in idx], [fv], pad), device)
            with autocast(device, bf16):
                decoded = model.decode(batch, view)
            for i, d in zip(idx, decoded):
                out[i] = d
    finally:
        model.train(was_training)
    if model.task == "ner":
        return [[model.labels[j] for j in d][: len(s.tokens)] + ["O"] * max(0, len(s.tokens) - len(d))
                for s, d in zip(samples, out)]
    return [model.labels[d] for d in out]


def predict_tokens(model, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
    """NER from bare token lists (text only): the deployed path."""
    samples = [NerSample(id=str(i), tokens=list(t), labels=["O"] * len(t)) for i, t in enumerate(sentences)]
    return predict(model, samples, "prompt", batch_size)


def entities(tokens: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """IOB2 labels -> [{start, end, type, text}] (end exclusive); a stray I- starts an entity."""
    out, cur = [], None
    for i, lab in enumerate([*labels, "O"]):
        tag, _, typ = lab.partition("-")
        if cur and (tag != "I" or typ != cur["type"]):
            cur["end"] = i
            cur["text"] = " ".join(tokens[cur["start"]:i])
            out.append(cur)
            cur = None
        if tag == "B" or (tag == "I" and cur is None):
            cur = {"start": i, "type": typ}
    return out


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (to_device(v, device) if isinstance(v, dict) else v.to(device, non_blocking=True))
            for k, v in batch.items()}
