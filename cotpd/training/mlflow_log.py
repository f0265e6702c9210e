"""The splits a training read, as MLflow dataset inputs of its run (the runs table's Dataset column).

Each is named `<dataset>.<split>` and its digest is the leading characters of the SHA-256 the run also
carries as tag `data.raw.<split>` (MLflow keeps at most 36), so runs on the same data show the same
digest and a changed split shows at a glance. Only metadata is logged: the data is not copied.
"""
from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource  # registered by mlflow.data at import

from ..params import Layout
from ..records import SPLITS

DIGEST_LEN = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE in 3.17
CONTEXT = {"train": "training", "valid": "validation", "test": "test"}  # the UI's context tags


def split_datasets(dataset: str, tags: dict[str, str], data_root: Path) -> dict[str, MetaDataset]:
    """One metadata-only dataset per split whose hash the run's tags hold (the data is not copied)."""
    lay = Layout(Path(data_root), dataset)
    out = {}
    for split in SPLITS:
        digest = tags.get(f"data.raw.{split}")
        if digest:
            source = LocalArtifactDatasetSource(str(lay.raw(split)))
            out[split] = MetaDataset(source, name=f"{dataset}.{split}", digest=digest[:DIGEST_LEN])
    return out


def log_splits(dataset: str, tags: dict[str, str], data_root: Path) -> dict[str, MetaDataset]:
    """Log the splits as inputs of the active run (a resumed run already holding them keeps one each)."""
    splits = split_datasets(dataset, tags, data_root)
    if splits:
        mlflow.log_inputs(datasets=list(splits.values()), contexts=[CONTEXT[s] for s in splits],
                          tags_list=[None] * len(splits))
    return splits
