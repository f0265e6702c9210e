"""Task heads on top of the encoder's hidden states: one class, a task switch (NER | RE).

NER: linear emissions on each word's first subword, gathered into a compact word sequence with its
own mask, and a CRF (pytorch-crf) over that sequence. RE: the hidden states at the <e1> and <e2>
marker starts, concatenated, into a linear relation classifier.
"""
from __future__ import annotations

import torch
from torch import nn
from torchcrf import CRF


class TaskHead(nn.Module):
    def __init__(self, task: str, hidden: int, n_labels: int, dropout: float):
        super().__init__()
        if task not in ("ner", "re"):
            raise ValueError(f"unknown task {task!r} (ner | re)")
        self.task = task
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden * (2 if task == "re" else 1), n_labels)
        self.crf = CRF(n_labels, batch_first=True) if task == "ner" else None

    def features(self, hidden: torch.Tensor, vb: dict) -> torch.Tensor:
        """What the classifier reads: NER [B, W, H], each word's first subword; RE [B, 2H], the
        <e1> and <e2> marker states side by side."""
        if self.task == "ner":
            idx = vb["word_pos"].unsqueeze(-1).expand(-1, -1, hidden.size(-1))
            return hidden.gather(1, idx)
        rows = torch.arange(hidden.size(0), device=hidden.device)
        pos = vb["marker_pos"]
        return torch.cat([hidden[rows, pos[:, 0]], hidden[rows, pos[:, 1]]], dim=-1)

    def logits(self, hidden: torch.Tensor, vb: dict) -> torch.Tensor:
        """NER: emissions [B, W, C] over words; RE: relation logits [B, R]."""
        # the CRF and the losses run in fp32 even under bf16 autocast
        return self.linear(self.dropout(self.features(hidden, vb))).float()

    def mask(self, vb: dict) -> torch.Tensor | None:
        return vb["word_mask"] if self.task == "ner" else None

    def loss(self, logits: torch.Tensor, vb: dict) -> torch.Tensor:
        """CRF negative log-likelihood (mean over sentences) or relation cross-entropy."""
        if self.task == "ner":
            return -self.crf(logits, vb["labels"], mask=vb["word_mask"], reduction="mean")
        return nn.functional.cross_entropy(logits, vb["labels"])

    def decode(self, logits: torch.Tensor, vb: dict) -> list:
        """NER: a label-id list per sentence (length = covered words); RE: one label id per instance."""
        if self.task == "ner":
            return self.crf.decode(logits, mask=vb["word_mask"])
        return logits.argmax(-1).tolist()
