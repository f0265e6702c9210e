"""`cotpd ledger stats | gc`: what the LLM response ledgers (ledger/<dataset>/<stage>.jsonl) hold,
and dropping the answers to prompt versions no longer in use.

    cotpd ledger stats [--dataset D] [--json]   answers, tokens, cost and prompt versions per stage
    cotpd ledger gc --keep-current [--dataset D]

A prompt's version is its name and the hash of its file (cotpd/prompts.py); once the file is edited,
answers to the old text are never asked for again. `gc --keep-current` keeps the answers whose
prompt version is current (and those whose prompt is not one of ours: nothing says they are unused),
one line per key. It copies the ledger to `<ledger>.<time>.bak` first and replaces the file
atomically (cotpd.llm.Ledger.compact), so the file is rewritten, never appended to: DVC (the ledgers
are `cache: false` outputs) then reports it as modified. Cost: recorded usage at the dataset's
llm.price_per_1m_input/output, half for Batch API answers, nothing for the local model.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from .args import common, params_of, root_of, setup_logging
from .config import LLMCfg
from .errors import CotpdError
from .llm import Ledger
from .llm.ledger_rows import Answer
from .params import Layout, Params
from .prompts import PROMPTS_DIR, load


def current_versions() -> dict[str, str]:
    """prompt name -> its current version, for every packaged prompt file."""
    return {p.stem: load(p.stem).version for p in sorted(PROMPTS_DIR.glob("*.txt"))}


def version_state(version: str, current: dict[str, str]) -> str:
    """current | stale (an edited or deleted prompt of ours) | unknown (no prompt file of ours)."""
    name = version.split(":", 1)[0]
    if current.get(name) == version:
        return "current"
    return "stale" if name in current else "unknown"


def ledgers(root: Path, datasets: list[str] | None) -> list[tuple[str, str, Path]]:
    """(dataset, stage, path) of every ledger file of `datasets` (None: every folder under ledger/)."""
    base = Layout(root, "").ledger_for("x").parent
    names = datasets or (sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else [])
    return [(ds, p.stem, p) for ds in names for p in sorted((base / ds).glob("*.jsonl"))]


def llm_of(params: Params, dataset: str) -> LLMCfg:
    """The dataset's llm section (a ledger folder params.yaml does not name: the global one)."""
    return params.dataset(dataset).llm if dataset in params.datasets else params.file.llm


def answer_cost(a: Answer, llm: LLMCfg) -> float:
    backend = str(a.backend or "")
    if not backend.startswith("openai"):
        return 0.0  # the local model costs nothing per token
    full = (a.prompt_tokens * llm.price_per_1m_input + a.completion_tokens * llm.price_per_1m_output) / 1e6
    return full / 2 if backend.startswith("openai-batch") else full


def ledger_stats(path: Path, llm: LLMCfg, current: dict[str, str]) -> dict:
    led = Ledger(path)  # one Answer per key in memory (the requests stay in the file)
    versions: collections.Counter = collections.Counter()
    tokens = collections.Counter()
    cost = 0.0
    for a in led.answers.values():
        versions[a.prompt_version] += 1
        tokens["prompt"] += a.prompt_tokens
        tokens["completion"] += a.completion_tokens
        cost += answer_cost(a, llm)
    return {"path": str(path), "answers": len(led), "lines": led.lines, "skipped_lines": led.skipped_lines,
            "prompt_tokens": tokens["prompt"], "completion_tokens": tokens["completion"],
            "cost_usd": round(cost, 6),
            "versions": {v: {"answers": n, "state": version_state(v, current)} for v, n in sorted(versions.items())}}


def backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = path.with_name(f"{path.name}.{stamp}.bak"), 1
    while candidate.exists():  # two gc runs in one second keep both backups
        candidate, n = path.with_name(f"{path.name}.{stamp}-{n}.bak"), n + 1
    return candidate


def gc(path: Path, current: dict[str, str]) -> dict:
    """Keep one line per key whose prompt version is not stale; see the module docstring."""
    led = Ledger(path)  # compact re-reads the file under its lock: each kept row is parsed there
    backup = backup_path(path)
    keep = lambda row: version_state((row.get("request") or {}).get("prompt_version", ""), current) != "stale"
    kept, dropped = led.compact(keep, backup)
    return {"path": str(path), "kept": kept, "dropped_lines": dropped,
            "backup": str(backup) if dropped else None}


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    num = [all(_numeric(r[i]) for r in cells) if cells else False for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, num))
    return "\n".join(line.rstrip() for line in [fmt(headers), "  ".join("-" * w for w in widths), *map(fmt, cells)])


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("$", "").replace("-", "").isdigit()


def render_stats(stats: list[dict]) -> str:
    rows = [[s["dataset"], s["stage"], s["answers"], s["lines"], s["skipped_lines"], f"{s['prompt_tokens']:,}",
             f"{s['completion_tokens']:,}", f"${s['cost_usd']:.4f}",
             ", ".join(f"{v or '(none)'} {d['answers']} {d['state']}" for v, d in s["versions"].items()) or "-"]
            for s in stats]
    return table(["dataset", "stage", "answers", "lines", "skipped", "prompt tok", "completion tok", "cost",
                  "prompt versions (answers, state)"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cotpd ledger", description=__doc__.split("\n")[0], parents=[common()])
    sub = ap.add_subparsers(dest="action", required=True)
    for name, help_ in (("stats", "answers, tokens, cost and prompt versions per dataset and stage"),
                        ("gc", "drop answers to prompt versions no longer in use (after a backup)")):
        p = sub.add_parser(name, help=help_, parents=[common()])
        p.add_argument("--dataset", action="append", help="dataset key (repeatable; default: every ledger folder)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.choices["gc"].add_argument("--keep-current", action="store_true", required=True,
                                   help="keep the answers to the current prompt files (the only policy)")
    args = ap.parse_args(argv)
    setup_logging(args)
    try:
        root, params = root_of(args), params_of(args)
        current = current_versions()
        found = ledgers(root, args.dataset)
        if args.action == "stats":
            out = [{"dataset": ds, "stage": stage, **ledger_stats(path, llm_of(params, ds), current)}
                   for ds, stage, path in found]
            text = render_stats(out)
        else:
            out = [{"dataset": ds, "stage": stage, **gc(path, current)} for ds, stage, path in found]
            text = table(["dataset", "stage", "kept", "dropped lines", "backup"],
                         [[r["dataset"], r["stage"], r["kept"], r["dropped_lines"], r["backup"] or "-"] for r in out])
    except CotpdError as exc:
        print(f"cotpd: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2) if args.json else text)
    return 0
