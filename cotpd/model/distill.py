"""The distillation objective of cotpd and its levers (train.distill.*, issue #19).

Paper (arXiv 2306.14122) Sec. 3.4: L = L_task(knowledge view) + L_task(prompt view) + lambda * L_KL,
L_KL = T^2 * KL(p_know/T || p_prompt/T) per label position: `distill_kl`, the default. The levers
extend it; each is off by default, and off it leaves the objective bit-for-bit as above:
- target "marginals" (NER): the KL of the CRF's posterior marginals instead of the per-word
  emission softmax (`crf_log_marginals`, `marginal_kl`); RE has no CRF: there it is `distill_kl`;
- hidden_weight: + weight * MSE of the two views' final hidden states at the head's feature
  positions (`hidden_mse`; feature-level distillation beside the paper's output-level KL);
- lambda_ramp: lambda rises linearly from 0 over the first part of the distillation steps
  (`lambda_at`);
- warmup_epochs: extra first epochs on the knowledge view's task loss only (`warmup_epochs`; the
  Student's `warmup` flag, set by the training loop), so the teacher is useful before it is imitated.
"""
from __future__ import annotations

import contextlib

import torch
from torchcrf import CRF

from ..config import DistillCfg


def _reduce(kl: torch.Tensor, mask: torch.Tensor | None, cfg: DistillCfg, like: torch.Tensor) -> torch.Tensor:
    """Per-position KL -> the loss term: cfg.reduction over the masked positions, times T^2."""
    reduction = cfg.reduction
    if mask is not None:
        kl = kl * mask
        n = mask.any(-1).sum() if reduction == "sentence" and kl.dim() > 1 else mask.sum()
    else:
        n = kl.size(0) if reduction == "sentence" else kl.numel()
    if not int(n):
        return like.sum() * 0.0
    return kl.sum() / n * cfg.temperature ** 2


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None,
               cfg: DistillCfg) -> torch.Tensor:
    """T^2 * KL(p_teacher/T || p_student/T) (paper Sec. 3.4, L_KL; Hinton et al.'s T^2).

    reduction: "sentence" sums the per-word KL over each sentence and averages over sentences, the
    scale of the CRF's per-sentence negative log-likelihood it is added to (a per-word mean would
    weigh the KL ~20x less than the task loss on a tweet); "token" averages over label positions.
    RE logits are one row per instance, where the two coincide.

    With teacher_grad false the teacher is a stop-gradient target (the knowledge view is trained by
    its own task loss only), the usual choice in distillation: it keeps the KL from dragging the
    better-informed view down towards the text-only one.
    """
    temperature = cfg.temperature
    t = teacher_logits if cfg.teacher_grad else teacher_logits.detach()
    log_p_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = torch.log_softmax(t.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # per position
    return _reduce(kl, mask, cfg, student_logits)


def crf_log_marginals(emissions: torch.Tensor, mask: torch.Tensor, crf: CRF, temperature: float = 1.0) -> torch.Tensor:
    """log p(y_w = c | x) [B, W, C] of the linear-chain CRF whose sequence score (emissions plus
    start/transition/end scores, pytorch-crf's) is divided by `temperature`: the marginals of
    p_T(y) ~ exp(score(y) / T), the sequence-level analogue of softmax(z / T) (it tends to uniform as
    T grows, as the emission softmax does). Forward-backward in log space, differentiable.

    `mask` [B, W] must cover a prefix of each row with its first word on (pytorch-crf's own
    requirement); rows' positions past their prefix hold no marginal (log_softmax of junk): mask them.
    """
    e = emissions.float() / temperature
    start, end = crf.start_transitions.float() / temperature, crf.end_transitions.float() / temperature
    trans = crf.transitions.float() / temperature  # [from, to]
    on = mask.bool().unsqueeze(-1)  # [B, W, 1]
    b, w, c = e.shape
    alpha = [start + e[:, 0]]  # alpha_w(c): all paths over words 0..w that end in c
    for i in range(1, w):
        nxt = torch.logsumexp(alpha[-1].unsqueeze(2) + trans, dim=1) + e[:, i]
        alpha.append(torch.where(on[:, i], nxt, alpha[-1]))
    last = end.expand(b, c)
    beta = [last]  # beta_w(c): all continuations after word w in c, to the end of the sentence
    for i in range(w - 2, -1, -1):
        nxt = torch.logsumexp(trans + (e[:, i + 1] + beta[-1]).unsqueeze(1), dim=2)
        beta.append(torch.where(on[:, i + 1], nxt, last))  # word i+1 is padding: word i ends the sentence
    scores = torch.stack(alpha, 1) + torch.stack(beta[::-1], 1)
    # logsumexp_c(alpha + beta) is log Z at every covered word: normalising per word is exact
    return torch.log_softmax(scores, dim=-1)


def marginal_kl(student_emissions: torch.Tensor, teacher_emissions: torch.Tensor, student_mask: torch.Tensor,
                teacher_mask: torch.Tensor, crf: CRF, cfg: DistillCfg) -> torch.Tensor:
    """T^2 * KL(teacher's CRF marginals || student's) per word, over the words both views cover, with
    distill_kl's reductions. Each view's chain runs over its own covered words (truncation may differ),
    with the one shared CRF; the teacher side (emissions and CRF scores) is a stop-gradient target
    unless cfg.teacher_grad."""
    log_p_s = crf_log_marginals(student_emissions, student_mask, crf, cfg.temperature)
    with contextlib.nullcontext() if cfg.teacher_grad else torch.no_grad():
        log_p_t = crf_log_marginals(teacher_emissions, teacher_mask, crf, cfg.temperature)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return _reduce(kl, student_mask & teacher_mask, cfg, student_emissions)


def kl_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_vb: dict, teacher_vb: dict,
            crf: CRF | None, cfg: DistillCfg) -> torch.Tensor:
    """The distillation term of the configured target: NER over the words both views cover
    (truncation may differ); RE (no CRF, one row per instance) always takes the emission KL."""
    if crf is None:
        return distill_kl(student_logits, teacher_logits, None, cfg)
    s_mask, t_mask = student_vb["word_mask"], teacher_vb["word_mask"]
    if cfg.target == "marginals":
        return marginal_kl(student_logits, teacher_logits, s_mask, t_mask, crf, cfg)
    return distill_kl(student_logits, teacher_logits, t_mask & s_mask, cfg)


def hidden_mse(student_feats: torch.Tensor, teacher_feats: torch.Tensor, mask: torch.Tensor | None,
               cfg: DistillCfg) -> torch.Tensor:
    """Mean squared error between the views' final hidden states at the head's feature positions
    (NER: [B, W, H] first subwords, over `mask`'s words; RE: [B, 2H], both markers), averaged over
    positions and hidden units; in fp32. The teacher side is detached unless cfg.teacher_grad."""
    t = teacher_feats if cfg.teacher_grad else teacher_feats.detach()
    s, t = student_feats.float(), t.float()
    if mask is not None:
        s, t = s[mask], t[mask]
    if not s.numel():
        return student_feats.sum() * 0.0
    return torch.nn.functional.mse_loss(s, t)


def lambda_at(cfg: DistillCfg, step: int, total_steps: int) -> float:
    """lambda at distillation-phase optimizer step `step` (0-based) of `total_steps`: rising linearly
    from 0 to cfg.lambda over the first cfg.lambda_ramp of them, constant after (and always, with
    lambda_ramp 0). Early in training the prompt view's distribution is noise: matching it to the
    teacher at full weight can swamp its own task loss."""
    ramp = cfg.lambda_ramp * total_steps
    if cfg.lambda_ramp == 0 or step >= ramp:
        return cfg.lambda_
    return cfg.lambda_ * max(0, step) / ramp


def warmup_epochs(cfg: DistillCfg, variant: str) -> int:
    """The teacher warm-up epochs a training of `variant` adds before its train.epochs (cotpd only:
    the other variants have no teacher)."""
    return cfg.warmup_epochs if variant == "cotpd" else 0
