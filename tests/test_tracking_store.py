"""The MLflow store under concurrency: processes that open a project's first store at the same moment
all succeed (one creates and migrates it under a file lock, cotpd.training.store), and a store an
unlocked migration left broken gets a CotpdError whose recovery keeps the runs."""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pytest  # noqa: E402
from orchestration_helpers import VENV_BIN, scratch_project, small_params  # noqa: E402

from cotpd.config import TrackingCfg  # noqa: E402
from cotpd.training import store, tracking  # noqa: E402

N_PROCS = 4
# one tracked "training" through the real path (training_run -> setup), started at a signal: each
# process imports first, says it is ready, then waits for the go file so that all open the store together
WORKER = """
import sys, time
from pathlib import Path
root, me = Path(sys.argv[1]), sys.argv[2]
from cotpd.params import load_params
from cotpd.training.tracking import training_run
dp = load_params(root, sets=["tracking.system_metrics=false"]).dataset("sample")
(root / f"ready.{me}").touch()
while not (root / "go").exists():
    time.sleep(0.005)
with training_run(root, "sample", "baseline", dp, tags={"worker": me}, run_name=f"worker-{me}") as run:
    run.log_metrics({"dev_f1": float(me)})
print("run", run.run_id)
"""


def test_processes_starting_together_on_a_fresh_project_all_track(tmp_path):
    root = scratch_project(tmp_path / "proj", small_params)
    db = root / "mlruns" / "mlflow.db"
    assert not db.exists()  # a fresh clone: nobody has created the store yet
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(i)], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(N_PROCS)]
    try:
        deadline = time.monotonic() + 240
        while len(list(root.glob("ready.*"))) < N_PROCS:
            assert time.monotonic() < deadline, "workers never got ready"
            assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
            time.sleep(0.05)
        (root / "go").touch()
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert not store.leftover_tables(db)
    runs = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_runs(
        [tracking.setup(root, TrackingCfg())], max_results=50)
    assert sorted(r.data.tags["worker"] for r in runs) == [str(i) for i in range(N_PROCS)]
    assert sorted(r.data.metrics["dev_f1"] for r in runs) == [float(i) for i in range(N_PROCS)]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A migrated store holding one run (creating a store runs every MLflow migration: seconds)."""
    root = tmp_path_factory.mktemp("template")
    exp = tracking.setup(root, TrackingCfg())
    with mlflow.start_run(experiment_id=exp, run_name="before") as run:
        mlflow.log_metric("dev_f1", 0.5)
    return root / "mlruns" / "mlflow.db", exp, run.info.run_id


def _store_with_a_run(root, template):
    """A copy of the template store under `root` (a new path: MLflow opens it as a new store)."""
    db, exp, run_id = template
    (root / "mlruns").mkdir(parents=True)
    shutil.copy(db, root / "mlruns" / "mlflow.db")
    return exp, run_id


def test_an_interrupted_migration_gets_a_recovery_that_keeps_the_runs(tmp_path, template):
    root = tmp_path / "proj"
    exp, run_id = _store_with_a_run(root, template)
    db = root / "mlruns" / "mlflow.db"
    # what an unlocked migration interrupted in alembic's batch copy of latest_metrics leaves behind
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE _alembic_tmp_latest_metrics AS SELECT * FROM latest_metrics")
    with pytest.raises(store.StoreError) as err:
        tracking.setup(root, TrackingCfg())
    msg = str(err.value)
    assert str(db) in msg and "_alembic_tmp_latest_metrics" in msg and "mlflow db upgrade" in msg
    assert "SQL" not in msg and "Traceback" not in msg
    # the recovery the message prints, run as printed (its sqlite3-module form: CI may lack the tool)
    drop = re.search(r'python -c "(.+)"\)', msg).group(1)
    upgrade = re.search(r"mlflow db upgrade (\S+)", msg).group(1)
    subprocess.run([sys.executable, "-c", drop], check=True)
    subprocess.run([str(VENV_BIN / "mlflow"), "db", "upgrade", upgrade], check=True, capture_output=True)
    assert tracking.setup(root, TrackingCfg()) == exp
    assert mlflow.get_run(run_id).data.metrics == {"dev_f1": 0.5}


def test_a_leftover_copy_that_holds_the_only_rows_is_never_dropped(tmp_path, template):
    root = tmp_path / "proj"
    _store_with_a_run(root, template)
    db = root / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as con:  # crashed between DROP latest_metrics and the copy's rename
        con.execute("CREATE TABLE _alembic_tmp_latest_metrics AS SELECT * FROM latest_metrics")
        con.execute("DROP TABLE latest_metrics")
    with pytest.raises(store.StoreError, match="only copy of table.s. latest_metrics") as err:
        tracking.setup(root, TrackingCfg())
    assert "DROP TABLE" not in str(err.value)


def test_a_store_behind_the_schema_names_the_upgrade(tmp_path, template):
    root = tmp_path / "proj"
    _store_with_a_run(root, template)
    db = root / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as con:  # a store whose recorded schema is older than every table in it
        con.execute("UPDATE alembic_version SET version_num = 'a8c4a736bde6'")
    with pytest.raises(store.StoreError, match=r"mlflow db upgrade") as err:
        tracking.setup(root, TrackingCfg())
    assert str(db.parent) in str(err.value)
