"""train.knowledge_hints (issue #19's entity-type hints): the knowledge's "name (type)" list becomes
typed hints on the knowledge view's text words only (cotpd/model/hints.py). Off it changes nothing; on,
the student starts as it would without them, learns them, and survives bf16, save/load and the pyfunc
raw-text path (DDP: tests/test_levers.py trains every lever, hints included, under torchrun)."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cotpd.model import build_student, entities, load_student, predict  # noqa: E402
from cotpd.model.data import collate  # noqa: E402
from cotpd.model.hints import HINTS, coarse_type, coverage, named, word_hints  # noqa: E402
from cotpd.model.infer import featurizer_for  # noqa: E402
from cotpd import readers  # noqa: E402
from cotpd.params import dataset_params  # noqa: E402
from cotpd.serving.pyfunc import StudentModel, pip_requirements, signature  # noqa: E402
from model_helpers import NER_LABELS, RE_LABELS, bf16_step, ner, re_sample, tiny, tparams  # noqa: E402,F401  (tiny: fixture)

LISTED = "Named entities:1. Barack Obamaification (person/politician)2. Paris (city)3. 2016 (year)Reasoning: he (a man) is in Paris"


def h(*names):
    return [HINTS.index(n) for n in names]


def test_coarse_types_of_free_form_llm_types():
    assert [coarse_type(t) for t in ("person/handle", "news organization", "brand/company", "sports team",
                                     "geographic location", "event", "hashtag/topic", "year", "date")] == \
        ["person", "organization", "organization", "organization", "location", "other", "other", None, None]


def test_only_listed_items_count_and_every_occurrence_is_marked():
    assert named(LISTED) == [(["barack", "obamaification"], "person"), (["paris"], "location")]  # not "he (a man)"
    words = ["RT", "@Paris", ":", "Barack", "Obamaification", "visits", "PARIS", "paris."]
    assert word_hints(words, LISTED) == h("unnamed", "B-location", "unnamed", "B-person", "I-person", "unnamed",
                                          "B-location", "B-location")
    assert word_hints(words, "Barack Obama (person) visits Paris") == h(*["unnamed"] * 8)  # no list: no hint
    # a longer name wins over a shorter one inside it, whatever the listing order
    assert word_hints(["New", "York", "Times"], "1. New York (city) 2. New York Times (newspaper)") == \
        h("B-organization", "I-organization", "I-organization")


def test_coverage_counts_started_and_typed_gold_entities():
    s = ner()  # gold: Barack Obamaification (PER), Paris (LOC)
    s.knowledge = {"noun": "1. Barack Obamaification (politician) 2. Paris (sports team)"}
    assert coverage([s], {"PER": "person", "LOC": "location"}) == {"total": 2, "started": 2, "typed": 1}
    s.knowledge = {"noun": "no list here"}
    assert coverage([s], {"PER": "person", "LOC": "location"}) == {"total": 2, "started": 0, "typed": 0}


@pytest.mark.parametrize("task", ["ner", "re"])
def test_hints_reach_the_knowledge_views_text_words_only(tiny, task):
    st = build_student(task, NER_LABELS if task == "ner" else RE_LABELS, "cotpd", tparams(tiny, knowledge_hints=True))
    s = ner(0) if task == "ner" else re_sample(0)
    s.knowledge = {"noun": LISTED if task == "ner" else "1. Alice (person) 2. Rome (city)"}
    feat = featurizer_for(st).features([s], st.train_views)[0]
    know, text = feat["know"], feat["text"]
    assert "hint_ids" not in text  # the prompt view, as deployed: text only
    words = featurizer_for(st).words(s)
    enc = st.tokenizer(words, is_split_into_words=True)  # [CLS] text [SEP], as the pair starts
    n_text = len(enc["input_ids"]) - 1
    assert know["hint_ids"][0] == 0 and set(know["hint_ids"][n_text:]) == {0}  # specials and the context
    per_word = {}
    for pos, w in enumerate(enc.word_ids()[:n_text]):
        if w is not None:  # every subword carries its word's hint
            assert per_word.setdefault(w, know["hint_ids"][pos]) == know["hint_ids"][pos]
    got = [HINTS[per_word[w]] for w in range(len(words))]
    if task == "ner":  # Barack Obamaification [UNK] visits Paris
        assert got == ["B-person", "I-person", "unnamed", "unnamed", "B-location"]
    else:  # <e1> Alice </e1> met <e2> Bob </e2> in Rome: the markers get 0
        assert got == ["none", "B-person", "none", "unnamed", "none", "unnamed", "none", "unnamed", "B-location"]

def test_off_builds_nothing_and_on_starts_where_off_starts(tiny):
    samples = [ner(0), ner(1, tokens=["Paris", "is", "nice"], labels=["B-LOC", "O", "O"])]
    samples[0].knowledge = {"noun": LISTED}
    torch.manual_seed(0)
    off = build_student("ner", NER_LABELS, "cotpd", tparams(tiny))
    torch.manual_seed(0)
    on = build_student("ner", NER_LABELS, "cotpd", tparams(tiny, knowledge_hints=True))
    assert off.hint_embed is None and on.hint_embed.weight.abs().sum() == 0
    assert build_student("ner", NER_LABELS, "baseline", tparams(tiny, knowledge_hints=True)).hint_embed is None
    two_stage = tparams(tiny, knowledge_hints=True, distill={"teacher": "auto"})
    assert build_student("ner", NER_LABELS, "cotpd", two_stage).hint_embed is None  # no knowledge view trained
    b_off = collate(featurizer_for(off).features(samples, off.train_views), off.train_views, 0)
    b_on = collate(featurizer_for(on).features(samples, on.train_views), on.train_views, 0)
    off.eval(), on.eval()
    with torch.no_grad():
        assert torch.equal(off(b_off)["loss"], on(b_on)["loss"])  # zero-initialised: the encoder as loaded
    on.train()
    on(b_on)["loss"].backward()
    torch.optim.SGD([on.hint_embed.weight], lr=1.0).step()
    on.eval()
    with torch.no_grad():  # learnt: the knowledge view now reads the hints; the prompt view never does
        assert not torch.allclose(on.logits(b_on["know"]), off.logits(b_off["know"]))
        no_hints = {k: v for k, v in b_on["know"].items() if k != "hint_ids"}
        assert not torch.allclose(on.logits(b_on["know"]), on.logits(no_hints))
        assert torch.equal(on.logits(b_on["text"], prompt=True), off.logits(b_off["text"], prompt=True))


@pytest.mark.parametrize("task", ["ner", "re"])
def test_a_step_with_hints_under_bf16_autocast(tiny, task):
    labels = NER_LABELS if task == "ner" else RE_LABELS
    st = build_student(task, labels, "cotpd", tparams(tiny, knowledge_hints=True))
    with torch.no_grad():
        st.hint_embed.weight.normal_(0, 0.02)
    samples = [ner(0), ner(1)] if task == "ner" else [re_sample(0), re_sample(1)]
    samples[0].knowledge = {"noun": LISTED if task == "ner" else "1. Alice (person) 2. Bob (person)"}
    batch = collate(featurizer_for(st).features(samples, st.train_views), st.train_views, 0)
    bf16_step(st, batch)
    grad = st.hint_embed.weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
    used = set(batch["know"]["hint_ids"].flatten().tolist())  # 0: the special tokens and the context
    assert {i for i in range(len(HINTS)) if grad[i].abs().sum() > 0} == used and len(used) > 2


def test_hints_survive_save_load_and_the_pyfunc_raw_text_path(tiny, tmp_path):
    st = build_student("ner", NER_LABELS, "cotpd", tparams(tiny, knowledge_hints=True))
    with torch.no_grad():  # a decisive head and learnt hints, so a reload that lost either would show
        st.head.linear.weight.normal_(0, 1.0)
        st.hint_embed.weight.normal_(0, 1.0)
    st.eval()
    st.save(tmp_path / "m")
    back = load_student(tmp_path / "m")
    assert back.knowledge_hints and back.config() == st.config()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["knowledge_hints"] is True
    s = ner(0)
    s.knowledge = {"noun": LISTED}
    assert predict(back, [s], view="knowledge") == predict(st, [s], view="knowledge")
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=StudentModel(), artifacts={"student": str(tmp_path / "m")},
                             pip_requirements=pip_requirements(), signature=signature("ner"))
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    texts = ["Barack Obama visits   Paris", "Ann Lee met Bob Stone in Rome"]
    got = [json.loads(e) for e in served.predict(pd.DataFrame({"text": texts}))["entities"]]
    want = [entities(t.split(), labels) for t, labels in
            zip(texts, predict(st, [ner(i, t.split(), ["O"] * len(t.split())) for i, t in enumerate(texts)]))]
    assert [[(e["token_start"], e["token_end"], e["type"]) for e in g] for g in got] == \
        [[(e["start"], e["end"], e["type"]) for e in w] for w in want] and any(want)


@pytest.mark.real_data
@pytest.mark.parametrize("split, total", [("train", 6166), ("valid", 1541), ("test", 5072)])
def test_real_twitter2015_knowledge_hints_most_gold_entities(params, real_data, tmp_path, split, total):
    """On each published split the ChatGPT list's hints start most gold entities, mostly typed right
    (measured: 86.6/74.1% train, 84.5/72.9% valid, 87.1/76.9% test; results/ablations/notes.md)."""
    params["datasets"]["twitter2015"]["root"] = str(real_data / "twitter2015")
    dp = dataset_params(params, "twitter2015")
    samples, _ = readers.read_split(dp, tmp_path, split)
    readers.attach(samples, None, readers.load_precomputed_knowledge(dp, tmp_path, split, samples))
    cov = coverage(samples, {"PER": "person", "LOC": "location", "ORG": "organization", "OTHER": "other"})
    assert cov["total"] == total and cov["started"] / total > 0.8 and cov["typed"] / total > 0.7, cov
