"""`cotpd predict`: entities (NER) or a relation (RE) for raw text, from a trained student folder.

Inference reads text only, as deployed (paper Sec. 3.5): the cotpd student uses its prompt view, the
baseline its text view. The same `Predictor` backs the MLflow pyfunc model (cotpd.serving.pyfunc), so the
command line, `mlflow models serve` and Python callers give identical answers.

Output schema (also the pyfunc's):
- NER: one entity list per text, each {"text", "type", "start", "end", "token_start", "token_end"}
  with start/end character offsets into the input (end exclusive) and token offsets over the
  whitespace tokens (end exclusive); input[start:end] == text.
- RE: {"relation", "score"} per (text, head, tail); head and tail are entity strings that must occur
  in the text (first whole-token match; the tail's first match not overlapping the head).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..args import common, params_of, root_of, setup_logging
from ..errors import CotpdError, DataError
from ..io import read_text_lines
from ..model.data import collate
from ..model.infer import entities, featurizer_for, predict, to_device
from ..model.student import load_student
from ..records import NerSample, ReSample, Span
from .registry import is_model_uri, student_folder, tracking_uri

TOKEN = re.compile(r"\S+")


def token_offsets(text: str) -> list[tuple[int, int]]:
    """Character span of each whitespace token: the tokenization the datasets use."""
    return [(m.start(), m.end()) for m in TOKEN.finditer(text)]


def find_tokens(tokens: list[str], phrase: str, avoid: tuple[int, int] | None = None) -> tuple[int, int] | None:
    words = phrase.split()
    n = len(words)
    for i in range(len(tokens) - n + 1):
        if tokens[i:i + n] == words and not (avoid and i < avoid[1] and i + n > avoid[0]):
            return i, i + n
    return None


class Predictor:
    """A trained student loaded once; `ner(texts)` / `re(rows)` predict in batches."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 32):
        self.model_dir = Path(model_dir)
        self.student = load_student(self.model_dir, device=device)
        self.task = self.student.task
        self.device = device
        self.batch_size = batch_size

    def _relation_probs(self, samples: list) -> list[tuple[int, float]]:
        """(label id, softmax probability) per RE sample on the deployed (text-only) view; infer.predict
        gives labels only, the HTTP API also reports the score."""
        st = self.student
        fv, use_prompt = st.eval_view("prompt")
        feats = featurizer_for(st).features(samples, [fv], check=False)
        out: list[tuple[int, float]] = []
        with torch.no_grad():
            for b in range(0, len(feats), self.batch_size):
                batch = to_device(collate(feats[b:b + self.batch_size], [fv], st.tokenizer.pad_token_id or 0),
                                  torch.device(self.device))
                probs = torch.softmax(st.logits(batch[fv], use_prompt).float(), dim=-1)
                score, idx = probs.max(-1)
                out += list(zip(idx.tolist(), score.tolist()))
        return out

    def ner(self, texts: Sequence[str]) -> list[list[dict]]:
        if self.task != "ner":
            raise CotpdError(f"{self.model_dir} is a {self.task} model: give text with head and tail")
        offsets = [token_offsets(t) for t in texts]
        tokens = [[t[a:b] for a, b in offs] for t, offs in zip(texts, offsets)]
        # an empty text has no token to label: predict on the others only
        todo = [i for i, toks in enumerate(tokens) if toks]
        samples = [NerSample(id=str(i), tokens=tokens[i], labels=["O"] * len(tokens[i]), split="test") for i in todo]
        labels = dict(zip(todo, predict(self.student, samples, "prompt", self.batch_size)))
        result = []
        for i, (text, offs) in enumerate(zip(texts, offsets)):
            ents = []
            for e in entities(tokens[i], labels.get(i, [])):
                a, b = offs[e["start"]][0], offs[e["end"] - 1][1]
                ents.append({"text": text[a:b], "type": e["type"], "start": a, "end": b,
                             "token_start": e["start"], "token_end": e["end"]})
            result.append(ents)
        return result

    def re(self, rows: Sequence[tuple[str, str, str]]) -> list[dict]:
        if self.task != "re":
            raise CotpdError(f"{self.model_dir} is a {self.task} model: give text only")
        samples = []
        for i, (text, head, tail) in enumerate(rows):
            tokens = text.split()
            h = find_tokens(tokens, head) if (head or "").strip() else None
            t = find_tokens(tokens, tail, avoid=h) if h and (tail or "").strip() else None
            for role, value, span in (("head", head, h), ("tail", tail, t)):
                if span is None:
                    raise CotpdError(f"row {i + 1}: {role} {value!r} is not a whole-token match in text {text!r}"
                                     + (" (apart from the head)" if role == "tail" and h else ""))
            samples.append(ReSample(id=str(i), tokens=tokens, head=Span(*h, name=head), tail=Span(*t, name=tail),
                                    relation=self.student.labels[0], split="test"))
        return [{"relation": self.student.labels[j], "score": round(p, 6)} for j, p in self._relation_probs(samples)]


def _read_rows(path: Path, task: str) -> list:
    """A JSONL file of {"text"[, "head", "tail"]} rows, or plain text with one sentence a line."""
    rows = []
    for n, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl" or line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, n, f"not valid JSON: {exc.msg}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise DataError(path, n, 'expected an object with a string "text"')
            if task == "re" and not (isinstance(obj.get("head"), str) and isinstance(obj.get("tail"), str)):
                raise DataError(path, n, 'a relation model needs string "head" and "tail" fields')
            rows.append((obj["text"], obj.get("head"), obj.get("tail")))
        elif task == "re":
            raise DataError(path, n, "a relation model needs JSONL rows with text, head and tail")
        else:
            rows.append((line.rstrip("\n"), None, None))
    return rows


def _table(rows: list, outputs: list, task: str) -> Iterable[str]:
    for (text, head, tail), out in zip(rows, outputs):
        if task == "ner":
            ents = ", ".join(f"{e['text']} [{e['type']}]" for e in out) or "-"
            yield f"{text}\n  -> {ents}"
        else:
            yield f"{text}\n  {head} -> {tail}: {out['relation']} ({out['score']:.3f})"


def _predictor(args: argparse.Namespace) -> Predictor:
    """The student of a folder, or of an MLflow model URI (downloaded, loaded, the copy removed)."""
    if not is_model_uri(args.model):
        return Predictor(Path(args.model), batch_size=args.batch_size)
    root = root_of(args)
    with student_folder(args.model, tracking_uri(root, params_of(args).file.tracking.uri)) as folder:
        pred = Predictor(folder, batch_size=args.batch_size)
    pred.model_dir = args.model  # messages name the URI, not the removed download
    return pred


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cotpd predict", description=__doc__.split("\n\n")[0], parents=[common()])
    p.add_argument("--model", required=True, help="trained student folder (outputs/<ds>/models/<variant>) or an MLflow "
                   "model URI: models:/cotpd-<ds>@champion, models:/<name>/<version>, runs:/<run_id>/model "
                   "(store: tracking.uri of params.yaml under --root)")
    p.add_argument("text", nargs="*", help="sentences (whitespace-tokenized raw text)")
    p.add_argument("--file", type=Path, help="JSONL with text (and head, tail for RE) or plain text lines")
    p.add_argument("--head", help="RE: head entity string (with TEXT)")
    p.add_argument("--tail", help="RE: tail entity string (with TEXT)")
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    setup_logging(args)
    if bool(args.text) == bool(args.file):
        p.error("give either TEXT ... or --file F")
    try:
        pred = _predictor(args)
        rows = _read_rows(args.file, pred.task) if args.file else [(t, args.head, args.tail) for t in args.text]
        if pred.task == "ner":
            outputs = pred.ner([r[0] for r in rows])
        else:
            outputs = pred.re(rows)
    except CotpdError as exc:
        print(f"cotpd predict: error: {exc}", file=sys.stderr)
        return 2
    if args.format == "table":
        print("\n".join(_table(rows, outputs, pred.task)))
    else:
        for (text, head, tail), out in zip(rows, outputs):
            row = {"text": text, "entities": out} if pred.task == "ner" else {"text": text, "head": head, "tail": tail, **out}
            print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
