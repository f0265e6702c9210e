"""Stage 'evaluate' (placeholder until implemented)."""
from __future__ import annotations

from pathlib import Path


def run(dataset: str, root: Path, params: dict, **resources) -> dict:
    raise NotImplementedError("stage 'evaluate' is not implemented yet")
