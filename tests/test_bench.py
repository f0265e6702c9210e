"""`cotpd bench --smoke`: the whole grid on the embedded samples with a tiny encoder; checks that the
report, the plots and the MLflow runs are written and that the table has mean ± std and anchors."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from cotpd.bench import grid as bench, progress  # noqa: E402
from cotpd.bench.args import BenchArgs  # noqa: E402
from cotpd.bench.claims import take_claim  # noqa: E402
from cotpd.bench.spec import RunSpec  # noqa: E402
from cotpd.bench.speed import machine_label  # noqa: E402
from cotpd.errors import CotpdError  # noqa: E402
from cotpd.io import read_json, write_json  # noqa: E402
from cotpd.params import dataset_params, load_params  # noqa: E402
from cotpd.training import tracking  # noqa: E402
from bench_helpers import REPO, project  # noqa: E402,F401  (fixture)



@pytest.mark.timeout(400)
def test_smoke_bench_writes_report_plots_and_runs(project, monkeypatch):
    root, out = project
    assert bench.main(["--smoke", "--root", str(root), "--out", str(out)]) == 0
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "SMOKE MODE" in text and "cotpd bench --smoke" in text
    # main table: every dataset x variant with mean ± std over the 2 seeds
    for ds in ("sample", "sample_mnre"):
        for v in ("baseline", "knowledge", "cotpd"):
            row = next(line for line in text.splitlines() if line.startswith(f"| {ds} | {v} |"))
            assert re.search(r"\d+\.\d\d ± \d+\.\d\d", row), row
            assert row.split("|")[8].strip() == "2"  # seeds column
    assert "| sample | knowledge | text + caption + CoT (knowledge view) |" in text  # two grains
    assert "| sample_mnre | knowledge | text + caption (knowledge view, no CoT) |" in text  # none
    for bench_name, name, f1 in (("Twitter-2015", "PGIM", "79.33"), ("Twitter-2015", "UMT", "73.41"),
                                 ("MNRE", "I2SRM", "84.12"), ("MNRE", "MEGA", "66.41")):
        assert f"| {bench_name} | {name} | {f1} |" in text
    assert "## Data efficiency: sample" in text and "| 50% |" in text
    # the paired gain over the baseline, from the same records as the table
    runs = json.loads((out / "results.json").read_text(encoding="utf-8"))["runs"]
    f1 = {(r["variant"], r["seed"]): r["test_f1"] for r in runs if r["group"] == "main" and r["dataset"] == "sample"}
    diffs = [(f1[("cotpd", s)] - f1[("baseline", s)]) * 100 for s in (13, 14)]
    gain = re.search(r"- sample: cotpd − baseline, paired by seed: \+?(-?\d+\.\d\d) ± (\d+\.\d\d) test F1 \(2 seed", text)
    assert gain and float(gain.group(1)) == pytest.approx(sum(diffs) / 2, abs=0.006), text
    assert "grain=noun" in text and "grain=sentence" in text  # grain ablation on the two-grain knowledge
    assert "sample_mnre: CoT grain ablation skipped" in text
    for png in ("f1_vs_data_fraction_sample.png", "per_type_f1_sample.png", "per_type_f1_sample_mnre.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in text
    assert "bare PyTorch loop" in text and "sentences/s" in text
    assert "hardware of this invocation:" in text and "trainings by hardware" in text
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    runs = results["runs"]
    main = [r for r in runs if r["group"] == "main"]
    assert len(main) == 12 and len({r["seed"] for r in main}) == 2
    # every training is an MLflow run in the project's store, tagged with its bench group
    tracking.setup(root, load_params(root).file.tracking)
    client = mlflow.tracking.MlflowClient()
    for r in runs[:3] + runs[-2:]:
        run = client.get_run(r["mlflow_run_id"])
        assert run.data.tags["bench"] == "smoke" and run.data.tags["bench_group"] == r["group"]
        assert run.data.metrics["test_f1"] == pytest.approx(r["test_f1"])
    # only the first seed's main models are kept, each knowledge view with its record (a teacher for two stages)
    entries = sorted(p.name for p in (out / "runs" / "models").iterdir())
    kept = [k for k in entries if not k.endswith(".done.json")]
    assert len(kept) == 6 and all(k.endswith("-s13") for k in kept)
    # a record names its model relative to the project, so a committed results.json names no checkout's folder;
    # the speed section found each kept student through that name
    for r in main:
        key = RunSpec(r["dataset"], r["variant"], r["seed"]).key
        assert r["model_dir"] == (f"results/runs/models/{key}" if r["seed"] == 13 else None), r
    assert sorted(results["speed"]["inference"]) == ["sample/baseline", "sample/cotpd",
                                                     "sample_mnre/baseline", "sample_mnre/cotpd"]
    assert [k for k in entries if k.endswith(".done.json")] == [f"{k}.done.json" for k in kept if "-knowledge-" in k]
    # --report-only runs nothing, not even the speed section's loops: the section is the one measured above
    def refuse(*a, **k):
        raise AssertionError("--report-only measured the speed section")
    monkeypatch.setattr(bench, "measure_speed", refuse)
    assert bench.main(["--smoke", "--root", str(root), "--out", str(out), "--report-only"]) == 0
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["speed"] == results["speed"]
    assert "bare PyTorch loop" in (out / "README.md").read_text(encoding="utf-8")


def test_quick_mode_params_and_data_path(tmp_path):
    """--data moves the real datasets; quick mode's reductions reach every dataset's train params."""
    b = bench.Bench(REPO, tmp_path / "out", BenchArgs(mode="quick", data=tmp_path / "data"))
    assert b.params["datasets"]["twitter2015"]["root"] == str((tmp_path / "data" / "twitter2015").resolve())
    assert b.params["datasets"]["mnre"]["root"] == str((tmp_path / "data" / "mnre").resolve())
    assert b.params["datasets"]["sample"]["root"] == str(REPO / "cotpd" / "sample" / "mner")
    tw, mnre = (dataset_params(b.params, ds).train for ds in ("twitter2015", "mnre"))
    assert (tw.epochs, tw.max_length, mnre.epochs, mnre.max_length) == (2, 48, 2, 64)
    assert b.seeds == 1 and b.work == tmp_path / "out" / "runs"
    # --set wins over the mode and over each dataset's own overrides, and so changes the config hash
    longer = bench.Bench(REPO, tmp_path / "out",
                         BenchArgs(mode="quick", data=tmp_path / "data", overrides={"train": {"epochs": 6}}))
    assert [dataset_params(longer.params, ds).train.epochs for ds in ("twitter2015", "mnre")] == [6, 6]
    assert dataset_params(longer.params, "mnre").train.max_length == 64  # the rest of the mode stays
    spec = RunSpec("mnre", "cotpd", 13)
    assert longer.spec_params(spec)[2] != b.spec_params(spec)[2]
    # the time guard: a run expected to pass the budget is not started
    b.budget_s, b.result.records = 100.0, [{"dataset": "mnre", "variant": "cotpd", "group": "main", "seconds": 80.0}]
    assert progress.estimate(b.result.records, RunSpec("mnre", "cotpd", 13, "fraction", "50%", fraction=0.5)) == 40.0
    assert progress.estimate(b.result.records, RunSpec("mnre", "baseline", 13)) == 0.0


@pytest.mark.timeout(300)
def test_resumed_grid_reuses_saved_results_and_retrains_on_new_params(project, caplog):
    """A grid built over several invocations: --variants/--groups choose what trains, a saved result
    of the same configuration is reused (same MLflow run, no training), changed params retrain."""
    root, out = project
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "--seeds", "1", "--no-speed",
            "--groups", "main"]
    assert bench.main(argv + ["--variants", "baseline"]) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [(r["variant"], r["group"]) for r in first["runs"]] == [("baseline", "main")]
    assert len(first["not_run"]) > 0 and "sample-main-cotpd-s13" in first["not_run"]
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "| sample | baseline |" in text and "| sample | cotpd |" not in text and "not run yet" in text

    assert bench.main(argv + ["--variants", "baseline", "cotpd"]) == 0
    second = json.loads((out / "results.json").read_text(encoding="utf-8"))
    runs = {r["variant"]: r for r in second["runs"]}
    assert set(runs) == {"baseline", "cotpd"} and second["reused"] == ["sample-main-baseline-s13"]
    assert runs["baseline"]["mlflow_run_id"] == first["runs"][0]["mlflow_run_id"]  # not trained again
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "| sample | cotpd |" in text and "1 reused from earlier invocations" in text
    assert re.search(r"trainings by commit: `\w+", text)
    machine = machine_label()  # each record says what it ran on; the report counts them
    assert all(r["hardware"] == machine for r in second["runs"]) and f"{machine} (2)" in text
    assert bench.main(argv + ["--report-only"]) == 0  # trains nothing, the table from what is saved
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert sorted(again["reused"]) == ["sample-main-baseline-s13", "sample-main-cotpd-s13"]
    assert {r["mlflow_run_id"] for r in again["runs"]} == {r["mlflow_run_id"] for r in second["runs"]}

    # a saved result of other params is not reused; --fresh retrains even the same params
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["lr"] = 1e-4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    assert bench.main(argv + ["--variants", "baseline"]) == 0
    third = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert third["reused"] == [] and len(third["runs"]) == 1
    assert third["runs"][0]["mlflow_run_id"] != first["runs"][0]["mlflow_run_id"]
    caplog.clear()
    with caplog.at_level("INFO", logger="cotpd.bench"):
        assert bench.main(argv + ["--variants", "baseline", "cotpd", "--fresh"]) == 0
    done = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()]
    # under --fresh the saved cotpd result is still to be retrained, so the first line counts it
    assert len(done) == 2 and re.match(r"\[1/2\] sample-main-baseline-s13 done in .*; 1 left", done[0]), done
    fourth = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert fourth["reused"] == [] and fourth["runs"][0]["mlflow_run_id"] != third["runs"][0]["mlflow_run_id"]
    assert fourth["runs"][1]["mlflow_run_id"] != runs["cotpd"]["mlflow_run_id"]
    assert fourth["runs"][0]["overrides"] == {}
    # --set: another configuration (retrained), and each record says which overrides it ran with
    assert bench.main(argv + ["--variants", "baseline", "--set", "train.batch_size=4"]) == 0
    fifth = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert fifth["reused"] == [] and fifth["runs"][0]["overrides"] == {"train": {"batch_size": 4}}
    assert "`--set` overrides of params.yaml: train.batch_size=4 (1)" in (out / "README.md").read_text(encoding="utf-8")


def test_claims_keep_parallel_invocations_from_training_the_same_run(tmp_path):
    """Invocations sharing --out claim each training with an exclusive file: a claim of a live
    process is respected, one of a dead process on this host is taken over, another host's is kept."""
    claim = tmp_path / "done" / "x.claim"
    assert take_claim(claim) and json.loads(claim.read_text())["pid"] == os.getpid()
    assert not take_claim(claim)  # held (by a live process: this one)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid}))
        assert not take_claim(claim)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert take_claim(claim)  # its process is gone: stale, taken over
    claim.write_text(json.dumps({"host": "some-other-host", "pid": sleeper.pid}))
    assert not take_claim(claim)  # cannot check another host's process: respected


@pytest.mark.timeout(300)
def test_a_claimed_training_is_left_to_its_invocation(project):
    root, out = project
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "--seeds", "1", "--no-speed",
            "--groups", "main", "--variants", "baseline", "cotpd"]
    done = out / "runs" / "done"
    done.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "120"])  # stands for another invocation, busy with cotpd
    try:
        (done / "sample-main-cotpd-s13.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid}))
        assert bench.main(argv) == 0
        res = json.loads((out / "results.json").read_text(encoding="utf-8"))
        assert [r["variant"] for r in res["runs"]] == ["baseline"] and res["elsewhere"] == ["sample-main-cotpd-s13"]
        assert "being trained by another invocation sharing this folder: sample-main-cotpd-s13" in \
            (out / "README.md").read_text(encoding="utf-8")
        assert not (done / "sample-main-baseline-s13.claim").exists()  # released after training
    finally:
        other.kill()
        other.wait()
    assert bench.main(argv) == 0  # the other invocation died: its claim is stale, the run is trained here
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert sorted(r["variant"] for r in res["runs"]) == ["baseline", "cotpd"] and res["elsewhere"] == []


def test_committed_report_is_taken_back_into_a_fresh_work_folder(tmp_path):
    """A fresh clone has results.json (in git) but no runs/done (ignored): its records are saved back,
    reused where their params still hash the same, retrained where not; a broken record is named."""
    out = tmp_path / "results"
    b = bench.Bench(REPO, out, BenchArgs(mode="smoke"))
    same, changed = RunSpec("sample", "baseline", 13), RunSpec("sample", "cotpd", 13)
    rec = {"dataset": "sample", "group": "main", "label": "", "seed": 13, "test_f1": 0.5}
    write_json(out / "results.json", {"runs": [
        {**rec, "variant": "baseline", "config_hash": b.spec_params(same)[2], "mlflow_run_id": "a"},
        {**rec, "variant": "cotpd", "config_hash": "params-of-another-day", "mlflow_run_id": "b"}]})
    assert b.adopt_report() == ["sample-main-baseline-s13", "sample-main-cotpd-s13"]
    assert read_json(b.done_dir / "sample-main-baseline-s13.json")["mlflow_run_id"] == "a"
    assert b.reuse(same) and b.result.records[0]["test_f1"] == 0.5 and not b.reuse(changed)
    assert b.adopt_report() == []  # what runs/done holds (a newer result, say) is never overwritten
    assert bench.Bench(REPO, out, BenchArgs(mode="smoke", fresh=True)).adopt_report() == []

    write_json(out / "results.json", {"runs": [{"dataset": "sample", "variant": "cotpd"}]})
    (b.done_dir / "sample-main-cotpd-s13.json").unlink()
    with pytest.raises(CotpdError, match=r"results\.json: runs\[0\] is not a bench record"):
        b.adopt_report()


def test_a_distillation_change_retrains_cotpd_only_and_legacy_records_are_re_keyed(tmp_path):
    """A variant's config hash covers the params it reads: a new train.distill (a lever, or a new
    default) keeps the baseline's and knowledge view's saved results and retrains CoTPD. A record
    hashed the old way (the whole mapping) is re-keyed while the params are those it was trained with."""
    out = tmp_path / "results"
    b = bench.Bench(REPO, out, BenchArgs(mode="smoke"))
    other = bench.Bench(REPO, out, BenchArgs(mode="smoke", overrides={"train": {"distill": {"lambda": 0.5}}}))
    specs = [RunSpec("sample", v, 13) for v in ("baseline", "knowledge", "cotpd")]
    assert [b.spec_params(s)[2] == other.spec_params(s)[2] for s in specs] == [True, True, False]
    epochs = bench.Bench(REPO, out, BenchArgs(mode="smoke", overrides={"train": {"epochs": 3}}))
    assert all(b.spec_params(s)[2] != epochs.spec_params(s)[2] for s in specs)  # what every variant reads
    # an NER dataset has no entity markers: their initialisation keeps every variant's result
    markers = bench.Bench(REPO, out, BenchArgs(mode="smoke", overrides={"train": {"marker_init": "punct"}}))
    assert all(b.spec_params(s)[2] == markers.spec_params(s)[2] for s in specs)
    re_spec = RunSpec("sample_mnre", "baseline", 13)  # ... an RE dataset's do
    assert b.spec_params(re_spec)[2] != markers.spec_params(re_spec)[2]
    rec = {"dataset": "sample", "group": "main", "label": "", "seed": 13, "test_f1": 0.5}
    for s in specs:
        write_json(b.done_dir / f"{s.key}.json", {**rec, "variant": s.variant, "config_hash": b.spec_params(s, legacy=True)[2]})
    assert b.spec_params(specs[0], legacy=True)[2] != b.spec_params(specs[0])[2]
    assert b.spec_params(specs[2], legacy=True)[2] == b.spec_params(specs[2])[2]  # cotpd reads it all
    assert [other.done_record(s) is not None for s in specs] == [False, False, False]  # not re-keyed: other params
    assert [b.done_record(s) is not None for s in specs] == [True, True, True]
    assert read_json(b.done_dir / "sample-main-baseline-s13.json")["config_hash"] == b.spec_params(specs[0])[2]
    assert [other.done_record(s) is not None for s in specs] == [True, True, False]  # re-keyed: now they hold
