"""Stage 'captions': one caption per image used by any split (paper Sec. 3.1).

Reads the image ids of outputs/<ds>/raw/*.jsonl, asks the configured captioner
(params captions.captioner, or the `captioner=` resource) and writes outputs/<ds>/captions.jsonl
rows {image_id, caption, source, status}. Missing images / captions are rows with a status and
caption null, counted in the summary; later stages treat them as text-only samples.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..captions.captioners import OK, build_captioner
from ..errors import DataError
from ..io import read_jsonl, write_jsonl
from ..params import Layout, Params, dataset_params

log = logging.getLogger(__name__)


def image_ids(layout: Layout) -> tuple[list[str], int]:
    """Sorted unique image ids of every raw split, and how many samples have no image."""
    files = sorted(layout.raw_dir.glob("*.jsonl"))
    if not files:
        raise DataError(layout.raw_dir, None, "no raw/*.jsonl: run `cotpd prepare` first")
    ids, no_image = set(), 0
    for f in files:
        for row in read_jsonl(f):
            if row.get("image_id"):
                ids.add(str(row["image_id"]))
            else:
                no_image += 1
    return sorted(ids), no_image


def run(dataset: str, root: Path, params: Params | dict, captioner=None, llm=None, **resources) -> dict:
    root = Path(root)
    dp = dataset_params(params, dataset)
    layout = Layout(root, dataset)
    ids, no_image = image_ids(layout)
    own_runner = captioner is None and llm is None  # a runner we build, we close
    captioner = captioner or build_captioner(dp, root, llm=llm)
    try:
        results = captioner.caption(ids) if ids else {}
    finally:
        if own_runner and hasattr(getattr(captioner, "runner", None), "close"):
            captioner.runner.close()
    rows = []
    for i in ids:
        res = results.get(i)
        if res is None:  # a captioner that skipped an id is a bug in it; record, don't crash
            log.warning("captioner %s returned nothing for image %s", captioner.name, i)
            rows.append({"image_id": i, "caption": None, "source": captioner.name, "status": "missing_caption"})
        else:
            rows.append({"image_id": i, "caption": res.caption, "source": captioner.name, "status": res.status})
    write_jsonl(layout.captions, rows)
    status = Counter(r["status"] for r in rows)
    captioned = status.get(OK, 0)
    summary = {
        "captioner": captioner.name,
        "images": len(ids),
        "captioned": captioned,
        "missing": len(ids) - captioned,
        "status": dict(sorted(status.items())),
        "coverage": round(captioned / len(ids), 4) if ids else 0.0,
        "samples_without_image": no_image,
        "path": str(layout.captions),
    }
    runner = getattr(captioner, "runner", None)
    if runner is not None:
        summary["llm"] = runner.stats("captions")
    if summary["missing"]:
        log.warning("[%s] %d of %d images have no caption: %s", dataset, summary["missing"], len(ids),
                    {k: v for k, v in status.items() if k != OK})
    return summary
