"""The one Dagster entry point: `dagster dev -m orchestration.definitions` (or `dagster asset
materialize --select '*' --partition sample -m orchestration.definitions`).

Assets are the pipeline's stage outputs, partitioned by the datasets of params.yaml; resources
only override params.yaml, so this computes what `dvc repro` and `cotpd run` compute.
"""
from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, multiprocess_executor

from .assets import STAGE_ASSETS
from .checks import CHECKS
from .resources import default_resources

# every asset of one dataset, steps in parallel processes where the lineage allows (baseline_model
# beside distilled_model); a cluster swaps the executor through run config (orchestration/run_configs)
pipeline_job = define_asset_job(
    "cotpd_pipeline", selection=AssetSelection.all(),
    description="every stage of one dataset, from the raw splits to the test metrics")

defs = Definitions(
    assets=STAGE_ASSETS,
    asset_checks=CHECKS,
    jobs=[pipeline_job],
    resources=default_resources(),
    # at most two step processes: training is CPU-heavy and each step imports torch
    executor=multiprocess_executor.configured({"max_concurrent": 2}),
)
