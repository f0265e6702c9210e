"""Stage 'augment' (placeholder until implemented)."""
from __future__ import annotations

from pathlib import Path


def run(dataset: str, root: Path, params: dict, **resources) -> dict:
    raise NotImplementedError("stage 'augment' is not implemented yet")
