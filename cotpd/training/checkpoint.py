"""The resume checkpoint of a training: <model_dir>.resume.pt, beside the model folder.

Beside it, not in it: `Student.save` replaces the whole folder each time dev F1 improves, and the
folder must stay a plain student for `load_student`. The file holds everything the next step
depends on (weights, optimizer, scheduler, the RNG states of every rank, the epoch and step reached,
best dev F1, the early-stopping counter, the history) and the identity of the training that wrote
it: a hash of its resolved params and one of its data. A rerun with the same identity continues
where it stopped and ends with the same numbers as an uninterrupted run on CPU (the batch order is
a function of seed and epoch, dropout draws from the restored RNG). Written atomically at the end
of every epoch, and mid-epoch on SIGTERM; deleted when the training finishes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import TrainCfg
from ..errors import CotpdError
from ..io import atomic_write
from ..params import params_hash
from ..records import Sample, to_dict

log = logging.getLogger(__name__)
FORMAT = "cotpd-resume/1"
SUFFIX = ".resume.pt"
# what torch.load raises on a truncated or foreign file (a zip archive cut short, a pickle that is not ours)
UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)


class CheckpointError(CotpdError):
    """A resume checkpoint that cannot be used as it is: the training does not start from it."""

    def __init__(self, path: Path, message: str):
        super().__init__(f"{path}: {message}; delete it or rerun with --fresh to train from scratch")


def resume_path(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + SUFFIX)


def identity(train: Sequence[Sample], valid: Sequence[Sample], *, variant: str, cfg: TrainCfg, seed: int,
             params: dict, world: int) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the resolved params (the train section with its
    defaults, dataset, seed, variant, number of processes) and the samples trained and selected on
    (a rerun of an upstream stage changes them without touching params.yaml)."""
    resolved = {"train": cfg.model_dump(mode="json", by_alias=True), "params": params, "seed": seed,
                "variant": variant, "world_size": world}
    h = hashlib.sha256()
    for s in (*train, *valid):
        h.update(json.dumps(to_dict(s), sort_keys=True, default=str).encode())
    return {"params_hash": params_hash(resolved), "data_hash": h.hexdigest()[:12]}


@dataclass
class Progress:
    """The loop's state between steps: the epoch in progress (= epochs completed), the steps done
    in it, and what the loop carries from epoch to epoch."""

    epoch: int = 0
    step: int = 0
    best_f1: float = -1.0
    best_epoch: int = -1
    best_dev: dict = field(default_factory=dict)
    bad: int = 0  # epochs since dev F1 last improved (early stopping)
    history: list = field(default_factory=list)
    train_time: float = 0.0
    tokens_seen: int = 0
    # wall seconds the training has run, over every invocation, up to this state (setup, epochs, dev
    # scoring): a resumed run adds its own, so its reported cost is the whole training's
    elapsed_s: float = 0.0
    # the epoch in progress, for a mid-epoch checkpoint
    loss_sum: torch.Tensor | float = 0.0
    ep_tokens: int = 0
    ep_time: float = 0.0

    def next_epoch(self) -> None:
        self.epoch, self.step, self.loss_sum, self.ep_tokens, self.ep_time = self.epoch + 1, 0, 0.0, 0, 0.0


def rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:])}  # lists: loadable with weights_only
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def all_rng_states(device: torch.device, world: int) -> list[dict]:
    """Every rank's RNG states (their dropout draws differ), gathered on each rank."""
    mine = rng_state(device)
    if world == 1:
        return [mine]
    out: list = [None] * world
    torch.distributed.all_gather_object(out, mine)
    return out


def save(path: Path, model: torch.nn.Module, opt, sched, prog: Progress, ident: dict, rngs: list[dict],
         run_id: str | None) -> None:
    """Write the checkpoint atomically (a kill mid-write leaves the previous one whole)."""
    p = asdict(prog)
    p["loss_sum"] = torch.as_tensor(prog.loss_sum).detach().cpu()  # the exact float the sum goes on from
    state = {"format": FORMAT, "identity": ident, "mlflow_run_id": run_id, "progress": p, "rng": rngs,
             "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    with atomic_write(path, "wb", encoding=None) as fh:
        torch.save(state, fh)
    log.debug("resume checkpoint %s: epoch %d, step %d", path, prog.epoch, prog.step)


@dataclass
class Resume:
    """A checkpoint found for this very training, read but not yet applied."""

    path: Path
    state: dict

    @property
    def run_id(self) -> str | None:
        return self.state.get("mlflow_run_id")

    @property
    def epoch(self) -> int:
        return int(self.state["progress"]["epoch"])

    def restore(self, model: torch.nn.Module, opt, sched, device: torch.device, rank: int) -> Progress:
        """Load weights, optimizer, scheduler and RNG states, or raise before training starts (the
        model was just built: nothing half-loaded is ever trained)."""
        st = self.state
        try:
            model.load_state_dict(st["model"], strict=True)
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(self.path, f"does not fit this model (another model shape?): "
                                             f"{str(exc).splitlines()[0][:300]}") from None
        rngs = st["rng"]
        if len(rngs) <= rank:
            raise CheckpointError(self.path, f"holds RNG states of {len(rngs)} processes, this is rank {rank}")
        set_rng_state(rngs[rank], device)
        p = dict(st["progress"])
        p["loss_sum"] = p["loss_sum"].to(device)
        prog = Progress(**p)
        mid = f" and {prog.step} steps of epoch {prog.epoch + 1}" if prog.step else ""
        log.info("resuming from epoch %d%s of %s", prog.epoch, mid, self.path)
        return prog


def find(model_dir: str | Path, ident: dict, fresh: bool = False) -> Resume | None:
    """The checkpoint to resume this training from, or None (none, --fresh, or written by a training
    with other params or data: the log says which). A file that cannot be read, or is not a
    checkpoint, raises CheckpointError: it is never half-used nor silently replaced."""
    path = resume_path(model_dir)
    if not path.exists():
        return None
    if fresh:
        log.info("ignoring resume checkpoint %s (--fresh): training from scratch", path)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as exc:
        raise CheckpointError(path, f"not a readable resume checkpoint (truncated or corrupt?): "
                                    f"{type(exc).__name__}: {str(exc)[:200]}") from None
    keys = {"format", "identity", "progress", "rng", "model", "optimizer", "scheduler"}
    if not isinstance(state, dict) or state.get("format") != FORMAT or not keys <= set(state):
        raise CheckpointError(path, f"not a resume checkpoint of format {FORMAT}")
    try:
        Progress(**state["progress"])
    except TypeError as exc:
        raise CheckpointError(path, f"bad progress record: {exc}") from None
    for key, what in (("params_hash", "params"), ("data_hash", "training data")):
        old, new = state["identity"].get(key), ident[key]
        if old != new:
            log.warning("resume checkpoint %s was written with other %s (%s %s, now %s): training from scratch",
                        path, what, key, old, new)
            return None
    best = int(state["progress"]["best_epoch"])
    cfg_path = Path(model_dir) / "config.json"
    if best >= 0:
        # the folder holds the best epoch, or a later one the rerun will reach again (killed between
        # saving the model and the checkpoint)
        saved = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
        if int(saved.get("best_epoch", -1)) < best:  # removed since (dvc repro clears a stage's outs first)
            log.warning("resume checkpoint %s names epoch %d as the best, but the model folder %s does not hold "
                        "it: training from scratch", path, best + 1, model_dir)
            return None
    return Resume(path, state)


def remove(model_dir: str | Path) -> None:
    """A finished training drops its checkpoint: a rerun then trains again instead of resuming a
    training that is over (the bench's done/ records and DVC's lock are what recognise finished work)."""
    resume_path(model_dir).unlink(missing_ok=True)
