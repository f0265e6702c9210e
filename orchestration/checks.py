"""Asset checks: row counts and coverage of the inputs, the Great Expectations suite on the
augmented data (blocking: failing rows stop training), finite scores on models and metrics."""
# no `from __future__ import annotations`: Dagster reads the context/resource annotations at decoration

import json
import math
import warnings
from pathlib import Path

from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, PreviewWarning,
                     asset_check)

from cotpd.io import read_jsonl
from cotpd.records import SPLITS
from cotpd.params import Layout

from . import metadata as md
from .assets import DATASETS, MODEL_ASSETS, augmented_dataset, image_captions, metrics, raw_dataset
from .resources import ProjectResource

# checks are partitioned like their assets (a result per dataset); Dagster 1.13 calls that "preview"
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning)

# a split the dataset declares must have rows; train and test cannot be empty for any task
REQUIRED_SPLITS = ("train", "test")


def _layout(context: AssetCheckExecutionContext, project: ProjectResource) -> Layout:
    return Layout(project.path(), context.partition_key)


@asset_check(asset=raw_dataset, partitions_def=DATASETS, description="every declared split was read; train and "
             "test have rows; each row has tokens")
def raw_dataset_rows(context: AssetCheckExecutionContext, project: ProjectResource) -> AssetCheckResult:
    lay = _layout(context, project)
    splits = SPLITS  # the schema requires a file for each (config.SplitFiles)
    counts, empty_rows, with_image = {}, 0, 0
    for split in splits:
        path = lay.raw(split)
        rows = read_jsonl(path) if path.is_file() else []
        counts[split] = len(rows)
        empty_rows += sum(1 for r in rows if not r.get("tokens"))
        with_image += sum(1 for r in rows if r.get("image_id"))
    total = sum(counts.values())
    missing = [s for s in splits if not lay.raw(s).is_file()]
    empty = [s for s in REQUIRED_SPLITS if s in splits and counts.get(s, 0) == 0]
    return AssetCheckResult(
        passed=not missing and not empty and empty_rows == 0,
        metadata={"rows": md.value("rows", counts), "total": total, "rows_without_tokens": empty_rows,
                  "image_coverage": round(with_image / total, 4) if total else 0.0,
                  "missing_splits": md.value("missing_splits", missing or ["none"]),
                  "empty_required_splits": md.value("empty", empty or ["none"])})


@asset_check(asset=image_captions, partitions_def=DATASETS, description="one row per referenced image; at least "
             "half of them captioned (error when none is, or when the file is missing or has duplicates)")
def image_captions_coverage(context: AssetCheckExecutionContext, project: ProjectResource) -> AssetCheckResult:
    lay = _layout(context, project)
    exists = lay.captions.is_file()
    rows = read_jsonl(lay.captions) if exists else []
    captioned = sum(1 for r in rows if r.get("caption"))
    coverage = captioned / len(rows) if rows else 1.0  # a text-only dataset has nothing to caption
    duplicates = len(rows) - len({r.get("image_id") for r in rows})
    # a few lost images are normal (warn); no captions at all silently drops the multimodal grain
    broken = not exists or duplicates > 0 or (rows and captioned == 0)
    return AssetCheckResult(passed=not broken and coverage >= 0.5,
                            severity=AssetCheckSeverity.ERROR if broken else AssetCheckSeverity.WARN,
                            metadata={"images": len(rows), "captioned": captioned, "coverage": round(coverage, 4),
                                      "duplicate_image_ids": duplicates})


@asset_check(asset=augmented_dataset, partitions_def=DATASETS, blocking=True,
             description="Great Expectations suite over the augmented samples (cotpd.augment.validation): "
             "alignment, label scheme, IOB2, entities preserved, fact check, no leakage, no duplicates; "
             "the result names its Data Docs (index.html)")
def augmented_dataset_expectations(context: AssetCheckExecutionContext, project: ProjectResource) -> AssetCheckResult:
    # lazy: great_expectations and pandas take ~8 s to import, and every Dagster step process loads
    # these definitions; only this check needs them
    from cotpd.augment.validation import validate_augmented  # noqa: PLC0415

    report = validate_augmented(project.path(), context.partition_key, project.params())
    meta = {"rows": report.n_rows, "failed_rows": report.n_failed,
            "failed_expectations": md.value("failed", report.failed or ["none"]),
            "expectations": MetadataValue.md(md.md_table(
                [{"check": r.name, "expectation": r.expectation, "column": r.column, "success": r.success,
                  "unexpected": r.unexpected_count} for r in report.results]))}
    if report.quarantine:
        meta["quarantine"] = MetadataValue.path(str(report.quarantine))
    if report.data_docs:  # the suite and this run's result, rendered by Great Expectations
        meta["data_docs"] = MetadataValue.path(report.data_docs)
    return AssetCheckResult(passed=bool(report.success), severity=AssetCheckSeverity.ERROR, metadata=meta)


def _numbers(d, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = float(v)
        elif isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}."))
    return out


def _finite_result(path: Path, required: tuple[str, ...] = ()) -> AssetCheckResult:
    """Every number in a metrics JSON is finite and every F1/precision/recall lies in [0, 1]."""
    if not path.is_file():
        return AssetCheckResult(passed=False, metadata={"missing": MetadataValue.path(str(path))})
    values = _numbers(json.loads(path.read_text(encoding="utf-8")))
    absent = [k for k in required if k not in values]
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    scores = {k: v for k, v in values.items()
              if k.rsplit(".", 1)[-1].rsplit("_", 1)[-1] in ("f1", "precision", "recall")}
    out_of_range = sorted(k for k, v in scores.items() if math.isfinite(v) and not 0.0 <= v <= 1.0)
    return AssetCheckResult(passed=bool(values) and not bad and not out_of_range and not absent,
                            metadata={"numbers": len(values), "non_finite": md.value("x", bad or ["none"]),
                                      "missing_keys": md.value("x", absent or ["none"]),
                                      "out_of_range": md.value("x", out_of_range or ["none"]),
                                      "path": MetadataValue.path(str(path))})


def _variant_check(asset_def, variant: str):
    @asset_check(asset=asset_def, name=f"{asset_def.key.path[-1]}_finite_scores", partitions_def=DATASETS,
                 description=f"the saved {variant} checkpoint exists and its dev F1 is finite and within [0, 1]")
    def _check(context: AssetCheckExecutionContext, project: ProjectResource) -> AssetCheckResult:
        # the checkpoint's config.json records the dev F1 it was kept for (cotpd.training.loop)
        return _finite_result(_layout(context, project).model_dir(variant) / "config.json", required=("dev_f1",))

    return _check


@asset_check(asset=metrics, partitions_def=DATASETS, description="the metrics summary has finite scores in [0, 1]")
def metrics_finite(context: AssetCheckExecutionContext, project: ProjectResource) -> AssetCheckResult:
    return _finite_result(_layout(context, project).metrics_summary)


CHECKS = [raw_dataset_rows, image_captions_coverage, augmented_dataset_expectations,
          *(_variant_check(a, v) for v, a in MODEL_ASSETS.items()), metrics_finite]
