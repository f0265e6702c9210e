"""Stage 'evaluate': score every trained variant on the test split, text only as deployed.

Writes Layout.metrics(variant) (full metrics: overall, per type, scheme, n), Layout.metrics_summary
(flat keys per variant for `dvc metrics`) and outputs/<ds>/plots/ (per-type F1 bars; RE also a
confusion matrix) for `dvc plots`. The cotpd student is scored on its prompt view; with
eval.view=knowledge its knowledge view is scored as well (key "knowledge_view").

Cross-dataset: `cross_from=<other dataset>` scores the models trained on that dataset on this one's
test split, gold types renamed into the model's through both datasets' `type_map` and types no map
covers counted as misses (cotpd.training.cross; metrics/cross_<other>_<variant>.json). Any one model
(a folder or an MLflow runs:/ URI) on any split: `cotpd evaluate --model`, cotpd.training.cross.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import plots
from ..errors import ConfigError
from ..io import write_json
from ..model.student import load_student
from ..params import Layout, Params, dataset_params
from ..training import cross, evaluate as M
from ..training.corpus import load_split
from ..training.loop import resolve_device

log = logging.getLogger(__name__)


def plots_dir(layout: Layout) -> Path:
    return layout.base / "plots"


def run(dataset: str, root: Path, params: Params | dict, variants: list[str] | None = None,
        cross_from: str | None = None, **resources) -> dict:
    root = Path(root)
    dp, layout = dataset_params(params, dataset), Layout(root, dataset)
    variants = variants or dp.train.variants
    device = resolve_device(dp.train.device)
    if dp.train.num_threads:
        torch.set_num_threads(dp.train.num_threads)
    bf16 = dp.train.bf16
    test = load_split(dataset, root, params, "test")
    summary, missing, per_variant = {}, [], {}
    source = Layout(root, cross_from) if cross_from else layout
    for v in variants:
        mdir, name = source.model_dir(v), f"cross_{cross_from}_{v}" if cross_from else v
        if not (mdir / "config.json").exists():
            missing.append(v)
            log.warning("%s: no trained %s model in %s; run `cotpd train --variant %s` first", dataset, v, mdir, v)
            continue
        model = load_student(mdir, device)
        if cross_from:
            m = cross.score(model, str(mdir), dataset, root, params, "test", unmapped="miss")
        else:
            m = M.evaluate(model, test, "prompt", bf16=bf16)
        if dp.eval.view == "knowledge" and model.variant == "cotpd":
            m["knowledge_view"] = M.evaluate(model, test, "knowledge", bf16=bf16)
        m.update(variant=v, dataset=dataset, model_dir=str(mdir), trained_on=cross_from or dataset)
        write_json(layout.metrics(name), m)
        per_variant[name] = m
        summary.update(M.flat(m, f"{name}."))
        if "knowledge_view" in m:
            summary.update({f"{name}.knowledge_view.{k}": x for k, x in M.flat(m["knowledge_view"]).items()})
    if not per_variant:
        raise ConfigError(f"{dataset}: no trained model for any of {variants} under {source.base / 'models'}")
    if cross_from:  # leave this dataset's own metrics.json alone
        write_json(layout.base / "metrics" / f"cross_{cross_from}.json", summary)
        return {"dataset": dataset, "trained_on": cross_from, "f1": {v: m["f1"] for v, m in per_variant.items()},
                "missing": missing}
    write_json(layout.metrics_summary, summary)
    plots = _plots(layout, dataset, per_variant)
    return {"dataset": dataset, "variants": sorted(per_variant), "missing": missing,
            "f1": {v: m["f1"] for v, m in per_variant.items()}, "metrics": str(layout.metrics_summary),
            "plots": [str(p) for p in plots]}


def _plots(layout: Layout, dataset: str, per_variant: dict[str, dict]) -> list[Path]:
    out_dir = plots_dir(layout)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    series = {v: (m.get("per_type") or m.get("per_relation") or {}) for v, m in per_variant.items()}
    if any(series.values()):
        path = out_dir / "per_type_f1.png"
        plots.save(plots.per_type_f1(series, title=f"{dataset}: per-type test F1"), path)
        written.append(path)
    for v, m in per_variant.items():
        conf = m.get("confusion")
        if conf and conf.get("labels"):
            path = out_dir / f"confusion_{v}.png"
            plots.save(plots.confusion(conf["labels"], conf["matrix"], title=f"{dataset} {v}: confusion"), path)
            written.append(path)
    return written

