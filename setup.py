"""Build fastattr._C from csrc/ (CPU always; csrc/cuda/ only when the installed torch has CUDA).

Every csrc/*.cpp is compiled; each op file registers itself with TORCH_LIBRARY_FRAGMENT, so a new
op is a new file. Raw CUDA kernels (csrc/cuda/*.cu) include no torch headers; their torch glue
lives in csrc/cuda/*_cuda.cpp. Triton kernels in kernels/ are installed as fastattr.kernels.
"""
import glob
import os

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
if os.environ.get("FASTATTR_NO_EXT") != "1":
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob("csrc/*.cpp"))
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if os.environ.get("FASTATTR_FORCE_CPU") == "1":
        use_cuda = False
    # -ffp-contract=off: no fused multiply-adds in the AVX2 / AVX-512 clones (csrc/path_accumulate.cpp),
    # so every build rounds a*b+c twice, as the baseline build and the pure-torch references do
    cxx = ["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off"] if os.name != "nt" else ["/O2", "/std:c++17"]
    include_dirs = [os.path.join(here, "csrc", "include")]
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        ext = CUDAExtension(
            "fastattr._C", sources, include_dirs=include_dirs,
            define_macros=[("FASTATTR_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension("fastattr._C", sources, include_dirs=include_dirs,
                           extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    ext_modules = [ext]
    cmdclass = {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}

setup(
    packages=find_packages(include=["fastattr", "fastattr.*"]) + ["fastattr.kernels"],
    package_dir={"fastattr.kernels": "kernels"},
    package_data={"fastattr.data": ["*.txt"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
