"""fastattr: fast gradient-based attribution maps for image classifiers.

    maps = fastattr.attribute(model, images, method="ig", idgi=True, steps=32)
"""
from fastattr import ops  # noqa: F401  (registers torch.ops.fastattr.*; warns once without _C)
from fastattr.api import Explanation, attribute, explain
from fastattr.explainer import Explainer
from fastattr.methods import METHODS
from fastattr.smoothing import smoothgrad

__all__ = ["attribute", "explain", "smoothgrad", "Explanation", "Explainer", "METHODS"]
__version__ = "0.1.0"
