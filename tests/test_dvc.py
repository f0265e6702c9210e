"""`dvc repro` as a user runs it: on a clean checkout (no outputs, no DVC cache, no remote, no data/
behind data.dvc, no network) it builds the sample pipeline; a second `dvc repro` does nothing, fast;
metrics and plots are readable by `dvc metrics` / `dvc plots`; the LLM ledgers are never rewritten."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from dvc_helpers import dvc

pytestmark = pytest.mark.slow  # runs the real sample pipeline (about a minute or two)


@pytest.fixture(scope="module")
def repro(dvc_repro):
    """One clean checkout, reproduced once (the expensive part), shared by the tests below."""
    return dvc_repro


@pytest.mark.timeout(1500)
def test_clean_checkout_reproduces_the_sample_then_a_second_repro_does_nothing(repro):
    root, ledgers, first, seconds = repro
    print(f"first dvc repro: {seconds:.1f} s")
    for stage in ("prepare@sample", "captions@sample", "knowledge@sample", "augment@sample",
                  "train@sample-baseline", "train@sample-cotpd", "evaluate@sample"):
        assert f"Running stage '{stage}'" in first.stdout, stage
    assert (root / "outputs" / "sample" / "metrics.json").is_file()
    assert (root / "dvc.lock").is_file()
    # the ledgers: replayed, so byte for byte what the checkout shipped (never paid for twice)
    assert {p: p.read_bytes() for p in ledgers} == ledgers

    t0 = time.perf_counter()
    second = dvc(root, "repro")
    noop = time.perf_counter() - t0
    print(f"second dvc repro: {noop:.1f} s")
    assert "Running stage" not in second.stdout
    assert "didn't change, skipping" in second.stdout
    assert noop < 10, f"a no-op dvc repro took {noop:.1f} s"
    status = json.loads(dvc(root, "status", "--json").stdout or "{}")
    # only data.dvc (team data, no remote here) may be listed; every pipeline stage is up to date
    assert set(status) <= {"data.dvc"}, status

    # git sees the lock file and nothing else new: outputs are ignored, ledgers unchanged
    porcelain = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert {line[3:] for line in porcelain.splitlines()} == {"dvc.lock"}, porcelain


def test_metrics_and_plots_are_readable_by_dvc(repro, tmp_path):
    root = repro[0]
    shown = json.loads(dvc(root, "metrics", "show", "--json").stdout)
    data = json.dumps(shown)
    assert "outputs/sample/metrics.json" in data
    values = next(iter(shown.values()))["data"]["outputs/sample/metrics.json"]["data"]
    assert 0.0 <= values["cotpd.f1"] <= 1.0 and 0.0 <= values["baseline.f1"] <= 1.0
    dvc(root, "metrics", "diff")  # against HEAD (no metrics there yet): must not fail
    dvc(root, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    assert "per_type_f1" in html


def test_training_runs_say_dvc_made_them(repro):
    import mlflow

    from cotpd.params import read_params
    from cotpd.training.tracking import tracking_uri

    root = repro[0]
    mlflow.set_tracking_uri(tracking_uri(root, read_params(root)["tracking"]["uri"]))
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {r.data.tags["variant"] for r in runs} == {"baseline", "cotpd"}
    for r in runs:
        assert r.data.tags["orchestrator"] == "dvc"
        assert r.data.tags["dvc_stage"] == f"train@sample-{r.data.tags['variant']}"


def test_each_stage_depends_on_its_own_params_only(repro):
    """Editing one params section makes exactly the stages that read it out of date."""
    root = repro[0]
    path = root / "params.yaml"
    original = path.read_text(encoding="utf-8")
    try:
        for section, key, value, changed in (
                ("eval", "view", "knowledge", {"evaluate@sample"}),
                ("train", "lr", 1e-4, {"train@sample-baseline", "train@sample-cotpd"}),
                ("cot", "max_samples", 3, {"knowledge@sample"}),
                ("augment", "seed", 99, {"augment@sample"})):
            params = yaml.safe_load(original)
            params[section][key] = value
            path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
            status = json.loads(dvc(root, "status", "--json").stdout or "{}")
            assert set(status) - {"data.dvc"} == changed, (section, status)
    finally:
        path.write_text(original, encoding="utf-8")
