"""Step 2 of the method: chain-of-thought knowledge about each sample (paper Sec. 3.2).

cot.py asks the LLM (or reads the published knowledge files); `load_knowledge` reads the
knowledge stage's output back.
"""
from .cot import (KnowledgeResult, build_requests, generate, load_knowledge, precomputed_records, read_samples,
                  sample_captions)

__all__ = ["KnowledgeResult", "build_requests", "generate", "load_knowledge", "precomputed_records",
           "read_samples", "sample_captions"]
