"""A bare forward/backward/AdamW-step loop: the reference the training loop's speed is held to."""
from __future__ import annotations

import time
from typing import Sequence

import torch

from ..model.data import bucket_batches, collate
from ..model.infer import autocast, featurizer_for, to_device
from ..model.student import Student
from ..records import Sample


def bare_loop_throughput(model: Student, samples: Sequence[Sample], batch_size: int = 16, steps: int | None = None,
                         lr: float = 5e-5, seed: int = 0, bf16: bool = True) -> float:
    """Train tokens/s of a bare forward/backward/AdamW-step loop over the same bucketed batches our
    loop uses (collated before the clock starts): the reference `train` should reach within 10%."""
    device = next(model.parameters()).device
    views = model.train_views
    feats = featurizer_for(model).features(samples, views)
    batches = bucket_batches([f["length"] for f in feats], batch_size, seed=seed)[:steps]
    pad = model.tokenizer.pad_token_id or 0
    cpu = [collate([feats[i] for i in b], views, pad) for b in batches]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)  # the same optimizer kernel as `train`
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for cb in cpu:
        tokens += int(sum(cb[v]["attention_mask"].sum() for v in views))
        with autocast(device, bf16):
            loss = model(to_device(cb, device))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / max(1e-9, time.perf_counter() - t0)
