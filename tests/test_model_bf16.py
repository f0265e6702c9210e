"""The CUDA path's mixed precision, checked on the CPU: a cotpd step under bf16 autocast."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from cotpd.model import build_student  # noqa: E402
from cotpd.model.data import Featurizer, collate  # noqa: E402
from model_helpers import NER_LABELS, RE_LABELS, ner, re_sample, tiny, tparams  # noqa: E402,F401  (tiny: fixture)


@pytest.mark.parametrize("task", ["ner", "re"])
def test_cotpd_step_under_bf16_autocast_matches_fp32(tiny, task):
    """The CUDA path's mixed precision, checked without a GPU: CPU bf16 autocast runs the encoder, the
    prompt generator and the head's matmuls in bf16, as CUDA autocast does; the head must hand fp32
    logits to the CRF, the KL and the losses, and the result must stay close to the fp32 step."""
    labels, samples = (NER_LABELS, [ner(0), ner(1, tokens=["Paris", "is", "nice"], labels=["B-LOC", "O", "O"])]) \
        if task == "ner" else (RE_LABELS, [re_sample(0), re_sample(1)])
    torch.manual_seed(0)
    st = build_student(task, labels, "cotpd", tparams(tiny, case_features=True))
    with torch.no_grad():  # non-zero shape embeddings and a decisive head, so both take part
        st.case_embed.weight.normal_(0, 0.02)
        st.head.linear.weight.normal_(0, 1.0)
    st.eval()  # no dropout: the fp32 and the bf16 step see the same network
    fz = Featurizer(st.tokenizer, task, labels, 32, 48, case_features=True)
    batch = collate(fz.features(samples, st.train_views), st.train_views, 0)
    ref, ref_logits = st(batch), st.logits(batch["text"], prompt=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = st.logits(batch["text"], prompt=True)
        out = st(batch)
    assert logits.dtype == torch.float32 and out["loss"].dtype == torch.float32
    assert not torch.equal(logits, ref_logits)  # bf16 matmuls really ran (rounding shows) ...
    assert torch.allclose(logits, ref_logits, rtol=0.1, atol=0.1)  # ... and changed little
    assert torch.isfinite(out["loss"]) and out["kl"] > 0
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.05)
    out["loss"].backward()
    for name in ("prompt.queries", "case_embed.weight", "head.linear.weight"):
        grad = st.get_parameter(name).grad
        assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoded = st.decode(batch)
    with torch.no_grad():
        assert decoded == st.decode(batch)  # a decisive head decodes the same in bf16 and fp32
