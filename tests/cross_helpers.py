"""A project shared by test_cross and test_explain (built once per session): the NER sample, the same
files as a second dataset `sample_b` that names its types PERSON / LOCATION / ORGANIZATION / MISC,
the MNRE sample, CoT knowledge for the NER ones, and a tiny tracked baseline and CoTPD trained on
`sample` (the train stage, so each is an MLflow run with its pyfunc model)."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402
from tracking_helpers import project_params  # noqa: E402

from cotpd.io import write_jsonl  # noqa: E402
from cotpd.params import Layout  # noqa: E402
from cotpd.records import read_records  # noqa: E402

_CACHE: dict[str, dict] = {}
SAMPLE_B_TYPES = {"PER": "PERSON", "LOC": "LOCATION", "ORG": "ORGANIZATION", "OTHER": "MISC"}


def sample_b_entry(params: dict) -> dict:
    """`sample`'s dataset entry with the other type names: same files, renamed types."""
    entry = {k: v for k, v in params["datasets"]["sample"].items()}
    entry.update(type_map=dict(SAMPLE_B_TYPES), entity_types=list(SAMPLE_B_TYPES.values()))
    return entry


def write_knowledge(root: Path, dataset: str) -> None:
    """Two CoT grains per sentence, written directly (the committed ledger covers `sample` only)."""
    lay = Layout(root, dataset)
    write_jsonl(lay.knowledge, [{"sample_id": s.id, "split": split, "grain": g, "text": f"{g} note on {s.tokens[0]}",
                                 "source": "test"} for split in ("train", "valid", "test")
                                for s in read_records(lay.raw(split)) for g in ("noun", "sentence")])


def trained_project(tmp_path_factory) -> dict:
    """{root, params, baseline: train summary, cotpd: train summary}; built on first use."""
    if "project" in _CACHE:
        return _CACHE["project"]
    from cotpd.model import build_tiny_encoder
    from cotpd.pipeline import run_stage

    base = tmp_path_factory.mktemp("cross")
    root = base / "project"
    root.mkdir()
    params = project_params(build_tiny_encoder(base / "tiny_encoder"))
    params["datasets"]["sample_b"] = sample_b_entry(params)
    params["train"].update(epochs=3, augment_types=[])
    params["tracking"]["system_metrics"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")  # for the CLI
    for ds in ("sample", "sample_b", "sample_mnre"):
        for stage in ("prepare", "captions"):
            run_stage(stage, ds, root, params)
    for ds in ("sample", "sample_b"):
        write_knowledge(root, ds)
    out = {"root": root, "params": params}
    for variant in ("baseline", "cotpd"):
        out[variant] = run_stage("train", "sample", root, params, variant=variant)
    _CACHE["project"] = out
    return out
