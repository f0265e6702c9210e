"""Interrupted trainings resume: SIGKILL after an epoch's checkpoint, SIGTERM mid-epoch (saved, MLflow
run KILLED then continued), params changed since, --fresh, corrupt or foreign checkpoints.

The NER sample, CPU, a tiny random encoder, 3 epochs: a resumed training must end with exactly the
numbers of an uninterrupted one. The interrupted trainings run as subprocesses (tests/resume_child.py
pauses them at a known point), so the signals are real.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from cotpd import cli  # noqa: E402
from cotpd.model import build_tiny_encoder  # noqa: E402
from cotpd.params import Layout, dataset_params  # noqa: E402
from cotpd.pipeline import run_stage  # noqa: E402
from cotpd.training import job, loop  # noqa: E402
from cotpd.training.checkpoint import resume_path  # noqa: E402

from tracking_helpers import project_params  # noqa: E402

CHILD = Path(__file__).with_name("resume_child.py")
DS, VARIANT = "sample", "cotpd"


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    """A project root with the NER sample prepared and captioned, a 3-epoch tiny training, and the
    result of that training run uninterrupted (the reference every resumed run must equal)."""
    base = tmp_path_factory.mktemp("resume")
    root = base / "project"
    root.mkdir()
    params = project_params(build_tiny_encoder(base / "enc"))
    params["seed"] = 5
    params["train"].update(epochs=3, patience=3, num_threads=1, use_augmented=False)
    params["tracking"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for stage in ("prepare", "captions"):
        run_stage(stage, DS, root, params)
    ref = job.train_and_evaluate(DS, VARIANT, params, root, model_dir=base / "reference")
    assert len(ref.history) == 3 and ref.resumed_from_epoch is None
    assert not resume_path(base / "reference").exists()  # a finished training drops its checkpoint
    return {"root": root, "base": base, "params": params, "ref": ref}


def same_numbers(result: dict, ref) -> None:
    assert [h["dev_f1"] for h in result["history"]] == [h["dev_f1"] for h in ref.history]
    assert [h["loss"] for h in result["history"]] == [h["loss"] for h in ref.history]
    assert result["test"]["f1"] == ref.test["f1"] and result["best_epoch"] == ref.best_epoch


def spawn(root: Path, where: str, mark: Path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("COTPD_ROOT", None)
    return subprocess.Popen([sys.executable, str(CHILD), where, str(mark), "--", *argv, "--root", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)


def wait_for(mark: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not mark.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"child exited {proc.returncode} before pausing:\n{(out + err)[-4000:]}")
        assert time.monotonic() < deadline, "child never reached its pause"
        time.sleep(0.05)


def train_cmd(model_dir: Path, *extra: str) -> list[str]:
    return ["-m", "cotpd.training", "--dataset", DS, "--variant", VARIANT, "--model-dir", str(model_dir), *extra]


def run_main(proj, model_dir: Path, capsys, *extra: str) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = job.main(train_cmd(model_dir, *extra)[2:] + ["--root", str(proj["root"])])
    out, err = capsys.readouterr()
    return rc, (json.loads(out[out.index("{"):]) if rc == 0 else None), err


@pytest.fixture(scope="module")
def killed(proj):
    """A training SIGKILLed right after its epoch-1 checkpoint: (model dir, a copy of what it left)."""
    model_dir, mark = proj["base"] / "killed", proj["base"] / "killed.mark"
    proc = spawn(proj["root"], "checkpoint:1", mark, train_cmd(model_dir))
    wait_for(mark, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpt = resume_path(model_dir)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 0)
    assert len(state["progress"]["history"]) == 1 and state["mlflow_run_id"] is None  # untracked
    assert state["progress"]["elapsed_s"] >= state["progress"]["train_time"] > 0  # setup and dev scoring too
    saved = proj["base"] / "killed.saved"
    shutil.copytree(model_dir, saved / "model")
    shutil.copy2(ckpt, saved / "resume.pt")
    return model_dir, saved


def place(killed, dst: Path) -> Path:
    """A copy of the killed training's model folder and checkpoint at `dst` (a model dir)."""
    shutil.copytree(killed[1] / "model", dst)
    shutil.copy2(killed[1] / "resume.pt", resume_path(dst))
    return resume_path(dst)


@pytest.mark.timeout(400)
def test_sigkilled_training_resumes_to_the_uninterrupted_result(proj, killed, capsys, caplog):
    model_dir = killed[0]
    earlier = torch.load(resume_path(model_dir), map_location="cpu", weights_only=True)["progress"]["elapsed_s"]
    with caplog.at_level(logging.INFO, logger="cotpd.training"):
        rc, result, err = run_main(proj, model_dir, capsys)
    assert rc == 0, err
    assert f"resuming from epoch 1 of {resume_path(model_dir)}" in caplog.text
    assert result["resumed_from_epoch"] == 1
    # the whole training's time: the killed invocation's, up to its checkpoint, plus this one's
    assert result["timings"]["earlier_s"] == pytest.approx(earlier) and result["timings"]["total_s"] > earlier
    same_numbers(result, proj["ref"])
    assert not resume_path(model_dir).exists()


@pytest.mark.timeout(400)
def test_sigterm_saves_mid_epoch_ends_the_mlflow_run_killed_and_a_rerun_continues_it(proj, tmp_path, capsys):
    from cotpd.training import tracking  # lazy: mlflow takes seconds to import

    root = proj["root"]
    params = copy.deepcopy(proj["params"])
    params["tracking"].update(enabled=True, log_model=False, system_metrics=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    try:
        steps = -(-proj["ref"].n_train // params["train"]["batch_size"])  # steps per epoch
        mark = tmp_path / "term.mark"
        proc = spawn(root, f"step:{steps + 2}", mark, ["train", "--dataset", DS, "--variant", VARIANT])
        wait_for(mark, proc)  # paused inside the 2nd step of epoch 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, (out + err)[-4000:]
        assert "stopped by signal at epoch 2 step 2" in err
        ckpt = resume_path(Layout(root, DS).model_dir(VARIANT))
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, 2)  # mid-epoch, exact
        run_id = state["mlflow_run_id"]
        cfg = dataset_params(params, DS).tracking
        assert tracking.fetch_run(root, cfg, run_id).info.status == "KILLED"

        capsys.readouterr()
        assert cli.main(["train", "--dataset", DS, "--variant", VARIANT, "--root", str(root)]) == 0
        out = capsys.readouterr().out
        summary = json.loads(out[out.index("{"):])
        assert summary["resumed_from_epoch"] == 1 and summary["mlflow_run_id"] == run_id
        assert summary["test_f1"] == proj["ref"].test["f1"] and summary["dev_f1"] == proj["ref"].best_dev["f1"]
        run = tracking.fetch_run(root, cfg, run_id)
        assert run.info.status == "FINISHED"
        dev_curve = tracking.mlflow.MlflowClient().get_metric_history(run_id, "epoch/dev_f1")
        assert sorted(m.step for m in dev_curve) == [0, 1, 2]  # one run holds all three epochs
        assert [m.value for m in sorted(dev_curve, key=lambda m: m.step)] == [h["dev_f1"] for h in proj["ref"].history]
        assert not ckpt.exists()
    finally:
        (root / "params.yaml").write_text(yaml.safe_dump(proj["params"], sort_keys=False), encoding="utf-8")


@pytest.mark.timeout(400)
def test_changed_params_train_from_scratch_and_say_why(proj, killed, tmp_path, caplog):
    model_dir = tmp_path / "m"
    ckpt = place(killed, model_dir)
    params = copy.deepcopy(proj["params"])
    params["train"]["lr"] = 2 * params["train"]["lr"]
    with caplog.at_level(logging.INFO, logger="cotpd.training"):
        res = job.train_and_evaluate(DS, VARIANT, params, proj["root"], model_dir=model_dir, evaluate_test=False)
    assert res.resumed_from_epoch is None and len(res.history) == 3
    assert f"resume checkpoint {ckpt} was written with other params (params_hash" in caplog.text
    assert "resuming" not in caplog.text


@pytest.mark.timeout(400)
def test_a_corrupt_or_foreign_checkpoint_stops_with_its_name_and_fresh_trains_anew(proj, killed, tmp_path, capsys):
    model_dir = tmp_path / "m"
    ckpt = place(killed, model_dir)
    good = ckpt.read_bytes()
    before = (model_dir / "config.json").read_text(encoding="utf-8")

    ckpt.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk
    rc, _, err = run_main(proj, model_dir, capsys)
    assert rc == 2 and str(ckpt) in err and "truncated or corrupt" in err and "--fresh" in err

    state = torch.load(killed[1] / "resume.pt", map_location="cpu", weights_only=True)
    name = next(k for k, v in state["model"].items() if k.startswith("head.") and v.ndim == 2)
    state["model"][name] = torch.zeros(state["model"][name].shape[0] + 1, state["model"][name].shape[1])
    torch.save(state, ckpt)  # same params and data, another model shape
    rc, _, err = run_main(proj, model_dir, capsys)
    assert rc == 2 and str(ckpt) in err and "does not fit this model" in err
    # nothing trained from a half-loaded state: the model folder and the checkpoint are as they were
    assert (model_dir / "config.json").read_text(encoding="utf-8") == before and ckpt.exists()

    rc, result, err = run_main(proj, model_dir, capsys, "--fresh")
    assert rc == 0, err
    assert result["resumed_from_epoch"] is None
    same_numbers(result, proj["ref"])  # from scratch = the uninterrupted training
    assert not ckpt.exists()


class Crash(BaseException):
    """A training killed where the test says (in-process: nothing after it runs, as after SIGKILL)."""


@pytest.mark.timeout(400)
def test_bench_resumes_a_half_done_training_of_its_grid(tmp_path, monkeypatch):
    from cotpd.bench import grid as bench
    from cotpd.io import write_jsonl
    from cotpd.params import read_params
    from cotpd.records import read_records
    from cotpd.training import checkpoint

    repo = Path(__file__).resolve().parents[1]
    root, out = tmp_path / "project", tmp_path / "results"
    root.mkdir()
    params = read_params(repo)
    params["datasets"][DS]["root"] = str(repo / params["datasets"][DS]["root"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    work = out / "runs"
    run_stage("prepare", DS, work, params)
    lay = Layout(work, DS)  # knowledge and augmentations written directly: no LLM here
    write_jsonl(lay.knowledge, [{"sample_id": s.id, "split": sp, "grain": "noun", "text": f"about {s.tokens[0]}",
                                 "source": "test"} for sp in ("train", "valid", "test") for s in read_records(lay.raw(sp))])
    write_jsonl(lay.augmented, [])
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", DS, "--seeds", "1", "--no-speed",
            "--groups", "main", "--variants", VARIANT, "--set", f"datasets.{DS}.overrides.train.epochs=3"]
    save = checkpoint.save

    def save_then_crash(path, model, opt, sched, prog, *rest):
        save(path, model, opt, sched, prog, *rest)
        if prog.epoch == 1:
            raise Crash
    monkeypatch.setattr(checkpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        bench.main(argv)
    monkeypatch.setattr(checkpoint, "save", save)
    key = f"{DS}-main-{VARIANT}-s{params['seed']}"
    ckpt = resume_path(work / "models" / key)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    run_id = state["mlflow_run_id"]
    assert run_id and not (work / "done" / f"{key}.json").exists()
    # as if the interrupted invocation had run for 1000 s: the record's cost must count them
    state["progress"]["elapsed_s"] = 1000.0
    torch.save(state, ckpt)

    t0 = time.perf_counter()
    assert bench.main(argv) == 0
    wall = time.perf_counter() - t0
    rec = json.loads((work / "done" / f"{key}.json").read_text(encoding="utf-8"))
    assert rec["resumed_from_epoch"] == 1 and rec["mlflow_run_id"] == run_id  # the same run, continued
    assert 1000.0 < rec["seconds"] < 1000.0 + wall and rec["cost_s"] == rec["seconds"]
    assert not ckpt.exists()


def test_a_checkpoint_whose_best_model_is_gone_trains_from_scratch(proj, killed, tmp_path, caplog):
    from cotpd.training import checkpoint

    model_dir = tmp_path / "m"
    ckpt = place(killed, model_dir)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    ident = state["identity"]
    assert checkpoint.find(model_dir, ident) is not None
    shutil.rmtree(model_dir)  # as `dvc repro` does to a stage's outputs before running it
    with caplog.at_level(logging.INFO, logger="cotpd.training"):
        assert checkpoint.find(model_dir, ident) is None
    assert f"resume checkpoint {ckpt} names epoch 1 as the best, but the model folder" in caplog.text
