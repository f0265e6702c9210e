"""Data-parallel training: torchrun with 2 CPU processes (gloo), tiny model, a couple of steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cotpd.model import build_tiny_encoder, load_student
from cotpd.params import Layout
from cotpd.records import NerSample, write_records


def samples(n, split):
    return [NerSample(id=f"{split}-{i}", tokens=["Ann", "Lee", "in", ["Rome", "Paris"][i % 2]][: 3 + i % 2],
                      labels=["B-PER", "I-PER", "O", "B-LOC"][: 3 + i % 2], split=split) for i in range(n)]


def torchrun_train(tmp_path: Path, **train_kw) -> tuple[dict, str, Layout]:
    """Train cotpd on a toy NER dataset (16 samples, batch 4) under torchrun with 2 CPU processes
    (gloo); `train_kw` replace train params (whole sections). (rank 0's result, the log, the layout)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    enc = build_tiny_encoder(tmp_path / "enc")
    lay = Layout(tmp_path, "toy")
    for split, n in (("train", 16), ("valid", 4), ("test", 4)):
        write_records(lay.raw(split), samples(n, split))
    toy = {"task": "ner", "format": "twitter_conll", "root": ".", "entity_types": ["PER", "LOC"],
           "splits": {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}}  # prepared: never read
    params = {"seed": 7, "pipeline": {"datasets": ["toy"]}, "datasets": {"toy": toy},
              "train": {"encoder": str(enc), "variants": ["cotpd"], "epochs": 1, "batch_size": 4, "lr": 1e-3,
                        "head_lr": 1e-2, "weight_decay": 0.0, "warmup_ratio": 0.0, "max_grad_norm": 1.0,
                        "max_length": 16, "knowledge_max_length": 24, "patience": 1, "device": "cpu", "bf16": False,
                        "use_augmented": False, "data_fraction": 1.0, "num_threads": 1,
                        "prompt": {"k": 2, "layers": 1, "heads": 2},
                        "distill": {"lambda": 1.0, "temperature": 2.0, "teacher_grad": False}, **train_kw},
              "eval": {"view": "prompt"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("COTPD_ROOT", None)
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "cotpd.training",
                           "--root", str(tmp_path), "--dataset", "toy", "--variant", "cotpd"],
                          capture_output=True, text=True, env=env, timeout=540, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # 16 samples / batch 4 = 4 batches, split over 2 ranks: 2 steps each
    assert "rank 0 of 2 on cpu, 16 samples, 2 steps per epoch" in log, log[-4000:]
    assert "rank 1 of 2 on cpu, 16 samples, 2 steps per epoch" in log, log[-4000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):]), log, lay  # only rank 0 prints its result


@pytest.mark.timeout(600)
def test_torchrun_two_cpu_processes(tmp_path):
    result, _, lay = torchrun_train(tmp_path)
    assert result["world_size"] == 2 and result["test"]["n"] == 4
    model = load_student(lay.model_dir("cotpd"))  # only rank 0 saved, and the checkpoint loads
    assert model.variant == "cotpd" and model.saved_config["params"]["dataset"] == "toy"
