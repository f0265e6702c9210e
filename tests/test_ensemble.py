"""`cotpd evaluate --model A --model B ...`: the members' vote (issue #19's ensemble reference).

The vote rules are checked on hand-made predictions; the command on the tiny trained sample
students, where two copies of one student outvote a third and must give exactly that student's
scores, and a member with other labels is refused naming both models."""
from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from bench_helpers import project as bench_project  # noqa: E402,F401  (fixture)
from cross_helpers import trained_project  # noqa: E402

from cotpd.bench import grid as bench  # noqa: E402

from cotpd.cli import main  # noqa: E402
from cotpd.training.ensemble import vote_ner, vote_re  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return trained_project(tmp_path_factory)


def test_ner_vote_keeps_majority_spans_and_resolves_overlaps_by_votes():
    a = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    b = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    c = [["B-PER", "O", "O", "B-ORG"], ["I-ORG", "O"]]  # a stray I- is no entity (strict IOB2)
    voted = vote_ner([a, b, c])
    assert voted == [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O"]]
    # an even count needs more than half: 2 of 4 is no majority; majorities never overlap
    m = [[["B-PER", "I-PER", "O"]]] * 2 + [[["O", "B-LOC", "I-LOC"]]] * 2
    assert vote_ner(m) == [["O", "O", "O"]]
    m = [[["O", "B-LOC", "I-LOC"]]] * 3 + [[["B-PER", "I-PER", "O"]]] * 2
    assert vote_ner(m) == [["O", "B-LOC", "I-LOC"]]


def test_re_vote_majority_and_ties_to_the_earliest_member():
    assert vote_re([["a", "b", "None"], ["a", "c", "x"], ["b", "c", "y"]]) == ["a", "c", "None"]
    assert vote_re([["x"], ["y"]]) == ["x"]


def test_evaluate_with_several_models_votes_and_scores_each(project, tmp_path, capsys):
    root = project["root"]
    cotpd, base = str(project["cotpd"]["model_dir"]), str(project["baseline"]["model_dir"])
    singles = {}
    for ref in (cotpd, base):
        out = tmp_path / f"{len(singles)}.json"
        assert main(["evaluate", "--model", ref, "--dataset", "sample", "--out", str(out), "--root", str(root)]) == 0
        singles[ref] = json.loads(out.read_text())
    capsys.readouterr()
    out = tmp_path / "ens.json"
    assert main(["evaluate", "--model", base, "--model", cotpd, "--model", cotpd, "--dataset", "sample",
                 "--out", str(out), "--root", str(root)]) == 0
    printed = json.loads(capsys.readouterr().out)
    m = json.loads(out.read_text())
    assert printed["metrics"] == str(out) and m["model"] == [base, cotpd, cotpd]
    assert [x["f1"] for x in m["members"]] == [singles[base]["f1"], singles[cotpd]["f1"], singles[cotpd]["f1"]]
    # two identical members outvote the third: the vote is exactly the CoTPD student's output
    assert m["f1"] == singles[cotpd]["f1"] and m["per_type"] == singles[cotpd]["per_type"]
    assert "majority" in m["ensemble"] and m["view"] == "prompt"


def test_members_with_other_labels_are_refused_naming_both(project, tmp_path, capsys):
    root, base = project["root"], project["baseline"]["model_dir"]
    other = tmp_path / "other"
    shutil.copytree(base, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["labels"] = list(reversed(cfg["labels"]))
    (other / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "never.json"
    assert main(["evaluate", "--model", str(base), "--model", str(other), "--dataset", "sample",
                 "--out", str(out), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(base) in err and str(other) in err and "share their labels" in err
    assert not out.exists()


@pytest.mark.timeout(300)
def test_bench_keep_models_keeps_every_seeds_student_for_the_vote(bench_project, tmp_path, capsys):
    root, out = bench_project
    assert bench.main(["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "--seeds", "2",
                       "--no-speed", "--groups", "main", "--variants", "baseline", "--keep-models"]) == 0
    kept = sorted(p for p in (out / "runs" / "models").iterdir())
    assert [p.name for p in kept] == ["sample-main-baseline-s13", "sample-main-baseline-s14"]
    # the bench's work folder is a project root (its params.yaml): the vote reads the data the bench
    # prepared there, and the repo root, which never ran `cotpd prepare`, is not needed
    assert not (root / "outputs").exists() and (out / "runs" / "params.yaml").is_file()
    capsys.readouterr()
    ens = tmp_path / "ens.json"
    assert main(["evaluate", "--dataset", "sample", "--root", str(out / "runs"), "--out", str(ens),
                 *[a for p in kept for a in ("--model", str(p))]]) == 0
    assert len(json.loads(ens.read_text())["members"]) == 2
