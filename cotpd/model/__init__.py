"""The student model: encoder wrapper, conditional prompt generator, task heads, data plumbing."""
from .encoder import DEFAULT_ENCODER, MARKERS, build_tiny_encoder, load_encoder, resolve_encoder
from .distill import distill_kl
from .student import VARIANTS, Student, build_student, load_student
from .infer import entities, predict, predict_tokens

__all__ = ["DEFAULT_ENCODER", "MARKERS", "VARIANTS", "Student", "build_student", "build_tiny_encoder",
           "distill_kl", "entities", "load_encoder", "load_student", "predict", "predict_tokens",
           "resolve_encoder"]
