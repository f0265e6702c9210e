"""`cotpd explain`: where the CoTPD student and the text-only baseline disagree, and why it may be.

    cotpd explain --model outputs/twitter2015/models/cotpd --baseline outputs/twitter2015/models/baseline \
        --dataset twitter2015 [--split test] [--out results/explain] [--n 20]

Both models read text only, as deployed (CoTPD its prompt view, the baseline its text view). A
sentence (NER) counts as right when its predicted entities — strict IOB2 spans with their types, as
the metrics score them — equal the gold ones; an MNRE instance when its relation is the gold one.
Writes <out>/<dataset>.md:
  - how many sentences the two disagree on, and of those how many each gets right, overall and per
    entity type (the type's entities only; RE: per gold relation);
  - --n of those sentences (a sample seeded with params' seed, shown in split order), each with its
    tokens, gold entities (RE: head, tail and relation), both predictions, and the caption and CoT
    knowledge that the teacher (knowledge) view read in training — what CoTPD distilled from;
and <out>/<dataset>.json with the same counts and the ids shown. Gold types are mapped into the
models' as `cotpd evaluate --model` does (cotpd.training.cross), so a model trained on another
dataset of the task can be explained on this one.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..args import common, params_of, root_of, setup_logging
from ..errors import ConfigError, CotpdError
from ..io import atomic_write, write_json
from ..model.infer import predict
from ..model.student import load_student
from ..params import as_params, dataset_params
from ..readers.conll import entity_spans
from ..records import GRAINS, Sample
from . import evaluate as M
from .corpus import load_split
from .cross import model_label, open_model, resolve_types, trained_on
from .loop import resolve_device

ROLES = ("cotpd", "baseline")  # --model, --baseline


def outcome(task: str, labels) -> frozenset | str:
    """What is compared: NER the set of (type, start, end) entities, RE the relation."""
    return frozenset(entity_spans(list(labels))) if task == "ner" else labels


def _of_type(units: frozenset, typ: str) -> frozenset:
    return frozenset(u for u in units if u[0] == typ)


def _tally(rows: list[tuple]) -> dict:
    """rows of (gold, cotpd, baseline) outcomes where the two disagree -> the counts."""
    a = sum(g == x for g, x, _ in rows)
    b = sum(g == y for g, _, y in rows)
    return {"disagree": len(rows), "cotpd_right": a, "baseline_right": b, "neither": len(rows) - a - b}


def compare(task: str, gold: Sequence, pred_a: Sequence, pred_b: Sequence) -> dict:
    """Counts of disagreement overall and per entity type (RE: per gold relation), and the indices
    of the samples the two models disagree on."""
    g, a, b = ([outcome(task, x) for x in seq] for seq in (gold, pred_a, pred_b))
    idx = [i for i in range(len(g)) if a[i] != b[i]]
    out = {"n": len(g), **_tally([(g[i], a[i], b[i]) for i in idx]), "indices": idx, "per_type": {}}
    if task == "ner":
        types = sorted({u[0] for seq in (g, a, b) for s in seq for u in s})
        for t in types:
            rows = [(_of_type(x, t), _of_type(y, t), _of_type(z, t)) for x, y, z in zip(g, a, b)]
            out["per_type"][t] = {"gold": sum(len(r[0]) for r in rows), **_tally([r for r in rows if r[1] != r[2]])}
    else:
        support = Counter(g)
        for rel in sorted(support):
            rows = [(g[i], a[i], b[i]) for i in idx if g[i] == rel]
            out["per_type"][rel] = {"gold": support[rel], **_tally(rows)}
    return out


def choose(indices: list[int], n: int, seed: int) -> list[int]:
    """n of the disagreements, a seeded sample (all when fewer), in split order."""
    return sorted(random.Random(seed).sample(indices, n)) if len(indices) > n else list(indices)


def esc(text: str) -> str:
    """Text as Markdown shows it literally (tweets are full of *, _, #, @ and |)."""
    out = " ".join(str(text).split())
    for ch in "\\`*_[]<>|#":
        out = out.replace(ch, "\\" + ch)
    return out


def _entities(sample: Sample, labels: Sequence[str]) -> str:
    spans = entity_spans(list(labels))
    return " · ".join(f"{esc(' '.join(sample.tokens[s:e]))} [{t}]" for t, s, e in spans) or "(none)"


def _case_lines(k: int, sample: Sample, gold, preds: dict) -> list[str]:
    task = sample.task
    right = [r for r in ROLES if outcome(task, preds[r]) == outcome(task, gold)]
    L = [f"### {k}. `{sample.id}`: {' and '.join(right) + ' right' if right else 'both wrong'}", "",
         f"> {esc(sample.text)}", ""]
    if task == "ner":
        L.append(f"- gold: {_entities(sample, gold)}")
        L += [f"- {r} ({'right' if r in right else 'wrong'}): {_entities(sample, preds[r])}" for r in ROLES]
    else:
        L.append(f"- head: {esc(sample.head.name)} · tail: {esc(sample.tail.name)} · gold relation: `{gold}`")
        L += [f"- {r} ({'right' if r in right else 'wrong'}): `{preds[r]}`" for r in ROLES]
    L.append(f"- caption: {esc(sample.caption) if sample.caption else '(none)'}")
    grains = [g for g in GRAINS if g in sample.knowledge] + sorted(set(sample.knowledge) - set(GRAINS))
    know = [f"{g}: {esc(sample.knowledge[g])}" for g in grains if (sample.knowledge[g] or "").strip()]
    L.append("- CoT knowledge: " + ("; ".join(know) if know else "(none)"))
    return L + [""]


def render(dataset: str, split: str, task: str, refs: dict, result: dict, samples: Sequence[Sample],
           gold: Sequence, preds: dict, shown: list[int], seed: int) -> str:
    """The Markdown report (see the module docstring)."""
    unit, per = ("sentences", "Entity type") if task == "ner" else ("instances", "Gold relation")
    L = [f"# CoTPD vs baseline on {dataset} ({split})", ""]
    L += [f"- {r}: `{refs[r]['ref']}` ({refs[r]['variant']}, trained on {refs[r]['trained_on']}), "
          f"F1 {refs[r]['f1'] * 100:.2f} on this split" for r in ROLES]
    L += ["- inference reads text only, as deployed (CoTPD: prompt view; baseline: text view); "
          + ("a sentence is right when its predicted entities (strict IOB2 spans and types) equal the gold ones"
             if task == "ner" else "an instance is right when its relation is the gold one"),
          "- the caption and CoT knowledge below are what the teacher (knowledge) view read in training; "
          "neither model sees them at inference", "",
          f"The two disagree on **{result['disagree']} of {result['n']} {unit}**: CoTPD is right on "
          f"{result['cotpd_right']}, the baseline on {result['baseline_right']}, neither on {result['neither']}.", "",
          f"## Per {per.lower()}", "",
          f"| {per} | Gold {'entities' if task == 'ner' else 'instances'} | {unit.capitalize()} where they disagree "
          f"on it | CoTPD right | baseline right | neither |", "|---|---|---|---|---|---|"]
    L += [f"| {esc(t)} | {c['gold']} | {c['disagree']} | {c['cotpd_right']} | {c['baseline_right']} | {c['neither']} |"
          for t, c in result["per_type"].items()]
    how = (f"a sample seeded with {seed}, in split order" if len(shown) < result["disagree"] else "all of them")
    L += ["", f"## {len(shown)} of the {result['disagree']} {unit} they disagree on ({how})", ""]
    for k, i in enumerate(shown, start=1):
        L += _case_lines(k, samples[i], gold[i], {r: preds[r][i] for r in ROLES})
    return "\n".join(L)


def explain(dataset: str, root: Path, params, model_ref: str, baseline_ref: str, split: str = "test",
            out: Path = Path("results/explain"), n: int = 20, unmapped: str = "error") -> dict:
    """Predict with both models, compare, write <out>/<dataset>.md and .json; returns a summary."""
    params = as_params(params)
    dp = dataset_params(params, dataset)
    device = resolve_device(dp.train.device)
    samples = load_split(dataset, root, params, split)
    preds, refs, models = {}, {}, {}
    for role, ref in zip(ROLES, (model_ref, baseline_ref)):
        with open_model(ref, root, params) as (folder, _):
            models[role] = load_student(folder, device)
    a, b = (models[r] for r in ROLES)
    if a.labels != b.labels:
        raise ConfigError(f"{model_label(model_ref, a)} and {model_label(baseline_ref, b)} emit different labels "
                          f"({a.labels} vs {b.labels}): nothing to compare on dataset {dataset!r}")
    mapping = resolve_types(a, model_ref, dataset, params, samples, unmapped)
    gold_samples, _ = M.remap(samples, mapping, a.task, a.labels)
    gold = [s.labels if a.task == "ner" else s.relation for s in gold_samples]
    for role, ref in zip(ROLES, (model_ref, baseline_ref)):
        m = models[role]
        preds[role] = predict(m, gold_samples, "prompt", bf16=dp.train.bf16)
        refs[role] = {"ref": ref, "variant": m.variant, "trained_on": trained_on(m),
                      "f1": M.compute(a.task, gold, preds[role], a.labels)["f1"]}
    result = compare(a.task, gold, preds["cotpd"], preds["baseline"])
    shown = choose(result["indices"], n, dp.seed)
    out = Path(out)
    md = out / f"{dataset}.md"
    with atomic_write(md) as fh:
        fh.write(render(dataset, split, a.task, refs, result, gold_samples, gold, preds, shown, dp.seed) + "\n")
    summary = {"dataset": dataset, "split": split, "models": refs, "type_map": mapping, "seed": dp.seed,
               **{k: v for k, v in result.items() if k != "indices"},
               "disagree_ids": [samples[i].id for i in result["indices"]], "shown_ids": [samples[i].id for i in shown]}
    write_json(out / f"{dataset}.json", summary)
    return {"report": str(md), "json": str(out / f"{dataset}.json"), "n": result["n"],
            "disagree": result["disagree"], "cotpd_right": result["cotpd_right"],
            "baseline_right": result["baseline_right"], "shown": len(shown)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cotpd explain", description=__doc__.split("\n\n")[0], parents=[common()])
    p.add_argument("--model", required=True, help="the CoTPD student: a trained folder or an MLflow runs:/<id>/model")
    p.add_argument("--baseline", required=True, help="the baseline student (folder or runs:/ URI)")
    p.add_argument("--dataset", required=True, help="dataset key in params.yaml (prepared, with its captions "
                                                     "and knowledge under outputs/<dataset>)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--out", type=Path, default=Path("results/explain"), help="report folder (default results/explain)")
    p.add_argument("--n", type=int, default=20, help="disagreements shown in full (default 20)")
    p.add_argument("--unmapped", default="error", choices=["error", "miss"],
                   help="a gold type no type_map maps to a model type: an error, or count it as a miss")
    args = p.parse_args(argv)
    setup_logging(args)
    if args.n < 0:
        p.error("--n must be >= 0")
    try:
        summary = explain(args.dataset, root_of(args), params_of(args), args.model, args.baseline, args.split,
                          args.out, args.n, args.unmapped)
    except CotpdError as exc:
        print(f"cotpd explain: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
