"""The levers of issue #19 as a bench group: planned at every seed beside the main grid, refused by
name when unknown, and reported with their --set, dev/test F1, paired gains and cost."""
from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402

from cotpd.bench import grid as bench  # noqa: E402
from cotpd.bench import levers, saved, twostage  # noqa: E402
from cotpd.bench.args import BenchArgs  # noqa: E402
from cotpd.bench.spec import MODES, RunSpec, plan_grid  # noqa: E402
from cotpd.config import TrainCfg  # noqa: E402
from cotpd.errors import ConfigError  # noqa: E402
from cotpd.io import read_json, write_json, write_jsonl  # noqa: E402
from cotpd.params import Layout, apply_set, parse_set, read_params, validate  # noqa: E402
from bench_helpers import REPO, project  # noqa: E402,F401  (fixture)


def test_every_lever_is_a_valid_train_override():
    """Each lever's --set words apply to params.yaml and pass the train schema (a renamed key fails here)."""
    base = read_params(REPO)
    for name, over in levers.LEVERS.items():
        sets = levers.set_args(over)
        assert sets and all(s.startswith("train.") for s in sets), name
        params = apply_set(base, parse_set(sets))
        validate(TrainCfg, params["train"], f"lever {name}")


def test_set_args_flatten_nested_overrides():
    assert levers.set_args({"distill": {"target": "marginals", "teacher_grad": True}, "knowledge_max_length": 320}) == \
        ["train.distill.target=marginals", "train.distill.teacher_grad=true", "train.knowledge_max_length=320"]


def test_unknown_lever_is_refused_with_the_known_names():
    with pytest.raises(ConfigError, match=r"unknown lever\(s\) \['nope'\]; known: twostage, kmax320"):
        levers.resolve(["T1", "nope"])
    assert levers.resolve(["T1", "kmax320"]) == ["kmax320", "T1"]  # table order
    # the screen's default set: every lever but those that set what the screen sets (its own schedule)
    assert levers.resolve(None, MODES["screen"].train) == [n for n in levers.LEVERS if n != "epochs6"]
    assert levers.resolve(None) == list(levers.LEVERS)  # a mode that sets no train.* key leaves none out
    assert levers.resolve(["epochs6", "T1"]) == ["T1", "epochs6"]  # by name it runs


def test_screen_mode_plans_the_main_grid_and_each_lever_at_every_seed(tmp_path):
    plan = plan_grid(MODES["screen"], ["sample"], [13, 14], tmp_path, ["T1", "marginals"])
    groups = {s.group for s in plan.specs}
    assert groups == {"main", "levers"}  # no fractions, no ablations: the screen is for the levers
    lev = [(s.label, s.seed, s.variant) for s in plan.specs if s.group == "levers"]
    assert sorted(lev) == sorted((n, s, "cotpd") for n in ("T1", "marginals") for s in (13, 14))
    spec = next(s for s in plan.specs if s.label == "marginals")
    assert spec.train == {"distill": {"target": "marginals"}} and spec.key == "sample-levers-cotpd-marginals-s13"
    # the shared table is never handed out to be mutated
    spec.train["distill"]["target"] = "emission"
    assert levers.LEVERS["marginals"] == {"distill": {"target": "marginals"}}
    # the report's "knowledge view" label reads the grains in every mode, the screen's too
    assert plan.grains == {"sample": []}  # nothing prepared
    lay = Layout(tmp_path, "sample")
    lay.knowledge.parent.mkdir(parents=True)
    write_jsonl(lay.knowledge, [{"grain": "precomputed", "sample_id": "train-0", "text": "Named entities: ..."},
                                {"grain": "noun", "sample_id": "train-1", "text": " "}])
    assert plan_grid(MODES["screen"], ["sample"], [13], tmp_path).grains == {"sample": ["precomputed"]}


@pytest.mark.timeout(400)
def test_levers_train_beside_the_grid_and_get_a_paired_table(project):
    root, out = project
    abl = out / "abl"
    (abl).mkdir(parents=True)
    (abl / "notes.md").write_text("## Measured elsewhere\n\nhand-written row", encoding="utf-8")
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "--seeds", "2", "--no-speed",
            "--groups", "main", "levers", "--levers", "T1", "twostage",
            "--ablations-out", str(abl)]
    assert bench.main(argv) == 0
    runs = {(r["group"], r["variant"], r["label"], r["seed"]): r for r in read_json(abl / "results.json")["runs"]}
    assert set(runs) == {(g, v, lab, s) for s in (13, 14) for g, v, lab in
                         (("main", "baseline", ""), ("main", "knowledge", ""), ("main", "cotpd", ""),
                          ("levers", "cotpd", "T1"), ("levers", "cotpd", "twostage"))}
    # two stages: each seed distilled from the knowledge model of its own seed, kept for it
    for s in (13, 14):
        teacher_dir = out / "runs" / "models" / f"sample-main-knowledge-s{s}"
        assert (teacher_dir / "config.json").exists()
        assert read_json(teacher_dir.with_name(f"{teacher_dir.name}.done.json"))["seconds"] > 0
    # a model the grid drops takes its record with it
    models = out / "runs" / "models"
    assert all(p.with_name(p.name.removesuffix(".done.json")).is_dir() for p in models.glob("*.done.json"))
    assert runs[("levers", "cotpd", "T1", 13)]["overrides"] == {}  # the lever is in the spec, not a --set
    rows = {r["config"]: r for r in read_json(abl / "results.json")["rows"]}
    t1, ref, base = rows["T1"], rows["cotpd (default)"], rows["baseline"]
    assert t1["set"] == ["train.distill.temperature=1.0"] and t1["seeds"] == [13, 14]
    for i, s in enumerate((13, 14)):
        lev, cot, bl = (runs[(g, v, lab, s)] for g, v, lab in
                        (("levers", "cotpd", "T1"), ("main", "cotpd", ""), ("main", "baseline", "")))
        assert t1["dev_vs_cotpd"][i] == pytest.approx(100 * (lev["dev_f1"] - cot["dev_f1"]))
        assert t1["test_vs_baseline"][i] == pytest.approx(100 * (lev["test_f1"] - bl["test_f1"]))
    assert ref["cost_vs_cotpd"] == pytest.approx(1.0) and base["cost_vs_cotpd"] > 0
    # two stages cost their own training and, for a user who has no knowledge model yet, its teacher's
    two, secs = rows["twostage"], lambda g, v, lab: [runs[(g, v, lab, s)]["seconds"] for s in (13, 14)]
    with_teacher = [runs[("levers", "cotpd", "twostage", s)]["cost_s"] for s in (13, 14)]
    assert two["cost_with_teacher"] == pytest.approx(sum(with_teacher) / sum(secs("main", "cotpd", "")))
    assert t1["cost_with_teacher"] is None and "with its teacher's training" in (abl / "README.md").read_text()
    for s in (13, 14):  # the record gives the borrowed teacher's cost, and a user's cost with it
        two_rec, know = runs[("levers", "cotpd", "twostage", s)], runs[("main", "knowledge", "", s)]
        assert two_rec["teacher_s"] == know["seconds"]
        assert two_rec["cost_s"] == pytest.approx(two_rec["seconds"] + know["seconds"], abs=0.2)
        assert runs[("main", "cotpd", "", s)]["teacher_s"] is None
    text = (abl / "README.md").read_text(encoding="utf-8")
    assert "`--set train.distill.temperature=1.0`" in text and "## sample" in text
    assert "--levers T1" in text and "hand-written row" in text
    # the main report of the same invocation is written as always
    assert (out / "README.md").exists()


def test_a_two_stage_run_that_trained_its_own_teacher_costs_its_student_alone_and_both_with_it():
    """Under --fresh a two-stage CoTPD finds no knowledge model to borrow and trains its teacher in its
    own job: `seconds` holds both, so the row takes the student's time from cost_s - teacher_s."""
    def rec(variant, group="main", label="", **t):
        return {"dataset": "d", "variant": variant, "seed": 13, "group": group, "label": label,
                "dev_f1": 0.5, "test_f1": 0.5, **t}
    records = [rec("baseline", seconds=50.0), rec("knowledge", seconds=300.0), rec("cotpd", seconds=400.0),
               rec("cotpd", "levers", "twostage", seconds=700.0, teacher_s=500.0, cost_s=700.0),   # teacher inside
               rec("cotpd", "levers", "T1", seconds=400.0, teacher_s=None, cost_s=400.0)]
    rows = {r["config"]: r for r in levers.rows(records, "d")}
    assert rows["twostage"]["seconds"] == pytest.approx(200.0)
    assert rows["twostage"]["cost_vs_cotpd"] == pytest.approx(0.5)
    assert rows["twostage"]["cost_with_teacher"] == pytest.approx(700.0 / 400.0)
    assert rows["T1"]["cost_vs_cotpd"] == pytest.approx(1.0) and rows["T1"]["cost_with_teacher"] is None
    borrowed = rec("cotpd", "levers", "twostage", seconds=200.0, teacher_s=300.0, cost_s=500.0)  # the grid's model
    rows = {r["config"]: r for r in levers.rows(records[:3] + [borrowed], "d")}
    assert rows["twostage"]["cost_vs_cotpd"] == pytest.approx(0.5)
    assert rows["twostage"]["cost_with_teacher"] == pytest.approx(500.0 / 400.0)


def test_cost_is_paired_by_seed_with_the_default_cotpd():
    """A lever trained at one seed is costed against the default CoTPD of that seed, not the seeds' mean."""
    def rec(variant, seed, seconds, group="main", label=""):
        return {"dataset": "d", "variant": variant, "seed": seed, "group": group, "label": label,
                "dev_f1": 0.5, "test_f1": 0.5, "seconds": seconds}
    records = [rec("cotpd", 13, 400.0), rec("cotpd", 14, 800.0), rec("cotpd", 15, 600.0), rec("baseline", 13, 100.0),
               rec("cotpd", 13, 440.0, "levers", "T1"), rec("cotpd", 16, 900.0, "levers", "T1")]  # 16: no reference
    rows = {r["config"]: r for r in levers.rows(records, "d")}
    assert rows["T1"]["cost_vs_cotpd"] == pytest.approx(1.1)  # 440 / 400, not 440 / 600 (nor 1340 / 1800)
    assert rows["T1"]["seconds"] == pytest.approx(670.0)      # the row's own time is over all its seeds
    assert rows["baseline"]["cost_vs_cotpd"] == pytest.approx(0.25)
    assert rows["cotpd (default)"]["cost_vs_cotpd"] == pytest.approx(1.0)


def test_a_cotpd_borrows_its_seeds_knowledge_model_only_when_done_and_on_the_same_data(tmp_path):
    """auto: the main grid's (or a lever's) CoTPD reads its seed's knowledge model once that training
    is saved as done; a fraction's CoTPD, or one whose teacher is not done, trains its own."""
    b = bench.Bench(REPO, tmp_path / "out", BenchArgs(mode="smoke"))
    know, main = RunSpec("sample", "knowledge", 14), RunSpec("sample", "cotpd", 14)
    frac = RunSpec("sample", "cotpd", 14, "fraction", "50%", fraction=0.5)
    model = b.work / "models" / know.key
    over = lambda: {"distill": {"teacher": "auto"}}  # noqa: E731
    (model).mkdir(parents=True)
    (model / "config.json").write_text("{}")  # a model still training: saved, but no done record
    o = over()
    assert twostage.borrow_teacher(b, main, o) is None and o["distill"]["teacher"] == "auto"
    write_json(b.done_dir / f"{know.key}.json", {"config_hash": b.spec_params(know)[2], "seconds": 60.0})
    assert twostage.borrow_teacher(b, main, o)["seconds"] == 60.0 and o["distill"]["teacher"] == str(model)
    o = over()
    assert twostage.borrow_teacher(b, frac, o) is None and o["distill"]["teacher"] == "auto"
    assert twostage.borrow_teacher(b, main, {"distill": {"teacher": None}}) is None  # one stage: no teacher
    assert twostage.is_teacher(know, "auto") and not twostage.is_teacher(know, None)
    assert not twostage.is_teacher(RunSpec("sample", "knowledge", 14, "fraction", "50%", fraction=0.5), "auto")
    # --fresh: no saved result is done, but the knowledge model this invocation trained again is the teacher
    f = bench.Bench(REPO, tmp_path / "out", BenchArgs(mode="smoke", fresh=True))
    o = over()
    assert f.done_record(know) is None and twostage.borrow_teacher(f, main, o) is None
    f.result.records.append({"dataset": "sample", "variant": "knowledge", "seed": 14, "group": "main", "label": "",
                             "config_hash": f.spec_params(know)[2], "seconds": 70.0})
    assert twostage.borrow_teacher(f, main, o)["seconds"] == 70.0 and o["distill"]["teacher"] == str(model)


@pytest.mark.timeout(400)
def test_a_confirmed_lever_is_adopted_as_the_new_default_without_training_again(project):
    """--adopt-from: once params.yaml makes a lever the default, the grid takes the lever's saved training
    as its own (the same dataset, variant, seed and resolved params), and trains again where they differ."""
    root, out = project
    base = ["--smoke", "--root", str(root), "--datasets", "sample", "--seeds", "1", "--no-speed"]
    assert bench.main([*base, "--out", str(out), "--groups", "levers", "--levers", "T1"]) == 0
    lever = next(r for r in read_json(out / "results.json")["runs"] if r["group"] == "levers")

    def default_temperature(t: float) -> None:  # what a user edits when the lever wins
        params = read_params(root)
        over = params["datasets"]["sample"].setdefault("overrides", {}) or {}
        params["datasets"]["sample"]["overrides"] = over
        over.setdefault("train", {})["distill"] = {"temperature": t}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    # the lever's report as another --out holds it; the grid stays in `out`, where the smoke grid's tiny
    # encoder sits (its path is a param)
    confirm = out.parent / "confirm"
    confirm.mkdir()
    shutil.copy(out / "results.json", confirm / "results.json")
    default_temperature(1.0)
    argv = [*base, "--out", str(out), "--groups", "main", "--variants", "cotpd", "--budget-min", "0",
            "--adopt-from", str(confirm)]
    assert bench.main([*argv[:-1], str(out.parent / "none")]) == 2  # named before anything runs
    assert bench.main(argv) == 0
    rec = next(r for r in read_json(out / "results.json")["runs"] if r["group"] == "main")
    assert rec["group"] == "main" and rec["label"] == "" and rec["adopted_from"].endswith(": sample-levers-cotpd-T1-s13")
    assert (rec["dev_f1"], rec["test_f1"], rec["mlflow_run_id"]) == (lever["dev_f1"], lever["test_f1"], lever["mlflow_run_id"])
    assert rec["config_hash"] != lever["config_hash"]  # keyed as the main grid's now
    assert "sample-main-cotpd-s13: the same training as" in (out / "README.md").read_text(encoding="utf-8")
    # another temperature is another training: not adopted (and the zero budget skips training it)
    default_temperature(2.0)
    assert bench.main(argv) == 0
    assert not [r for r in read_json(out / "results.json")["runs"] if r["group"] == "main"]
    # a saved main record of other params (the old default's) gives way to the adopted training too
    default_temperature(1.0)
    write_json(out / "runs" / "done" / "sample-main-cotpd-s13.json", {**rec, "config_hash": "0ld", "adopted_from": None})
    assert bench.main(argv) == 0
    again = next(r for r in read_json(out / "results.json")["runs"] if r["group"] == "main")
    assert again["config_hash"] == rec["config_hash"] and again["adopted_from"] == rec["adopted_from"]


def test_adoption_keeps_to_the_groups_this_invocation_trains_and_the_main_grid(tmp_path):
    """--groups levers --adopt-from results/full takes the main grid's references, not its fraction runs."""
    specs = [RunSpec("d", "cotpd", 13), RunSpec("d", "cotpd", 13, "fraction", "50%", fraction=0.5)]
    write_json(tmp_path / "full" / "results.json",
               {"runs": [{"dataset": "d", "variant": "cotpd", "seed": 13, "group": s.group, "label": s.label,
                          "config_hash": f"h-{s.key}-{s.fraction}", "dev_f1": 0.5} for s in specs]})

    def adopted(groups):
        bench = SimpleNamespace(root=tmp_path, args=SimpleNamespace(groups=groups, adopt_from=[tmp_path / "full"]),
                                spec_params=lambda s: ({}, None, f"h-{s.key}-{s.fraction}"))  # as params' data_fraction
        return [s.key for s in specs
                if saved.same_training(bench, s, f"h-{s.key}-{s.fraction}", tmp_path / "done" / f"{s.key}.json")]

    assert adopted(["levers"]) == ["d-main-cotpd-s13"]
    assert adopted(None) == ["d-main-cotpd-s13", "d-fraction-cotpd-50pct-s13"]
    assert read_json(tmp_path / "done" / "d-fraction-cotpd-50pct-s13.json")["adopted_from"] == "full: d-fraction-cotpd-50pct-s13"
