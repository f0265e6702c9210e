"""The conditional prompt generator (paper Sec. 3.3, "conditional prompt distillation").

k learnable query vectors run through a small transformer decoder whose cross-attention reads the
text: its input embeddings as in the paper, or (train.prompt.source: contextual) the encoder's
contextual states of it; the k outputs are soft prompts conditioned on the text. They are inserted
into the encoder's input sequence so that the text-only view can imitate the knowledge view.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import PromptCfg


class PromptGenerator(nn.Module):
    def __init__(self, hidden: int, cfg: PromptCfg, dropout: float):
        super().__init__()
        k, layers, heads = cfg.k, cfg.layers, cfg.heads
        if hidden % heads:
            raise ValueError(f"train.prompt.heads={heads} must divide the encoder hidden size {hidden}")
        self.k = k
        # small init, the scale of BERT-style word embeddings (std 0.02)
        self.queries = nn.Parameter(torch.randn(k, hidden) * 0.02)
        layer = nn.TransformerDecoderLayer(d_model=hidden, nhead=heads, dim_feedforward=4 * hidden,
                                           dropout=dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=layers, norm=nn.LayerNorm(hidden))

    def forward(self, memory: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """memory [B, L, H] (the text's input embeddings or contextual states), mask [B, L] -> prompts [B, k, H]."""
        queries = self.queries.unsqueeze(0).expand(memory.size(0), -1, -1).to(memory.dtype)
        return self.decoder(queries, memory, memory_key_padding_mask=attention_mask == 0)
