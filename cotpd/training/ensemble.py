"""`cotpd evaluate --model A --model B --model C`: several students voting, a reference ceiling.

    cotpd evaluate --dataset twitter2015 --model results/full/runs/models/twitter2015-main-cotpd-s13 \
        --model .../twitter2015-main-cotpd-s14 --model .../twitter2015-main-cotpd-s15

Issue #19 asks for "an ensemble of the three seeds' students at test, to show the ceiling": what the
text-only student could reach if its seed variance were averaged away. It is a reference, not the
method (it costs k inferences). Each member reads text only, as deployed, and the vote is over
their outputs, so it needs no logits and works for students of any variant:
- NER: entity-level majority vote. A (type, start, end) span is kept when more than half of the
  members predict it. With strict IOB2 scoring a span is the unit that counts, so it is the unit
  voted on.
- RE: the relation most members predict; a tie goes to the tied relation the earliest member chose.
Members must emit the same labels (else the vote would compare different tag sets): an error names
the two models. Writes the evaluate metrics JSON plus each member's own scores and the vote's rule.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from ..io import write_json
from ..model.infer import predict
from ..model.student import load_student
from ..params import Params, dataset_params
from ..readers.conll import entity_spans
from . import evaluate as M
from .corpus import load_split
from .cross import Unmapped, default_path, model_label, open_model, resolve_types, trained_on
from .loop import resolve_device

RULE = {"ner": "entity-level majority vote (a span kept when > half the members predict it)",
        "re": "majority vote (ties: the earliest member's relation)"}


def vote_ner(members: Sequence[Sequence[Sequence[str]]]) -> list[list[str]]:
    """members[k][i] = model k's IOB2 labels of sentence i -> the voted labels of each sentence."""
    out = []
    for per_model in zip(*members):
        counts = Counter(s for labels in per_model for s in entity_spans(list(labels)))
        labels = ["O"] * len(per_model[0])
        # kept spans never overlap: a member predicts at most one of two overlapping spans, so two
        # of them cannot both have more than half of the votes
        for (typ, start, end), c in counts.items():
            if 2 * c > len(per_model):
                labels[start:end] = [f"B-{typ}"] + [f"I-{typ}"] * (end - start - 1)
        out.append(labels)
    return out


def vote_re(members: Sequence[Sequence[str]]) -> list[str]:
    out = []
    for per_model in zip(*members):
        counts = Counter(per_model)
        top = max(counts.values())
        out.append(next(r for r in per_model if counts[r] == top))
    return out


def vote(task: str, members: Sequence[Sequence]) -> list:
    return vote_ner(members) if task == "ner" else vote_re(members)


def evaluate_ensemble(dataset: str, root: Path, params: Params | dict, refs: Sequence[str], split: str = "test",
                      out: Path | None = None, unmapped: Unmapped = "error") -> dict:
    """Score each member and their vote on `split` of `dataset`; write the metrics JSON."""
    root = Path(root)
    device = resolve_device(dataset_params(params, dataset).train.device)
    samples = load_split(dataset, root, params, split)
    preds, members, first = [], [], None
    for ref in refs:  # one model in memory at a time
        with open_model(ref, root, params) as (folder, tag):
            model = load_student(folder, device)
            mapping = resolve_types(model, ref, dataset, params, samples, unmapped)
            if first is None:
                first = {"ref": ref, "model": model, "tag": tag, "mapping": mapping}
                gold_samples, unknown = M.remap(samples, mapping, model.task, model.labels)
            elif (model.task, list(model.labels)) != (first["model"].task, list(first["model"].labels)):
                raise ConfigError(f"ensemble on {dataset}: {model_label(ref, model)} emits {model.task} labels "
                                  f"{model.labels}, {model_label(first['ref'], first['model'])} emits "
                                  f"{first['model'].labels}; members must share their labels")
            preds.append(predict(model, gold_samples, "prompt"))
        members.append({"model": ref, "variant": model.variant, "trained_on": trained_on(model)})
    task, labels = first["model"].task, first["model"].labels
    gold = [s.labels for s in gold_samples] if task == "ner" else [s.relation for s in gold_samples]
    for member, pred in zip(members, preds):
        member["f1"] = M.compute(task, gold, pred, labels)["f1"]
    m = M.compute(task, gold, vote(task, preds), labels)
    m.update(view="prompt", ensemble=RULE[task], members=members, dataset=dataset, split=split,
             model=list(refs), trained_on=trained_on(first["model"]), variant=first["model"].variant,
             labels=list(labels), unmapped=unmapped, unknown_gold_types=unknown, type_map=dict(first["mapping"]))
    path = Path(out) if out else default_path(root, dataset, first["model"], f"ensemble{len(refs)}", split)
    write_json(path, m)
    return {"dataset": dataset, "split": split, "models": list(refs), "ensemble": RULE[task], "f1": m["f1"],
            "member_f1": [x["f1"] for x in members], "metrics": str(path)}

