"""The pipeline as Dagster assets: one asset per stage output, partitioned by dataset.

Each asset calls the same library function as the CLI and dvc.yaml (`cotpd.pipeline.run_stage`),
so Dagster adds scheduling, lineage, metadata and checks but computes nothing of its own. Asset
names come from `cotpd.pipeline.STAGES`, upstream assets from `cotpd.pipeline.DEPENDS`; a test
compares this graph with dvc.yaml's.
"""
# no `from __future__ import annotations`: Dagster reads the context/resource annotations at decoration

import hashlib
import json
from pathlib import Path

from dagster import (AssetExecutionContext, AssetsDefinition, Backoff, DataVersion, Failure, Jitter, MaterializeResult,
                     MetadataValue, RetryPolicy, StaticPartitionsDefinition, asset)

from cotpd.errors import ConfigError, CotpdError, DataError, LedgerMiss
from cotpd.params import Layout, Params, as_params
from cotpd.pipeline import DEPENDS, PACKAGE_ROOT, STAGES, code_hash, run_stage
from cotpd.prompts import prompts_version, stage_prompts

from . import metadata as md
from .resources import CaptionerResource, LLMResource, MLflowResource, ProjectResource, resolved_params

GROUP = "cotpd"
LLM_POOL = "llm"  # one concurrency pool for every step that calls the LLM (limit: dagster.yaml)
# trainings share a pool too: on one machine two at once fight over the cores / the GPU
TRAIN_POOL = "train"
LLM_STAGES = ("captions", "knowledge", "augment")
# An LLM step that still fails once the client's own retries (429/5xx/timeouts, cotpd.llm.client)
# are spent met an outage longer than they cover: Dagster runs the step again after 0-30 s, 0-90 s,
# 0-210 s (exponential backoff, full jitter so parallel partitions do not return in step). A retry
# costs only the requests that failed: the answers already received are in the ledger.
LLM_RETRY = RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL)
# failures no retry can fix (bad params or data, a replay-mode ledger miss, a rejected API key)
PERMANENT = (ConfigError, DataError, LedgerMiss)
# Where a cluster executor puts each step (ignored by the local executors): LLM steps on the Celery
# queue "llm", training on "gpu" and, under the k8s executor, in pods that ask for one GPU.
LLM_TAGS = {"dagster-celery/queue": "llm"}
GPU_TAGS = {"dagster-celery/queue": "gpu",
            "dagster-k8s/config": json.dumps({"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}})}
# the train stage is one asset per variant; the variant names of params.yaml train.variants
VARIANT_ASSETS = {"baseline": "baseline_model", "cotpd": "distilled_model"}


def _params() -> Params:
    return as_params(ProjectResource().params())


def dataset_keys(params: Params | None = None) -> list[str]:
    """Every dataset of params.yaml: one partition each (add a dataset there, it appears here)."""
    return (params or _params()).datasets


# params.yaml as the definitions load it, read and validated once: the partitions, the model assets
# and the pools below are built from it
PARAMS = _params()
DATASETS = StaticPartitionsDefinition(dataset_keys(PARAMS))
# one model asset per params.yaml train.variants entry, as dvc.yaml has one train stage per variant
VARIANTS = list(PARAMS.file.train.variants)


def variant_asset(variant: str) -> str:
    """The asset name of a trained variant (the paper's two rows keep their established names)."""
    return VARIANT_ASSETS.get(variant, f"{variant}_model")


def upstream(stage: str) -> list[str]:
    """Asset names of a stage's upstream stages (train stands for every model asset)."""
    names = []
    for s in DEPENDS[stage]:
        names += [variant_asset(v) for v in VARIANTS] if s == "train" else [STAGES[s][1]]
    return names


def code_version(stage: str, prompt_dir: str | Path | None = None, root: str | Path = PACKAGE_ROOT) -> str:
    """Hash of the code the stage depends on (cotpd.pipeline.code_deps, what dvc.yaml lists) and of the
    prompt files it reads: editing either marks the asset stale in the Dagster UI ("new code
    version"); once re-materialized with new content (a new data version, `content_version`), its
    dependents turn stale in turn."""
    h = hashlib.sha256(code_hash(stage, root).encode())
    names = stage_prompts(stage)
    if names:
        h.update(prompts_version(names, prompt_dir).encode())
    return h.hexdigest()[:12]


def _captions_pool(params: Params) -> str | None:
    """image_captions joins the LLM pool only where some dataset captions with the vision LLM."""
    kinds = {params.dataset(ds).captions.captioner for ds in params.datasets}
    return LLM_POOL if "vision_llm" in kinds else None


def materialize_stage(context: AssetExecutionContext, stage: str, project: ProjectResource, *,
                      llm: LLMResource | None = None, captioner: CaptionerResource | None = None,
                      mlflow: MLflowResource | None = None, variant: str | None = None) -> dict:
    """Run one stage for the partition's dataset with the resources the asset takes; return its summary."""
    ds = context.partition_key
    root = project.path()
    params = resolved_params(project, *(r for r in (llm, captioner, mlflow) if r is not None))
    dparams = params.dataset(ds)
    kw: dict = {}
    if llm is not None:
        kw.update(llm.stage_kwargs(stage, dparams, root))
    if captioner is not None:
        kw.update(captioner.stage_kwargs(stage, dparams, root))
    if stage == "train":
        kw["variant"] = variant
        kw["tracker"] = mlflow.tags(context.run.run_id, context.asset_key.to_user_string(), ds)
    context.log.info(f"[{ds}] stage {stage}{'@' + variant if variant else ''} under {root}")
    if llm is None:
        return run_stage(stage, ds, root, params, **kw)
    with llm.credentials():
        try:
            return run_stage(stage, ds, root, params, **kw)
        except CotpdError as exc:
            from cotpd.llm.client import FatalLLMError  # lazy: loads openai; the stage has imported it
            if isinstance(exc, (*PERMANENT, FatalLLMError)):  # fail now instead of after LLM_RETRY's waits
                raise Failure(description=str(exc), allow_retries=False) from exc
            raise


def content_version(*paths: Path) -> DataVersion | None:
    """The data version of an output: a hash of its files' bytes, so downstream assets turn stale
    when (and only when) the content changed -- what DVC's hashes do for dvc.yaml."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else [])
                   if f.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return DataVersion(h.hexdigest()[:16])


def _result(summary: dict, extra: dict | None = None, outputs: tuple[Path, ...] = ()) -> MaterializeResult:
    meta = md.summary_metadata(summary)
    meta.update({k: v for k, v in (extra or {}).items() if v is not None})
    return MaterializeResult(metadata=meta, data_version=content_version(*outputs))


def _layout(context: AssetExecutionContext, project: ProjectResource) -> Layout:
    return Layout(project.path(), context.partition_key)


_COMMON = dict(partitions_def=DATASETS, group_name=GROUP, kinds={"python"})


@asset(**_COMMON, deps=upstream("prepare"), code_version=code_version("prepare"))
def raw_dataset(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
    """The dataset's train/valid/test splits, read from their source format into JSONL records."""
    summary = materialize_stage(context, "prepare", project)
    lay = _layout(context, project)
    return _result(summary, {"preview": md.preview(lay.raw("train"))}, (lay.raw_dir,))


@asset(**_COMMON, deps=upstream("captions"), code_version=code_version("captions"),
       pool=_captions_pool(PARAMS), op_tags=LLM_TAGS if _captions_pool(PARAMS) else None,
       retry_policy=LLM_RETRY)
def image_captions(context: AssetExecutionContext, project: ProjectResource, llm: LLMResource,
                   captioner: CaptionerResource) -> MaterializeResult:
    """One caption per image the dataset references (precomputed, BLIP-2 or a vision LLM)."""
    summary = materialize_stage(context, "captions", project, llm=llm, captioner=captioner)
    lay = _layout(context, project)
    return _result(summary, {"preview": md.preview(lay.captions)}, (lay.captions,))


@asset(**_COMMON, deps=upstream("knowledge"), code_version=code_version("knowledge"), pool=LLM_POOL, op_tags=LLM_TAGS,
       retry_policy=LLM_RETRY)
def cot_knowledge(context: AssetExecutionContext, project: ProjectResource, llm: LLMResource) -> MaterializeResult:
    """Chain-of-thought knowledge from the LLM per sample: noun, sentence and multimodal grains."""
    summary = materialize_stage(context, "knowledge", project, llm=llm)
    cols = ["sample_id", "split", "grain", "text", "source"]
    lay = _layout(context, project)
    return _result(summary, {"preview": md.preview(lay.knowledge, cols)}, (lay.knowledge,))


@asset(**_COMMON, deps=upstream("augment"), code_version=code_version("augment"), pool=LLM_POOL, op_tags=LLM_TAGS,
       retry_policy=LLM_RETRY)
def augmented_dataset(context: AssetExecutionContext, project: ProjectResource, llm: LLMResource) -> MaterializeResult:
    """LLM-augmented training samples (style, entity, image) that passed the fact check and the suite."""
    summary = materialize_stage(context, "augment", project, llm=llm)
    lay = _layout(context, project)
    return _result(summary, {"preview": md.preview(lay.augmented), "rejected_preview": md.preview(lay.rejected)},
                   (lay.augmented,))


MODEL_DOCS = {
    "baseline": "The student trained on the text alone (the paper's baseline row), tracked as an MLflow run.",
    "knowledge": "The knowledge view alone (text + caption + CoT at inference), tracked as an MLflow run.",
    "cotpd": "The CoTPD student: knowledge view distilled into the text-only prompt view, tracked in MLflow.",
}


def model_asset(variant: str) -> AssetsDefinition:
    """The trained `variant` of the partition's dataset: one asset per train.variants entry."""

    @asset(**_COMMON, name=variant_asset(variant), description=MODEL_DOCS[variant], deps=upstream("train"),
           code_version=code_version("train"), pool=TRAIN_POOL, op_tags=GPU_TAGS)
    def _model(context: AssetExecutionContext, project: ProjectResource, mlflow: MLflowResource) -> MaterializeResult:
        summary = materialize_stage(context, "train", project, mlflow=mlflow, variant=variant)
        extra = {}
        url = summary.get("mlflow_url") or summary.get("run_url")
        if url:
            extra["mlflow_run"] = MetadataValue.url(url)
        lay = _layout(context, project)
        return _result(summary, extra, (lay.model_dir(variant), lay.metrics(variant)))

    return _model


MODEL_ASSETS = {v: model_asset(v) for v in VARIANTS}


@asset(**_COMMON, deps=upstream("evaluate"), code_version=code_version("evaluate"))
def metrics(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
    """Test-split precision, recall and F1 of every trained student, read from text alone."""
    summary = materialize_stage(context, "evaluate", project)
    lay = _layout(context, project)
    extra = {}
    plots = [Path(p) for p in summary.get("plots") or [] if Path(p).is_file()]
    if plots:  # per-type F1 bars of every variant (evaluate writes them under outputs/<ds>/plots/)
        extra["plot"] = md.image_md(plots[0], f"{context.partition_key}: {plots[0].stem}")
        extra["plot_path"] = MetadataValue.path(str(plots[0]))
    f1 = summary.get("f1")
    if isinstance(f1, dict):
        extra["f1_table"] = MetadataValue.md(md.md_table([{"variant": v, "test F1": x} for v, x in f1.items()]))
        extra.update({f"f1_{v}": MetadataValue.float(float(x)) for v, x in f1.items() if isinstance(x, (int, float))})
    return _result(summary, extra, (lay.metrics_summary,))


STAGE_ASSETS = [raw_dataset, image_captions, cot_knowledge, augmented_dataset, *MODEL_ASSETS.values(), metrics]
