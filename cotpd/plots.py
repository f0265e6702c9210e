"""Report plots (matplotlib, Agg backend: no display needed): per-type F1 bars, a confusion matrix,
F1 against the fraction of training data. Each function returns the Figure; `save` writes a PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI, Dagster workers, the MLflow server host
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_write  # noqa: E402


def _f1(v) -> float:
    """{"f1": x, ...} or a bare x, a fraction in [0, 1] as cotpd.training.evaluate reports it -> percent."""
    return 100.0 * float(v["f1"] if isinstance(v, Mapping) else v)


def per_type_f1(per_type: Mapping[str, object] | Mapping[str, Mapping[str, object]], title: str = "per-type F1"):
    """Bars of F1 per entity type (NER) or relation (RE).

    `per_type` is {type: f1 | {"f1": ...}} for one model, or {series: {type: ...}} to compare several
    (e.g. baseline beside CoTPD): the nested form is detected by its dict-of-dicts shape.
    """
    first = next(iter(per_type.values()), None)
    nested = isinstance(first, Mapping) and "f1" not in first
    series = per_type if nested else {"": per_type}
    types = sorted({t for s in series.values() for t in s})
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(types) * max(1, len(series))), 3.6))
    width = 0.8 / max(1, len(series))
    for i, (name, scores) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(types))]
        ax.bar(xs, [_f1(scores[t]) if t in scores else 0.0 for t in types], width, label=name or None)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(types))])
    ax.set_xticklabels(types, rotation=45 if len(types) > 6 else 0, ha="right" if len(types) > 6 else "center")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    if nested:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[float]], title: str = "confusion"):
    """Rows = gold, columns = predicted; counts written in the cells when the matrix is small."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n + 2), max(3.5, 0.45 * n + 1.5)))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=7 if n > 10 else 9)
    ax.set_yticklabels(labels, fontsize=7 if n > 10 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if n <= 12:
        hi = max((max(r) for r in matrix), default=0) or 1
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                        color="white" if v > hi / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def f1_vs_fraction(series: Mapping[str, Sequence[tuple[float, float, float]]], title: str = "F1 vs training data"):
    """Lines of mean test F1 (± std as error bars) against the fraction of training data.

    `series` is {label: [(fraction, mean_f1, std_f1), ...]} with F1 already in percent.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, points in series.items():
        pts = sorted(points)
        ax.errorbar([p[0] * 100 for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("training data (%)")
    ax.set_ylabel("test F1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def f1_vs_fraction_panels(panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
                          title: str = "test F1 against training data"):
    """`f1_vs_fraction` side by side, one panel per dataset: {dataset: {variant: [(fraction, mean, std)]}}."""
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.0 * max(1, len(panels)), 3.8), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, points in series.items():
            pts = sorted(points)
            ax.errorbar([p[0] * 100 for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        marker="o", capsize=3, label=label)
        ax.set_xscale("log")  # 10, 25, 50, 100 %: the low-data end is where the claim lives
        ax.set_xticks([10, 25, 50, 100], labels=["10", "25", "50", "100"])
        ax.set_xlabel("training data (%)")
        ax.set_ylabel("test F1 (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path) -> Path:
    """Write a PNG (atomically: temp file then rename) and close the figure."""
    path = Path(path)
    with atomic_write(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=110)
    close(fig)
    return path


def close(fig) -> None:
    """Free a figure's memory (pyplot keeps every open figure alive)."""
    plt.close(fig)
