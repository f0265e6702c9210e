"""What every augmentation type shares: the context it runs in, its outcomes, answer parsing.

An augmentation either yields a new sample (meta says where it came from and which LLM answers
made it) or a rejection naming the reason and keeping the raw LLM answer, so that every refusal
can be audited in rejected.jsonl.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ..config import LLMCfg
from ..llm import make_request
from ..llm.base import ChatRequest, ChatResponse
from ..prompts import Prompt, load
from ..records import NerSample, ReSample, Sample

AUG_TYPES = ("style", "entity", "image")
STAGE = "augment"  # the name the runner's stats are kept under


@dataclass
class Outcome:
    """One attempted augmentation: `sample` when kept, else `reason` (+ `detail`)."""

    origin: str
    aug: str
    sample: Sample | None = None
    reason: str = ""
    detail: str = ""
    answers: dict = field(default_factory=dict)  # step -> raw LLM answer
    keys: dict = field(default_factory=dict)  # step -> ledger key
    cached: dict = field(default_factory=dict)  # step -> replayed from the ledger

    def rejection(self) -> dict:
        return {"origin": self.origin, "aug": self.aug, "reason": self.reason, "detail": self.detail,
                "answers": self.answers, "keys": self.keys}


@dataclass
class Context:
    """Everything an augmenter needs: the LLM, its settings, the dataset name, the prompts."""

    llm: object  # a cotpd.llm.base.Runner
    llm_cfg: LLMCfg
    dataset: str
    prompt_dir: object = None
    _prompts: dict = field(default_factory=dict)

    def prompt(self, name: str) -> Prompt:
        if name not in self._prompts:
            self._prompts[name] = load(name, self.prompt_dir)
        return self._prompts[name]

    def request(self, prompt_name: str, sample_key: str, max_tokens: int | None = None, **values) -> ChatRequest:
        p = self.prompt(prompt_name)
        return make_request(self.llm_cfg, p.messages(**values), p.version, f"{self.dataset}:{sample_key}",
                            max_tokens=max_tokens)

    def ask(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        if not requests:
            return []
        responses = self.llm.run(requests, STAGE)
        if len(responses) != len(requests):
            raise RuntimeError(f"LLM runner answered {len(responses)} of {len(requests)} requests")
        return responses


def record_answer(out: Outcome, step: str, req: ChatRequest, resp: ChatResponse) -> str:
    out.answers[step] = resp.text
    out.keys[step] = req.key
    out.cached[step] = bool(resp.cached)
    return resp.text or ""


def rng_for(seed: int, aug: str) -> random.Random:
    """One generator per type, so switching a type off leaves the others' draws unchanged."""
    return random.Random(f"{seed}:{aug}")  # str seeds hash with SHA-512: stable across runs


def draw(items: list, n: int, rng: random.Random) -> list:
    """n items without replacement, in a deterministic order."""
    return rng.sample(items, min(max(int(n), 0), len(items)))


def dup_key(sample: Sample, with_caption: bool = False) -> tuple:
    """What makes two samples the same training example: tokens (NER); tokens and the head/tail
    positions (RE: MNRE repeats a sentence once per entity pair); plus the caption for image views."""
    key: tuple = (tuple(sample.tokens),)
    if isinstance(sample, ReSample):
        key += ((sample.head.start, sample.head.end), (sample.tail.start, sample.tail.end))
    return key + ((sample.caption,) if with_caption else ())


def new_id(origin: str, aug: str) -> str:
    return f"{origin}~{aug}"  # each origin is drawn at most once per type, so this is unique


def derived(origin: Sample, aug: str, **changes) -> Sample:
    """A new training sample derived from `origin` (knowledge is not carried: it described the old text)."""
    common = dict(id=new_id(origin.id, aug), tokens=changes.pop("tokens", list(origin.tokens)),
                  image_id=changes.pop("image_id", origin.image_id), split="train",
                  caption=changes.pop("caption", origin.caption), knowledge={},
                  meta={"origin": origin.id, "origin_split": origin.split, "aug": aug, **changes.pop("meta", {})})
    if isinstance(origin, ReSample):
        return ReSample(head=changes.pop("head", origin.head), tail=changes.pop("tail", origin.tail),
                        relation=origin.relation, **common)
    assert isinstance(origin, NerSample)
    return NerSample(labels=changes.pop("labels", list(origin.labels)), **common)


# "Here is the sentence in Twitter style:" -- a preface line the model adds before its answer
_PREFACE = re.compile(r"^(sure|okay|ok|here|certainly|of course|answer|rewritten|new sentence|tweet)\b.*:\s*$",
                      re.IGNORECASE)
_QUOTES = "\"'“”‘’`"


def first_answer_line(text: str | None) -> str:
    """The answer itself: first non-empty line after an optional 'Here is ...:' preface, unquoted.

    Only the first line is taken: tweets are one line, and models append explanations after the
    answer that must not become training text.
    """
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if len(lines) > 1 and _PREFACE.match(lines[0]):
        lines = lines[1:]
    line = lines[0] if lines else ""
    if len(line) >= 2 and line[0] in _QUOTES and line[-1] in _QUOTES:
        line = line[1:-1].strip()
    return line


# a bare "yes": any case, trailing '.'/'!', surrounding whitespace. One pattern for the augmenter and
# the validation suite (a regex expectation), so the two can never disagree. [Yy][Ee][Ss], not (?i):
# re's IGNORECASE also folds e.g. "\u017f" (long s) to "s".
STRICT_YES = r"\A\s*[Yy][Ee][Ss][.!]*\s*\Z"


def strict_yes(answer: str | None) -> bool:
    """The fact-check verdict: True only for a bare "yes" (STRICT_YES).

    So "Yes", "YES", " yes\\n", "Yes." and "yes!" pass; "yes, but...", "Yes it is",
    "Yes\\nbecause ...", "maybe", "no", "" and anything longer are rejections. Only the answer is
    parsed, never the prompt, so a tweet saying "answer yes" cannot vote for itself.
    """
    return answer is not None and re.search(STRICT_YES, answer) is not None
