"""The two web UIs as a user opens them, in headless Chromium (Debian's package, driven by Playwright):
the Dagster asset graph of `orchestration.definitions` and the MLflow runs page. Screenshots land in
the test's tmp folder (and in docs/img/ when COTPD_UPDATE_SCREENSHOTS=1). Servers run in their own
process groups and are stopped by process-group id in a `finally`."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestration_helpers import REPO_ROOT, VENV_BIN, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,  # two web servers start (about a minute each on 2 busy cores)
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not found (Debian: apt-get install -y "
                                                          "chromium; `make install` does it)")]
ASSETS = ["raw_dataset", "image_captions", "cot_knowledge", "augmented_dataset", "baseline_model",
          "distilled_model", "metrics"]


@contextmanager
def server(cmd: list[str], url: str, env: dict, log: Path, timeout: float = 180):
    """Start a server in its own process group, wait until `url` answers, kill the group at exit."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def screenshot(url: str, texts: list[str], path: Path, timeout_ms: int = 90_000) -> str:
    """Open `url`, wait until every one of `texts` is on the page, save a PNG; return the page text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
            for text in texts:
                page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)
            page.wait_for_timeout(1500)  # let the graph layout settle before the picture
            page.screenshot(path=str(path), full_page=False)
            return page.inner_text("body")
        finally:
            browser.close()


def keep(png: Path, name: str) -> None:
    if os.environ.get("COTPD_UPDATE_SCREENSHOTS") == "1":
        (REPO_ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(png, REPO_ROOT / "docs" / "img" / name)


def base_env(**extra) -> dict:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


@pytest.mark.timeout(400)
def test_dagster_ui_shows_the_asset_graph(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    cmd = [str(VENV_BIN / "dagster-webserver"), "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with server(cmd, f"http://127.0.0.1:{port}/server_info", base_env(DAGSTER_HOME=str(home)), tmp_path / "dagster.log"):
        png = tmp_path / "dagster_assets.png"
        text = screenshot(f"http://127.0.0.1:{port}/asset-groups/cotpd", ASSETS, png)
    assert png.stat().st_size > 10_000
    for name in ASSETS:
        assert name in text
    keep(png, "dagster_assets.png")


@pytest.mark.timeout(400)
def test_mlflow_ui_lists_a_training_run(tmp_path):
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=db)
    # a model-training experiment (MLflow 3 otherwise opens on its GenAI trace views)
    exp = client.create_experiment("cotpd", artifact_location=(tmp_path / "artifacts").as_uri(),
                                   tags={"mlflow.experimentKind": "custom_model_development"})
    run = client.create_run(exp, run_name="sample-cotpd-s13",
                            tags={"orchestrator": "dagster", "dagster_run_id": "browser-test", "variant": "cotpd"})
    client.log_metric(run.info.run_id, "test_f1", 0.5)
    client.set_terminated(run.info.run_id)
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", db, "--default-artifact-root",
           (tmp_path / "artifacts").as_uri(), "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    env = base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with server(cmd, f"http://127.0.0.1:{port}/health", env, tmp_path / "mlflow.log"):
        png = tmp_path / "mlflow_runs.png"
        text = screenshot(f"http://127.0.0.1:{port}/#/experiments/{exp}/runs", ["sample-cotpd-s13"], png)
    assert png.stat().st_size > 10_000
    assert "sample-cotpd-s13" in text
    keep(png, "mlflow_runs.png")
