"""The Batch API backend's memory of its submissions (`<ledger>.batches.json`), and which server
batch an interrupted submission may adopt: see cotpd/llm/batch.py's docstring (issue #23)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..errors import DataError
from ..io import read_json, write_json

log = logging.getLogger(__name__)


def made_from(batches: list, intent: dict):
    """The newest of a chunk's batches made from the intent's uploaded file (None if none, or if the
    intent died before its upload: no batch can exist). An intent from before the file was recorded
    (no "file" key) takes the newest."""
    if "file" not in intent:
        return next(iter(batches), None)
    return next((b for b in batches if intent["file"] is not None and b.input_file_id == intent["file"]), None)


class BatchState:
    """`<ledger>.batches.json`: {"batches": {batch id: {"keys": [...], "submitted": unix time}}, "submitting":
    {chunk id: {"keys", "at", "file"}} (chunks whose batch id may not have reached the file)}. Nothing secret."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.batches: dict[str, dict] = {}
        self.intents: dict[str, dict] = {}
        if self.path and self.path.exists():
            raw = read_json(self.path)
            if not isinstance(raw, dict) or not all(isinstance(raw.get(k, {}), dict)
                                                    for k in ("batches", "submitting")):
                raise DataError(self.path, None, "expected {\"batches\": {batch id: {\"keys\": [...]}}, "
                                "\"submitting\": {chunk id: {\"keys\": [...]}}}")
            if raw and "batches" not in raw:  # the first format: digest -> id, without the keys to match
                log.warning("%s: batches %s from an older cotpd cannot be matched to requests; they are "
                            "not resumed", self.path, sorted(map(str, raw.values())))
            self.batches = dict(raw.get("batches", {}))
            self.intents = dict(raw.get("submitting", {}))

    def intend(self, chunk: str, keys: list[str]) -> None:
        self.intents[chunk] = {"keys": keys, "at": time.time(), "file": None}
        self._save()

    def uploaded(self, chunk: str, file_id: str) -> None:
        """Before batches.create: the one file a batch of this intent can have been made from."""
        self.intents[chunk]["file"] = file_id
        self._save()

    def add(self, batch_id: str, keys: list[str], chunk: str | None = None) -> None:
        self.batches[batch_id] = {"keys": keys, "submitted": time.time()}
        self.intents.pop(chunk, None)  # one write: the batch replaces its intent
        self._save()

    def forget(self, chunk: str) -> None:
        if self.intents.pop(chunk, None) is not None:
            self._save()

    def drop(self, batch_id: str) -> None:
        if self.batches.pop(batch_id, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path and (self.batches or self.intents):
            write_json(self.path, {"batches": self.batches, "submitting": self.intents})
        elif self.path:  # nothing left to resume: no file beside the ledger
            self.path.unlink(missing_ok=True)
