"""`cotpd bench --log-models` registers each dataset's best CoTPD student (by dev F1) as the MLflow
champion, and `cotpd predict` serves it from its `models:/` URI."""
from __future__ import annotations

import json
import os
import re

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pytest  # noqa: E402

from bench_helpers import project  # noqa: E402,F401  (fixture)
from cotpd.bench import grid as bench  # noqa: E402
from cotpd.params import load_params  # noqa: E402
from cotpd.serving import predict  # noqa: E402
from cotpd.training import registry, tracking  # noqa: E402


@pytest.mark.timeout(300)
def test_bench_registers_the_best_cotpd_model_as_champion(project, capsys, caplog):
    """With --log-models the bench registers, per dataset, the CoTPD run of highest dev F1 as
    cotpd-<dataset>@champion; `cotpd predict --model models:/...@champion` serves it; a rerun adds
    no version; a missing model or alias is a clear error (exit 2)."""
    root, out = project
    argv = ["--smoke", "--root", str(root), "--out", str(out), "--datasets", "sample", "--seeds", "2", "--no-speed",
            "--groups", "main", "--variants", "cotpd", "--log-models"]
    with caplog.at_level("INFO", logger="cotpd.bench"):
        assert bench.main(argv) == 0
    runs = json.loads((out / "results.json").read_text(encoding="utf-8"))["runs"]
    assert len(runs) == 2 and all(r["mlflow_model_id"] for r in runs)
    # a line per finished training, with the ETA of the rest (from the first one's time)
    done = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()]
    assert len(done) == 2 and re.match(r"\[1/2\] sample-main-cotpd-s13 done in .*; 1 left, ETA ", done[0]), done
    assert "none left" in done[1]
    best = max(runs, key=lambda r: r["dev_f1"])  # the first of equals, as the registry picks
    tracking.setup(root, load_params(root).file.tracking)
    client = mlflow.tracking.MlflowClient()
    version = client.get_model_version_by_alias("cotpd-sample", "champion")
    assert version.source == f"models:/{best['mlflow_model_id']}" and version.run_id == best["mlflow_run_id"]
    capsys.readouterr()

    def predict_out(model: str) -> str:
        assert predict.main(["--root", str(root), "--model", model, "EU rejects German call"]) == 0
        return capsys.readouterr().out

    served = json.loads(predict_out("models:/cotpd-sample@champion"))
    assert served["text"] == "EU rejects German call" and isinstance(served["entities"], list)
    assert predict_out("models:/cotpd-sample@champion") == predict_out(f"runs:/{best['mlflow_run_id']}/model")
    assert registry.register_champions(root, load_params(root).file.tracking, runs) == \
        {"sample": "models:/cotpd-sample@champion"}
    assert len(client.search_model_versions("name='cotpd-sample'")) == 1  # already the champion: no new version
    for missing in ("models:/missing@champion", "models:/cotpd-sample@nobody"):
        assert predict.main(["--root", str(root), "--model", missing, "x"]) == 2
        err = capsys.readouterr().err
        assert f"{missing}: the registered model or its alias/version does not exist" in err, err
