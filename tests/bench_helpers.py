"""The `project` fixture of the bench tests: a project root whose work folder holds the sample's
prepared splits and knowledge (tests/test_bench.py, tests/test_bench_registry.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cotpd.io import write_jsonl
from cotpd.params import Layout, read_params
from cotpd.pipeline import run_stage
from cotpd.records import read_records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    """A project root with params.yaml (sample roots absolute) and the committed sample ledgers; in
    its work folder the knowledge the committed ledgers do not cover yet is written directly: two
    grains for the NER sample (so the grain ablation has something to ablate), none for MNRE."""
    root = tmp_path / "project"
    out = root / "results"  # where a user keeps reports: inside the project (records name paths relative to it)
    root.mkdir()
    params = read_params(REPO)
    for ds in ("sample", "sample_mnre"):
        params["datasets"][ds]["root"] = str(REPO / params["datasets"][ds]["root"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    if (REPO / "ledger" / "sample").is_dir():
        shutil.copytree(REPO / "ledger" / "sample", root / "ledger" / "sample")
    work = out / "runs"
    for ds in ("sample", "sample_mnre"):
        run_stage("prepare", ds, work, params)
    lay = Layout(work, "sample")
    rows = [{"sample_id": s.id, "split": split, "grain": g, "text": f"{g} note about {s.tokens[0]}",
             "source": "test"} for split in ("train", "valid", "test") for s in read_records(lay.raw(split))
            for g in ("noun", "sentence")]
    write_jsonl(lay.knowledge, rows)
    mnre = Layout(work, "sample_mnre")
    write_jsonl(mnre.knowledge, [])
    write_jsonl(mnre.augmented, [])
    if not (root / "ledger" / "sample" / "augment.jsonl").exists():
        write_jsonl(lay.augmented, [])
    return root, out
