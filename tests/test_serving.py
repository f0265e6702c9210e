"""The logged pyfunc model: loads with mlflow.pyfunc, takes raw text, and answers over HTTP."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from tracking_helpers import tracked_training  # noqa: E402

from cotpd.config import TrackingCfg  # noqa: E402
from cotpd.serving.predict import Predictor  # noqa: E402
from cotpd.training import tracking  # noqa: E402

TEXTS = ["RT @user :  Barack Obama visits   Paris with Angela Merkel", "nothing to see here", ""]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    out = tracked_training(tmp_path_factory)
    tracking.setup(out["root"], TrackingCfg.model_validate(out["params"]["tracking"]))
    return out


def _check_entities(text: str, ents: list[dict]) -> None:
    for e in ents:
        assert text[e["start"]:e["end"]] == e["text"]
        assert e["type"] in {"PER", "LOC", "ORG", "OTHER"}
        assert e["text"].split() == text.split()[e["token_start"]:e["token_end"]]


def test_pyfunc_ner_takes_raw_text_and_matches_predictor(tracked):
    model = mlflow.pyfunc.load_model(f"runs:/{tracked['ner']['mlflow_run_id']}/model")
    out = model.predict(pd.DataFrame({"text": TEXTS}))
    assert list(out.columns) == ["entities"] and len(out) == len(TEXTS)
    ents = [json.loads(x) for x in out["entities"]]
    for text, e in zip(TEXTS, ents):
        _check_entities(text, e)
    assert ents[2] == []  # empty text: no tokens, no entities
    # same answers as the student folder loaded directly (one code path)
    assert ents == Predictor(tracked["ner"]["model_dir"]).ner(TEXTS)


def test_pyfunc_re_takes_text_head_tail(tracked):
    model = mlflow.pyfunc.load_model(f"runs:/{tracked['re']['mlflow_run_id']}/model")
    df = pd.DataFrame({"text": ["Alice met Bob in Rome", "The Lakers play in Los Angeles tonight"],
                       "head": ["Alice", "The Lakers"], "tail": ["Bob", "Los Angeles"]})
    out = model.predict(df)
    assert list(out.columns) == ["relation", "score"]
    labels = Predictor(tracked["re"]["model_dir"]).student.labels
    assert set(out["relation"]) <= set(labels)
    assert all(0 < s <= 1 for s in out["score"])
    with pytest.raises(Exception, match="head|tail"):
        model.predict(pd.DataFrame({"text": ["Alice met Bob"], "head": ["Carol"], "tail": ["Bob"]}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_models_serve_answers_invocations(tracked, tmp_path):
    port = _free_port()
    uri = f"runs:/{tracked['ner']['mlflow_run_id']}/model"
    bindir = str(Path(sys.executable).parent)  # the scoring server execs `uvicorn` from PATH
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(Path(bindir) / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: uvicorn children die with it
    try:
        deadline, ready = time.time() + 150, False
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    ready = r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        assert ready, f"server not ready (exit {proc.poll()}): {(tmp_path / 'serve.log').read_text()[-2000:]}"
        body = json.dumps({"dataframe_records": [{"text": TEXTS[0]}, {"text": TEXTS[1]}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            reply = json.loads(r.read())
        preds = reply["predictions"]
        assert len(preds) == 2
        ents = [json.loads(p["entities"]) for p in preds]
        _check_entities(TEXTS[0], ents[0])
        assert ents == Predictor(tracked["ner"]["model_dir"]).ner(TEXTS[:2])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
