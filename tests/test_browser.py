"""The two web UIs as a user works them, in headless Chromium (Debian's package, driven by Playwright).

Dagster: `dagster dev` on a scratch copy of the project; open the asset graph, "Materialize all" for
the `sample` partition, follow the run to "Success", then read the trained student's metadata (test
F1, MLflow link) and the per-type F1 plot of `metrics`. MLflow: two real trainings on the sample,
`mlflow server` on their store; open the experiment's runs, tick both, "Compare", read test_f1 /
dev_f1 and the per-epoch dev F1 chart. Every step is a screenshot in the test's tmp folder (and in
docs/img/ with COTPD_UPDATE_SCREENSHOTS=1). Trainings use a tiny random encoder: the UI path is the
same as with the shipped one, in seconds instead of minutes.
"""
from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect

from browser_helpers import CHROMIUM, ServerStartError, Shots, base_env, chromium_page, group_alive, js_number, \
    mlflow_metric, port_free, scroll_to_metric, server
from cotpd.model import build_tiny_encoder
from cotpd.params import read_params
from cotpd.pipeline import run_stage
from cotpd.training.mlflow_log import DIGEST_LEN
from cotpd.training.tracking import tracking_uri
from orchestration_helpers import REPO_ROOT, VENV_BIN, free_port, scratch_project, small_params
from tracking_helpers import git_init, project_params

NO_CHROMIUM = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found (Debian: apt-get install -y "
                                                          "chromium; `make install` does it)")


def journey(test):
    """A browser journey: real trainings and web servers (a minute or two each on 2 busy cores)."""
    return pytest.mark.slow(NO_CHROMIUM(test))


ASSETS = ["raw_dataset", "image_captions", "cot_knowledge", "augmented_dataset", "baseline_model",
          "distilled_model", "metrics"]
UI_MS = 60_000  # a page or a panel of a busy machine's UI to appear
RUN_MS = 600_000  # the whole sample pipeline run, trainings included
# the student, small: tiny random encoder (hidden 32, 2 layers), short inputs, a small prompt generator
TINY_TRAIN = {"max_length": 32, "knowledge_max_length": 48, "prompt": {"k": 2, "layers": 1, "heads": 2},
              "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny_encoder")


# --------------------------------------------------------------------------------------------- Dagster


def materialize_in_ui(page, base: str, shots: Shots, log: Path) -> str:
    """Asset graph -> "Materialize all" -> partition `sample` -> "Launch 1 run" -> the run's page until
    it finishes; returns the Dagster run id (fails with the server's log when the run failed)."""
    page.goto(f"{base}/asset-groups/cotpd", wait_until="domcontentloaded")
    for name in ASSETS:
        expect(page.get_by_role("button", name=name).first).to_be_visible(timeout=UI_MS)
    shots.take(page, "asset_graph", doc="dagster_assets.png")

    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_placeholder("Filter partitions").fill("sample")
    page.get_by_role("dialog").filter(has_text="Select all").last.get_by_text("sample", exact=True).first.click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the partition picker
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible(timeout=UI_MS)
    launch = dialog.get_by_role("button", name="Launch 1 run")
    shots.take(page, "partition_dialog")
    launch.click()

    page.get_by_role("link", name="View", exact=True).click()  # in the "Launched run" toast
    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"), timeout=UI_MS)
    run_id = page.url.rsplit("/", 1)[1].split("?")[0]
    done = page.get_by_text("Success", exact=True).or_(page.get_by_text("Failure", exact=True))
    expect(done.first).to_be_visible(timeout=RUN_MS)
    shots.take(page, "run_finished", doc="dagster_run.png")
    assert page.get_by_text("Success", exact=True).count(), \
        f"run {run_id} failed; dagster log:\n{log.read_text(errors='replace')[-4000:]}"
    expect(page.get_by_text("partition: sample")).to_be_visible()
    return run_id


def metadata_in_ui(page, base: str, shots: Shots) -> dict:
    """The trained student's metadata (test F1, MLflow run id and link) on its asset page, and the
    per-type F1 plot of `metrics` (the markdown dialog); returns what was shown."""
    page.goto(f"{base}/assets/distilled_model", wait_until="domcontentloaded")
    meta = page.get_by_role("table").filter(has=page.get_by_text("mlflow_run_id", exact=True))
    expect(meta).to_be_visible(timeout=UI_MS)

    def value(key: str):
        return meta.get_by_role("row").filter(has=page.get_by_text(key, exact=True)).first.get_by_role("cell").last

    shown = {"mlflow_run_id": value("mlflow_run_id").inner_text().strip(),
             "test_f1": float(value("test_f1").inner_text()),
             "link": value("mlflow_run").get_by_role("link").first.get_attribute("href")}
    # test F1 down to the MLflow link in the picture: centre the run id's row, key column in view
    key = meta.get_by_text("mlflow_run_id", exact=True)
    key.evaluate("e => e.scrollIntoView({block: 'center', inline: 'nearest'})")
    shots.take(page, "distilled_model_metadata", doc="dagster_asset_metadata.png")

    page.goto(f"{base}/assets/metrics", wait_until="domcontentloaded")
    plot_row = page.get_by_role("row").filter(has=page.get_by_text("plot", exact=True)).first
    expect(plot_row).to_be_visible(timeout=UI_MS)
    plot_row.get_by_text("Show Markdown").click()
    plot = page.get_by_role("dialog").locator("img")
    expect(plot).to_be_visible(timeout=UI_MS)
    shown["plot_width"] = plot.evaluate("img => img.naturalWidth")
    shots.take(page, "per_type_f1_plot", doc="dagster_metrics_plot.png")
    return shown


@journey
def test_dagster_materialize_the_sample_partition_from_the_ui(tmp_path, tiny_encoder):
    def edit(params):
        small_params(params)
        params["train"].update(encoder=str(tiny_encoder), **TINY_TRAIN)

    root = scratch_project(tmp_path / "proj", edit)  # the run writes outputs/, mlruns/ there, not in the repo
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    # `dagster dev` as the README starts it: the daemon dequeues runs launched from the UI (the
    # instance's QueuedRunCoordinator); steps run in the run's process (no process per step to start)
    env = base_env(DAGSTER_HOME=str(home), COTPD_ROOT=str(root), COTPD_DAGSTER_EXECUTOR="in_process")
    cmd = [str(VENV_BIN / "dagster"), "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    base, log, shots = f"http://127.0.0.1:{port}", tmp_path / "dagster.log", Shots(tmp_path)
    with server("dagster dev", cmd, f"{base}/server_info", env, log, cwd=root), chromium_page() as page:
        run_id = materialize_in_ui(page, base, shots, log)
        shown = metadata_in_ui(page, base, shots)

    tracking = read_params(root)["tracking"]
    run = MlflowClient(tracking_uri(root, tracking["uri"])).get_run(shown["mlflow_run_id"])
    assert run.data.tags["dagster_run_id"] == run_id and run.data.tags["variant"] == "cotpd"
    assert shown["test_f1"] == pytest.approx(run.data.metrics["test_f1"])
    assert shown["link"] == f"{tracking['ui_url']}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert shown["plot_width"] > 100  # the PNG decoded in the page, not a broken image
    assert (root / "outputs" / "sample" / "models" / "cotpd").is_dir()


# ---------------------------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_encoder):
    """The sample trained twice for real (baseline, cotpd; 3 epochs), tracked in one experiment."""
    root = tmp_path_factory.mktemp("mlflow_project")
    git_init(root)
    params = project_params(tiny_encoder)
    params["train"]["epochs"] = 3
    for stage in ("prepare", "captions"):
        run_stage(stage, "sample", root, params)
    runs = {v: run_stage("train", "sample", root, params, variant=v) for v in ("baseline", "cotpd")}
    return root, runs


def compare_in_ui(page, base: str, runs: dict, shots: Shots) -> dict:
    """The MLflow journey in the browser; `runs`: variant -> mlflow Run. Returns what the pages showed:
    {"order": variants in the compare page's column order, "metrics": {name: [values]}, "latest":
    {variant: its row of the per-epoch chart's table}}."""
    page.goto(base, wait_until="domcontentloaded")
    page.get_by_role("button", name="Model training").click(timeout=UI_MS)  # not the GenAI views
    page.get_by_role("link", name="cotpd", exact=True).click(timeout=UI_MS)
    expect(page.get_by_text(f"{len(runs)} matching runs")).to_be_visible(timeout=UI_MS)
    page.get_by_role("button", name="Close").first.click()  # the assistant panel hides the Models column
    for run in runs.values():
        # the grid draws a run as two rows (pinned name column, scrolled columns) of the same row-id
        row = page.locator(f'[role=row][row-id="{run.info.run_id}"]')
        expect(row.get_by_role("link", name=run.info.run_name, exact=True)).to_be_visible(timeout=UI_MS)
        digest = run.data.tags["data.raw.train"][:DIGEST_LEN]  # Dataset column: the split's data hash
        expect(row.get_by_role("button", name=f"sample.train ({digest})")).to_be_visible()
        expect(row.get_by_role("link", name="model", exact=True)).to_be_visible()  # Models column
    shots.take(page, "runs_table", doc="mlflow_runs.png")

    for run in runs.values():
        page.locator(f'[role=row][row-id="{run.info.run_id}"]').get_by_role("checkbox").first.check()
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_text(f"Comparing {len(runs)} Runs from 1 Experiment")).to_be_visible(timeout=UI_MS)
    ids = page.get_by_role("row").filter(has=page.get_by_text("Run ID:")).first.inner_text()
    shown = {"order": sorted(runs, key=lambda v: ids.index(runs[v].info.run_id))}
    shown["metrics"] = {m: scroll_to_metric(page, m) for m in ("dev_f1", "test_f1")}
    expect(page.get_by_role("grid").first.get_by_role("link", name="test_f1", exact=True)).to_be_in_viewport()
    shots.take(page, "compare_metrics", doc="mlflow_compare.png")

    scroll_to_metric(page, "epoch/dev_f1")
    page.get_by_role("grid").first.get_by_role("link", name="epoch/dev_f1", exact=True).click()
    expect(page.locator(".js-plotly-plot")).to_be_visible(timeout=UI_MS)
    for run in runs.values():  # one curve per run, over epochs (x axis: Step)
        expect(page.get_by_text(f"{run.info.run_name} (epoch/dev_f1)")).to_be_visible(timeout=UI_MS)
    expect(page.get_by_text("Step", exact=True).first).to_be_visible()
    shown["latest"] = {v: page.get_by_role("row").filter(has=page.get_by_role("link", name=r.info.run_name,
                                                                                   exact=True)).first.inner_text()
                       for v, r in runs.items()}
    shots.take(page, "epoch_dev_f1_chart", doc="mlflow_dev_f1_chart.png")
    return shown


@journey
def test_mlflow_compare_two_trainings(tmp_path, two_runs):
    root, summaries = two_runs
    db = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=db)
    runs = {v: client.get_run(s["mlflow_run_id"]) for v, s in summaries.items()}
    port = free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", db, "-h", "127.0.0.1", "-p", str(port),
           "--workers", "1"]
    env = base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    with server("mlflow server", cmd, f"http://127.0.0.1:{port}/health", env, tmp_path / "mlflow.log"), \
            chromium_page() as page:
        shown = compare_in_ui(page, f"http://127.0.0.1:{port}/", runs, Shots(tmp_path))

    for metric, values in shown["metrics"].items():
        assert values == [mlflow_metric(runs[v].data.metrics[metric]) for v in shown["order"]], (metric, values)
    for v, text in shown["latest"].items():
        history = sorted(client.get_metric_history(runs[v].info.run_id, "epoch/dev_f1"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2]  # one point per epoch
        assert f"{js_number(history[-1].value)} (step=2)" in text, text


# ----------------------------------------------------------------------------------------- bad input


def test_a_server_on_a_taken_port_is_named_with_its_reason(tmp_path):
    """A web server (Python's http.server, seconds faster to start than mlflow's) on a port something
    else listens on: the error names the server, its exit code and the bind error from its log;
    nothing of its process group is left and the port is ours again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        with pytest.raises(ServerStartError) as err, \
                server("file server", cmd, f"http://127.0.0.1:{port}/", base_env(), tmp_path / "http.log"):
            pytest.fail("the server cannot have come up on a taken port")
    msg = str(err.value)
    assert msg.startswith("file server (pid ") and "exited with code 1 before" in msg, msg
    assert "Address already in use" in msg, msg
    assert not group_alive(err.value.pgid)
    assert port_free(port)


def test_a_server_that_never_answers_is_stopped_with_its_children(tmp_path):
    """A server that listens but never answers HTTP (and has started a child): after the wait the error
    says which URL it waited on and how long; the whole group is gone and the port is free."""
    port = free_port()
    child = ("import socket, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
             f"'import time; time.sleep(600)']); s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
             "print('listening', flush=True); time.sleep(600)")
    url = f"http://127.0.0.1:{port}/health"
    with pytest.raises(ServerStartError) as err, \
            server("mute server", [sys.executable, "-c", child], url, base_env(), tmp_path / "mute.log", timeout=3):
        pytest.fail("a server that never answers cannot count as up")
    msg = str(err.value)
    assert msg.startswith("mute server (pid ") and f"did not answer {url} within 3 s" in msg, msg
    assert "listening" in msg  # the log's tail
    assert not group_alive(err.value.pgid)
    assert port_free(port)
