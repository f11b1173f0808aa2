"""Compile-check of the CUDA sources without a GPU: every csrc/**/*.cu with `nvcc -c` (no link)
for sm_80, sm_86, sm_89 and sm_90 with `-Xptxas -v` (no register spills, static shared memory
within the 99 KiB a block may use on sm_86/sm_89),
and the CUDA backend's host code (csrc/cuda/*.cpp) with the host compiler against torch's headers as
setup.py would build them with DDSA_WITH_CUDA. Skips when nvcc (or a C++ compiler) is absent.

The objects are written to a temporary folder; all compilers run concurrently to keep this quick.
"""
import glob
import os
import shutil
import re
import subprocess
import sysconfig
import tempfile

import pytest
import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CU_FILES = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))
# The CUDA backend's host code (the bindings' CUDA part is two m.def lines, built by every CPU build).
HOST_FILES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
NVCC = shutil.which("nvcc") or (
    os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc") if cpp_extension.CUDA_HOME else None
)
CXX = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
# Ampere (A100, RTX 30xx), Ada and Hopper; override with DDSA_NVCC_ARCHS=sm_80,sm_90.
ARCHS = os.environ.get("DDSA_NVCC_ARCHS", "sm_80,sm_86,sm_89,sm_90").split(",")
MAX_SHARED = 99 * 1024
TIMEOUT_S = 600


def _torch_defines() -> list[str]:
    return [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]


def _cuda_include() -> list[str]:
    """-I of the CUDA toolkit's include folder (nvcc may be a wrapper script outside the toolkit)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME]
    if NVCC:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(NVCC))))
    candidates += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for root in candidates:
        if root and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return [f"-I{os.path.join(root, 'include')}"]
    return []


def _nvcc_command(src: str, out_dir: str) -> list[str]:
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    obj = os.path.join(out_dir, os.path.basename(src) + ".o")
    gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHS]
    return [NVCC, "-c", src, "-o", obj, "-std=c++17", *gencode, "-O3", "-Xptxas", "-v",
            *cpp_extension.COMMON_NVCC_FLAGS, *includes, *_torch_defines(), "-Xcompiler", "-fPIC"]


def ptxas_usage(log: str) -> list[tuple[str, str, int, int, int]]:
    """(kernel, arch, spill bytes, registers, static shared bytes) per kernel in `-Xptxas -v` output."""
    rows, name, arch, spill = [], None, None, 0
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
        if m:
            name, arch, spill = m.group(1), m.group(2), 0
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            spill = int(m.group(1)) + int(m.group(2))
        m = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
        if m and name:
            rows.append((name, arch, spill, int(m.group(1)), int(m.group(2) or 0)))
            name = None
    return rows


def _host_command(src: str) -> list[str]:
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + _cuda_include()
    python_include = sysconfig.get_paths()["include"]
    # CPU wheels of torch ship c10/cuda headers but not the generated cuda_cmake_macros.h.
    return [CXX, "-fsyntax-only", "-std=c++20", "-DDDSA_WITH_CUDA", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
            "-DTORCH_EXTENSION_NAME=_C", f"-I{python_include}", *includes, *_torch_defines(), src]


def _run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, cmd in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=TIMEOUT_S)
        results[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, "")
    return results


@pytest.fixture(scope="module")
def compiled():
    if NVCC is None:
        pytest.skip("nvcc not found (no CUDA toolkit): cannot compile-check the CUDA sources")
    with tempfile.TemporaryDirectory() as tmp:
        commands = {os.path.relpath(src, ROOT): _nvcc_command(src, tmp) for src in CU_FILES}
        if CXX is not None and _cuda_include():
            commands.update({os.path.relpath(src, ROOT): _host_command(src) for src in HOST_FILES})
        yield _run_all(commands)


def test_there_are_cuda_sources():
    assert CU_FILES, "csrc/ holds no .cu file"


@pytest.mark.parametrize("src", [os.path.relpath(p, ROOT) for p in CU_FILES])
def test_cu_file_compiles_with_nvcc(compiled, src):
    result = compiled[src]
    assert result.returncode == 0, f"nvcc -c {src} failed:\n{result.stdout[-6000:]}"
    assert " error" not in result.stdout
    usage = ptxas_usage(result.stdout)
    assert usage, f"no ptxas resource report for {src}:\n{result.stdout[-3000:]}"
    assert {arch for _, arch, *_ in usage} == set(ARCHS)
    for kernel, arch, spill, regs, smem in usage:
        assert spill == 0, f"{kernel} spills {spill} bytes on {arch} ({regs} registers)"
        assert smem <= MAX_SHARED, f"{kernel} uses {smem} bytes of static shared memory on {arch}"


@pytest.mark.parametrize("src", [os.path.relpath(p, ROOT) for p in HOST_FILES])
def test_cuda_host_code_compiles_with_torch_headers(compiled, src):
    if src not in compiled:
        pytest.skip("no host C++ compiler or no cuda_runtime.h found")
    result = compiled[src]
    assert result.returncode == 0, f"host compile of {src} with DDSA_WITH_CUDA failed:\n{result.stdout[-6000:]}"


def test_channel_norm_cuda_sources_are_checked():
    """The channel norm's kernels and host code are among the files compiled above."""
    rel_cu = {os.path.relpath(p, ROOT) for p in CU_FILES}
    rel_host = {os.path.relpath(p, ROOT) for p in HOST_FILES}
    assert os.path.join("csrc", "cuda", "channel_norm.cu") in rel_cu
    assert os.path.join("csrc", "cuda", "channel_norm_cuda.cpp") in rel_host
