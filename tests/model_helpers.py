"""Shared pieces of the student-model tests: a tiny encoder (fixture), small configs and samples."""
from __future__ import annotations

import pytest
import torch

from cotpd.config import DistillCfg, TrainCfg
from cotpd.model import build_tiny_encoder
from cotpd.records import NerSample, ReSample, Span, iob2_labels

NER_LABELS = iob2_labels(["PER", "LOC"])
RE_LABELS = ["None", "/per/per/peer", "/per/loc/place_of_residence"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc"))


def tparams(encoder, **kw) -> TrainCfg:
    tp = dict(encoder=encoder, max_length=32, knowledge_max_length=48, prompt={"k": 4, "layers": 1, "heads": 2},
              distill={"lambda": 1.0, "temperature": 2.0, "teacher_grad": False}, case_features=False)
    tp.update(kw)
    return TrainCfg.model_validate(tp)


def kl_cfg(temperature, **kw) -> DistillCfg:
    return DistillCfg(temperature=temperature, **kw)


def ner(i=0, tokens=("Barack", "Obamaification", "\u00a0", "visits", "Paris"), labels=("B-PER", "I-PER", "O", "O", "B-LOC")):
    return NerSample(id=f"n{i}", tokens=list(tokens), labels=list(labels), caption="a man at a podium",
                     knowledge={"noun": "Barack Obama is a former president", "sentence": "He travels to Paris"})


def re_sample(i=0):
    return ReSample(id=f"r{i}", tokens="Alice met Bob in Rome".split(), head=Span(0, 1, "Alice"),
                    tail=Span(2, 3, "Bob"), relation="/per/per/peer", caption="two people", knowledge={"sentence": "friends"})


def bf16_step(st, batch) -> dict:
    """One step of `st` on `batch` under CPU bf16 autocast (eval mode: no dropout), checked against the
    same step in fp32: the loss stays fp32, bf16 did run, and it changed little. Backward is done."""
    st.eval()
    ref = st(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = st(batch)
    assert out["loss"].dtype == torch.float32 and not torch.equal(out["loss"], ref["loss"])
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.05)
    out["loss"].backward()
    return out
