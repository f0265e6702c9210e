"""The student model: views, label alignment, prompt generator, heads, KL, save/load."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from pydantic import ValidationError

from cotpd.errors import ConfigError
from cotpd.model import build_student, distill_kl, load_student, predict
from cotpd.model.data import Featurizer, bucket_batches, build_context, collate
from model_helpers import NER_LABELS, RE_LABELS, kl_cfg, ner, re_sample, tiny, tparams  # noqa: F401  (tiny: fixture)

def test_first_subword_alignment_and_nbsp_word(tiny):
    st = build_student("ner", NER_LABELS, "baseline", tparams(tiny))
    fz = Featurizer(st.tokenizer, "ner", NER_LABELS, 32, 48)
    s = ner()
    words = fz.words(s)
    assert words[2] == st.tokenizer.unk_token  # the lone U+00A0 has no WordPiece subword of its own
    assert st.tokenizer(["\u00a0"], is_split_into_words=True, add_special_tokens=False)["input_ids"] == []
    f = fz.encode(s, "text", words)
    ids = f["input_ids"]
    assert len(f["word_pos"]) == len(s.tokens)  # every word has a first subword
    assert f["labels"] == [NER_LABELS.index(lab) for lab in s.labels]
    # first subwords only: "Obamaification" is several pieces, only its first carries the label
    enc = st.tokenizer(words, is_split_into_words=True)
    firsts = [enc.word_ids().index(j) for j in range(len(words))]
    assert f["word_pos"] == firsts
    assert len(ids) > len(words) + 2  # some words are split, so positions != word indices
    assert ids[f["word_pos"][2]] == st.tokenizer.unk_token_id


def test_truncated_words_are_predicted_O_and_lengths_match(tiny):
    st = build_student("ner", NER_LABELS, "cotpd", tparams(tiny, max_length=8))
    long = ner(1, tokens=["word"] * 20, labels=["O"] * 20)
    preds = predict(st, [ner(), long, ner(2, tokens=["\u00a0"], labels=["O"])])
    assert [len(p) for p in preds] == [5, 20, 1]
    assert preds[1][6:] == ["O"] * 14  # beyond max_length: 6 words fit between [CLS] and [SEP]


def test_knowledge_view_keeps_text_whole(tiny):
    st = build_student("ner", NER_LABELS, "knowledge", tparams(tiny))
    fz = Featurizer(st.tokenizer, "ner", NER_LABELS, 32, 24)
    s = ner()
    s.knowledge["sentence"] = "background " * 100
    text_ids = fz.encode(s, "text")["input_ids"]
    know = fz.encode(s, "know")
    assert len(know["input_ids"]) == 24  # context truncated to the budget
    assert know["input_ids"][: len(text_ids)] == text_ids  # the text segment is intact
    assert know["token_type_ids"][len(text_ids)] == 1
    assert "Image: a man at a podium" in build_context(s)
    # a text longer than the budget on its own: text truncated, no context
    long = ner(3, tokens=["word"] * 40, labels=["O"] * 40)
    k2 = fz.encode(long, "know")
    assert len(k2["input_ids"]) == 24 and set(k2["token_type_ids"]) == {0}


def test_prompt_view_prepends_exactly_k_vectors(tiny):
    st = build_student("ner", NER_LABELS, "cotpd", tparams(tiny))
    fz = Featurizer(st.tokenizer, "ner", NER_LABELS, 32, 48)
    batch = collate(fz.features([ner(), ner(1, tokens=["Hi"], labels=["O"])], ["text"]), ["text"], 0)
    seen = {}
    orig = st.encoder.forward

    def spy(*a, **kw):
        seen.update(kw)
        return orig(*a, **kw)

    st.encoder.forward = spy
    st.eval()
    tb = batch["text"]
    h = st.hidden(tb, prompt=True)
    B, L = tb["input_ids"].shape
    k = st.prompt_cfg.k
    assert seen["inputs_embeds"].shape == (B, L + k, st.encoder.config.hidden_size)
    assert seen["attention_mask"].shape == (B, L + k)
    assert seen["attention_mask"][:, 1:1 + k].all()  # prompts after [CLS] always attended
    assert torch.equal(seen["attention_mask"][:, 1 + k:], tb["attention_mask"][:, 1:])
    words = st.encoder.get_input_embeddings()(tb["input_ids"])
    assert torch.allclose(seen["inputs_embeds"][:, 1 + k:], words[:, 1:])  # the text follows, unchanged
    assert torch.allclose(seen["inputs_embeds"][:, 0], words[:, 0])  # [CLS] stays first
    assert h.shape == (B, L, st.encoder.config.hidden_size)  # prompt outputs dropped again
    # the prompts depend on the text (conditional), not only on the learnt queries
    p1 = st.prompt(words[:1], tb["attention_mask"][:1])
    p2 = st.prompt(words[1:], tb["attention_mask"][1:])
    assert not torch.allclose(p1, p2)


def test_kl_zero_when_views_agree_and_teacher_gradient_switch():
    logits = torch.randn(2, 5, 3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert distill_kl(logits, logits.clone(), mask, kl_cfg(2.0)).abs().item() < 1e-6
    s = torch.randn(2, 5, 3, requires_grad=True)
    t = torch.randn(2, 5, 3, requires_grad=True)
    kl = distill_kl(s, t, mask, kl_cfg(2.0, teacher_grad=False))
    assert kl.item() > 0
    kl.backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    t2 = torch.randn(4, 3, requires_grad=True)
    distill_kl(torch.randn(4, 3), t2, None, kl_cfg(1.0, teacher_grad=True)).backward()
    assert t2.grad is not None and t2.grad.abs().sum() > 0
    # masked positions do not count
    s3, t3 = torch.zeros(1, 2, 3), torch.tensor([[[0.0, 0, 0], [5.0, 0, 0]]])
    assert distill_kl(s3, t3, torch.tensor([[True, False]]), kl_cfg(1.0)).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_reduction_matches_the_per_sentence_task_loss():
    """"sentence": per-word KL summed over a sentence's words, averaged over sentences (the scale of
    the CRF NLL); "token": averaged over words. Padding never counts; RE rows are the same either way."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    per_word = torch.stack([distill_kl(s[i:i + 1, j:j + 1], t[i:i + 1, j:j + 1], None, kl_cfg(2.0, reduction="token"))
                            for i in range(2) for j in range(4)]).view(2, 4)
    sent = distill_kl(s, t, mask, kl_cfg(2.0, reduction="sentence"))
    tok = distill_kl(s, t, mask, kl_cfg(2.0, reduction="token"))
    assert sent.item() == pytest.approx(((per_word * mask).sum() / 2).item(), rel=1e-5)
    assert tok.item() == pytest.approx(((per_word * mask).sum() / 4).item(), rel=1e-5)
    r_s, r_t = torch.randn(5, 3), torch.randn(5, 3)
    assert distill_kl(r_s, r_t, None, kl_cfg(2.0, reduction="sentence")).item() == \
        pytest.approx(distill_kl(r_s, r_t, None, kl_cfg(2.0, reduction="token")).item())
    with pytest.raises(ValidationError, match="reduction"):  # the schema refuses it, before any forward pass
        kl_cfg(2.0, reduction="batch")


@pytest.mark.parametrize("task", ["ner", "re"])
def test_variants_share_one_code_path(tiny, task):
    labels, samples = (NER_LABELS, [ner(0), ner(1)]) if task == "ner" else (RE_LABELS, [re_sample(0), re_sample(1)])
    losses = {}
    for variant in ("baseline", "knowledge", "cotpd"):
        torch.manual_seed(0)
        st = build_student(task, labels, variant, tparams(tiny))
        assert (st.prompt is not None) == (variant == "cotpd")
        fz = Featurizer(st.tokenizer, task, labels, 32, 48)
        batch = collate(fz.features(samples, st.train_views), st.train_views, 0)
        out = st(batch)
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        assert ("kl" in out) == (variant == "cotpd")
        assert st.head.linear.weight.grad is not None
        if variant == "cotpd":
            assert st.prompt.queries.grad.abs().sum() > 0
        losses[variant] = out["loss"].item()
        assert len(predict(st, samples)) == 2
    assert losses["cotpd"] > losses["baseline"]  # two task losses (+ KL) instead of one


def test_re_markers_are_single_tokens_at_marker_positions(tiny):
    st = build_student("re", RE_LABELS, "cotpd", tparams(tiny))
    fz = Featurizer(st.tokenizer, "re", RE_LABELS, 32, 48)
    s = re_sample()
    assert fz.words(s) == ["<e1>", "Alice", "</e1>", "met", "<e2>", "Bob", "</e2>", "in", "Rome"]
    for view in ("text", "know"):
        f = fz.encode(s, view)
        toks = st.tokenizer.convert_ids_to_tokens(f["input_ids"])
        assert [toks[i] for i in f["marker_pos"]] == ["<e1>", "<e2>"]
        assert f["label"] == 1
    assert st.encoder.get_input_embeddings().num_embeddings == len(st.tokenizer)


@pytest.mark.parametrize("task", ["ner", "re"])
def test_save_load_round_trip_same_predictions(tiny, tmp_path, task):
    labels, samples = (NER_LABELS, [ner(0), ner(1, tokens=["Paris", "is", "nice"], labels=["B-LOC", "O", "O"])]) \
        if task == "ner" else (RE_LABELS, [re_sample(0), re_sample(1)])
    torch.manual_seed(1)
    st = build_student(task, labels, "cotpd", tparams(tiny))
    with torch.no_grad():  # make the head decisive so a wrong reload would show
        st.head.linear.weight.normal_(0, 1.0)
    st.eval()
    st.save(tmp_path / "m", params={"x": 1})
    back = load_student(tmp_path / "m")
    assert back.config() == st.config() and back.saved_config["params"] == {"x": 1}
    fz = Featurizer(st.tokenizer, task, labels, 32, 48)
    batch = collate(fz.features(samples, ["text"]), ["text"], 0)
    with torch.no_grad():
        assert torch.allclose(st.logits(batch["text"], True), back.logits(batch["text"], True), atol=1e-6)
    assert predict(st, samples) == predict(back, samples)


def test_older_model_folders_still_load_and_bad_ones_name_the_file(tiny, tmp_path):
    """config.json's train keys are validated into TrainCfg on load: a folder saved before case features
    (knowledge hints, the KL reduction) existed loads as it was trained; a bad value is a ConfigError naming the file."""
    st = build_student("ner", NER_LABELS, "cotpd", tparams(tiny))
    st.save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["case_features"], cfg["knowledge_hints"], cfg["distill"]["reduction"]
    cfg_path.write_text(json.dumps(cfg))
    back = load_student(tmp_path / "m")
    assert back.case_features is False and back.knowledge_hints is False and back.hint_embed is None and back.distill.reduction == "sentence" and back.prompt_cfg.k == 4
    cfg["distill"]["reduction"] = "batch"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"(?s)config\.json: invalid params.*distill\.reduction"):
        load_student(tmp_path / "m")


def test_bucket_batches_cover_and_split_across_ranks():
    lengths = [((i * 37) % 50) + 1 for i in range(103)]
    batches = bucket_batches(lengths, 8, seed=1, epoch=0, chunk=4)
    assert sorted(i for b in batches for i in b) == list(range(103))
    for b in batches:  # sorted within chunks: each batch is a run of a length-sorted chunk
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    assert batches != bucket_batches(lengths, 8, seed=1, epoch=1, chunk=4)  # reshuffled each epoch
    r0 = bucket_batches(lengths, 8, seed=1, rank=0, world=2, chunk=4)
    r1 = bucket_batches(lengths, 8, seed=1, rank=1, world=2, chunk=4)
    assert len(r0) == len(r1) == len(batches) // 2
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}
    assert bucket_batches([3], 8, rank=1, world=2) == [[0]]  # fewer batches than ranks: wrap around


def test_collate_pads_dynamically(tiny):
    st = build_student("ner", NER_LABELS, "cotpd", tparams(tiny))
    fz = Featurizer(st.tokenizer, "ner", NER_LABELS, 32, 48)
    feats = fz.features([ner(0), ner(1, tokens=["Hi"], labels=["O"])], ["text", "know"])
    b = collate(feats, ["text", "know"], st.tokenizer.pad_token_id)
    assert b["text"]["input_ids"].shape[1] == max(len(f["text"]["input_ids"]) for f in feats)
    assert b["text"]["word_mask"].sum(1).tolist() == [5, 1]
    assert b["text"]["word_pos"].shape == b["know"]["word_pos"].shape  # aligned for the KL
    assert (b["text"]["input_ids"][1, b["text"]["attention_mask"][1] == 0] == st.tokenizer.pad_token_id).all()


def test_word_shapes_and_uncased_detection(tiny):
    from cotpd.model.data import SHAPES, lowercases, word_shape

    shapes = {w: SHAPES[word_shape(w)] for w in ("paris", "Paris", "NFL", "iPhone", "I", "2015", ":", "@JayKen",
                                                  "#NFL", "http://t.co/x", "@", "McDonald")}
    assert shapes == {"paris": "lower", "Paris": "title", "NFL": "upper", "iPhone": "mixed", "I": "title",
                      "2015": "noletter", ":": "noletter", "@JayKen": "handle", "#NFL": "hashtag",
                      "http://t.co/x": "url", "@": "noletter", "McDonald": "mixed"}
    st = build_student("ner", NER_LABELS, "baseline", tparams(tiny))
    assert lowercases(st.tokenizer)  # MiniLM's tokenizer (copied into the tiny encoder) is uncased
    assert build_student("ner", NER_LABELS, "baseline", tparams(tiny, case_features="auto")).case_features
    with pytest.raises(ValidationError, match="case_features"):
        tparams(tiny, case_features="sometimes")


@pytest.mark.parametrize("task", ["ner", "re"])
def test_case_features_follow_words_in_both_views(tiny, tmp_path, task):
    """Every subword carries its own word's shape (text and context segments), specials carry 0; the
    shape embedding starts at zero (the encoder is unchanged at step 0) and survives save/load."""
    from cotpd.model.data import SHAPES

    labels = NER_LABELS if task == "ner" else RE_LABELS
    s = ner() if task == "ner" else re_sample()
    s.caption, s.knowledge = "Obama in PARIS", {}
    torch.manual_seed(0)
    st = build_student(task, labels, "cotpd", tparams(tiny, case_features=True))
    fz = Featurizer(st.tokenizer, task, labels, 32, 48, case_features=True)
    words = fz.words(s)
    for view in ("text", "know"):
        f = fz.encode(s, view, words)
        toks = st.tokenizer.convert_ids_to_tokens(f["input_ids"])
        assert len(f["case_ids"]) == len(toks)
        got = {t: SHAPES[c] for t, c in zip(toks, f["case_ids"])}
        assert got["[CLS]"] == got["[SEP]"] == "special"
        if task == "ner":
            assert got["barack"] == "title" and got["visits"] == "lower" and got[st.tokenizer.unk_token] == "special"
        else:
            assert got["<e1>"] == "special" and got["alice"] == "title" and got["met"] == "lower"
        if view == "know":
            assert got["image"] == got["obama"] == "title" and toks[-2:] == ["paris", "[SEP]"]
            assert SHAPES[f["case_ids"][-2]] == "upper"  # the caption's PARIS
    batch = collate(fz.features([s], ["text", "know"]), ["text", "know"], 0)
    assert batch["know"]["case_ids"].shape == batch["know"]["input_ids"].shape
    st.eval()
    plain = build_student(task, labels, "cotpd", tparams(tiny))
    plain.load_state_dict({k: v for k, v in st.state_dict().items() if not k.startswith("case_embed.")})
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(st.logits(batch["know"]), plain.logits(batch["know"]), atol=1e-5)
        st.case_embed.weight.normal_(0, 1.0)  # a trained shape embedding changes the outputs
        assert not torch.allclose(st.logits(batch["know"]), plain.logits(batch["know"]), atol=1e-3)
        st.head.linear.weight.normal_(0, 1.0)
    st.save(tmp_path / "m")
    back = load_student(tmp_path / "m")
    assert back.case_features and back.config() == st.config()
    assert predict(back, [s]) == predict(st, [s])
