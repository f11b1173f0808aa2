"""Build script: the Python packages plus the compiled extension ``ddsa_kernels._C``.

The C++ CPU kernels in csrc/cpu are always built when torch is importable at build time
(install torch first and use ``pip install --no-build-isolation``). The CUDA kernels in
csrc/cuda are added when a CUDA toolkit and a CUDA build of torch are present, or when
DDSA_FORCE_CUDA=1. DDSA_NO_EXTENSION=1 skips the extension entirely (the package then runs on
its reference and Triton backends). MAX_JOBS and TORCH_CUDA_ARCH_LIST are honoured by torch's
build tooling; without TORCH_CUDA_ARCH_LIST the CUDA kernels are built for sm_80, 86, 89, 90 + PTX.
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _log(msg: str) -> None:
    print(f"[ddsa setup] {msg}", file=sys.stderr)


# CUDA archs built when TORCH_CUDA_ARCH_LIST is unset: A100 (8.0), RTX 30xx / A40 (8.6),
# L40 / RTX 40xx (8.9), H100 / H200 (9.0), and PTX of 9.0 for newer GPUs to JIT.
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def cuda_arch_list(environ=os.environ) -> str:
    """TORCH_CUDA_ARCH_LIST for the CUDA build: the user's when set, else DEFAULT_CUDA_ARCHS (rather
    than torch's default of the GPU visible at build time, so one build serves the usual GPUs)."""
    return environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS


def extension_modules():
    if os.environ.get("DDSA_NO_EXTENSION") == "1":
        _log("DDSA_NO_EXTENSION=1: not building the compiled extension")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        _log("torch is not importable at build time: building without the compiled extension "
             "(install torch first, then `pip install --no-build-isolation .`)")
        return [], {}

    cpu_sources = sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # CUDA kernels (.cu, nvcc) and their host side (.cpp, needs the CUDA runtime headers).
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    cuda_host_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    if not cpu_sources:
        _log("no C++ sources in csrc/cpu: building without the compiled extension")
        return [], {}
    binding = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    forced = os.environ.get("DDSA_FORCE_CUDA") == "1"
    if forced and torch.version.cuda is None:
        # A CPU torch has no CUDA libraries to link the kernels against.
        _log("DDSA_FORCE_CUDA=1 ignored: torch is a CPU build (install a CUDA build of torch first)")
        forced = False
    with_cuda = forced or (
        torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()
    )
    # No -std flag: torch adds the standard its headers need (C++17 or C++20 by version).
    # -g0: no debug info (Python's default CFLAGS carry -g), which roughly halves compile time.
    cxx_flags = ["-O3", "-g0", "-fopenmp"]
    define_macros = []
    if sys.platform == "darwin":
        cxx_flags.remove("-fopenmp")
    if with_cuda and cuda_sources:
        define_macros.append(("DDSA_WITH_CUDA", None))
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
        ext = CUDAExtension(
            "ddsa_kernels._C",
            sources=binding + cpu_sources + cuda_host_sources + cuda_sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=["-fopenmp"] if "-fopenmp" in cxx_flags else [],
        )
        _log(f"building ddsa_kernels._C with CPU and CUDA kernels (CUDA_HOME={CUDA_HOME}, "
             f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})")
    else:
        reason = "no CUDA sources" if not cuda_sources else (
            "torch is a CPU build" if torch.version.cuda is None else
            "no CUDA toolkit found" if CUDA_HOME is None else "no GPU visible (set DDSA_FORCE_CUDA=1 to build anyway)")
        ext = CppExtension(
            "ddsa_kernels._C",
            sources=binding + cpu_sources,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"] if "-fopenmp" in cxx_flags else [],
        )
        _log(f"building ddsa_kernels._C with CPU kernels only ({reason})")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_modules()

setup(
    name="ddsa",
    version="0.1.0",
    description="Fused dual self-attention kernels and the DDSA image deraining transformer",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["ddsa_kernels*", "ddsa_model*", "ddsa_bench*"]),
    package_data={"ddsa_model": ["weights/*.safetensors", "weights/*.json", "weights/*.md", "weights/eval/*", "configs/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "numpy",
        "pyyaml",
        "pillow",
        "tqdm",
        "safetensors",
        "triton; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "scikit-image", "scipy", "opencv-contrib-python-headless"],
        "demo": ["scikit-image"],
        "iqa": ["opencv-contrib-python-headless"],
        "build": ["ninja", "pybind11"],
        "plot": ["matplotlib"],
        "tb": ["tensorboard"],
    },
    entry_points={
        "console_scripts": [
            "ddsa-train=ddsa_model.cli.train:main",
            "ddsa-eval=ddsa_model.cli.evaluate:main",
            "ddsa-derain=ddsa_model.cli.derain:main",
            "ddsa-synth=ddsa_model.cli.synth:main",
            "ddsa-demo=ddsa_model.cli.demo:main",
            "ddsa-bench=ddsa_bench.__main__:main",
            "ddsa-convert=ddsa_model.convert:main",
        ]
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
