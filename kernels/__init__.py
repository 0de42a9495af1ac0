"""Triton kernels of fastattr (installed as fastattr.kernels), each beside its pure-torch `*_ref`.

Modules here import without Triton: the reference functions are always available; the Triton
launchers exist only when `import triton` works.

Convention for every kernel module (checked by tests/test_gpu_build.py, which compiles each
`@triton.jit` kernel of kernels/*.py ahead of time for Hopper, sm_90, without a GPU): the module
defines `GPU_COMPILE_SPECS`, a list (empty when Triton is missing) of dicts

    {"fn": <the @triton.jit function>,
     "signature": {arg name: Triton type, e.g. "*fp32", "*bf16", "*i64", "i32", or "constexpr"},
     "constexprs": {constexpr arg name: value},
     "divisible_by_16": [arg names the JIT would see 16-aligned]   # optional, as at run time
     "num_warps": 4}                                               # optional

covering every jit function of the module at least once (the test fails on a kernel without a
spec), e.g. one entry per grads dtype the launcher passes through.
"""

import sys as _sys

if __name__ == "kernels":  # pragma: no cover - exercised in a subprocess by tests/test_import_shadowing.py
    # Imported as the top-level package "kernels": Python started in the repository root, whose
    # folder kernels/ (installed as fastattr.kernels) then shadows the PyPI package of that name,
    # which transformers 5 imports ("cannot import name 'CUDAProperties' from 'kernels'"). Hand the
    # name over to the installed package (found on sys.path without the repository root), or fail
    # as a missing package would.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _path = [p for p in _sys.path if _os.path.abspath(p or _os.getcwd()) != _root]
    _spec = _machinery.PathFinder.find_spec("kernels", _path)
    if _spec is None:
        raise ModuleNotFoundError(
            "No module named 'kernels' (the repository's kernels/ folder is fastattr.kernels, not the "
            "PyPI package 'kernels')", name="kernels")
    _module = _util.module_from_spec(_spec)
    _sys.modules["kernels"] = _module  # the import statement returns sys.modules["kernels"]
    _spec.loader.exec_module(_module)
