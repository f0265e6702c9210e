"""A stage's summary dict as Dagster asset metadata: numbers, tables, previews, links, a plot.

Nothing here reads secrets, and `clean` drops any key that looks like a credential and redacts the
value of $OPENAI_API_KEY wherever it would appear, so metadata never carries the key.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

from dagster import MetadataValue

from cotpd.io import read_jsonl

_SECRET = re.compile(r"(api_?key|secret|password|authorization|bearer)", re.IGNORECASE)
_PATHY = re.compile(r"(^|_)(path|dir|file)$")
PREVIEW_ROWS = 5
CELL = 80


def redact(text: str) -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    return text.replace(key, "***") if key and len(key) >= 8 else text


def cell(value: Any, width: int = CELL) -> str:
    """One markdown table cell: JSON for structures, newlines and pipes escaped, cut at `width`."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = redact(text).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def md_table(rows: list[dict], columns: Iterable[str] | None = None, width: int = CELL) -> str:
    if not rows:
        return "_(no rows)_"
    cols = list(columns or [c for c in rows[0]])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, ""), width) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def kv_table(d: dict) -> str:
    return md_table([{"key": k, "value": v} for k, v in d.items()], ["key", "value"])


def preview(path: Path, columns: list[str] | None = None, n: int = PREVIEW_ROWS) -> MetadataValue | None:
    """The first rows of a JSONL output as a markdown table (None when the file does not exist)."""
    if not Path(path).is_file():
        return None
    rows = []
    for row in read_jsonl(path):
        rows.append(row)
        if len(rows) >= n:
            break
    if columns is None and rows:
        # the scalar-ish columns of the first row; long structures make unreadable tables
        columns = [k for k, v in rows[0].items() if not isinstance(v, dict) or len(v) <= 3][:6]
    return MetadataValue.md(md_table(rows, columns))


def value(key: str, v: Any) -> MetadataValue | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return MetadataValue.bool(v)
    if isinstance(v, int):
        return MetadataValue.int(v)
    if isinstance(v, float):
        return MetadataValue.float(v)
    if isinstance(v, str):
        if v.startswith(("http://", "https://")):
            return MetadataValue.url(redact(v))
        return MetadataValue.path(v) if _PATHY.search(key) else MetadataValue.text(redact(v))
    if isinstance(v, dict):
        flat = all(not isinstance(x, (dict, list)) for x in v.values())
        return MetadataValue.md(kv_table(v)) if flat and v else MetadataValue.json(clean(v))
    if isinstance(v, (list, tuple)):
        return MetadataValue.json(clean({"items": list(v)})["items"]) if v else None
    return MetadataValue.text(cell(v, 400))


def clean(d: Any) -> Any:
    """A JSON-safe copy without credential-looking keys (recursively)."""
    if isinstance(d, dict):
        return {k: clean(v) for k, v in d.items() if not _SECRET.search(str(k))}
    if isinstance(d, (list, tuple)):
        return [clean(x) for x in d]
    if isinstance(d, float) and not math.isfinite(d):
        return str(d)
    if isinstance(d, str):
        return redact(d)
    return d


def summary_metadata(summary: dict) -> dict[str, MetadataValue]:
    out = {}
    for k, v in summary.items():
        if _SECRET.search(str(k)):
            continue
        mv = value(k, v)
        if mv is not None:
            out[k] = mv
    return out


def image_md(path: Path, title: str) -> MetadataValue:
    """A plot in the asset's metadata: the PNG's path (Dagster's markdown shows local paths as text,
    so the file is linked, and also inlined as a data URI for UIs that render it)."""

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return MetadataValue.md(f"**{title}** (`{path}`)\n\n![{title}](data:image/png;base64,{data})")
