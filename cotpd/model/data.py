"""From records to tensors: the two views, first-subword label alignment, padding and bucketing.

Views (paper Sec. 3.3):
- "text": the text alone, `[CLS] w1 .. wn [SEP]`, at most train.max_length subwords. The prompt view
  is this same encoding; the prompt generator's vectors are inserted inside the model.
- "know": the knowledge view, the sentence pair (text, context) where context = caption + CoT
  knowledge. Only the context is truncated (`truncation="only_second"`) so the text stays whole; a
  text longer than knowledge_max_length on its own is truncated and gets no context.

Case: the default MiniLM is uncased, so the tokenizer throws capitalisation away, the strongest
single cue for names. With case features on, every subword also carries its word's shape (lower,
Title, UPPER, mIxed, no letters, @handle, #hashtag, URL), which the student embeds and adds to the
input embeddings (cotpd.model.student); special tokens and padding get shape 0. With knowledge
hints on, the knowledge view's text words also carry the entity type its knowledge lists for them
(cotpd.model.hints); the context, the entity markers and the special tokens get hint 0.

NER labels live on words: each word's label sits on its first subword (HF token-classification
style, via `word_ids()`); other subwords and special tokens carry none. A word WordPiece maps to no
subword at all (the real Twitter-2015 valid split has a lone U+00A0) is replaced by the tokenizer's
unknown token, so every word keeps a position and a prediction. Words cut off by max_length are
predicted "O" (they lie after every covered word, so the covered words are always a prefix and the
CRF mask stays contiguous).
"""
from __future__ import annotations

import logging
import random
from typing import Mapping, Sequence

import torch

from ..errors import ConfigError
from ..records import GRAINS, NerSample, ReSample, Sample
from .encoder import MARKERS
from .hints import word_hints

log = logging.getLogger(__name__)

VIEWS = ("text", "know")
# word shapes for the case features; 0 is special tokens and padding
SHAPES = ("special", "lower", "title", "upper", "mixed", "noletter", "handle", "hashtag", "url")


def word_shape(word: str) -> int:
    """Index in SHAPES of a word's shape (what an uncased tokenizer loses)."""
    if len(word) > 1 and word[0] in "@#":
        return SHAPES.index("handle" if word[0] == "@" else "hashtag")
    if word.lower().startswith(("http://", "https://", "www.")):
        return SHAPES.index("url")
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return SHAPES.index("noletter")
    if all(c.islower() for c in letters):
        return SHAPES.index("lower")
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return SHAPES.index("upper")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return SHAPES.index("title")
    return SHAPES.index("mixed")


def lowercases(tokenizer) -> bool:
    """Whether the tokenizer maps "Paris" and "paris" to the same ids (uncased)."""
    enc = tokenizer(["Paris Hilton", "paris hilton"], add_special_tokens=False)["input_ids"]
    return enc[0] == enc[1]


def special_prefix(tokenizer) -> int:
    """How many special tokens lead an encoding ([CLS] / <s>): the prompt vectors go right after them."""
    probe = tokenizer("a", return_special_tokens_mask=True)["special_tokens_mask"]
    return next((i for i, m in enumerate(probe) if not m), 0)


def build_context(sample: Sample, grains: Sequence[str] | None = None) -> str:
    """Caption + CoT knowledge as one string (the second segment of the knowledge view)."""
    parts = []
    if sample.caption:
        parts.append(f"Image: {sample.caption.strip()}")
    known = [g for g in (grains or GRAINS) if g in sample.knowledge]
    others = sorted(g for g in sample.knowledge if g not in known) if grains is None else []
    for g in known + others:
        text = (sample.knowledge.get(g) or "").strip()
        if text:
            parts.append(f"{g.capitalize()}: {text}")
    return " ".join(parts)


def attach_context(samples: list[Sample], caps: Mapping[str, str] | None = None,
                   knowledge: list[dict] | None = None) -> list[Sample]:
    """Join captions (image id -> caption, cotpd.captions.table) and knowledge.jsonl rows (by split +
    sample_id) onto samples.

    What a record already carries wins (augmented samples come with their own caption/knowledge).
    """
    caps = caps or {}
    know: dict[tuple, dict[str, str]] = {}
    for r in knowledge or []:
        if (r.get("text") or "").strip():
            know.setdefault((r.get("split"), r["sample_id"]), {})[r["grain"]] = r["text"]
            know.setdefault((None, r["sample_id"]), {})[r["grain"]] = r["text"]
    for s in samples:
        if not s.caption and s.image_id in caps:
            s.caption = caps[s.image_id]
        extra = know.get((s.split, s.id)) or know.get((None, s.id)) or {}
        s.knowledge = {**extra, **(s.knowledge or {})}
    return samples


class Featurizer:
    """Turns samples into per-view token ids (plus label positions), ready for `collate`."""

    def __init__(self, tokenizer, task: str, labels: Sequence[str], max_length: int,
                 knowledge_max_length: int, grains: Sequence[str] | None = None, case_features: bool = False,
                 knowledge_hints: bool = False):
        self.tok, self.task, self.labels = tokenizer, task, list(labels)
        self.case_features, self.knowledge_hints = case_features, knowledge_hints
        self.label_id = {lab: i for i, lab in enumerate(self.labels)}
        self.max_length, self.kmax, self.grains = max_length, knowledge_max_length, grains
        self.pair_extra = tokenizer.num_special_tokens_to_add(pair=True) - tokenizer.num_special_tokens_to_add(pair=False)
        self.marker_ids = tokenizer.convert_tokens_to_ids(list(MARKERS)) if task == "re" else None

    def words(self, sample: Sample) -> list[str]:
        if self.task == "re":
            return self._marked(sample)
        words = list(sample.tokens)
        enc = self.tok(words, is_split_into_words=True, add_special_tokens=False)
        seen = set(enc.word_ids())
        # a word with no subword (lone U+00A0 etc.) becomes [UNK]: it keeps a position and a prediction
        return [w if i in seen else self.tok.unk_token for i, w in enumerate(words)]

    @staticmethod
    def _marked(s: ReSample) -> list[str]:
        events = [(s.head.start, 1, MARKERS[0]), (s.head.end, 0, MARKERS[1]),
                  (s.tail.start, 1, MARKERS[2]), (s.tail.end, 0, MARKERS[3])]
        out, ev = [], sorted(events)
        for i, w in enumerate([*s.tokens, None]):
            out += [m for pos, _, m in ev if pos == i]
            if w is not None:
                out.append(w)
        return out

    def encode(self, sample: Sample, view: str, words: list[str] | None = None) -> dict:
        words = words if words is not None else self.words(sample)
        context, ctx = "", []
        if view == "text":
            enc = self.tok(words, is_split_into_words=True, truncation=True, max_length=self.max_length)
        else:
            context = build_context(sample, self.grains)
            ctx = context.split()
            n_text = len(self.tok(words, is_split_into_words=True)["input_ids"])
            if not ctx or n_text + self.pair_extra + 1 > self.kmax:
                enc = self.tok(words, is_split_into_words=True, truncation=True, max_length=self.kmax)
            else:
                enc = self.tok(words, ctx, is_split_into_words=True, truncation="only_second",
                               max_length=self.kmax)
        feat = {"input_ids": enc["input_ids"]}
        if "token_type_ids" in enc:
            feat["token_type_ids"] = enc["token_type_ids"]
        if self.case_features:
            segs, special = (words, ctx), {*MARKERS, self.tok.unk_token}
            feat["case_ids"] = [0 if w is None or segs[sq][w] in special else word_shape(segs[sq][w])
                                for w, sq in zip(enc.word_ids(), enc.sequence_ids())]
        if self.knowledge_hints and view == "know":  # text words only; the context and specials get 0
            hints = word_hints(words, context)
            feat["hint_ids"] = [hints[w] if w is not None and sq == 0 and words[w] not in MARKERS else 0
                                for w, sq in zip(enc.word_ids(), enc.sequence_ids())]
        if self.task == "ner":
            seq, first = enc.sequence_ids(), {}
            for pos, w in enumerate(enc.word_ids()):
                if w is not None and seq[pos] == 0 and w not in first:
                    first[w] = pos
            n_cov = len(first)
            feat["word_pos"] = [first[j] for j in range(n_cov)] or [0]
            feat["labels"] = [self.label_id.get(lab, 0) for lab in sample.labels[:n_cov]] or [0]
        else:
            ids = feat["input_ids"]
            # a marker cut off by truncation falls back to the first token ([CLS]; features() warns)
            feat["marker_pos"] = [ids.index(m) if m in ids else 0 for m in (self.marker_ids[0], self.marker_ids[2])]
            feat["label"] = self.label_id.get(sample.relation, 0)
        return feat

    def features(self, samples: Sequence[Sample], views: Sequence[str], check: bool = True) -> list[dict]:
        """One dict per sample: {view: encoding} plus the sample's index and length (for bucketing).
        `check`: gold labels must be in the label set (training); prediction ignores gold labels."""
        if check:
            self.check_labels(samples)
        out = []
        for i, s in enumerate(samples):
            words = self.words(s)
            f = {v: self.encode(s, v, words) for v in views}
            f["index"], f["length"] = i, sum(len(f[v]["input_ids"]) for v in views)
            out.append(f)
        if self.task == "re":
            self._warn_cut_markers(samples, out, views)
        return out

    def _warn_cut_markers(self, samples: Sequence[Sample], out: list[dict], views: Sequence[str]) -> None:
        """Say so when truncation cut an entity marker: that pair is classified from [CLS] instead."""
        # a marker never sits at position 0 ([CLS]), so marker_pos 0 is encode()'s fallback for a cut one
        cut = [s.id for s, f in zip(samples, out) if any(0 in f[v]["marker_pos"] for v in views)]
        if cut:
            log.warning("%d of %d RE samples (first: %r) lose an entity marker to truncation and are classified "
                        "from [CLS]; raise train.max_length (now %d) or train.knowledge_max_length (now %d)",
                        len(cut), len(samples), cut[0], self.max_length, self.kmax)

    def check_labels(self, samples: Sequence[Sample]) -> None:
        gold = {lab for s in samples for lab in (s.labels if isinstance(s, NerSample) else [s.relation])}
        unknown = sorted(gold - set(self.labels))
        if unknown:
            where = next(s.id for s in samples if set(s.labels if isinstance(s, NerSample) else [s.relation]) & set(unknown))
            raise ConfigError(f"labels {unknown} (first in sample {where!r}) are not in the model's "
                             f"label set {self.labels}; map them (dataset type_map) first")


def collate(features: list[dict], views: Sequence[str], pad_id: int) -> dict:
    """Dynamic padding: each view padded to its longest member in this batch only."""
    batch: dict = {"index": torch.tensor([f["index"] for f in features])}
    n_words = max((len(f[v].get("word_pos", [])) for f in features for v in views), default=0)
    for v in views:
        rows = [f[v] for f in features]
        L = max(len(r["input_ids"]) for r in rows)
        vb = {"input_ids": torch.full((len(rows), L), pad_id, dtype=torch.long),
              "attention_mask": torch.zeros((len(rows), L), dtype=torch.long)}
        for key in ("token_type_ids", "case_ids", "hint_ids"):
            if key in rows[0]:
                vb[key] = torch.zeros((len(rows), L), dtype=torch.long)
        if "word_pos" in rows[0]:
            vb["word_pos"] = torch.zeros((len(rows), n_words), dtype=torch.long)
            vb["word_mask"] = torch.zeros((len(rows), n_words), dtype=torch.bool)
            vb["labels"] = torch.zeros((len(rows), n_words), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            vb["input_ids"][i, :n] = torch.tensor(r["input_ids"])
            vb["attention_mask"][i, :n] = 1
            for key in ("token_type_ids", "case_ids", "hint_ids"):
                if key in vb:
                    vb[key][i, :n] = torch.tensor(r[key])
            if "word_pos" in vb:
                w = len(r["word_pos"])
                vb["word_pos"][i, :w] = torch.tensor(r["word_pos"])
                vb["word_mask"][i, :w] = True
                vb["labels"][i, :w] = torch.tensor(r["labels"])
        if "marker_pos" in rows[0]:
            vb["marker_pos"] = torch.tensor([r["marker_pos"] for r in rows])
            vb["labels"] = torch.tensor([r["label"] for r in rows])
        batch[v] = vb
    if "teacher" in features[0]:  # two-stage CoTPD: the cached knowledge-view logits (cotpd.model.teacher)
        batch["teacher"] = collate_teacher(features, n_words)
    return batch


def collate_teacher(features: list[dict], n_words: int) -> dict:
    """{"logits": [B, W, C] | [B, R], "mask": [B, W] (NER: the words the teacher's truncation kept)}."""
    rows = [f["teacher"] for f in features]
    if rows[0].dim() == 1:
        return {"logits": torch.stack(rows)}
    logits = torch.zeros(len(rows), n_words, rows[0].size(-1))
    mask = torch.zeros(len(rows), n_words, dtype=torch.bool)
    for i, r in enumerate(rows):
        w = min(r.size(0), n_words)
        logits[i, :w], mask[i, :w] = r[:w], True
    return {"logits": logits, "mask": mask}


def bucket_batches(lengths: Sequence[int], batch_size: int, *, seed: int = 0, epoch: int = 0,
                   shuffle: bool = True, rank: int = 0, world: int = 1, chunk: int = 50) -> list[list[int]]:
    """Length-bucketed batches of indices: shuffle, sort within chunks of `chunk` batches by length,
    cut into batches, shuffle the batches. With world > 1 each rank gets an equal share of the same
    list (a DistributedSampler for whole batches): every rank runs the same number of steps."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed * 100_003 + epoch)
    if shuffle:
        rng.shuffle(idx)
    span = batch_size * chunk
    batches = []
    for c in range(0, len(idx), span):
        part = sorted(idx[c:c + span], key=lambda i: -lengths[i])
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    if world > 1:
        per_rank = max(1, len(batches) // world)
        batches = (batches * world)[: per_rank * world]  # wrap when there are fewer batches than ranks
        batches = batches[rank::world][:per_rank]
    return batches
