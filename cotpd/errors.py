"""Errors that name the file and line, so a user can fix bad input without reading our code."""
from __future__ import annotations

from pathlib import Path


class CotpdError(Exception):
    """Base class for every error the pipeline raises on purpose."""


class DataError(CotpdError):
    """Bad input data: always says which file, which line (1-based) and what is wrong."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(CotpdError):
    """A bad or missing entry in params.yaml (or a stage called with a dataset it does not know)."""


class LedgerMiss(CotpdError):
    """Replay mode met a request that the ledger has no response for."""
