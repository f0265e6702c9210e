"""The distillation levers of issue #19 (train.distill.target / hidden_weight / warmup_epochs /
lambda_ramp, train.prompt.source; train.knowledge_hints and train.marker_init have their own tests,
tests/test_hints.py and tests/test_markers.py, and are on with the others here): off they are the
paper's objective bit for bit; on, each adds its term, survives bf16, DDP, save/load and the pyfunc
raw-text path, and the warm-up trains and selects as documented (cotpd/model/distill.py). The
levers' pieces apart from a model: tests/test_lever_terms.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cotpd import readers  # noqa: E402
from cotpd.config import TrainCfg  # noqa: E402
from cotpd.model import build_student, distill_kl, entities, load_student, predict  # noqa: E402
from cotpd.model.data import Featurizer, collate  # noqa: E402
from cotpd.model.distill import lambda_at  # noqa: E402
from cotpd.params import dataset_params, read_params  # noqa: E402
from cotpd.records import iob2_labels  # noqa: E402
from cotpd.serving.pyfunc import StudentModel, pip_requirements, signature  # noqa: E402
from cotpd.training import checkpoint, loop  # noqa: E402
from model_helpers import NER_LABELS, RE_LABELS, ner, re_sample, tiny, tparams  # noqa: E402,F401  (tiny: fixture)
from test_ddp import torchrun_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALL_ON = {"distill": {"lambda": 1.0, "temperature": 2.0, "teacher_grad": False, "target": "marginals",
                      "hidden_weight": 0.5, "warmup_epochs": 1, "lambda_ramp": 0.5},
          "prompt": {"k": 2, "layers": 1, "heads": 2, "source": "contextual"}, "knowledge_hints": True,
          "marker_init": "punct"}


def _batch(st, task):
    samples = [ner(0), ner(1, tokens=["Paris", "is", "nice"], labels=["B-LOC", "O", "O"])] if task == "ner" \
        else [re_sample(0), re_sample(1)]
    fz = Featurizer(st.tokenizer, task, st.labels, 32, 48)
    return collate(fz.features(samples, st.train_views), st.train_views, 0)


def _student(tiny, task, **kw):
    torch.manual_seed(0)  # the same initial weights for every config (no lever adds a parameter)
    return build_student(task, NER_LABELS if task == "ner" else RE_LABELS, "cotpd", tparams(tiny, **kw))


def _paper_loss(st, batch):
    """The objective as it was before the levers (paper Sec. 3.4), from the model's parts."""
    know, text = batch["know"], batch["text"]
    t, s = st.logits(know), st.logits(text, prompt=True)
    mask = know["word_mask"] & text["word_mask"] if st.task == "ner" else None
    return st.head.loss(t, know) + st.head.loss(s, text) + st.distill.lambda_ * distill_kl(s, t, mask, st.distill)


def _step(st, batch):
    """One training step (train mode, dropout seeded); returns forward's dict."""
    st.train()
    torch.manual_seed(1)
    out = st(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and st.head.linear.weight.grad.abs().sum() > 0
    torch.optim.AdamW([p for p in st.parameters() if p.grad is not None], lr=1e-3).step()
    return out


@pytest.mark.parametrize("task", ["ner", "re"])
@pytest.mark.parametrize("lever", ["off", "target", "hidden_weight", "source", "warmup", "lambda_ramp"])
def test_each_lever_adds_its_term_and_off_is_the_paper_loss(tiny, task, lever):
    base = _student(tiny, task)
    batch = _batch(base, task)
    base.train()
    torch.manual_seed(1)
    paper = _paper_loss(base, batch)
    if lever == "off":  # every lever at its default: today's loss, bit for bit, and the same keys
        out = _step(base, batch)
        assert torch.equal(out["loss"], paper) and set(out) == {"loss", "task", "kl"}
        return
    distill = {"lambda": 1.0, "temperature": 2.0, "teacher_grad": False}
    kw = {"target": {"distill": {**distill, "target": "marginals"}},
          "hidden_weight": {"distill": {**distill, "hidden_weight": 0.5}},
          "source": {"prompt": {"k": 4, "layers": 1, "heads": 2, "source": "contextual"}},
          "warmup": {"distill": {**distill, "warmup_epochs": 1}},
          "lambda_ramp": {"distill": {**distill, "lambda_ramp": 0.5}}}[lever]
    st = _student(tiny, task, **kw)
    calls, fwd = [], st.encoder.forward
    st.encoder.forward = lambda *a, **k: calls.append(1) or fwd(*a, **k)
    if lever == "warmup":
        st.warmup = True  # what the loop sets in a warm-up epoch: the knowledge view's task loss only
        out = _step(st, batch)
        assert "kl" not in out and st.prompt.queries.grad is None and len(calls) == 1
        st.load_state_dict(base.state_dict())  # the weights before the step, to recompute its loss
        torch.manual_seed(1)
        assert torch.equal(out["loss"], st.head.loss(st.logits(batch["know"]), batch["know"]))
        return
    if lever == "lambda_ramp":
        st.kl_lambda = lambda_at(st.distill, 1, 4)  # half-way up a ramp over 2 of 4 steps
        assert st.kl_lambda == 0.5
    out = _step(st, batch)
    terms = out["task"] + st.kl_lambda * out["kl"]
    assert torch.equal(out["loss"], terms + 0.5 * out["hid"] if lever == "hidden_weight" else terms)
    assert len(calls) == (3 if lever == "source" else 2)  # contextual: one more text-only encoder pass
    if lever == "target":  # NER: the CRF marginals' KL; RE has no CRF: the emission KL, the same loss
        assert torch.equal(out["loss"], paper) == (task == "re")
    elif lever == "hidden_weight":
        assert out["hid"] > 0 and torch.equal(out["loss"], paper + 0.5 * out["hid"])
    elif lever == "source":
        assert not torch.equal(out["loss"], paper)  # the prompts read other states
    else:
        assert not torch.equal(out["loss"], paper) and st.prompt.queries.grad.abs().sum() > 0


@pytest.mark.parametrize("task", ["ner", "re"])
def test_all_levers_in_one_step_under_bf16_autocast(tiny, task):
    """As tests/test_model_bf16.py, with every lever on (distillation phase, mid-ramp)."""
    st = _student(tiny, task, **ALL_ON, case_features=True)
    with torch.no_grad():
        st.case_embed.weight.normal_(0, 0.02)
        st.head.linear.weight.normal_(0, 1.0)
    st.eval()
    st.kl_lambda = lambda_at(st.distill, 1, 4)
    fz = Featurizer(st.tokenizer, task, st.labels, 32, 48, case_features=True, knowledge_hints=True)
    samples = [ner(0), ner(1)] if task == "ner" else [re_sample(0), re_sample(1)]
    samples[0].knowledge = {"noun": "1. Barack Obamaification (person) 2. Alice (person) 3. Paris (city)"}
    batch = collate(fz.features(samples, st.train_views), st.train_views, 0)
    ref = st(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = st(batch)
    assert out["loss"].dtype == torch.float32 and out["kl"] > 0 and out["hid"] > 0
    assert not torch.equal(out["loss"], ref["loss"])  # bf16 ran ...
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.05)  # ... and changed little
    out["loss"].backward()
    for name in ("prompt.queries", "case_embed.weight", "hint_embed.weight", "head.linear.weight") + (("head.crf.transitions",)
                                                                                   if task == "ner" else ()):
        grad = st.get_parameter(name).grad
        assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("task", ["ner", "re"])
def test_contextual_prompts_survive_save_load_and_the_pyfunc_raw_text_path(tiny, tmp_path, task):
    st = _student(tiny, task, prompt=ALL_ON["prompt"])
    with torch.no_grad():  # a decisive head, so a reload that read the text otherwise would show
        st.head.linear.weight.normal_(0, 1.0)
    st.eval()
    st.save(tmp_path / "m")
    back = load_student(tmp_path / "m")
    assert back.prompt_cfg.source == "contextual" and back.config() == st.config()
    batch = _batch(st, task)
    with torch.no_grad():
        ref = st.logits(batch["text"], prompt=True)
        assert torch.allclose(back.logits(batch["text"], prompt=True), ref, atol=1e-6)
        back.prompt_cfg = back.prompt_cfg.model_copy(update={"source": "embeddings"})
        assert not torch.allclose(back.logits(batch["text"], prompt=True), ref, atol=1e-4)  # the source matters
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=StudentModel(), artifacts={"student": str(tmp_path / "m")},
                             pip_requirements=pip_requirements(), signature=signature(task))
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    if task == "ner":
        texts = ["Barack Obama visits   Paris", "the weather in London today", "Ann Lee met Bob Stone in Rome"]
        got = [json.loads(e) for e in served.predict(pd.DataFrame({"text": texts}))["entities"]]
        want = [entities(t.split(), labels) for t, labels in
                zip(texts, predict(st, [ner(i, t.split(), ["O"] * len(t.split())) for i, t in enumerate(texts)]))]
        assert [[(e["token_start"], e["token_end"], e["type"]) for e in g] for g in got] == \
            [[(e["start"], e["end"], e["type"]) for e in w] for w in want]
        assert any(want)
    else:
        out = served.predict(pd.DataFrame({"text": ["Alice met Bob in Rome"] * 2, "head": ["Alice"] * 2,
                                           "tail": ["Bob"] * 2}))
        assert list(out["relation"]) == predict(st, [re_sample(0), re_sample(1)])


@pytest.fixture(scope="module")
def sample_ner():
    dp = dataset_params(read_params(ROOT), "sample")
    split = {s: readers.read_split(dp, ROOT, s)[0] for s in ("train", "valid")}
    readers.attach(split["train"] + split["valid"], readers.load_captions(dp, ROOT))
    return split["train"], split["valid"], iob2_labels(dp.dataset.entity_types)


def _train(tiny, sample_ner, model_dir, cfg_kw: dict | None = None, **train_kw):
    train, valid, labels = sample_ner
    cfg = TrainCfg.model_validate({**tparams(tiny, **ALL_ON).model_dump(by_alias=True), "epochs": 1, "batch_size": 8,
                                   "device": "cpu", "num_threads": 1, **(cfg_kw or {})})
    return loop.train(train, valid, task="ner", labels=labels, variant="cotpd", cfg=cfg, model_dir=model_dir,
                      seed=3, progress=False, **train_kw), cfg


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def warm_run(tiny, sample_ner, tmp_path_factory):
    """epochs 1 + warmup_epochs 1, every lever on, on the NER sample: the uninterrupted reference."""
    return _train(tiny, sample_ner, tmp_path_factory.mktemp("warm") / "m")


def test_warmup_epoch_is_extra_logged_and_never_the_best(warm_run):
    res, _ = warm_run
    assert [h["phase"] for h in res.history] == ["warmup", "train"] and not res.history[0]["improved"]
    assert res.best_epoch == 1 and res.history[1]["improved"]
    assert json.loads((Path(res.model_dir) / "config.json").read_text())["best_epoch"] == 1


def test_resume_across_the_phase_boundary_ends_as_the_uninterrupted_run(tiny, sample_ner, warm_run, tmp_path):
    ref, cfg = warm_run
    model_dir = tmp_path / "m"

    def die_after_the_distillation_epoch(epoch, row):  # before its checkpoint: the one left is the boundary's
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        _train(tiny, sample_ner, model_dir, on_epoch_end=die_after_the_distillation_epoch)
    train, valid, _ = sample_ner
    ident = checkpoint.identity(train, valid, variant="cotpd", cfg=cfg, seed=3,
                                params=cfg.model_dump(mode="json", by_alias=True), world=1)
    resume = checkpoint.find(model_dir, ident)
    assert resume is not None and resume.epoch == 1  # the warm-up is done, the distillation to come
    res, _ = _train(tiny, sample_ner, model_dir, resume=resume)
    assert [(h["phase"], h["loss"], h["dev_f1"]) for h in res.history] == \
        [(h["phase"], h["loss"], h["dev_f1"]) for h in ref.history]
    assert res.best_epoch == ref.best_epoch == 1


def test_warmup_dev_scores_count_neither_for_selection_nor_patience(tiny, sample_ner, tmp_path, monkeypatch):
    """Dev F1 falls epoch after epoch: were the two warm-up epochs candidates, the first would be the
    best and patience 1 would stop the training before its distillation epoch."""
    scores = iter([0.9, 0.5, 0.1])
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: dict.fromkeys(("f1", "precision", "recall"), next(scores)))
    train, valid, labels = sample_ner
    res, _ = _train(tiny, (train[:8], valid[:4], labels), tmp_path / "m",
                    {"patience": 1, "distill": {**ALL_ON["distill"], "warmup_epochs": 2}})
    assert [h["phase"] for h in res.history] == ["warmup", "warmup", "train"]
    assert res.best_epoch == 2 and [h["improved"] for h in res.history] == [False, False, True]


@pytest.mark.timeout(600)
def test_torchrun_two_cpu_processes_with_every_lever_on(tmp_path):
    result, log, _ = torchrun_train(tmp_path, **ALL_ON)
    assert [h["phase"] for h in result["history"]] == ["warmup", "train"] and result["best_epoch"] == 1
    assert "(warmup)" in log and result["world_size"] == 2
