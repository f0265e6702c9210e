"""Two-stage CoTPD (issue #19): distil from a trained knowledge view whose outputs are computed once.

The paper trains the two views together (Sec. 3.4): every step runs the knowledge view forward and
backward on text + caption + CoT (192 subwords here against the text's 64), which is most of why a
CoTPD training costs about five baselines. With `train.distill.teacher` naming a trained student of
the `knowledge` variant (the grid trains one anyway), its logits on every training sample are
computed once, the new student starts from its encoder and task head, and only the prompt view is
trained: L = L_task(prompt view) + lambda * T^2 * KL(p_teacher/T || p_prompt/T), the same KL with a
frozen teacher that is already as good as the knowledge view gets (it is not still learning, as it
is early in a joint training). Inference is unchanged: the text-only prompt view.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..errors import ConfigError
from ..records import Sample
from .data import bucket_batches, collate
from .infer import featurizer_for, to_device
from .student import load_student

# train.distill.teacher: the knowledge view trained first by the same training (cotpd.training.job),
# or in a bench the knowledge model of the same seed
KNOWLEDGE = "auto"


def prepare(student, path: str | Path, samples: Sequence[Sample], device) -> list[torch.Tensor]:
    """Load the teacher at `path`, check it fits, start `student` from it, and return its logits on
    `samples` (the training set, in order); the teacher is dropped afterwards."""
    if not (Path(path) / "config.json").exists():
        raise ConfigError(f"train.distill.teacher={path}: no trained student there; train the knowledge view "
                          "first (cotpd train --variant knowledge, or the bench's main grid)")
    teacher = load_student(path, device)
    check_teacher(teacher, student.task, student.labels, path)
    start_from(student, teacher)
    return teacher_logits(teacher, samples)


def check_teacher(teacher, task: str, labels: Sequence[str], path: str | Path) -> None:
    """A teacher must be a knowledge-view student of the same task and label set as the student."""
    if teacher.variant != "knowledge":
        raise ConfigError(f"train.distill.teacher={path}: a {teacher.variant!r} student; the teacher must be "
                          "a trained 'knowledge' variant (cotpd train --variant knowledge)")
    if teacher.task != task or list(teacher.labels) != list(labels):
        raise ConfigError(f"train.distill.teacher={path}: task {teacher.task!r} with labels {teacher.labels}, "
                          f"but this training is {task!r} with labels {list(labels)}")


@torch.no_grad()
def teacher_logits(teacher, samples: Sequence[Sample], batch_size: int = 64) -> list[torch.Tensor]:
    """The knowledge view's logits of each sample, on the CPU: NER [covered words, labels] (the
    words the knowledge view's truncation kept), RE [relations]."""
    teacher.eval()
    device = next(teacher.parameters()).device
    feats = featurizer_for(teacher).features(samples, ["know"], check=False)
    pad = teacher.tokenizer.pad_token_id or 0
    out: list = [None] * len(samples)
    for idx in bucket_batches([f["length"] for f in feats], batch_size, shuffle=False):
        batch = to_device(collate([feats[i] for i in idx], ["know"], pad), device)
        logits = teacher.logits(batch["know"]).float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(feats[i]["know"]["word_pos"])] if teacher.task == "ner" else logits[row]
    return out


def attach(feats: list[dict], logits: list[torch.Tensor]) -> None:
    """Each training feature carries its teacher's logits (collate pads them into batch["teacher"])."""
    for f in feats:
        f["teacher"] = logits[f["index"]]


def start_from(student, teacher) -> None:
    """The student starts as the teacher: its encoder, task head and case features (the prompt
    generator is new); same architecture, so the state dicts match key for key."""
    own = student.state_dict()
    taken = {k: v for k, v in teacher.state_dict().items() if not k.startswith("prompt.") and k in own}
    missing = [k for k in own if not k.startswith("prompt.") and k not in taken]
    if missing:
        raise ConfigError(f"teacher and student differ in architecture (e.g. {missing[:3]}): train the teacher "
                          "with the same train.encoder and case features")
    student.load_state_dict(taken, strict=False)
