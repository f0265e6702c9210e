"""`make gpu-check` (cotpd.bench.gpu_check): on a machine without a GPU it exits at once and writes
nothing; its steps run end to end as a dry run on CPU, so the script is ready for the day a GPU is lent."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from cotpd.bench.gpu_check import last_json

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the check would run for real")
def test_without_a_gpu_it_says_so_at_once_and_writes_nothing(tmp_path):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "cotpd.bench.gpu_check", "--out", str(tmp_path / "gpu")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "torch sees no CUDA device" in res.stdout and "nothing written" in res.stdout
    assert not (tmp_path / "gpu").exists()
    assert time.perf_counter() - t0 < 60  # torch's import, nothing else


@pytest.mark.cluster  # deployment tooling, opt-in with the cluster test (`make cluster-test`): 2 minutes
@pytest.mark.timeout(600)
def test_dry_run_on_cpu_runs_every_step_and_reports_them(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run([sys.executable, "-m", "cotpd.bench.gpu_check", "--device", "cpu", "--smoke", "--out", str(out)],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=580)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = (out / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    for step in ("sample pipeline", "torchrun", "blip2 captioner", "throughput", "twitter2015 one epoch"):
        assert step in rows and "| ok |" in rows[step], step
    assert "backend gloo" in rows["torchrun"] and "3 captions on cpu" in rows["blip2 captioner"]
    assert "ratio" in rows["throughput"] and "skipped: --smoke" in rows["twitter2015 one epoch"]


def test_last_json_takes_the_final_object_a_command_printed():
    assert last_json('log line\n{"a": 1}\nmore\n{\n  "b": 2\n}\n') == {"b": 2}
    assert last_json("no json here") is None
