"""Evaluation metrics of the papers (SPEC.md "Metrics"): tensors in, per-image tensors out; every
perturbed image of every step goes through the model in large chunks via the engine."""
from fastattr.metrics.insertion_deletion import deletion, insertion, insertion_deletion
from fastattr.metrics.localization import localization
from fastattr.metrics.pic import PicResult, pic

__all__ = ["insertion", "deletion", "insertion_deletion", "pic", "localization", "PicResult"]
