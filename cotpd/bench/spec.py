"""The grid of `cotpd bench`: its modes, one training (RunSpec) and the trainings a mode plans."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import Variant
from ..io import read_jsonl
from ..params import Layout
from ..pipeline import VARIANTS
from .levers import LEVERS

ModeName = Literal["smoke", "quick", "full", "screen"]
Group = Literal["main", "fraction", "ablation", "cross", "levers"]
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class LLMLoad:
    """The load the speed section puts on the fake LLM server (cotpd.bench.llm.bench)."""
    calls: int
    concurrency: int
    latency: float
    seq_calls: int
    replay_n: int


@dataclass(frozen=True)
class SpeedPlan:
    """How much the speed section measures."""
    bare_steps: int        # batches of the bare-loop / our-loop throughput comparison
    infer_n: int           # test sentences of the inference timing
    llm: LLMLoad
    dvc: bool              # time a `dvc repro` no-op (needs the project's dvc.yaml and data)


@dataclass(frozen=True)
class Mode:
    """What a mode changes in params.yaml and which grid it trains; the report prints the changes,
    so a quick number is never mistaken for a full one."""
    datasets: tuple[str, ...]
    seeds: int
    fractions: tuple[float, ...]
    fraction_datasets: tuple[str, ...]     # the datasets with a data-efficiency curve
    speed: SpeedPlan
    budget_min: float | None = None        # skip trainings after this many minutes (None: no limit)
    train: dict = field(default_factory=dict)                        # train.* for every dataset
    train_by_dataset: dict[str, dict] = field(default_factory=dict)  # train.* where one differs
    base_fraction: dict[str, float] = field(default_factory=dict)    # train on a subset of train
    tiny_encoder: bool = False             # a tiny random encoder (smoke: the scores mean nothing)
    screen: bool = False                   # the main grid and every lever (cotpd.bench.levers), no ablations


_LLM_LOAD = LLMLoad(calls=1000, concurrency=32, latency=0.2, seq_calls=30, replay_n=20_000)
MODES: dict[str, Mode] = {
    "smoke": Mode(datasets=("sample", "sample_mnre"), seeds=2, fractions=(0.5, 1.0), fraction_datasets=("sample",),
                  train={"epochs": 1, "max_length": 32, "knowledge_max_length": 48, "batch_size": 8,
                         "prompt": {"k": 2, "layers": 1, "heads": 2}, "device": "cpu"},
                  tiny_encoder=True,
                  speed=SpeedPlan(bare_steps=3, infer_n=32, dvc=False,
                                  llm=LLMLoad(calls=40, concurrency=8, latency=0.01, seq_calls=4, replay_n=200))),
    "quick": Mode(datasets=("twitter2015", "mnre"), seeds=1, fractions=FRACTIONS, fraction_datasets=("twitter2015",),
                  budget_min=55, train={"epochs": 2, "patience": 2, "max_length": 48, "knowledge_max_length": 96},
                  # RE keeps room for the 4 entity markers (a marker cut off falls back to [CLS])
                  train_by_dataset={"mnre": {"max_length": 64}},
                  base_fraction={"twitter2015": 0.25, "mnre": 0.1},
                  speed=SpeedPlan(bare_steps=10, infer_n=500, llm=_LLM_LOAD, dvc=True)),
    # issue #19's cheap setting: levers are judged on dev F1 here, the winner confirmed with --full
    "screen": Mode(datasets=("twitter2015", "mnre"), seeds=2, fractions=(), fraction_datasets=(),
                   train={"epochs": 2, "patience": 2}, base_fraction={"twitter2015": 0.25, "mnre": 0.25},
                   screen=True, speed=SpeedPlan(bare_steps=10, infer_n=500, llm=_LLM_LOAD, dvc=False)),
    "full": Mode(datasets=("twitter2015", "mnre"), seeds=3, fractions=FRACTIONS,
                 fraction_datasets=("twitter2015", "mnre"),
                 speed=SpeedPlan(bare_steps=30, infer_n=2000, llm=_LLM_LOAD, dvc=True)),
}


@dataclass
class RunSpec:
    """One training of the grid."""
    dataset: str
    variant: Variant
    seed: int
    group: Group = "main"
    label: str = ""                # e.g. "50%", "grain=noun", "no style"
    train: dict = field(default_factory=dict)     # extra train.* overrides
    knowledge_grains: list[str] | None = None     # keep only these grains in knowledge.jsonl
    fraction: float = 1.0
    test_on: str | None = None     # group "cross": the dataset the main-grid model of `dataset` is scored on

    @property
    def key(self) -> str:
        tail = f"-{self.label}".replace(" ", "_").replace("=", "-").replace("%", "pct") if self.label else ""
        return f"{self.dataset}-{self.group}-{self.variant}{tail}-s{self.seed}"


@dataclass
class Plan:
    specs: list[RunSpec]
    grains: dict[str, list[str]]   # CoT grains in each dataset's knowledge.jsonl
    notes: list[str]               # the ablations the data does not allow


def plan_grid(mode: Mode, datasets: list[str], seeds: list[int], work: Path, levers: list[str] = ()) -> Plan:
    """The trainings of a grid, the main grid first (its runs feed the time estimate and the speed
    section), then data efficiency, then the ablations the prepared data in `work` allows, then
    the levers (each a CoTPD with train.* overrides, at every seed: their gains are paired)."""
    plan = Plan([RunSpec(ds, v, s) for s in seeds for ds in datasets for v in VARIANTS], {}, [])
    for ds in datasets:  # every mode's report says whether the knowledge view had any CoT
        plan.grains[ds] = _grains(Layout(work, ds))
    lever_specs = [RunSpec(ds, "cotpd", s, "levers", name, train=copy.deepcopy(LEVERS[name]))
                   for s in seeds for ds in datasets for name in levers]
    if mode.screen:
        plan.specs += lever_specs
        return plan
    # data efficiency: baseline and CoTPD at every seed, the knowledge view at the first; the
    # subset is drawn from the training seed, so every variant of a (fraction, seed) sees the
    # same sentences. Smallest fractions first: they are the cheapest points of the curve.
    for frac in [f for f in mode.fractions if f < 1.0]:  # 100% is the main grid's run
        for ds in [d for d in mode.fraction_datasets if d in datasets]:
            plan.specs += [RunSpec(ds, v, s, "fraction", f"{frac:.0%}", fraction=frac)
                           for s in seeds for v in ("baseline", "cotpd")]
            plan.specs.append(RunSpec(ds, "knowledge", seeds[0], "fraction", f"{frac:.0%}", fraction=frac))
    for ds in datasets:
        plan.specs += _ablations(plan, Layout(work, ds), ds, seeds[0])
    plan.specs += lever_specs
    return plan


def cross_specs(datasets: list[str], tasks: dict[str, str], seed: int) -> list[RunSpec]:
    """Cross-dataset transfer: every ordered pair (A, B) of NER datasets, the first seed's main-grid
    baseline and CoTPD of A scored on B's test split (evaluations, no training: cotpd.bench.cross)."""
    ner = [ds for ds in datasets if tasks.get(ds) == "ner"]
    return [RunSpec(a, v, seed, "cross", f"on {b}", test_on=b)
            for a in ner for b in ner if a != b for v in ("baseline", "cotpd")]


def _grains(lay: Layout) -> list[str]:
    """The CoT grains with any text in a prepared dataset's knowledge.jsonl."""
    if not lay.knowledge.exists():
        return []
    return sorted({r["grain"] for r in read_jsonl(lay.knowledge) if (r.get("text") or "").strip()})


def _ablations(plan: Plan, lay: Layout, ds: str, seed: int) -> list[RunSpec]:
    grains = plan.grains[ds]
    specs = []
    if len(grains) > 1:
        specs += [RunSpec(ds, "cotpd", seed, "ablation", f"grain={g}", knowledge_grains=[g]) for g in grains]
    else:
        plan.notes.append(f"{ds}: CoT grain ablation skipped (knowledge grains present: {grains or 'none'})")
    kinds = sorted({(r.get("meta") or {}).get("aug") for r in read_jsonl(lay.augmented)} - {None}) \
        if lay.augmented.exists() else []
    if kinds:
        specs.append(RunSpec(ds, "cotpd", seed, "ablation", "no augmentation", train={"use_augmented": False}))
        specs += [RunSpec(ds, "cotpd", seed, "ablation", f"no {k}",
                          train={"use_augmented": True, "augment_types": [x for x in kinds if x != k]})
                  for k in kinds]
    else:
        plan.notes.append(f"{ds}: augmentation ablation skipped (no augmented samples in {lay.augmented.name})")
    return specs
