"""train.marker_init (issue #19, RE): the entity markers start at brackets' pretrained embeddings
instead of HF's mean row, which gives all four the same vector; the option acts at construction
only, so a saved student, its reload and the pyfunc raw-text path keep the trained markers."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cotpd.model import DEFAULT_ENCODER, MARKERS, build_student, load_encoder, load_student, predict  # noqa: E402
from cotpd.model.data import Featurizer, collate  # noqa: E402
from cotpd.model.encoder import MARKER_PUNCT  # noqa: E402
from cotpd.serving.pyfunc import StudentModel, pip_requirements, signature  # noqa: E402
from cotpd.records import Span  # noqa: E402
from model_helpers import NER_LABELS, RE_LABELS, bf16_step, re_sample, tiny, tparams  # noqa: E402,F401  (tiny: fixture)


def _rows(st, tokens) -> torch.Tensor:
    ids = st.tokenizer.convert_tokens_to_ids(list(tokens))
    return st.encoder.get_input_embeddings().weight[ids].detach()


def test_mean_markers_are_one_vector_and_punct_markers_are_the_brackets(tiny):
    mean = build_student("re", RE_LABELS, "cotpd", tparams(tiny))
    punct = build_student("re", RE_LABELS, "cotpd", tparams(tiny, marker_init="punct"))
    p = _rows(punct, MARKERS)
    assert not torch.equal(p, _rows(mean, MARKERS))
    assert torch.equal(p, _rows(punct, MARKER_PUNCT))
    assert len({tuple(r.tolist()) for r in p}) == len(MARKERS)
    # the rest of the vocabulary is untouched
    assert torch.equal(_rows(punct, ["alice", "rome", "["]), _rows(mean, ["alice", "rome", "["]))
    # NER adds no markers: the option changes nothing there
    ner_on = build_student("ner", NER_LABELS, "cotpd", tparams(tiny, marker_init="punct"))
    assert len(ner_on.tokenizer) == len(build_student("ner", NER_LABELS, "cotpd", tparams(tiny)).tokenizer)


def test_the_default_encoders_mean_markers_are_one_vector():
    """Why the lever exists: on the offline MiniLM, HF's resize starts the four markers at one vector
    (the mean row; its covariance gives no spread), a tenth of a word's norm, so head and tail look alike."""
    tok, enc = load_encoder(DEFAULT_ENCODER, markers=True)
    w = enc.get_input_embeddings().weight.detach()
    m = w[tok.convert_tokens_to_ids(list(MARKERS))]
    assert torch.nn.functional.cosine_similarity(m[:1], m).min() > 0.999
    assert m.norm(dim=-1).max() < 0.5 * w[:-len(MARKERS)].norm(dim=-1).mean()
    tok, enc = load_encoder(DEFAULT_ENCODER, markers=True, punct_markers=True)
    p = enc.get_input_embeddings().weight.detach()[tok.convert_tokens_to_ids(list(MARKERS))]
    assert torch.nn.functional.cosine_similarity(p[:1], p[1:]).max() < 0.99


def test_punct_markers_train_under_bf16_autocast(tiny):
    st = build_student("re", RE_LABELS, "cotpd", tparams(tiny, marker_init="punct"))
    fz = Featurizer(st.tokenizer, "re", st.labels, 32, 48)
    bf16_step(st, collate(fz.features([re_sample(0), re_sample(1)], st.train_views), st.train_views, 0))
    grad = st.encoder.get_input_embeddings().weight.grad
    ids = st.tokenizer.convert_tokens_to_ids(list(MARKERS))
    assert torch.isfinite(grad).all() and all(grad[i].abs().sum() > 0 for i in ids)


def test_punct_markers_survive_save_load_and_the_pyfunc_raw_text_path(tiny, tmp_path):
    st = build_student("re", RE_LABELS, "cotpd", tparams(tiny, marker_init="punct"))
    with torch.no_grad():  # trained markers and a decisive head, so a reload that re-initialised either would show
        st.encoder.get_input_embeddings().weight[st.tokenizer.convert_tokens_to_ids(list(MARKERS))] += 0.5
        st.head.linear.weight.normal_(0, 1.0)
    st.eval()
    st.save(tmp_path / "m")
    back = load_student(tmp_path / "m")
    assert torch.equal(_rows(back, MARKERS), _rows(st, MARKERS))
    samples = [re_sample(0), re_sample(1)]
    assert predict(back, samples) == predict(st, samples)
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=StudentModel(), artifacts={"student": str(tmp_path / "m")},
                             pip_requirements=pip_requirements(), signature=signature("re"))
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    out = served.predict(pd.DataFrame({"text": ["Alice met Bob in Rome"] * 2, "head": ["Alice"] * 2, "tail": ["Bob"] * 2}))
    assert list(out["relation"]) == predict(st, samples)


def test_a_marker_cut_by_truncation_is_reported_not_silent(tiny, caplog):
    """A tail past train.max_length is classified from [CLS]: the featurizer names the sample and the key."""
    st = build_student("re", RE_LABELS, "cotpd", tparams(tiny))
    far = re_sample(7)
    far.tokens = far.tokens + ["and"] * 40 + ["Carol"]
    far.tail = Span(len(far.tokens) - 1, len(far.tokens), "Carol")
    fz = Featurizer(st.tokenizer, "re", st.labels, 16, 48)
    with caplog.at_level("WARNING", logger="cotpd.model.data"):
        feats = fz.features([re_sample(0), far], st.train_views)
    assert feats[1]["text"]["marker_pos"][1] == 0 and feats[0]["text"]["marker_pos"][1] > 0
    assert "1 of 2 RE samples (first: 'r7')" in caplog.text and "train.max_length (now 16)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cotpd.model.data"):
        Featurizer(st.tokenizer, "re", st.labels, 64, 96).features([far], st.train_views)
    assert "truncation" not in caplog.text
