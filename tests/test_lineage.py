"""Dagster and DVC run one pipeline: the same lineage, the same params, the same code per stage.

The Dagster asset graph (orchestration.definitions) and the dvc.yaml stage graph (as DVC itself
resolves it) are both mapped to cotpd.pipeline stage names and compared edge by edge, so neither
can drift from the other or from cotpd.pipeline.DEPENDS.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey

from cotpd.params import read_params
from cotpd.pipeline import DEPENDS, STAGES, code_deps, code_hash
from cotpd.prompts import stage_prompts
from orchestration import assets as A
from orchestration.definitions import defs

ROOT = Path(__file__).resolve().parents[1]
ASSET_TO_STAGE = {name: stage for stage, (_, name) in STAGES.items()} | {n: "train" for n in A.VARIANT_ASSETS.values()}


@pytest.fixture(scope="module")
def dvc_index():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        yield list(repo.index.stages), [(a, b) for a, b in repo.index.graph.edges()]


def _dvc_stage(stage) -> tuple[str, str]:
    """(stage name, dataset) of a resolved stage such as `train@sample-cotpd` or `knowledge@sample`."""
    name, _, key = stage.addressing.partition("@")
    if name == "train":
        ds, variant = key.rsplit("-", 1)
        return "train", ds
    return name, key


def expected_edges() -> set[tuple[str, str]]:
    return {(stage, up) for stage, ups in DEPENDS.items() for up in ups}


def test_dagster_asset_graph_is_the_pipeline_lineage():
    graph = defs.resolve_asset_graph()
    edges = set()
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            edges.add((ASSET_TO_STAGE[key.path[-1]], ASSET_TO_STAGE[parent.path[-1]]))
    assert edges == expected_edges()
    assert {ASSET_TO_STAGE[k.path[-1]] for k in graph.get_all_asset_keys()} == set(STAGES)


def test_dvc_stage_graph_is_the_same_lineage_for_every_pipeline_dataset(dvc_index):
    stages, graph_edges = dvc_index
    params = read_params(ROOT)
    pipeline_stages = [s for s in stages if hasattr(s, "cmd") and s.cmd]  # data.dvc has no command
    datasets = params["pipeline"]["datasets"]
    for ds in datasets:
        edges = {(_dvc_stage(a)[0], _dvc_stage(b)[0]) for a, b in graph_edges
                 if a in pipeline_stages and b in pipeline_stages and _dvc_stage(a)[1] == ds}
        assert edges == expected_edges(), ds
        # no edge crosses datasets
        assert all(_dvc_stage(a)[1] == _dvc_stage(b)[1] for a, b in graph_edges
                   if a in pipeline_stages and b in pipeline_stages)
    names = {s.addressing for s in pipeline_stages}
    want = {f"{st}@{ds}" for st in STAGES if st != "train" for ds in datasets}
    want |= {f"train@{ds}-{v}" for ds in datasets for v in params["train"]["variants"]}
    assert names == want
    # each train variant is one Dagster asset
    assert set(params["train"]["variants"]) <= set(A.VARIANT_ASSETS)


def test_dvc_stages_call_the_cli_and_depend_on_their_code_and_prompt_files(dvc_index):
    stages, _ = dvc_index
    for stage in (s for s in stages if getattr(s, "cmd", None)):
        name, ds = _dvc_stage(stage)
        assert stage.cmd.startswith(f"cotpd {name} --dataset {ds}")
        deps = {d.def_path for d in stage.deps}
        module = Path(importlib.util.find_spec(STAGES[name][0]).origin).relative_to(ROOT).as_posix()
        assert module in deps, (stage.addressing, module)
        # exactly the code of cotpd.pipeline's map, which Dagster's code version hashes too
        code = {d for d in deps if d.startswith("cotpd/") and not d.startswith("cotpd/prompts/")}
        assert code == set(code_deps(name)), stage.addressing
        prompt_deps = {Path(d).stem for d in deps if d.startswith("cotpd/prompts/")}
        assert prompt_deps == set(stage_prompts(name)), stage.addressing  # exactly the prompts it reads
        for d in deps:
            assert (ROOT / d).exists() or d.startswith("outputs/"), f"{stage.addressing}: {d} does not exist"


def test_dvc_params_are_keys_of_params_yaml(dvc_index):
    """One source of hyperparameters: every params dependency names an existing params.yaml key,
    and dvc.yaml defines no variables of its own."""
    stages, _ = dvc_index
    params = read_params(ROOT)
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    assert "vars" not in raw
    for stage in (s for s in stages if getattr(s, "cmd", None)):
        name, ds = _dvc_stage(stage)
        keys = [k for p in stage.deps if p.def_path == "params.yaml" for k in p.params]
        assert f"datasets.{ds}" in keys, stage.addressing
        for key in keys:
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{stage.addressing}: {key} not in params.yaml"
                node = node[part]
        if name in ("knowledge", "augment"):
            assert "llm" in keys
        if name == "train":
            assert "train" in keys


def test_llm_ledgers_are_persistent_uncached_outputs(dvc_index):
    stages, _ = dvc_index
    ledgers = {}
    for stage in (s for s in stages if getattr(s, "cmd", None)):
        for out in stage.outs:
            if out.def_path.startswith("ledger/"):
                ledgers[out.def_path] = (stage.addressing, out.persist, out.use_cache)
    for ds in read_params(ROOT)["pipeline"]["datasets"]:
        assert ledgers[f"ledger/{ds}/knowledge.jsonl"] == (f"knowledge@{ds}", True, False)
        assert ledgers[f"ledger/{ds}/augment.jsonl"] == (f"augment@{ds}", True, False)


def test_partitions_cover_every_dataset_and_dvc_the_pipeline_ones():
    params = read_params(ROOT)
    assert A.DATASETS.get_partition_keys() == list(params["datasets"])
    assert set(params["pipeline"]["datasets"]) <= set(params["datasets"])
    assert defs.resolve_asset_graph().get(AssetKey("metrics")).partitions_def == A.DATASETS


def test_dagster_code_versions_hash_the_code_dvc_depends_on(tmp_path):
    """Editing the training loop makes the model assets and `metrics` stale in Dagster (as it reruns
    train@ and evaluate@ in DVC), and leaves the LLM stages' code versions alone."""
    shutil.copytree(ROOT / "cotpd", tmp_path / "cotpd", ignore=shutil.ignore_patterns("__pycache__"))
    before = {st: A.code_version(st, root=tmp_path) for st in STAGES}
    assert before == {st: A.code_version(st) for st in STAGES}  # the copy is the checkout
    loop = tmp_path / "cotpd" / "training" / "loop.py"
    loop.write_text(loop.read_text() + "\n# an edit\n")
    after = {st: A.code_version(st, root=tmp_path) for st in STAGES}
    changed = {st for st in STAGES if before[st] != after[st]}
    assert changed == {st for st in STAGES if "cotpd/training" in code_deps(st)} == {"train", "evaluate"}
    assert {code_hash(st, tmp_path) for st in changed}.isdisjoint({code_hash(st) for st in changed})
