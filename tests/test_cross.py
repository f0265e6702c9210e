"""Cross-dataset evaluation: `cotpd evaluate --model` (a folder or a runs:/ URI) on a dataset that names
its types differently, the errors for another task or an unmapped type, and the bench's `cross` group.

`sample_b` is the NER sample's files under other type names (PER -> PERSON, ...), so a model trained
on `sample` must score exactly its in-domain numbers there once the types are mapped back."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402
from cross_helpers import SAMPLE_B_TYPES, sample_b_entry, trained_project, write_knowledge  # noqa: E402

from cotpd.bench import grid as bench  # noqa: E402
from cotpd.cli import main  # noqa: E402
from cotpd.errors import ConfigError  # noqa: E402
from cotpd.io import write_jsonl  # noqa: E402
from cotpd.model import load_student  # noqa: E402
from cotpd.params import Layout, read_params  # noqa: E402
from cotpd.pipeline import run_stage  # noqa: E402
from cotpd.records import NerSample  # noqa: E402
from cotpd.training import cross  # noqa: E402
from cotpd.training.evaluate import remap  # noqa: E402

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]

MODEL_TYPES = ["LOC", "ORG", "OTHER", "PER"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return trained_project(tmp_path_factory)


def test_type_mapping_goes_through_both_maps():
    # the dataset renamed the published PER to PERSON: back through its own map
    back = cross.type_mapping(MODEL_TYPES, ["PERSON", "LOCATION", "ORGANIZATION", "MISC"], SAMPLE_B_TYPES,
                              {"MISC": "OTHER"})
    assert back == {"PERSON": ["PER"], "LOCATION": ["LOC"], "ORGANIZATION": ["ORG"], "MISC": ["OTHER"]}
    # Twitter-2017 style: the model's dataset renames MISC (which the other keeps) to OTHER
    assert cross.type_mapping(MODEL_TYPES, ["PER", "MISC"], {}, {"MISC": "OTHER"}) == {"PER": ["PER"],
                                                                                        "MISC": ["OTHER"]}
    # a type nothing maps, and a type two published names send to different model types
    assert cross.type_mapping(MODEL_TYPES, ["EVENT"], {"MISC": "OTHER"}, {})["EVENT"] == []
    assert cross.type_mapping(MODEL_TYPES, ["PLACE"], {"LOC": "PLACE", "ORG": "PLACE"}, {})["PLACE"] == ["LOC", "ORG"]


def test_unmapped_gold_entities_stay_as_misses():
    s = NerSample(id="t-0", tokens=["Expo", "in", "Paris"], labels=["B-EVENT", "O", "B-LOCATION"], split="test")
    (mapped,), unknown = remap([s], {"EVENT": "EVENT", "LOCATION": "LOC"}, "ner", ["O", "B-LOC", "I-LOC"])
    assert mapped.labels == ["B-EVENT", "O", "B-LOC"] and unknown == {"EVENT": 1}
    assert s.labels[2] == "B-LOCATION"  # the caller's samples are not changed


def test_evaluate_model_on_renamed_dataset_folder_and_runs_uri(project, capsys):
    root, summaries = project["root"], project
    # in-domain reference: the evaluate stage on `sample`
    assert main(["evaluate", "--dataset", "sample", "--root", str(root)]) == 0
    capsys.readouterr()
    own = json.loads(Layout(root, "sample").metrics("cotpd").read_text())
    folder = summaries["cotpd"]["model_dir"]
    assert main(["evaluate", "--model", str(folder), "--dataset", "sample_b", "--root", str(root)]) == 0
    printed = json.loads(capsys.readouterr().out)
    path = Layout(root, "sample_b").base / "metrics" / "cross" / "sample_cotpd.json"
    assert printed["metrics"] == str(path)
    m = json.loads(path.read_text())
    assert m["type_map"] == {"PERSON": "PER", "LOCATION": "LOC", "ORGANIZATION": "ORG", "MISC": "OTHER"}
    assert m["trained_on"] == "sample" and m["dataset"] == "sample_b" and m["variant"] == "cotpd"
    assert m["scheme"] == own["scheme"] and m["n"] == own["n"] and m["unknown_gold_types"] == {}
    # the same sentences with the types mapped back: exactly the in-domain scores, per type too
    assert m["f1"] == own["f1"] and m["per_type"] == own["per_type"]
    # the MLflow model of the baseline's run, on the valid split, to a path of our choosing
    uri = f"runs:/{summaries['baseline']['mlflow_run_id']}/model"
    out = root / "m.json"
    assert main(["evaluate", "--model", uri, "--dataset", "sample_b", "--split", "valid", "--out", str(out),
                 "--root", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == str(out)
    mv = json.loads(out.read_text())
    assert mv["variant"] == "baseline" and mv["split"] == "valid" and mv["model"] == uri
    student = load_student(summaries["baseline"]["model_dir"])
    assert mv["f1"] == pytest.approx(student.saved_config["dev_f1"])  # the dev F1 it was selected on


def test_other_task_and_unmapped_type_are_errors_naming_both(project, capsys):
    root, params = project["root"], project["params"]
    folder = str(project["cotpd"]["model_dir"])
    assert main(["evaluate", "--model", folder, "--dataset", "sample_mnre", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert folder in err and "sample_mnre" in err and "different tasks" in err
    # sample_b declaring a type no map reaches: an error, unless its entities are to count as misses
    student = load_student(folder)
    declared = dict(params, datasets={**params["datasets"], "sample_b": {
        **params["datasets"]["sample_b"], "entity_types": [*SAMPLE_B_TYPES.values(), "EVENT"]}})
    samples = cross.load_split("sample_b", root, declared, "test")
    with pytest.raises(ConfigError, match=r"sample_b.*\['EVENT'\].*--unmapped miss") as exc:
        cross.resolve_types(student, folder, "sample_b", declared, samples)
    assert folder in str(exc.value)
    assert cross.resolve_types(student, folder, "sample_b", declared, samples, "miss")["EVENT"] == "EVENT"
    assert main(["evaluate", "--model", "nowhere/model", "--dataset", "sample_b", "--root", str(root)]) == 2
    assert "nowhere/model" in capsys.readouterr().err


@pytest.fixture
def bench_project(tmp_path):
    """A project whose params.yaml has `sample` and `sample_b` (same files, other type names), both
    prepared in the bench's work folder with knowledge and no augmentation."""
    root, out = tmp_path / "project", tmp_path / "results"
    root.mkdir()
    params = read_params(REPO)
    params["datasets"]["sample"]["root"] = str(REPO / params["datasets"]["sample"]["root"])
    params["datasets"]["sample_b"] = sample_b_entry(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    work = out / "runs"
    for ds in ("sample", "sample_b"):
        run_stage("prepare", ds, work, params)
        write_knowledge(work, ds)
        write_jsonl(Layout(work, ds).augmented, [])
    return root, out


@pytest.mark.timeout(300)
def test_bench_cross_group_gives_the_transfer_table(bench_project, capsys):
    root, out = bench_project
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "sample_b",
            "--groups", "main", "cross", "--seeds", "1", "--variants", "baseline", "cotpd", "--no-speed"]
    assert bench.main(argv) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "## Cross-dataset transfer (seed 13" in text
    runs = json.loads((out / "results.json").read_text(encoding="utf-8"))["runs"]
    main_f1 = {(r["dataset"], r["variant"]): r["test_f1"] for r in runs if r["group"] == "main"}
    got = {(r["dataset"], r["test_on"], r["variant"]): r for r in runs if r["group"] == "cross"}
    assert sorted(got) == [("sample", "sample_b", "baseline"), ("sample", "sample_b", "cotpd"),
                           ("sample_b", "sample", "baseline"), ("sample_b", "sample", "cotpd")]
    assert got["sample", "sample_b", "cotpd"]["type_map"] == {v: k for k, v in SAMPLE_B_TYPES.items()}
    assert got["sample_b", "sample", "cotpd"]["type_map"] == SAMPLE_B_TYPES
    for (a, b, v), r in got.items():
        # the same sentences under other names: the transfer score is the in-domain score of the model
        assert r["test_f1"] == pytest.approx(main_f1[a, v], abs=1e-9) and r["unknown_gold_types"] == {}
        row = next(line for line in text.splitlines() if line.startswith(f"| {a} | {b} |"))
        cells = [c.strip() for c in row.split("|")[3:6]]
        f1 = {x: got[a, b, x]["test_f1"] * 100 for x in ("baseline", "cotpd")}
        assert cells == [f"{f1['baseline']:.2f}", f"{f1['cotpd']:.2f}", f"{f1['cotpd'] - f1['baseline']:+.2f}"]
    assert "| sample | sample (in-domain) |" in text and "| sample_b | sample_b (in-domain) |" in text
    # a later invocation reuses the saved transfer results (no model is loaded for them)
    capsys.readouterr()
    assert bench.main([*argv, "--report-only"]) == 0
    reused = json.loads((out / "results.json").read_text(encoding="utf-8"))["reused"]
    assert {k for k in reused if "-cross-" in k} == {"sample-cross-baseline-on_sample_b-s13", "sample-cross-cotpd-on_sample_b-s13",
                                                     "sample_b-cross-baseline-on_sample-s13", "sample_b-cross-cotpd-on_sample-s13"}
