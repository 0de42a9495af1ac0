"""Loads fastattr._C (C++ ops) and registers pure-torch fallbacks for anything it does not provide.

Every op is a `torch.ops.fastattr.*` dispatcher op whatever the build: the C++ extension defines
the schema and CPU (and CUDA) kernels; when the extension is missing (not built, wrong ABI) the
same schema is defined here with the pure-torch reference as its kernel, after one warning.
Triton kernels register for CUDA from Python, so the dispatcher - not `if`s - picks the kernel.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

try:  # importing the shared object runs its TORCH_LIBRARY registrations
    from fastattr import _C  # noqa: F401

    HAS_C = True
    C_IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # pragma: no cover - exercised by the no-extension test in a subprocess
    HAS_C = False
    C_IMPORT_ERROR = exc
    warnings.warn(
        f"fastattr: the C++ extension fastattr._C is not available ({exc}); using the pure-torch "
        "reference ops (same results, slower). Reinstall with `pip install --no-build-isolation .`.",
        RuntimeWarning,
        stacklevel=2,
    )

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

_LIB = torch.library.Library("fastattr", "FRAGMENT")  # Python-side definitions and kernels


def has_op(name: str) -> bool:
    """True when torch.ops.fastattr.<name> has a schema (from C++ or from Python)."""
    try:
        getattr(torch.ops.fastattr, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def has_kernel(name: str, key: str) -> bool:
    """True when the op has a kernel registered for dispatch key `key` (e.g. "CPU", "CUDA")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"fastattr::{name}", key)


def define_op(name: str, schema: str, reference: Callable, *, cuda: Callable | None = None) -> None:
    """Make fastattr::<name> available on CPU and CUDA: C++ kernels where built, else `cuda`
    (a Triton launcher) for CUDA, else the pure-torch `reference`."""
    if not has_op(name):
        _LIB.define(schema)
    if not has_kernel(name, "CPU"):
        _LIB.impl(name, reference, "CPU")
    if not has_kernel(name, "CUDA"):
        _LIB.impl(name, cuda if cuda is not None else reference, "CUDA")
