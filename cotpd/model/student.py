"""The student: one encoder, two views, a shared task head, and the distillation objective.

Variants come from this one code path (train.variant):
- baseline:  text view, plain encoder + head (no prompt, no knowledge)
- knowledge: knowledge view only (text + caption + CoT), trained and evaluated on it
- cotpd:     knowledge view (teacher) + prompt view (student) + KL; deployed on the prompt view
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from ..config import TrainCfg, Variant
from ..params import validate
from ..errors import ConfigError
from . import distill
from .data import SHAPES, lowercases, special_prefix
from .encoder import load_encoder, quiet_transformers
from .heads import TaskHead
from .hints import HINTS
from .prompt_generator import PromptGenerator

FORMAT = "cotpd-student/1"
VARIANTS: tuple[str, ...] = get_args(Variant)
# dropout of the prompt generator and the task head: fixed (not a train param), written to config.json
DROPOUT = 0.1
# the train params a student's layers and inputs depend on: written to config.json, read back by
# load_student (as the TrainCfg the reloaded Student is built from)
STUDENT_KEYS = ("prompt", "distill", "max_length", "knowledge_max_length", "case_features", "knowledge_hints")


class Student(nn.Module):
    def __init__(self, encoder, tokenizer, task: str, labels: list[str], variant: str, cfg: TrainCfg):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused: keeps DDP free of unused parameters and saves a matmul
        self.encoder, self.tokenizer = encoder, tokenizer
        self.task, self.labels, self.variant = task, list(labels), variant
        self.n_prefix = special_prefix(tokenizer)
        self.max_length, self.knowledge_max_length = cfg.max_length, cfg.knowledge_max_length
        self.prompt_cfg, self.distill = cfg.prompt, cfg.distill
        hidden = encoder.config.hidden_size
        self.prompt = PromptGenerator(hidden, cfg.prompt, DROPOUT) if variant == "cotpd" else None
        self.head = TaskHead(task, hidden, len(self.labels), DROPOUT)
        # word-shape embeddings added to the input embeddings (cotpd.model.data.SHAPES); zero at the
        # start, so the pretrained encoder begins exactly as it was loaded. "auto": only where the
        # tokenizer drops case (MiniLM, bert-*-uncased)
        self.case_features = lowercases(tokenizer) if cfg.case_features == "auto" else cfg.case_features
        self.case_embed = nn.Embedding(len(SHAPES), hidden) if self.case_features else None
        if self.case_embed is not None:
            nn.init.zeros_(self.case_embed.weight)
        # entity-type hints (cotpd.model.hints) on the knowledge view only, zero at the start like the case
        # embeddings; built only where a knowledge view is trained, so DDP has no unused parameter
        self.knowledge_hints = cfg.knowledge_hints
        trains_know = "know" in self.train_views
        self.hint_embed = nn.Embedding(len(HINTS), hidden) if cfg.knowledge_hints and trains_know else None
        if self.hint_embed is not None:
            nn.init.zeros_(self.hint_embed.weight)
        # training-phase state, set by the training loop before each step (not saved: a resumed
        # training sets it again from its progress): the teacher warm-up (train.distill.warmup_epochs)
        # and the lambda of this step (train.distill.lambda_ramp)
        self.warmup, self.kl_lambda = False, cfg.distill.lambda_

    # --- views -----------------------------------------------------------------------------------
    @property
    def train_views(self) -> tuple[str, ...]:
        if self.variant == "cotpd" and self.distill.teacher:  # two-stage: the teacher's logits are cached
            return ("text",)
        return {"baseline": ("text",), "knowledge": ("know",), "cotpd": ("text", "know")}[self.variant]

    def eval_view(self, view: str = "prompt") -> tuple[str, bool]:
        """(feature view, use prompt generator) for evaluation; eval.view picks cotpd's view."""
        if self.variant == "baseline":
            return "text", False
        if self.variant == "knowledge" or view == "knowledge":
            return "know", False
        return "text", True

    def hidden(self, vb: dict, prompt: bool = False) -> torch.Tensor:
        """Encoder states [B, L, H] aligned with vb["input_ids"]; with `prompt` the k generated
        vectors are inserted after the leading special token(s) and their outputs dropped again."""
        am, tt = vb["attention_mask"], vb.get("token_type_ids")
        hints = vb.get("hint_ids") if self.hint_embed is not None else None
        if not prompt and self.case_embed is None and hints is None:
            return self.encoder(input_ids=vb["input_ids"], attention_mask=am, token_type_ids=tt).last_hidden_state
        emb = self.encoder.get_input_embeddings()(vb["input_ids"])
        if self.case_embed is not None:
            emb = emb + self.case_embed(vb["case_ids"])
        if hints is not None:
            emb = emb + self.hint_embed(hints)
        if not prompt:
            return self.encoder(inputs_embeds=emb, attention_mask=am, token_type_ids=tt).last_hidden_state
        memory = emb
        if self.prompt_cfg.source == "contextual":  # the text read in context: one more encoder pass
            memory = self.encoder(inputs_embeds=emb, attention_mask=am, token_type_ids=tt).last_hidden_state
        prompts = self.prompt(memory, am)
        p, k, b = self.n_prefix, prompts.size(1), emb.size(0)
        embeds = torch.cat([emb[:, :p], prompts.to(emb.dtype), emb[:, p:]], dim=1)
        mask = torch.cat([am[:, :p], am.new_ones(b, k), am[:, p:]], dim=1)
        if tt is not None:  # prompts belong to the first segment
            tt = torch.cat([tt[:, :p], tt.new_zeros(b, k), tt[:, p:]], dim=1)
        # position ids default to 0..L+k-1: the text simply starts k positions later
        out = self.encoder(inputs_embeds=embeds, attention_mask=mask, token_type_ids=tt).last_hidden_state
        return torch.cat([out[:, :p], out[:, p + k:]], dim=1)

    def logits(self, vb: dict, prompt: bool = False) -> torch.Tensor:
        return self.head.logits(self.hidden(vb, prompt), vb)

    def forward(self, batch: dict) -> dict:
        """Training loss of this variant. cotpd (paper Sec. 3.4, with the levers of cotpd.model.distill):
        L = L_task(knowledge view) + L_task(prompt view) + lambda * T^2 * KL(p_know/T || p_prompt/T)
            [+ hidden_weight * MSE(prompt view's head features, knowledge view's)];
        in the teacher warm-up, L = L_task(knowledge view)."""
        if self.variant != "cotpd":
            view = self.train_views[0]
            loss = self.head.loss(self.logits(batch[view]), batch[view])
            return {"loss": loss, "task": loss.detach()}
        if "teacher" in batch:  # two-stage CoTPD: a frozen, trained knowledge view's cached logits
            return self._from_cached_teacher(batch)
        know, text, head, cfg = batch["know"], batch["text"], self.head, self.distill
        h_know = self.hidden(know)
        t_logits = head.logits(h_know, know)
        l_know = head.loss(t_logits, know)
        if self.warmup:
            return {"loss": l_know, "task": l_know.detach()}
        h_text = self.hidden(text, prompt=True)
        s_logits = head.logits(h_text, text)
        l_prompt = head.loss(s_logits, text)
        kl = distill.kl_term(s_logits, t_logits, text, know, head.crf, cfg)
        loss = l_know + l_prompt + self.kl_lambda * kl
        out = {"task": (l_know + l_prompt).detach(), "kl": kl.detach()}
        if cfg.hidden_weight:
            mask = know["word_mask"] & text["word_mask"] if self.task == "ner" else None
            hid = distill.hidden_mse(head.features(h_text, text), head.features(h_know, know), mask, cfg)
            loss, out["hid"] = loss + cfg.hidden_weight * hid, hid.detach()
        return {"loss": loss, **out}

    def _from_cached_teacher(self, batch: dict) -> dict:
        """L = L_task(prompt view) + lambda * T^2 * KL(p_teacher/T || p_prompt/T) (cotpd.model.teacher)."""
        text, t = batch["text"], batch["teacher"]
        s_logits = self.logits(text, prompt=True)
        l_prompt = self.head.loss(s_logits, text)
        kl = distill.kl_term(s_logits, t["logits"], text, {"word_mask": t.get("mask")}, self.head.crf, self.distill)
        return {"loss": l_prompt + self.kl_lambda * kl, "task": l_prompt.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def decode(self, batch: dict, view: str = "prompt") -> list:
        fv, prompt = self.eval_view(view)
        return self.head.decode(self.logits(batch[fv], prompt), batch[fv])

    # --- persistence -------------------------------------------------------------------------------
    def config(self) -> dict:
        """What config.json records of the model (STUDENT_KEYS are read back by `load_student`)."""
        return {"format": FORMAT, "task": self.task, "labels": self.labels, "variant": self.variant,
                "prompt": self.prompt_cfg.model_dump(), "distill": self.distill.model_dump(by_alias=True),
                "n_prefix": self.n_prefix, "dropout": self.head.dropout.p, "max_length": self.max_length,
                "knowledge_max_length": self.knowledge_max_length, "case_features": self.case_features,
                "knowledge_hints": self.knowledge_hints}

    def save(self, path: str | Path, params: dict | None = None, extra: dict | None = None) -> Path:
        """save_pretrained-style folder: encoder/ (weights + tokenizer), heads.pt, config.json.

        Written into a sibling temporary folder that then replaces `path`, so a crash mid-save never
        leaves a new encoder beside an old head (or a folder a reader would take as complete)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.saving")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with quiet_transformers():
            self.encoder.save_pretrained(tmp / "encoder")
            self.tokenizer.save_pretrained(tmp / "encoder")
        state = {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        torch.save(state, tmp / "heads.pt")
        cfg = {**self.config(), "params": params or {}, **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str), encoding="utf-8")
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        return path


def build_student(task: str, labels: list[str], variant: str, cfg: TrainCfg) -> Student:
    """A fresh student from train params (encoder cfg.encoder by id or path, prompt and distill settings)."""
    tokenizer, encoder = load_encoder(cfg.encoder, markers=task == "re",
                                      punct_markers=cfg.marker_init == "punct")
    return Student(encoder, tokenizer, task, labels, variant, cfg)


def load_student(path: str | Path, device: str | torch.device = "cpu") -> Student:
    """Reload a folder written by `Student.save` (in eval mode, on `device`)."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ConfigError(f"{path}: not a trained student (no config.json)")
    saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    if saved.get("format") != FORMAT:
        raise ConfigError(f"{cfg_path}: format {saved.get('format')!r}, expected {FORMAT!r}")
    # folders saved before case features or knowledge hints existed have no such key: they had none
    legacy = {"case_features": False, "knowledge_hints": False}
    cfg = validate(TrainCfg, {**legacy, **{k: saved[k] for k in STUDENT_KEYS if k in saved},
                              "encoder": str(path / "encoder")}, str(cfg_path))
    tokenizer, encoder = load_encoder(path / "encoder")
    model = Student(encoder, tokenizer, saved["task"], saved["labels"], saved["variant"], cfg)
    state = torch.load(path / "heads.pt", map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("encoder.")] + list(unexpected)
    if bad:
        raise ConfigError(f"{path / 'heads.pt'}: state dict does not match config.json: {bad[:5]}")
    model.saved_config = saved
    return model.to(device).eval()
