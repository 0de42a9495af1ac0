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
