"""Where the MLflow store is, and how an MLflow model URI becomes a trained student folder.

`cotpd predict --model models:/cotpd-sample@champion` (or `models:/<name>/<version>`,
`runs:/<run_id>/model`, `models:/<model_id>`) downloads the pyfunc model through MLflow from the store
named by params.yaml (`tracking.uri`, relative to the project root) and reads the student folder that
cotpd.serving.pyfunc logged as its artifact "student".
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import CotpdError

URI_SCHEMES = ("models:/", "runs:/")
STUDENT_ARTIFACT = "student"  # the name cotpd.serving.pyfunc.log_pyfunc gives the trained folder


def tracking_uri(root: Path, uri: str) -> str:
    """Resolve a relative sqlite path against the project root (not the working directory)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        db = (Path(root) / uri[len(prefix):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(db)
    return uri


def is_model_uri(model: str) -> bool:
    return str(model).startswith(URI_SCHEMES)


def _missing(uri: str, exc: Exception) -> CotpdError:
    """The registry's answer for a name, alias, version or run that does not exist, in one line."""
    what = "the registered model or its alias/version" if uri.startswith("models:/") else "the run or its model"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CotpdError(f"{uri}: {what} does not exist in the MLflow store ({first})")


@contextlib.contextmanager
def student_folder(uri: str, store_uri: str) -> Iterator[Path]:
    """Download the pyfunc model at `uri` into a temporary folder and yield its student folder (the
    folder is removed on exit: load the student inside the block)."""
    import mlflow  # lazy: seconds to import, and only a model URI needs it
    from mlflow.exceptions import MlflowException  # lazy: with mlflow

    # MLflow's download bar in a terminal only: in a log it is one line per file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(sys.stderr.isatty()).lower())
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_registry_uri(store_uri)
    with tempfile.TemporaryDirectory(prefix="cotpd-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            flavor = mlflow.models.Model.load(local).flavors.get("python_function") or {}
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise _missing(uri, exc) from None
            raise
        entry = (flavor.get("artifacts") or {}).get(STUDENT_ARTIFACT)
        if not entry:
            raise CotpdError(f"{uri}: not a cotpd student model (its pyfunc has no artifact '{STUDENT_ARTIFACT}')")
        yield local / entry["path"]
