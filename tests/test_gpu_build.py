"""GPU builds without a GPU: every @triton.jit kernel in kernels/*.py compiles for Hopper (sm_90)
from its module's GPU_COMPILE_SPECS (convention in kernels/__init__.py), and every
csrc/cuda/*.cu compiles with `nvcc -c -arch=sm_90 -Icsrc/include`."""
import glob
import importlib
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_FILES = sorted(glob.glob(os.path.join(REPO, "kernels", "*.py")))
CU_FILES = sorted(glob.glob(os.path.join(REPO, "csrc", "cuda", "*.cu")))

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction
except ImportError:
    triton = None


def kernel_modules():
    """(name, module) of every kernels/*.py except the package __init__."""
    names = [os.path.basename(f)[:-3] for f in KERNEL_FILES if not f.endswith("__init__.py")]
    return [(n, importlib.import_module(f"fastattr.kernels.{n}")) for n in names]


def jit_functions(module):
    """The @triton.jit functions defined in `module` (not imported from elsewhere)."""
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, JITFunction) and obj.fn.__module__ == module.__name__}


def all_specs():
    if triton is None or os.environ.get("TRITON_INTERPRET") == "1":
        return []
    return [pytest.param(spec, id=f"{n}.{spec['fn'].fn.__name__}[{i}]")
            for n, mod in kernel_modules() for i, spec in enumerate(getattr(mod, "GPU_COMPILE_SPECS", []))]


needs_triton = pytest.mark.skipif(triton is None, reason="triton is not installed")
not_interpreted = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                     reason="TRITON_INTERPRET=1: kernels are interpreted, not compilable")


@needs_triton
@not_interpreted
def test_every_kernel_has_a_compile_spec():
    modules = kernel_modules()
    assert modules, "no kernel modules found in kernels/"
    n_kernels = 0
    for name, mod in modules:
        kernels = jit_functions(mod)
        n_kernels += len(kernels)
        if kernels:
            assert hasattr(mod, "GPU_COMPILE_SPECS"), f"kernels/{name}.py has @triton.jit kernels but no GPU_COMPILE_SPECS"
        covered = {id(s["fn"]) for s in getattr(mod, "GPU_COMPILE_SPECS", [])}
        missing = [k for k, fn in jit_functions(mod).items() if id(fn) not in covered]
        assert not missing, f"kernels/{name}.py: @triton.jit kernels without a GPU_COMPILE_SPECS entry: {missing}"
    assert n_kernels >= 2, "the path_accumulate kernels were not found: discovery is broken"


@needs_triton
@not_interpreted
@pytest.mark.parametrize("spec", all_specs())
def test_triton_kernel_compiles_for_hopper(spec):
    fn = spec["fn"]
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in spec.get("divisible_by_16", [])}
    src = ASTSource(fn=fn, signature=spec["signature"], constexprs=spec.get("constexprs", {}), attrs=attrs)
    options = {"num_warps": spec["num_warps"]} if "num_warps" in spec else None
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    assert kernel.asm["cubin"], "no cubin produced"
    assert ".target sm_90" in kernel.asm["ptx"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found on PATH")
@pytest.mark.skipif(not CU_FILES, reason="no csrc/cuda/*.cu files yet")
@pytest.mark.parametrize("cu", CU_FILES, ids=os.path.basename)
def test_cuda_source_compiles_for_hopper(cu, tmp_path):
    cmd = ["nvcc", "-c", "-arch=sm_90", "-I" + os.path.join(REPO, "csrc", "include"), cu,
           "-o", str(tmp_path / (os.path.basename(cu) + ".o"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
