"""What a training runs on: the device, the torchrun ranks, the seeds and the optimizer."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..config import TrainCfg
from ..errors import ConfigError
from ..model.student import Student


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """train.device: auto (CUDA when this torch sees a GPU, else CPU) | cuda (this process's local
    rank under torchrun) | cuda:N | cpu."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():  # else torch's own error comes late, from deep inside .to()
        raise ConfigError(f"train.device is {name}, but this torch {torch.__version__} sees no CUDA device "
                          "(a CPU build, or no driver): use device auto or cpu")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def make_optimizer(model: Student, cfg: TrainCfg, total_steps: int):
    """AdamW: train.lr for the encoder (and word-shape embedding), train.head_lr for prompt generator,
    head and CRF; linear warm-up over train.warmup_ratio of the steps, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup  # lazy: transformers takes seconds to import

    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            # the word-shape embedding is part of the encoder's input: it learns at the encoder's pace
            lr = cfg.lr if name.startswith(("encoder.", "case_embed.")) else cfg.head_lr
            wd = 0.0 if p.ndim < 2 else cfg.weight_decay  # no decay on biases / LayerNorm
            groups.setdefault((lr, wd), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                            fused=True)  # one kernel per group: the default loop took 20% of a CPU step
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), max(1, total_steps))
    return opt, sched


class StopVote:
    """Whether to stop at this step boundary. Under torchrun every rank must stop at the same step (or
    the next gradient all-reduce hangs), so the ranks vote over a CPU (gloo) group: no device sync."""

    def __init__(self, world: int):
        self.world = world
        self.group = torch.distributed.new_group(backend="gloo") if world > 1 else None

    def __call__(self, requested: bool) -> bool:
        if self.world == 1:
            return requested
        flag = torch.tensor([int(requested)])
        torch.distributed.all_reduce(flag, group=self.group)
        return bool(flag.item())
