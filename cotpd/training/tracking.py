"""MLflow tracking: one run per training, comparable across variants, datasets and orchestrators.

Every run carries the resolved params (flattened to dot keys) and their hash, the git commit, the
hashes of the data it read (normalized splits, captions, knowledge, augmentations, LLM ledgers),
per-epoch metrics under fixed names (dev_f1, train_loss, ...), system metrics, the evaluation plots
and the student as an MLflow pyfunc model that takes raw text (cotpd.serving.pyfunc).

The store is sqlite (`tracking.uri` in params.yaml, relative to the project root; MLflow 3.17 no
longer accepts a bare `mlruns/` file store) and artifacts live under <root>/mlruns/artifacts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import mlflow

from .. import plots
from ..config import DatasetParams, TrackingCfg
from ..params import Layout, params_hash
from ..serving.pyfunc import MODEL_NAME, log_pyfunc
from ..serving.registry import tracking_uri  # in serving/: `cotpd predict` resolves models:/ in the same store
from . import mlflow_log
from .signals import Interrupted
from .store import open_experiment

log = logging.getLogger(__name__)

# keys containing one of these never reach MLflow (their value could be a credential)
SECRET_MARKERS = ("key", "token", "secret", "password")
MAX_PARAM_LEN = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in 3.17
MAX_KEY_LEN = 250
EPOCH_PREFIX = "epoch/"
# final metrics have the same names for every variant and task (test_f1, test_precision, test_recall,
# dev_f1, train_tokens_per_s, test_f1_<type>, ...) so the MLflow UI compares runs side by side


def setup(root: Path, cfg: TrackingCfg) -> str:
    """Point MLflow at the project's store and return the experiment id (created if needed).

    Every opening of the store goes through here: the first one in a process creates or migrates a
    sqlite store under a file lock (cotpd.training.store), so any number of processes may start at once."""
    root = Path(root).resolve()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in logs
    uri = tracking_uri(root, cfg.uri)
    if uri.startswith(("http://", "https://")):
        # a tracking server keeps artifacts in its own store (`mlflow server --artifacts-destination`,
        # proxied): every host reaches it through the server, where a file:// path is one host's disk
        return open_experiment(uri, cfg.experiment, None)
    # explicit artifact location: otherwise MLflow would write to ./mlartifacts of the cwd
    artifacts = (root / "mlruns" / "artifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return open_experiment(uri, cfg.experiment, artifacts.as_uri())


def is_secret(key: str) -> bool:
    low = key.lower()
    return any(m in low for m in SECRET_MARKERS)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": "0.001"}; secrets dropped, long values truncated."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if is_secret(str(k)):
            continue
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
            continue
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        if len(text) > MAX_PARAM_LEN:
            text = text[: MAX_PARAM_LEN - 14] + "...[truncated]"
        out[key[:MAX_KEY_LEN]] = text
    return out


def git_commit(root: Path) -> str:
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else "unknown"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_hashes(root: Path, dataset: str) -> dict[str, str]:
    """Tags `data.<file>` / `ledger.<stage>` -> SHA-256 of every input the training could read."""
    lay = Layout(Path(root), dataset)
    files = {f"data.raw.{p.stem}": p for p in sorted(lay.raw_dir.glob("*.jsonl"))}
    for name, p in (("augmented", lay.augmented), ("knowledge", lay.knowledge), ("captions", lay.captions)):
        files[f"data.{name}"] = p
    ledger_dir = Path(root) / "ledger" / dataset
    files.update({f"ledger.{p.stem}": p for p in sorted(ledger_dir.glob("*.jsonl"))})
    return {k: sha256(p) for k, p in files.items() if p.is_file()}


def as_dict(obj: Any) -> dict:
    """A training result (dataclass, object or dict) as a plain dict."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def numeric(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (nested) metrics dict, keys joined with '_' (MLflow metric names)."""
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        key = f"{prefix}{k}".replace("/", "_").replace(" ", "_")
        if isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, (int, float)):
            out[key] = float(v)
        elif isinstance(v, dict) and k in ("per_type", "per_relation"):
            # {"PER": {"f1": ..}} -> test_f1_PER: one metric per type, sorted beside test_f1 in the UI
            for typ, sc in v.items():
                f1 = sc.get("f1") if isinstance(sc, dict) else sc
                if isinstance(f1, (int, float)):
                    out[f"{prefix}f1_{typ}".replace("/", "_").replace(" ", "_")] = float(f1)
        elif isinstance(v, dict):
            out.update(numeric(v, key + "_"))
    return out


class TrainingRun:
    """The handle `training_run` yields: what a training loop and the train stage log."""

    def __init__(self, run_id: str, experiment_id: str, ui_url: str, root: Path, dataset: str):
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.root = root
        self.dataset = dataset
        self.url = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        self.model_uri: str | None = None
        self.model_id: str | None = None  # the student's LoggedModel, once logged

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """Per-epoch curves (step = epoch) under "epoch/" (a section of their own in the MLflow UI),
        so that the final `dev_f1` (best checkpoint) never mixes with the dev F1 of each epoch."""
        values = {f"{EPOCH_PREFIX}{k}": v for k, v in numeric(metrics).items() if k != "epoch"}
        if values:
            mlflow.log_metrics(values, step=int(epoch))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        values = numeric(metrics)
        if values:
            mlflow.log_metrics(values, step=step)

    def log_result(self, result: Any) -> dict[str, float]:
        """Final metrics of a training: best dev, test (with per-type F1), throughput; plots too."""
        r = as_dict(result)
        final: dict[str, float] = {}
        final.update(numeric(r.get("best_dev") or r.get("dev") or {}, "dev_"))
        test = r.get("test") or {}
        final.update(numeric(test, "test_"))
        # top-level scalars of cotpd.training.loop.TrainResult: train_tokens_per_s, best_epoch, n_train, ...
        final.update({k: float(v) for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        final.update(numeric(r.get("throughput") or {}))
        timings = r.get("timings") or {}
        final.update(numeric({k: v for k, v in timings.items() if k != "corpus"}, "time_"))
        # corpus counts (train/augmented/with knowledge): TrainResult.data, or older timings["corpus"]
        final.update(numeric(getattr(result, "data", None) or timings.get("corpus") or {}, "data_"))
        if test.get("n") and timings.get("test_s"):
            # test sentences per second, checkpoint reload included (cotpd bench times inference alone)
            final["test_sentences_per_s"] = float(test["n"]) / float(timings["test_s"])
        if final:
            mlflow.log_metrics(final)
        summary = {k: v for k, v in r.items() if k not in ("history",)}
        mlflow.log_dict(json.loads(json.dumps(summary, default=str)), "result.json")
        self._log_plots(test)
        return final

    def _log_plots(self, test: dict) -> None:
        per_type = test.get("per_type") or test.get("per_relation") or {}
        if per_type:
            self.log_figure(plots.per_type_f1(per_type, title=f"{self.dataset}: per-type test F1"),
                            "plots/per_type_f1.png")
        conf = test.get("confusion")
        if conf and conf.get("labels") and conf.get("matrix"):
            self.log_figure(plots.confusion(conf["labels"], conf["matrix"], title=f"{self.dataset}: confusion"),
                            "plots/confusion.png")

    def log_figure(self, fig, name: str) -> None:
        mlflow.log_figure(fig, name)
        plots.close(fig)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path)

    def log_student_model(self, model_dir: str | Path, task: str) -> str:
        """Log the trained student as a pyfunc model taking raw text (see cotpd.serving.pyfunc): a
        LoggedModel to which MLflow copies the run's step-0 metrics, so call it after log_result and
        the model carries test_f1 and dev_f1 (the Models tab compares and sorts by them)."""
        self.model_id = log_pyfunc(Path(model_dir), task, MODEL_NAME).model_id
        self.model_uri = f"runs:/{self.run_id}/{MODEL_NAME}"
        return self.model_uri


def run_tags(root: Path, dataset: str, variant: str, seed: Any, extra: dict | None,
             data_root: Path | None = None) -> dict[str, str]:
    tags = {"git_commit": git_commit(root), "dataset": dataset, "variant": variant, "seed": str(seed),
            "orchestrator": "cli"}
    if os.environ.get("DVC_STAGE"):  # `dvc repro` names the stage it runs (dvc/stage/run.py)
        tags.update(orchestrator="dvc", dvc_stage=os.environ["DVC_STAGE"])
    if os.environ.get("DVC_EXP_NAME"):  # `dvc exp run` names its experiment (dvc/env.py): MLflow filters on it
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    tags.update(data_hashes(data_root or root, dataset))
    for k, v in (extra or {}).items():
        if v is not None and not is_secret(str(k)):
            tags[str(k)] = str(v)
    return tags


@contextlib.contextmanager
def training_run(root: str | Path, dataset: str, variant: str, dp: DatasetParams, tags: dict | None = None,
                 seed: int | None = None, run_name: str | None = None,
                 data_root: str | Path | None = None, resume_run_id: str | None = None) -> Iterator[TrainingRun]:
    """Open one MLflow run for one training; it ends FAILED if the block raises, KILLED if the
    training was stopped by a signal (cotpd.training.signals.Interrupted) or Ctrl-C.

    `tags` are the orchestrator's (e.g. {"orchestrator": "dagster", "dagster_run_id": ...}).
    `data_root`: where the training's outputs/ and ledger/ live when not under `root` (cotpd bench
    trains in a work folder but tracks into the project's store).
    `resume_run_id`: the run a resumed training continues (its resume checkpoint names it), so one
    training stays one run; a new run opens if this store does not hold it (or it was deleted).
    """
    root = Path(root).resolve()
    cfg = dp.tracking
    seed = dp.seed if seed is None else seed
    experiment_id = setup(root, cfg)
    # sample often enough that even a short run gets a system-metrics point or two
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", str(float(cfg.system_metrics_interval_s)))
    all_tags = run_tags(root, dataset, variant, seed, tags, Path(data_root).resolve() if data_root else None)
    if resume_run_id is not None:
        try:
            old = mlflow.MlflowClient().get_run(resume_run_id).info
            if old.lifecycle_stage == "deleted" or old.experiment_id != experiment_id:
                raise LookupError(f"{old.lifecycle_stage} run of experiment {old.experiment_id}")
            log.info("continuing MLflow run %s (%s before)", resume_run_id, old.status)
        except (mlflow.exceptions.MlflowException, LookupError) as exc:
            log.warning("MLflow run %s of the resume checkpoint cannot be continued (%s): opening a new run",
                        resume_run_id, str(exc).splitlines()[0][:200])
            resume_run_id = None
    with mlflow.start_run(run_id=resume_run_id, experiment_id=experiment_id,
                          run_name=run_name or f"{dataset}-{variant}-s{seed}",
                          tags=all_tags, log_system_metrics=cfg.system_metrics) as run:
        params = flatten(dp.model_dump(mode="json", by_alias=True))
        params["params_hash"] = params_hash(dp)
        params["variant"] = variant
        params["seed"] = str(seed)  # the run's seed, even where the caller overrode params.seed
        items = sorted(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            mlflow.log_params(dict(items[i:i + 100]))
        handle = TrainingRun(run.info.run_id, experiment_id, cfg.ui_url, root, dataset)
        mlflow_log.log_splits(dataset, all_tags, Path(data_root or root).resolve())
        log.info("MLflow run %s (%s)", handle.run_id, handle.url)
        try:
            yield handle
        except (Interrupted, KeyboardInterrupt):
            mlflow.end_run("KILLED")  # stopped, not broken: a rerun resumes it (start_run's exit sees no run left)
            raise


def fetch_run(root: Path, cfg: TrackingCfg, run_id: str):
    """The MLflow Run object (for tests and the bench report)."""
    setup(root, cfg)
    return mlflow.get_run(run_id)
