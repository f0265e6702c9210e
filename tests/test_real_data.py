"""The readers on the real benchmark files (../shared/data): published counts, knowledge alignment,
caption coverage, speed. Skipped with a message where the data is absent."""
from __future__ import annotations

import time

import pytest

from cotpd import readers
from cotpd.params import Layout, dataset_params
from cotpd.records import read_records
from cotpd.stages import prepare

pytestmark = pytest.mark.real_data

TWITTER_SENTENCES = {"train": 4000, "valid": 1000, "test": 3257}
TWITTER_ENTITIES = {"train": 6166, "valid": 1541, "test": 5072}
MNRE_INSTANCES = {"train": 12247, "valid": 1624, "test": 1614}


@pytest.fixture
def real_params(params, real_data):
    """params.yaml with the real datasets' roots pointed at the folder found (absolute)."""
    params["datasets"]["twitter2015"]["root"] = str(real_data / "twitter2015")
    params["datasets"]["mnre"]["root"] = str(real_data / "mnre")
    return params


def test_twitter2015_with_captions_and_knowledge_counts_and_speed(real_params, tmp_path):
    t0, cpu0 = time.perf_counter(), time.process_time()
    dp = dataset_params(real_params, "twitter2015")
    data = readers.read_dataset(dp, tmp_path)
    caps = readers.load_captions(dp, tmp_path)
    coverage, knowledge = {}, {}
    for split, (samples, _) in data.items():
        kn = readers.load_precomputed_knowledge(dp, tmp_path, split, samples)
        knowledge[split] = kn.stats
        coverage[split] = readers.attach(samples, caps, kn)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"\nread Twitter-2015 (3 splits + captions + knowledge): {seconds:.2f} s wall, {cpu:.2f} s CPU")
    # CPU time: on a shared 2-core machine the wall time mostly measures the neighbours
    assert cpu < 5.0, f"reading Twitter-2015 took {cpu:.2f} s of CPU"

    assert {s: st["sentences"] for s, (_, st) in data.items()} == TWITTER_SENTENCES
    assert {s: st["entities"] for s, (_, st) in data.items()} == TWITTER_ENTITIES
    # the published files miss the last tweet of each split: exactly that one has no knowledge
    for split, n in TWITTER_SENTENCES.items():
        assert knowledge[split]["aligned"] == n - 1 and knowledge[split]["missing_ids"] == [f"{split}-{n - 1}"]
        assert coverage[split]["with_knowledge"] == n - 1 and coverage[split]["missing_knowledge"] == 1
    # every image id is in the caption file (two of them with an empty caption)
    missing = sorted(i for c in coverage.values() for i in c["missing_caption_ids"])
    assert missing == [], f"image ids without a caption: {missing}"
    assert sum(c["empty_caption"] for c in coverage.values()) == caps.stats["empty"] == 2
    assert sum(c["with_caption"] for c in coverage.values()) == sum(TWITTER_SENTENCES.values()) - 2
    # the lone no-break space of valid.txt is a token, not stripped away
    assert any("\u00a0" in s.tokens for s in data["valid"][0])


def test_mnre_counts_and_caption_coverage(real_params, tmp_path):
    dp = dataset_params(real_params, "mnre")
    data = readers.read_dataset(dp, tmp_path)
    assert {s: st["instances"] for s, (_, st) in data.items()} == MNRE_INSTANCES
    assert {s: st["none"] for s, (_, st) in data.items()} == {"train": 7744, "valid": 1000, "test": 974}
    assert {s: st["relation_types"] for s, (_, st) in data.items()} == {"train": 23, "valid": 23, "test": 21}
    assert sum(st["name_spacing"] for _, st in data.values()) == 0  # every name is its tokens joined
    caps = readers.load_captions(dp, tmp_path)
    assert caps.stats["placeholder"] == 3 and caps.stats["empty"] == 35
    samples = [s for ss, _ in data.values() for s in ss]
    cov = readers.attach(samples, caps)
    assert cov["missing_caption_ids"] == [], f"image ids without a caption: {cov['missing_caption_ids']}"
    assert cov["with_caption"] + cov["empty_caption"] == len(samples)


def test_prepare_stage_on_twitter2015(real_params, tmp_path):
    summary = prepare.run("twitter2015", tmp_path, real_params)
    assert {s: v["entities"] for s, v in summary["splits"].items()} == TWITTER_ENTITIES
    assert {s: v["iob2_kept"] for s, v in summary["splits"].items()} == {"train": 186, "valid": 53, "test": 135}
    assert {s: v["aligned"] for s, v in summary["knowledge"].items()} == {"train": 3999, "valid": 999, "test": 3256}
    assert summary["image_ids"] == 8257
    test = read_records(Layout(tmp_path, "twitter2015").raw("test"))
    assert len(test) == 3257 and test[0].id == "test-0" and test[0].image_id.endswith(".jpg")
