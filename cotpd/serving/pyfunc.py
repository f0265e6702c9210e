"""The student as an MLflow pyfunc model that takes raw text (what `mlflow models serve` exposes).

Input / output (a pandas DataFrame each way; JSON over HTTP as `dataframe_records`):
- NER: column "text" (raw string, whitespace-tokenized) -> column "entities": a JSON string holding
  a list of {"text", "type", "start", "end", "token_start", "token_end"} (character offsets into
  the input, end exclusive; see cotpd.serving.predict). A JSON string rather than nested objects so the
  column has one scalar type that the signature and every pandas/JSON round trip preserve.
- RE: columns "text", "head", "tail" (entity strings located in the text) -> columns "relation"
  (label) and "score" (its softmax probability).

The trained folder (encoder weights, heads, config) travels as the artifact "student" and the cotpd
package as code_paths, so the model loads wherever its pip requirements are installed, without the
project checkout.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from .predict import Predictor

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the name of the logged model: runs:/<run_id>/model
# the packages the model needs at load time (pinned to what trained it)
REQUIREMENTS = ("mlflow", "torch", "transformers", "pytorch-crf", "pandas", "pyyaml", "tokenizers")


def signature(task: str) -> ModelSignature:
    if task == "ner":
        return ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                              outputs=Schema([ColSpec("string", "entities")]))
    return ModelSignature(inputs=Schema([ColSpec("string", "text"), ColSpec("string", "head"),
                                         ColSpec("string", "tail")]),
                          outputs=Schema([ColSpec("string", "relation"), ColSpec("double", "score")]))


def pip_requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


class StudentModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around cotpd.serving.predict.Predictor (loaded once per process)."""

    # the explicit signature validates inputs; without this MLflow wants type hints on predict
    _skip_type_hint_validation = True

    def load_context(self, context):
        self.predictor = Predictor(context.artifacts["student"])

    def predict(self, context, model_input, params=None):
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "text" not in df.columns:
            raise mlflow.exceptions.MlflowException(f"input needs a 'text' column, got {list(df.columns)}")
        texts = ["" if v is None else str(v) for v in df["text"]]
        if self.predictor.task == "ner":
            ents = self.predictor.ner(texts)
            return pd.DataFrame({"entities": [json.dumps(e, ensure_ascii=False) for e in ents]})
        for col in ("head", "tail"):
            if col not in df.columns:
                raise mlflow.exceptions.MlflowException(f"a relation model needs a '{col}' column")
        rows = list(zip(texts, df["head"].astype(str), df["tail"].astype(str)))
        out = self.predictor.re(rows)
        return pd.DataFrame({"relation": [o["relation"] for o in out], "score": [o["score"] for o in out]})


def log_pyfunc(model_dir: Path, task: str, name: str = MODEL_NAME):
    """Log `model_dir` as a pyfunc model in the active run (a LoggedModel, MLflow 3); returns its
    ModelInfo (`model_id`; the run-relative URI is runs:/<run_id>/<name>)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: not a trained student (no config.json)")
    package = Path(__file__).resolve().parents[1]  # the whole cotpd package, not only serving/
    with tempfile.TemporaryDirectory() as tmp:
        # the code only: the embedded sample data and caches stay out of every logged model
        code = Path(tmp) / "cotpd"
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "sample"))
        with warnings.catch_warnings():
            # we pass an explicit signature; MLflow still nags about type hints and input examples
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=StudentModel(),
                artifacts={"student": str(model_dir)},
                code_paths=[str(code)],
                pip_requirements=pip_requirements(),
                signature=signature(task),
            )
    log.info("logged pyfunc model %s (%s)", info.model_id, info.model_uri)
    return info
