"""Dagster resources: what the assets hand to the library stages, each swappable per deployment.

Every resource only *overrides* params.yaml (the one home of hyperparameters): a field left at None
keeps the value params.yaml gives, so `dagster asset materialize` and `dvc repro` compute the same
thing unless a deployment deliberately swaps a resource (e.g. an LLM resource pointing at a vLLM
server, or an MLflow resource pointing at a team tracking server). Subclass a resource and override
its `stage_kwargs` to inject a ready-made object (tests inject a scripted LLM runner that way).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from cotpd.errors import ConfigError
from cotpd.config import DatasetParams
from cotpd.params import Params, apply_set, find_root, read_params

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class ProjectResource(ConfigurableResource):
    """The project folder: params.yaml, outputs/, ledger/ and mlruns/ are resolved against it."""

    root: str = Field(default="", description="project root; empty = $COTPD_ROOT, else the folder "
                      "holding params.yaml above the working directory, else this checkout")

    def path(self) -> Path:
        if self.root:
            return Path(self.root).resolve()
        try:
            return find_root()
        except ConfigError:
            return PACKAGE_ROOT

    def params(self) -> dict:
        return read_params(self.path())


class LLMResource(ConfigurableResource):
    """The LLM that writes CoT knowledge, augmentations and (vision LLM) captions."""

    mode: Optional[str] = Field(default=None, description="replay | record | refresh")
    backend: Optional[str] = Field(default=None, description="local | openai")
    base_url: Optional[str] = Field(default=None, description="OpenAI-compatible endpoint (vLLM ...)")
    model: Optional[str] = None
    batch_api: Optional[bool] = None
    concurrency: Optional[int] = None
    # set from EnvVar("OPENAI_API_KEY"): Dagster shows the variable's name, never its value
    api_key: Optional[str] = Field(default=None, description="from EnvVar('OPENAI_API_KEY')")

    def overrides(self) -> dict:
        over = _drop_none({"mode": self.mode, "backend": self.backend, "base_url": self.base_url,
                           "model": self.model, "batch_api": self.batch_api, "concurrency": self.concurrency})
        return {"llm": over} if over else {}

    @contextmanager
    def credentials(self) -> Iterator[None]:
        """The key where the OpenAI client looks for it ($OPENAI_API_KEY), for this call only."""
        if not self.api_key or os.environ.get("OPENAI_API_KEY") == self.api_key:
            yield
            return
        old = os.environ.get("OPENAI_API_KEY")
        os.environ["OPENAI_API_KEY"] = self.api_key
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("OPENAI_API_KEY", None)
            else:
                os.environ["OPENAI_API_KEY"] = old

    def stage_kwargs(self, stage: str, dparams: DatasetParams, root: Path) -> dict[str, Any]:
        """Extra keyword arguments for a stage (default none: the stage builds its runner from params)."""
        return {}


class CaptionerResource(ConfigurableResource):
    """How images become captions: precomputed files, a BLIP-2 model or the vision LLM."""

    kind: Optional[str] = Field(default=None, description="precomputed | blip2 | vision_llm")

    def overrides(self) -> dict:
        return {"captions": {"captioner": self.kind}} if self.kind else {}

    def stage_kwargs(self, stage: str, dparams: DatasetParams, root: Path) -> dict[str, Any]:
        return {}


class MLflowResource(ConfigurableResource):
    """Where training runs are tracked; tags each run with the Dagster run that made it."""

    tracking_uri: Optional[str] = Field(default=None, description="default: params.yaml tracking.uri")
    experiment: Optional[str] = None
    ui_url: Optional[str] = Field(default=None, description="MLflow UI base URL for run links")

    def overrides(self) -> dict:
        over = _drop_none({"uri": self.tracking_uri, "experiment": self.experiment, "ui_url": self.ui_url})
        return {"tracking": over} if over else {}

    def tags(self, run_id: str, asset: str, partition: str | None) -> dict[str, str]:
        return _drop_none({"orchestrator": "dagster", "dagster_run_id": run_id, "dagster_asset": asset,
                           "dagster_partition": partition})


def resolved_params(project: ProjectResource, *resources) -> Params:
    """params.yaml with every resource's overrides applied like a `--set` (so they also beat a
    dataset's own overrides), validated once: what the stage then sees."""
    params = project.params()
    for res in resources:
        params = apply_set(params, res.overrides())
    return Params(params)


def default_resources() -> dict[str, ConfigurableResource]:
    """The resources `orchestration.definitions` binds: params.yaml as is, key from the environment."""
    key = EnvVar("OPENAI_API_KEY") if os.environ.get("OPENAI_API_KEY") else None
    return {
        "project": ProjectResource(),
        "llm": LLMResource(api_key=key),
        "captioner": CaptionerResource(),
        "mlflow": MLflowResource(),
    }
