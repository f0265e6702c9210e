"""The levers' own pieces (issue #19), apart from any model: a bad value is refused naming its key,
the CRF marginals that train.distill.target=marginals distils are exact, and the lambda ramp follows
its schedule. The levers inside a training step: tests/test_levers.py."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torchcrf import CRF

from cotpd.config import DistillCfg
from cotpd.errors import ConfigError
from cotpd.model.distill import crf_log_marginals, lambda_at, marginal_kl
from cotpd.params import load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("item, where", [
    ("train.distill.target=x", "train.distill.target: Input should be 'emission' or 'marginals'"),
    ("train.distill.hidden_weight=-1", "train.distill.hidden_weight: Input should be greater than or equal to 0"),
    ("train.prompt.source=both", "train.prompt.source: Input should be 'embeddings' or 'contextual'"),
    ("train.distill.warmup_epochs=-1", "train.distill.warmup_epochs: Input should be greater than or equal to 0"),
    ("train.distill.lambda_ramp=1.5", "train.distill.lambda_ramp: Input should be less than or equal to 1"),
    ("train.knowledge_hints=sometimes", "train.knowledge_hints: Input should be a valid boolean"),
    ("train.marker_init=zero", "train.marker_init: Input should be 'mean' or 'punct'"),
])
def test_bad_lever_values_are_refused_naming_the_key(item, where):
    with pytest.raises(ConfigError) as err:
        load_params(ROOT, sets=[item])
    assert where in str(err.value)


def test_crf_marginals_match_brute_force_and_ignore_padding():
    """3 labels x 3 words (and a 2-word sentence padded to 3): the forward-backward marginals equal
    those summed over every label sequence, with pytorch-crf's own sequence probabilities tempered."""
    torch.manual_seed(0)
    crf = CRF(3, batch_first=True)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(0, 1.0)
    em = torch.randn(2, 3, 3)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    for temperature in (1.0, 2.0):
        got = crf_log_marginals(em, mask, crf, temperature).exp()
        for row, n in ((0, 3), (1, 2)):
            seqs = list(itertools.product(range(3), repeat=n))
            tags = torch.tensor(seqs)
            ones = torch.ones(1, n, dtype=torch.bool)
            with torch.no_grad():  # log p(y) per sequence, from pytorch-crf: p_T(y) ~ p(y)^(1/T)
                logp = torch.stack([crf(em[row:row + 1, :n], t[None], ones, reduction="sum") for t in tags])
            p = torch.softmax(logp / temperature, 0)
            want = torch.stack([torch.stack([p[tags[:, w] == c].sum() for c in range(3)]) for w in range(n)])
            assert torch.allclose(got[row, :n], want, atol=1e-5), (temperature, row)
            assert torch.allclose(got[row, :n].sum(-1), torch.ones(n), atol=1e-6)
    # what padding holds changes nothing, neither the marginals nor the KL over covered words
    em2 = em.clone()
    em2[1, 2] = torch.tensor([50.0, -50.0, 9.0])
    assert torch.allclose(crf_log_marginals(em2, mask, crf, 2.0)[mask], crf_log_marginals(em, mask, crf, 2.0)[mask])
    cfg = DistillCfg(temperature=2.0, target="marginals")
    s = torch.randn(2, 3, 3, requires_grad=True)
    t = torch.randn(2, 3, 3, requires_grad=True)
    kl = marginal_kl(s, t, mask, mask, crf, cfg)
    t_pad = t.detach().clone()
    t_pad[1, 2] = 100.0
    assert kl.item() > 0 and kl.item() == pytest.approx(marginal_kl(s, t_pad, mask, mask, crf, cfg).item(), rel=1e-6)
    assert marginal_kl(s, s.detach(), mask, mask, crf, cfg).item() == pytest.approx(0.0, abs=1e-6)
    kl.backward()  # the student side (emissions and the shared CRF) learns; the teacher is a target
    assert s.grad.abs().sum() > 0 and crf.transitions.grad.abs().sum() > 0 and t.grad is None


def test_lambda_ramp_schedule():
    cfg = DistillCfg(lambda_=2.0, lambda_ramp=0.5)
    assert [lambda_at(cfg, s, 100) for s in (0, 25, 49, 50, 99)] == [0.0, 1.0, 2.0 * 49 / 50, 2.0, 2.0]
    assert {lambda_at(DistillCfg(lambda_=2.0), s, 100) for s in (0, 50)} == {2.0}
