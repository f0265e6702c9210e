"""Captioners (precomputed, a tiny random BLIP-2, a vision LLM behind the fake server) and the stage."""
from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from cotpd.captions.blip2 import Blip2Captioner
from cotpd.captions.captioners import (BAD_IMAGE, MISSING_CAPTION, MISSING_IMAGE, OK, CaptionResult,
                                       PrecomputedCaptioner, VisionLLMCaptioner)
from cotpd.config import Blip2Cfg, VisionLLMCfg
from cotpd.io import read_jsonl
from cotpd.llm import build_runner
from cotpd.params import Layout, dataset_params, read_params
from cotpd.records import NerSample, write_records
from cotpd.stages import captions as captions_stage
from cotpd_testing.fake_llm import default_responder, start_server
from cotpd_testing.tiny_blip2 import tiny_blip2

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(d / "1.jpg")
    Image.new("RGB", (30, 64), (20, 20, 220)).save(d / "2.png")
    (d / "3.jpg").write_bytes(b"this is not an image")
    return d


def test_precomputed_counts_missing():
    cap = PrecomputedCaptioner({"1.jpg": "a red square", "2.jpg": "  ", "4.jpg": "a dog"})
    out = cap.caption(["1.jpg", "2.jpg", "9.jpg", "4"])
    assert out["1.jpg"] == CaptionResult("a red square", OK)
    assert out["2.jpg"].status == MISSING_CAPTION and out["2.jpg"].caption is None  # blank is not a caption
    assert out["9.jpg"].status == MISSING_CAPTION
    assert out["4"].caption == "a dog"  # the id without its extension still finds `4.jpg`


def test_captions_stage_writes_every_image_of_every_split(tmp_path):
    lay = Layout(tmp_path, "sample")
    write_records(lay.raw("train"), [NerSample("a", ["x"], ["O"], image_id="1.jpg", split="train"),
                                     NerSample("b", ["y"], ["O"], image_id=None, split="train")])
    write_records(lay.raw("test"), [NerSample("c", ["z"], ["O"], image_id="2.jpg", split="test"),
                                    NerSample("d", ["w"], ["O"], image_id="1.jpg", split="test")])
    cap = PrecomputedCaptioner({"1.jpg": "a red square"})
    summary = captions_stage.run("sample", tmp_path, read_params(ROOT), captioner=cap)
    rows = read_jsonl(lay.captions)
    assert [(r["image_id"], r["caption"], r["status"], r["source"]) for r in rows] == [
        ("1.jpg", "a red square", OK, "precomputed"), ("2.jpg", None, MISSING_CAPTION, "precomputed")]
    assert summary["images"] == 2 and summary["captioned"] == 1 and summary["missing"] == 1
    assert summary["coverage"] == 0.5 and summary["samples_without_image"] == 1


def test_blip2_captioner_on_tiny_random_model(images):
    t0 = time.perf_counter()
    model, processor = tiny_blip2()
    cap = Blip2Captioner(model, processor, images, Blip2Cfg(batch_size=2, max_new_tokens=5, device="cpu"))
    out = cap.caption(["1.jpg", "2.png", "3.jpg", "missing.jpg", "2"])
    assert list(out) == ["1.jpg", "2.png", "3.jpg", "missing.jpg", "2"]
    assert out["3.jpg"].status == BAD_IMAGE and out["missing.jpg"].status == MISSING_IMAGE
    for i in ("1.jpg", "2.png", "2"):  # "2" finds 2.png
        assert out[i].status == OK and out[i].caption, out[i]
        assert "<image>" not in out[i].caption and len(out[i].caption.split()) <= 5  # only new tokens
    assert out["2"].caption == out["2.png"].caption  # same image, same greedy caption
    assert time.perf_counter() - t0 < 30


def test_vision_llm_sends_image_inline(images, tmp_path):
    bodies = []

    def responder(body):
        bodies.append(body)
        return "a plain colored rectangle" if len(bodies) == 1 else default_responder(body)

    llm = dataset_params(read_params(ROOT), "sample").llm
    vision = VisionLLMCfg(model="fake-vision", max_tokens=20)
    with start_server(responder=responder) as srv:
        llm = llm.model_copy(update=dict(backend="openai", base_url=srv.base_url, mode="record", progress=False))
        runner = build_runner(llm, tmp_path / "ledger.jsonl")
        cap = VisionLLMCaptioner(runner, llm, vision, images, dataset="sample")
        out = cap.caption(["1.jpg", "3.jpg", "nope.jpg"])
        assert srv.chat_calls == 1  # only the readable image is sent
    assert out["1.jpg"] == CaptionResult("a plain colored rectangle", OK)
    assert out["3.jpg"].status == BAD_IMAGE and out["nope.jpg"].status == MISSING_IMAGE
    user = [m for m in bodies[0]["messages"] if m["role"] == "user"][0]
    parts = {p["type"]: p for p in user["content"]}
    url = parts["image_url"]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (48, 40)  # the very image, not a path or a placeholder
    assert "Describe the attached image" in parts["text"]["text"]
    # a second captioner over the same ledger in replay mode answers without the server
    replay = llm.model_copy(update=dict(mode="replay", base_url="http://127.0.0.1:9/v1"))
    again = VisionLLMCaptioner(build_runner(replay, tmp_path / "ledger.jsonl"), replay, vision, images,
                               dataset="sample").caption(["1.jpg"])
    assert again["1.jpg"].caption == "a plain colored rectangle"
