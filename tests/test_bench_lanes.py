"""`cotpd bench --lanes N`: one command starts N invocations sharing --out, and one report follows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from cotpd.bench import grid as bench, lanes  # noqa: E402
from cotpd.bench.args import build_parser  # noqa: E402
from bench_helpers import project  # noqa: E402,F401  (fixture)


def test_a_lane_runs_the_users_command_without_lanes_or_speed_and_gets_its_share_of_threads():
    assert lanes.lane_argv(["--full", "--lanes", "3", "--seeds", "3"]) == ["--full", "--seeds", "3", "--no-speed"]
    assert lanes.lane_argv(["--lanes=2", "--no-speed", "--out", "x"]) == ["--no-speed", "--out", "x"]
    cores = os.cpu_count() or 1
    assert lanes.lane_env(0, 2, {})["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert lanes.lane_env(0, 4 * cores, {})["OMP_NUM_THREADS"] == "1"
    assert lanes.lane_env(1, 2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's choice stays
    with pytest.raises(SystemExit):
        build_parser("x").parse_args(["--lanes", "0"])


def test_wait_names_the_failed_lane_and_passes_a_sigterm_on(tmp_path):
    def lane(i, code):
        return lanes.Lane(i, subprocess.Popen([sys.executable, "-c", code]), tmp_path / f"lane-{i}.log")

    failed = lanes.wait([lane(1, "pass"), lane(2, "import sys; sys.exit(3)")])
    assert failed == [f"lane 2 exited with status 3: see {tmp_path / 'lane-2.log'}"]

    sleepers = [lane(1, "import time; time.sleep(60)"), lane(2, "import time; time.sleep(60)")]
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(SystemExit) as exc:
        lanes.wait(sleepers)
    assert exc.value.code == 128 + signal.SIGTERM
    assert [s.proc.returncode for s in sleepers] == [-signal.SIGTERM, -signal.SIGTERM]  # not left running
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


@pytest.mark.timeout(400)
def test_lanes_share_the_grid_and_one_report_follows(project):
    root, out = project
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "--seeds", "1",
            "--groups", "main", "--no-speed", "--lanes", "2"]
    assert bench.main(argv) == 0
    runs = json.loads((out / "results.json").read_text(encoding="utf-8"))["runs"]
    keys = sorted(f"{r['dataset']}-{r['group']}-{r['variant']}-s{r['seed']}" for r in runs)
    assert keys == ["sample-main-baseline-s13", "sample-main-cotpd-s13", "sample-main-knowledge-s13"]
    logs = [(out / "runs" / "lanes" / f"lane-{i}.log").read_text(encoding="utf-8") for i in (1, 2)]
    trained = [k for text in logs for k in keys if f"] {k} (" in text]
    assert sorted(trained) == keys  # every training in exactly one lane
    assert len({r["mlflow_run_id"] for r in runs}) == 3
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "--lanes 2" in text and "3 of the reused trainings were trained just now by this command's 2 lanes" in text
    assert not list((out / "runs" / "done").glob("*.claim"))
