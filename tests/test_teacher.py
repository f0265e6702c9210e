"""Two-stage CoTPD (train.distill.teacher, cotpd.model.teacher): a trained knowledge view's logits
are cached once, the student starts from it and trains its prompt view alone against them; under
bf16, DDP (the teacher trained first in the same torchrun) and the pyfunc raw-text path."""
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
from cotpd.errors import ConfigError  # noqa: E402
from cotpd.model import teacher  # noqa: E402
from cotpd.model.data import collate  # noqa: E402
from cotpd.model.distill import distill_kl  # noqa: E402
from cotpd.model.infer import featurizer_for  # noqa: E402
from cotpd.model.infer import entities, predict  # noqa: E402
from cotpd.model.student import build_student, load_student  # noqa: E402
from cotpd.params import Layout, dataset_params, read_params, validate  # noqa: E402
from cotpd.pipeline import run_stage  # noqa: E402
from cotpd.records import iob2_labels  # noqa: E402
from cotpd.serving.pyfunc import StudentModel, pip_requirements, signature  # noqa: E402
from cotpd.training import job, loop  # noqa: E402
from model_helpers import RE_LABELS, re_sample, tiny, tparams  # noqa: E402,F401  (fixture)
from test_ddp import torchrun_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ner_data():
    dp = dataset_params(read_params(ROOT), "sample")
    split = {s: readers.read_split(dp, ROOT, s)[0] for s in ("train", "valid")}
    readers.attach(split["train"] + split["valid"], readers.load_captions(dp, ROOT))
    return split["train"][:24], split["valid"][:8], iob2_labels(dp.dataset.entity_types)


def cfg_of(tiny, **kw) -> TrainCfg:
    base = tparams(tiny).model_dump(by_alias=True)
    return TrainCfg.model_validate({**base, "epochs": 1, "batch_size": 8, "device": "cpu", "num_threads": 1, **kw})


def _fit(tiny, data, variant, model_dir, task="ner", **kw):
    train, valid, labels = data
    return loop.train(train, valid, task=task, labels=labels, variant=variant, cfg=cfg_of(tiny, **kw),
                      model_dir=model_dir, seed=5, progress=False)


@pytest.fixture(scope="module")
def knowledge_dir(tiny, ner_data, tmp_path_factory):
    return _fit(tiny, ner_data, "knowledge", tmp_path_factory.mktemp("teacher") / "knowledge").model_dir


def test_cached_logits_are_the_teachers_and_the_student_starts_as_it(tiny, ner_data, knowledge_dir):
    train, _, labels = ner_data
    t = load_student(knowledge_dir)
    cached = teacher.teacher_logits(t, train)
    feats = featurizer_for(t).features(train[:3], ["know"])
    with torch.no_grad():
        direct = t.logits(collate(feats, ["know"], t.tokenizer.pad_token_id)["know"])
    for i in range(3):
        n = len(feats[i]["know"]["word_pos"])
        assert cached[i].shape == (n, len(labels)) and torch.allclose(cached[i], direct[i, :n], atol=1e-5)
    student = build_student("ner", labels, "cotpd", cfg_of(tiny, distill={"teacher": knowledge_dir}))
    assert student.train_views == ("text",)  # no knowledge-view features are built or run
    teacher.start_from(student, t)
    ts = t.state_dict()
    for k, v in student.state_dict().items():
        if not k.startswith("prompt."):
            assert torch.equal(v, ts[k]), k


def test_two_stage_loss_is_the_prompt_task_loss_plus_the_kl_to_the_cached_teacher(tiny, ner_data, knowledge_dir):
    train, _, labels = ner_data
    cfg = cfg_of(tiny, distill={"teacher": knowledge_dir, "lambda": 0.7})
    student = build_student("ner", labels, "cotpd", cfg).eval()  # eval: no dropout, the two passes agree
    logits = teacher.prepare(student, knowledge_dir, train, "cpu")
    feats = featurizer_for(student).features(train[:6], ["text"])
    teacher.attach(feats, logits)
    batch = collate(feats, ["text"], student.tokenizer.pad_token_id)
    out = student(batch)
    s = student.logits(batch["text"], prompt=True)
    mask = batch["text"]["word_mask"] & batch["teacher"]["mask"]
    want = student.head.loss(s, batch["text"]) + 0.7 * distill_kl(s, batch["teacher"]["logits"], mask, cfg.distill)
    assert torch.allclose(out["loss"], want, atol=1e-5) and out["kl"] > 0
    out["loss"].backward()
    assert student.prompt.queries.grad is not None  # the prompt view learns


def test_two_stage_training_on_ner_and_re_and_its_model_predicts_from_text(tiny, ner_data, knowledge_dir, tmp_path):
    res = _fit(tiny, ner_data, "cotpd", tmp_path / "ner", distill={"teacher": knowledge_dir})
    assert res.best_dev is not None and load_student(res.model_dir).variant == "cotpd"
    re_train, re_valid = [re_sample(i) for i in range(8)], [re_sample(i) for i in range(2)]
    know = _fit(tiny, (re_train, re_valid, RE_LABELS), "knowledge", tmp_path / "re_k", task="re").model_dir
    res = _fit(tiny, (re_train, re_valid, RE_LABELS), "cotpd", tmp_path / "re", task="re", distill={"teacher": know})
    assert load_student(res.model_dir).distill.teacher == know


def test_a_teacher_that_does_not_fit_is_refused_by_name(tiny, ner_data, knowledge_dir, tmp_path):
    train, _, labels = ner_data
    student = build_student("ner", labels, "cotpd", cfg_of(tiny))
    with pytest.raises(ConfigError, match=r"teacher=.*missing: no trained student there"):
        teacher.prepare(student, tmp_path / "missing", train, "cpu")
    base = _fit(tiny, ner_data, "baseline", tmp_path / "base").model_dir
    with pytest.raises(ConfigError, match=r"a 'baseline' student; the teacher must be a trained 'knowledge'"):
        teacher.prepare(student, base, train, "cpu")
    other = build_student("ner", iob2_labels(["PER"]), "cotpd", cfg_of(tiny))
    with pytest.raises(ConfigError, match=r"labels .* but this training is 'ner'"):
        teacher.prepare(other, knowledge_dir, train, "cpu")
    with pytest.raises(ConfigError, match=r"params.yaml: invalid params:\n  distill: .*teacher='x' \(two-stage\) cannot be combined with hidden_weight"):
        validate(TrainCfg, {"distill": {"teacher": "x", "hidden_weight": 1.0}}, "params.yaml")


def test_auto_plans_the_knowledge_view_as_a_teacher_beside_the_student(tmp_path):
    params = read_params(ROOT)
    params["datasets"]["sample"]["root"] = str(ROOT / params["datasets"]["sample"]["root"])
    params["train"]["distill"]["teacher"] = teacher.KNOWLEDGE
    run_stage("prepare", "sample", tmp_path, params)
    tjob = job.prepare_training("sample", "cotpd", params, tmp_path)
    tdir = job.teacher_dir(Layout(tmp_path, "sample").model_dir("cotpd"))
    assert tjob.corpus.dparams.train.distill.teacher == str(tdir) and tdir.name == "cotpd.teacher"
    assert tjob.teacher.variant == "knowledge" and tjob.teacher.model_dir == tdir and tjob.teacher_done is None
    assert tjob.teacher.corpus.dparams.train.distill.teacher == teacher.KNOWLEDGE  # its identity: no path in it


def test_a_two_stage_step_under_bf16_autocast_stays_close_to_fp32(tiny, ner_data, knowledge_dir):
    train, _, labels = ner_data
    student = build_student("ner", labels, "cotpd", cfg_of(tiny, distill={"teacher": knowledge_dir})).eval()
    feats = featurizer_for(student).features(train[:4], ["text"])
    teacher.attach(feats, teacher.prepare(student, knowledge_dir, train, "cpu"))
    batch = collate(feats, ["text"], student.tokenizer.pad_token_id)
    ref = student(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = student(batch)
    assert out["loss"].dtype == torch.float32 and out["kl"] > 0 and not torch.equal(out["loss"], ref["loss"])
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.05)
    out["loss"].backward()
    grad = student.prompt.queries.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_a_two_stage_student_serves_raw_text_as_pyfunc(tiny, ner_data, knowledge_dir, tmp_path):
    model_dir = _fit(tiny, ner_data, "cotpd", tmp_path / "m", distill={"teacher": knowledge_dir}).model_dir
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=StudentModel(), artifacts={"student": model_dir},
                             pip_requirements=pip_requirements(), signature=signature("ner"))
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    texts = [" ".join(s.tokens) for s in ner_data[0][:3]]
    got = [json.loads(e) for e in served.predict(pd.DataFrame({"text": texts}))["entities"]]
    st = load_student(model_dir)
    want = [entities(s.tokens, labs) for s, labs in zip(ner_data[0][:3], predict(st, ner_data[0][:3]))]
    assert [[(e["token_start"], e["token_end"], e["type"]) for e in g] for g in got] == \
        [[(e["start"], e["end"], e["type"]) for e in w] for w in want]


@pytest.mark.timeout(600)
def test_torchrun_two_stages_train_the_teacher_then_the_student(tmp_path):
    result, log, lay = torchrun_train(tmp_path, distill={"lambda": 1.0, "temperature": 2.0, "teacher": "auto"})
    tdir = job.teacher_dir(lay.model_dir("cotpd"))
    assert "knowledge: rank 1 of 2 on cpu" in log and "cotpd: rank 1 of 2 on cpu" in log
    assert load_student(tdir).variant == "knowledge" and result["world_size"] == 2
    assert result["timings"]["teacher_s"] > 0 and result["teacher_dev_f1"] is not None
    assert json.loads(tdir.with_name("cotpd.teacher.done.json").read_text())["dev_f1"] == result["teacher_dev_f1"]
