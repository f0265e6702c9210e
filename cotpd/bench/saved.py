"""Saved bench results: <out>/runs/done/<key>.json, one per finished training (cotpd.bench.grid).

The work folder is git-ignored and the report is not, so a fresh clone takes the records behind a
committed <out>/results.json back into runs/done; each keeps its config hash, so a record whose
params have changed since is still trained again (Bench.done_record). --adopt-from takes the records of
another --out whose training was exactly one of this grid's (`same_training`).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..errors import CotpdError
from ..io import read_json, shown, write_json
from .spec import RunSpec

log = logging.getLogger("cotpd.bench")


def spec_of(rec: dict) -> RunSpec:
    """The grid position a record was trained for (KeyError, TypeError or ValueError: not a bench record)."""
    return RunSpec(rec["dataset"], rec["variant"], int(rec["seed"]), rec["group"], rec.get("label") or "")


def adopt(report: Path, done_dir: Path) -> list[str]:
    """Save the records of `report` that `done_dir` lacks (what it holds, a newer result say, is kept);
    the keys of those saved."""
    if not report.exists():
        return []
    adopted = []
    for i, rec in enumerate(read_json(report).get("runs") or []):
        try:
            key = spec_of(rec).key
            if "config_hash" not in rec:
                raise KeyError("config_hash")
        except (KeyError, TypeError, ValueError) as exc:
            raise CotpdError(f"{report}: runs[{i}] is not a bench record (missing or bad {exc})") from exc
        path = done_dir / f"{key}.json"
        if not path.exists():
            write_json(path, rec)  # atomic, like a finished training's record
            adopted.append(key)
    if adopted:
        log.info("took %d saved results back from %s", len(adopted), report)
    return adopted


def speed(report: Path) -> dict | None:
    """The speed section that `report` (<out>/results.json) holds, for a report written again without
    measuring (--report-only); None where there is no report or it has no section."""
    return read_json(report).get("speed") if report.exists() else None


def same_training(bench, spec: RunSpec, chash: str, path: Path) -> dict | None:
    """--adopt-from: a record of another --out that trained exactly `spec` (whose hash is `chash`), saved at
    `path` as `spec`'s.
    "Exactly": the same dataset, variant and seed, and the config hash that `spec`'s params give under that
    record's own grid position (the hash covers the key, cotpd.bench.identity). So a lever confirmed at full
    size is not trained again once params.yaml makes it the default: one commit, seed and thread count give
    one result. The record keeps its commit, time and MLflow run, and says where it came from. Only the
    groups this invocation trains are adopted, and the main grid, which every other group is paired with."""
    if bench.args.groups and spec.group not in (*bench.args.groups, "main"):
        return None
    root = bench.root.resolve()
    for other_out in bench.args.adopt_from or ():
        name = shown(other_out, root)  # not the worktree's path
        for rec in read_json(other_out / "results.json").get("runs") or []:  # checked by bench_args
            if rec.get("group") == "cross" or (rec["dataset"], rec["variant"], rec["seed"]) != \
                    (spec.dataset, spec.variant, spec.seed):
                continue
            other = spec_of(rec)
            if rec.get("config_hash") == bench.spec_params(replace(spec, group=other.group, label=other.label))[2]:
                rec = {**rec, "group": spec.group, "label": spec.label, "config_hash": chash,
                       "adopted_from": f"{name}: {other.key}"}
                write_json(path, rec)
                log.info("%s: the same training as %s in %s, adopted", spec.key, other.key, name)
                return rec
    return None
