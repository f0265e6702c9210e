"""Evaluation from label lists (never parsed from a report string).

NER: entity-level precision / recall / F1 with seqeval in strict IOB2 mode (an entity counts only
if its B- and every I- match exactly; an I- after O is not an entity), overall (micro) and per type.
RE: micro-F1 over the non-None relations (P = correct non-None predictions / non-None predictions,
R = correct non-None predictions / gold non-None), plus accuracy, per-relation counts and a
confusion matrix. All scores are fractions in [0, 1].
"""
from __future__ import annotations

import copy
import warnings
from collections import Counter
from typing import Sequence

from seqeval.metrics.v1 import precision_recall_fscore_support, unique_labels
from seqeval.scheme import IOB2, Entities

from ..model.infer import predict
from ..records import iob2_types

NER_SCHEME = "seqeval strict IOB2"
RE_SCHEME = "micro-F1 over non-None relations"


def _check_lengths(gold: Sequence, pred: Sequence, nested: bool) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold vs {len(pred)} predicted sequences")
    if nested:
        for i, (g, p) in enumerate(zip(gold, pred)):
            if len(g) != len(p):
                raise ValueError(f"sequence {i}: {len(g)} gold labels vs {len(p)} predicted")


def _prf(correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = correct / n_pred if n_pred else 0.0
    r = correct / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ner_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level P/R/F1, seqeval strict IOB2; per type with support (gold entities)."""
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    _check_lengths(gold, pred, nested=True)
    n_gold = sum(len(s) for s in Entities(gold, IOB2).entities)
    n_pred = sum(len(s) for s in Entities(pred, IOB2).entities)
    with warnings.catch_warnings():  # seqeval warns on types with no prediction/gold: 0.0 is what we report
        warnings.simplefilter("ignore")
        p, r, f, _ = precision_recall_fscore_support(gold, pred, average="micro", scheme=IOB2)
        types = unique_labels(gold, pred, IOB2)
        tp, tr, tf, ts = precision_recall_fscore_support(gold, pred, average=None, scheme=IOB2) if types else ([],) * 4
    per_type = {t: {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
                for t, a, b, c, d in zip(types, tp, tr, tf, ts)}
    return {"f1": float(f), "precision": float(p), "recall": float(r), "per_type": per_type,
            "scheme": NER_SCHEME, "n": len(gold), "n_gold_entities": n_gold, "n_pred_entities": n_pred}


def re_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None,
               none_label: str = "None") -> dict:
    """Micro P/R/F1 over non-None relations, accuracy, per-relation counts, confusion matrix."""
    gold, pred = list(gold), list(pred)
    _check_lengths(gold, pred, nested=False)
    labels = list(labels) if labels else sorted(set(gold) | set(pred))
    labels += sorted((set(gold) | set(pred)) - set(labels))
    pos = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]  # rows: gold, columns: predicted
    for g, p in zip(gold, pred):
        matrix[pos[g]][pos[p]] += 1
    correct = sum(g == p != none_label for g, p in zip(gold, pred))
    n_pred = sum(p != none_label for p in pred)
    n_gold = sum(g != none_label for g in gold)
    p, r, f = _prf(correct, n_pred, n_gold)
    g_count, p_count = Counter(gold), Counter(pred)
    per_rel = {}
    for lab in labels:
        c = matrix[pos[lab]][pos[lab]]
        rp, rr, rf = _prf(c, p_count[lab], g_count[lab])
        per_rel[lab] = {"gold": g_count[lab], "pred": p_count[lab], "correct": c,
                        "precision": rp, "recall": rr, "f1": rf}
    acc = sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
    return {"f1": f, "precision": p, "recall": r, "accuracy": acc, "per_relation": per_rel,
            "confusion": {"labels": labels, "matrix": matrix}, "scheme": RE_SCHEME, "n": len(gold),
            "n_gold_relations": n_gold, "n_pred_relations": n_pred}


def compute(task: str, gold: Sequence, pred: Sequence, labels: Sequence[str] | None = None) -> dict:
    return ner_metrics(gold, pred) if task == "ner" else re_metrics(gold, pred, labels)


def map_types(sequences: Sequence[Sequence[str]], type_map: dict[str, str] | None,
              known_types: Sequence[str]) -> tuple[list[list[str]], dict[str, int]]:
    """Cross-dataset: rename entity types through `type_map` (e.g. MISC -> OTHER). Types the model
    does not know stay as they are (so they count as misses) and are counted in the second result."""
    type_map, known = type_map or {}, set(known_types)
    out, unknown = [], Counter()
    for seq in sequences:
        row = []
        for lab in seq:
            tag, sep, typ = lab.partition("-")
            typ = type_map.get(typ, typ)
            if sep and typ not in known:
                unknown[typ] += tag == "B"
            row.append(f"{tag}-{typ}" if sep else lab)
        out.append(row)
    return out, dict(unknown)


def evaluate(model, samples: Sequence, view: str = "prompt", batch_size: int = 64, bf16: bool = True) -> dict:
    """Metrics of a trained student on samples: text-only prompt view for cotpd unless view="knowledge"."""
    pred = predict(model, samples, view, batch_size, bf16)
    gold = [s.labels for s in samples] if model.task == "ner" else [s.relation for s in samples]
    out = compute(model.task, gold, pred, model.labels)
    fv, prompt = model.eval_view(view)
    out["view"] = "prompt" if prompt else ("knowledge" if fv == "know" else "text")
    return out


def remap(samples: Sequence, type_map: dict[str, str] | None, task: str,
          labels: Sequence[str]) -> tuple[list, dict[str, int]]:
    """Copies of `samples` with gold types (NER) or relations (RE) renamed through `type_map`, and
    the count of gold entities / instances whose type is outside the model's `labels` (misses)."""
    samples = [copy.copy(s) for s in samples]
    if task == "ner":
        mapped, unknown = map_types([s.labels for s in samples], type_map, iob2_types(labels))
        for s, m in zip(samples, mapped):
            s.labels = m
    else:
        for s in samples:
            s.relation = (type_map or {}).get(s.relation, s.relation)
        unknown = dict(Counter(s.relation for s in samples if s.relation not in labels))
    return samples, unknown


def cross_evaluate(model, samples: Sequence, type_map: dict[str, str] | None = None, view: str = "prompt",
                   batch_size: int = 64) -> dict:
    """A model trained on one dataset scored on another's samples: gold types renamed through
    `type_map`; gold entities of types the model cannot predict stay (as misses) and are counted
    under "unknown_gold_types". RE: gold relations outside the model's labels are counted the same way."""
    samples, unknown = remap(samples, type_map, model.task, model.labels)
    out = evaluate(model, samples, view, batch_size)
    out.update(unknown_gold_types=unknown, type_map=dict(type_map or {}))
    return out


def flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Flat numeric keys for `dvc metrics` / MLflow: f1, precision, recall, f1_PER, ..."""
    out = {f"{prefix}{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for t, m in (metrics.get("per_type") or metrics.get("per_relation") or {}).items():
        out[f"{prefix}f1_{t}"] = m["f1"]
    return out
