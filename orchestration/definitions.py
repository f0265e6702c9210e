"""The one Dagster entry point: `dagster dev -m orchestration.definitions` (or `dagster asset
materialize --select '*' --partition sample -m orchestration.definitions`).

Assets are the pipeline's stage outputs, partitioned by the datasets of params.yaml; resources
only override params.yaml, so this computes what `dvc repro` and `cotpd run` compute.

Where steps run is deployment configuration, not code: $COTPD_DAGSTER_EXECUTOR picks the executor
(multiprocess by default: one process per step on this machine; `celery` or `k8s` on a cluster,
with dagster-celery / dagster-k8s installed at the Dagster release's version) and the run config
files in orchestration/run_configs/ configure it.
"""
from __future__ import annotations

import os

from dagster import AssetSelection, Definitions, ExecutorDefinition, define_asset_job, in_process_executor, \
    multiprocess_executor

from .assets import STAGE_ASSETS
from .checks import CHECKS
from .resources import default_resources

EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")


def executor(kind: str | None = None) -> ExecutorDefinition:
    kind = kind or os.environ.get("COTPD_DAGSTER_EXECUTOR", "multiprocess")
    if kind == "multiprocess":
        return multiprocess_executor
    if kind == "in_process":
        return in_process_executor
    if kind == "celery":
        # lazy: optional (pip install -e '.[cluster]'); dagster-celery's executor behind a broker pre-flight
        from .cluster import checked_celery_executor

        return checked_celery_executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor  # lazy: optional (pip install dagster-k8s, same release line)

        return k8s_job_executor
    raise ValueError(f"COTPD_DAGSTER_EXECUTOR must be one of {EXECUTORS}, got {kind!r}")


# every asset of one dataset; baseline_model and distilled_model run side by side where the
# executor has room (run config: orchestration/run_configs/)
pipeline_job = define_asset_job("cotpd_pipeline", selection=AssetSelection.all(),
                                description="every stage of one dataset, from the raw splits to the test metrics")

defs = Definitions(
    assets=STAGE_ASSETS,
    asset_checks=CHECKS,
    jobs=[pipeline_job],
    resources=default_resources(),
    executor=executor(),
)
