"""Shared fixtures of the augment tests: hand-made samples and a fake LLM runner."""
from __future__ import annotations

from cotpd.config import LLMCfg
from cotpd.llm.base import ChatResponse
from cotpd.records import NerSample, ReSample, Span

LLM_CFG = LLMCfg(model="fake", temperature=0.0, max_tokens=64, seed=0)


def user_text(req) -> str:
    return [m for m in req.messages if m["role"] == "user"][-1]["content"]


def tweet_of(req) -> str:
    """The tweet between <tweet> tags of a rendered prompt."""
    text = user_text(req)
    return text.split("<tweet>", 1)[1].split("</tweet>", 1)[0].strip()


class FakeRunner:
    """Answers with `respond(request) -> str`; counts calls like the real runner's stats."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = []

    def run(self, requests, stage):
        self.requests.extend(requests)
        return [ChatResponse(key=r.key, text=self.respond(r), model="fake") for r in requests]

    def stats(self, stage=None):
        return {"calls": len(self.requests), "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0,
                "cost_usd": 0.0}


def ner(i: int, text: str, labels: str, split: str = "train", image_id=None, caption=None) -> NerSample:
    toks = text.split()
    labs = labels.split()
    assert len(toks) == len(labs)
    return NerSample(id=f"{split}-{i}", tokens=toks, labels=labs, split=split, image_id=image_id, caption=caption)


def ner_train() -> list[NerSample]:
    return [
        ner(0, "Barack Obama visits Paris today", "B-PER I-PER O B-LOC O", image_id="img0"),
        ner(1, "Angela Merkel meets Obama in Berlin", "B-PER I-PER O B-PER O B-LOC"),
        ner(2, "Apple opens a store in London", "B-ORG O O O O B-LOC", image_id="img2"),
        ner(3, "Google hires many people", "B-ORG O O O"),
        ner(4, "nothing to see here", "O O O O"),
    ]


def re_sample(i: int, text: str, head: tuple, tail: tuple, relation: str, split: str = "train") -> ReSample:
    toks = text.split()
    return ReSample(id=f"{split}-{i}", tokens=toks, split=split, relation=relation,
                    head=Span(head[0], head[1], " ".join(toks[head[0]:head[1]])),
                    tail=Span(tail[0], tail[1], " ".join(toks[tail[0]:tail[1]])))


def re_train() -> list[ReSample]:
    return [
        re_sample(0, "Bill Gates founded Microsoft in Albuquerque", (0, 2), (3, 4), "/per/org/member_of"),
        re_sample(1, "RT @x : Steve Jobs at Apple Park today", (3, 5), (6, 8), "/per/org/member_of"),
        re_sample(2, "Paris is in France", (0, 1), (3, 4), "/loc/loc/contain"),
        re_sample(3, "Lyon and the whole of France", (0, 1), (5, 6), "/loc/loc/contain"),
    ]
