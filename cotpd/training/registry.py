"""The MLflow Model Registry: the best CoTPD student of each dataset as `cotpd-<dataset>@champion`.

`cotpd bench` calls `register_champions` when its grid is done. The champion is the CoTPD training
with the highest dev F1 among those whose student was logged as a model (`--log-models`); the test
split never chooses. A champion that is already the alias's model is left as it is (no new version),
so rerunning a finished bench changes nothing. Serve or predict with
`cotpd predict --model models:/cotpd-<dataset>@champion "text"`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from ..config import TrackingCfg
from . import tracking

log = logging.getLogger(__name__)

ALIAS = "champion"
VARIANT = "cotpd"


def model_name(dataset: str) -> str:
    return f"cotpd-{dataset}"


def candidates(records: list[dict]) -> dict[str, list[dict]]:
    """dataset -> its CoTPD records with a logged model, highest dev F1 first (ties: the earlier)."""
    out: dict[str, list[dict]] = {}
    for r in records:
        if r.get("variant") == VARIANT and r.get("mlflow_model_id") and r.get("dev_f1") is not None:
            out.setdefault(r["dataset"], []).append(r)
    return {ds: sorted(rs, key=lambda r: -float(r["dev_f1"])) for ds, rs in out.items()}


def _in_store(model_id: str) -> bool:
    """Whether this store holds the model (a record adopted from a committed report may come from
    another machine's store)."""
    try:
        mlflow.get_logged_model(model_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _alias_source(client: mlflow.MlflowClient, name: str) -> str | None:
    """models:/<model_id> of the alias's version (the sqlite registry keeps the source, not model_id)."""
    try:
        return client.get_model_version_by_alias(name, ALIAS).source
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # no such model or alias yet
            return None
        raise


def register_champions(root: Path, cfg: TrackingCfg, records: list[dict]) -> dict[str, str]:
    """Register each dataset's best CoTPD model and point `champion` at it; returns
    {dataset: "models:/<name>@champion"} for the datasets that have one."""
    found = candidates(records)
    if not found:
        return {}
    tracking.setup(root, cfg)
    client = mlflow.MlflowClient()
    out = {}
    for dataset, recs in sorted(found.items()):
        rec = next((r for r in recs if _in_store(r["mlflow_model_id"])), None)
        if rec is None:
            log.warning("%s: no logged CoTPD model of this bench is in the store; no %s", dataset, ALIAS)
            continue
        name, source = model_name(dataset), f"models:/{rec['mlflow_model_id']}"
        if _alias_source(client, name) != source:
            version = mlflow.register_model(source, name,
                                            tags={"dev_f1": str(rec["dev_f1"]), "mlflow_run_id": rec["mlflow_run_id"]})
            client.set_registered_model_alias(name, ALIAS, version.version)
            log.info("%s@%s -> version %s (run %s, dev F1 %.4f)", name, ALIAS, version.version,
                     rec["mlflow_run_id"], rec["dev_f1"])
        out[dataset] = f"models:/{name}@{ALIAS}"
    return out
