"""Stage 'train': train one student variant (baseline | knowledge | cotpd) on a prepared dataset.

Writes Layout.model_dir(variant): the best dev-F1 checkpoint (encoder/ + heads.pt + config.json).
The test split is scored here too so that the MLflow run carries test metrics; the evaluate stage
writes the DVC metrics files from the saved checkpoints.

An interrupted training (killed, or stopped by SIGTERM) resumes from its checkpoint beside the model
folder when rerun with the same params, in the same MLflow run; `fresh` (`cotpd train --fresh`)
trains from scratch.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from ..config import DatasetParams
from ..params import Params, dataset_params
from ..training.job import prepare_training


def _tracking(root: Path, dataset: str, variant: str, dp: DatasetParams, tracker, resume_run_id: str | None):
    """THE one place MLflow tracking is wired in (cotpd.training.tracking). tracker: None = track with
    the params' settings, a dict = extra tags (e.g. the Dagster run id), False = no tracking.
    `resume_run_id`: the run of the training being resumed, continued rather than opened anew."""
    if tracker is False or not dp.tracking.enabled:
        return contextlib.nullcontext(None)
    from ..training import tracking  # lazy: mlflow takes seconds to import; untracked runs never need it

    return tracking.training_run(root, dataset, variant, dp, tags=tracker or None, resume_run_id=resume_run_id)


def run(dataset: str, root: Path, params: Params | dict, variant: str = "cotpd", tracker=None,
        fresh: bool = False, **resources) -> dict:
    root = Path(root)
    dp = dataset_params(params, dataset)
    job = prepare_training(dataset, variant, params, root, fresh=fresh)  # finds the checkpoint to resume
    with _tracking(root, dataset, variant, dp, tracker, job.resume_run_id) as mlrun:
        result = job.run(on_epoch_end=mlrun.log_epoch if mlrun is not None else None,
                         run_id=mlrun.run_id if mlrun is not None else None)
        if mlrun is not None:
            mlrun.log_result(result)
            if dp.tracking.log_model:
                mlrun.log_student_model(result.model_dir, dp.task)
    summary = {"dataset": dataset, "variant": variant, "model_dir": result.model_dir,
               "best_epoch": result.best_epoch, "dev_f1": result.best_dev.get("f1"),
               "test_f1": (result.test or {}).get("f1"), "train_tokens_per_s": round(result.train_tokens_per_s, 1),
               "n_train": result.n_train, "timings": result.timings, "resumed_from_epoch": result.resumed_from_epoch}
    if mlrun is not None:
        summary.update(mlflow_run_id=mlrun.run_id, mlflow_url=mlrun.url)
    return summary
