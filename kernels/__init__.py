"""Triton kernels of fastattr (installed as fastattr.kernels), each beside its pure-torch `*_ref`.

Modules here import without Triton: the reference functions are always available; the Triton
launchers exist only when `import triton` works.
"""
