"""Progress a person can watch: in a log file or CI (stderr not a terminal) a training says one line
per epoch and no tqdm bar frames, LLM requests a line now and then (not one per request), and
`cotpd bench` one line per finished training with an ETA for the rest."""
from __future__ import annotations

import logging
import os
import re
import subprocess

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402
from orchestration_helpers import VENV_BIN  # noqa: E402
from tracking_helpers import project_params  # noqa: E402

from cotpd.bench import progress  # noqa: E402
from cotpd.bench.spec import RunSpec  # noqa: E402
from cotpd.llm import runner  # noqa: E402
from cotpd.model import build_tiny_encoder  # noqa: E402
from cotpd.pipeline import run_stage  # noqa: E402


@pytest.mark.timeout(300)
def test_training_in_a_log_says_one_line_per_epoch_and_draws_no_bar(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    params = project_params(build_tiny_encoder(tmp_path / "tiny_encoder"))
    params["train"].update(epochs=2, patience=5)
    params["tracking"]["enabled"] = False  # the loop's output only
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for stage in ("prepare", "captions"):
        run_stage(stage, "sample", root, params)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("COTPD_ROOT", None)
    res = subprocess.run([str(VENV_BIN / "cotpd"), "train", "--root", str(root), "--dataset", "sample",
                          "--variant", "baseline"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         env=env, timeout=280)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "it/s]" not in res.stderr, res.stderr[-2000:]
    epochs = re.findall(r"baseline epoch (\d+): loss \S+ dev F1 \S+", res.stderr)
    assert epochs == ["1", "2"], res.stderr[-2000:]


def test_llm_requests_in_a_log_report_now_and_then(caplog):
    now = [0.0]
    bar = runner._LogProgress(total=100, desc="llm knowledge", every_s=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="cotpd.llm.runner"):
        for _ in range(100):
            now[0] += 1.0  # one answer a second: 100 s in all
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["llm knowledge: 30/100 requests (30%), 1.0 req/s, about 70 s left",
                     "llm knowledge: 60/100 requests (60%), 1.0 req/s, about 40 s left",
                     "llm knowledge: 90/100 requests (90%), 1.0 req/s, about 10 s left"]
    # under pytest stderr is captured, as in a log file: no tqdm bar
    assert isinstance(runner._progress(10, "llm x", True), runner._LogProgress)
    assert isinstance(runner._progress(10, "llm x", False), runner._NoBar)


def test_bench_line_per_finished_training_has_an_eta():
    rec = {"dataset": "mnre", "variant": "cotpd", "group": "main", "seed": 13, "seconds": 125.0, "test_f1": 0.6541}
    spec = RunSpec("mnre", "cotpd", 14)
    left = [progress.estimate([rec], spec), progress.estimate([rec], RunSpec("mnre", "baseline", 13))]
    assert left == [125.0, 0.0]
    line = progress.finished_line("mnre-main-cotpd-s13", rec, 1, left, 130.0)
    assert line == ("[1/3] mnre-main-cotpd-s13 done in 2 min 05 s: test F1 65.41; 2 left, ETA 2 min 05 s "
                    "+ 1 not yet estimable (2 min 10 s elapsed)")
    assert progress.finished_line("k", rec, 3, [], 4000.0) == \
        "[3/3] k done in 2 min 05 s: test F1 65.41; none left (1 h 06 min elapsed)"
    assert progress.finished_line("k", rec, 1, [0.0], 1.0) == \
        "[1/2] k done in 2 min 05 s: test F1 65.41; 1 left, ETA unknown (1 s elapsed)"
