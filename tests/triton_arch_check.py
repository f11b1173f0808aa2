"""Compile the Triton kernels for one NVIDIA architecture without a GPU and report their resources.

    python tests/triton_arch_check.py sm_86 fp16 96  ->  JSON {kernel: {regs, stack, shared, warps, stages}}

ARCH is one of sm_80 (A100), sm_86 (RTX 30xx), sm_89 (RTX 40xx, L4/L40) and sm_90 (H100/H200);
DTYPE one of fp16, bf16, fp32; C the number of channels. Every kernel that the launchers of
``ddsa_kernels/ops/dual_attention/triton.py`` and ``ddsa_kernels/ops/channel_norm/triton.py``
launch for (DTYPE, C) is compiled with the constexprs, warps and stages the launcher would choose
on that architecture, and with the JIT's usual specialisations for contiguous inputs (unit
stride as a constant, 16-divisible pointers and outer strides). "stack" is the per-thread local
memory ptxas reserves (0 means no register spills), "shared" the bytes of shared memory one block
needs (Triton allocates all of it dynamically).

Used by tests/test_triton.py, in subprocesses (the kernels must not be in interpreter mode), to
check that every kernel compiles for every architecture with no spills and fits the shared
memory one block may use there. Needs the Triton wheel's NVIDIA backend (ptxas, cuobjdump).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddsa_kernels.ops.channel_norm.triton as CN  # noqa: E402
import ddsa_kernels.ops.dual_attention.triton as DA  # noqa: E402

ARCHS = {"sm_80": (8, 0), "sm_86": (8, 6), "sm_89": (8, 9), "sm_90": (9, 0)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
NAMES = {v: k for k, v in DTYPES.items()}
# Pointers to tensors in the input dtype (all other pointers are fp32 buffers).
DA_IO = {"a_ptr", "b_ptr", "q_ptr", "k_ptr", "v_ptr", "g_ptr", "out_ptr", "dq_ptr", "dk_ptr", "dv_ptr"}
CN_IO = {"x_ptr", "y_ptr", "dy_ptr", "dx_ptr"}


def _is_outer_stride(name):
    """s?_b / s?_h / s?_c of the attention kernels, s?_b / s?_c / s?_h of channel_norm."""
    return re.fullmatch(r"s[a-z]_[bhc]", name) is not None


def compile_kernel(fn, arch, dtype, constexprs, warps, stages, io, unit):
    """Compile one kernel for ``arch`` ("sm_86") as the JIT would for contiguous inputs.

    io: names of the pointers in ``dtype``; unit: stride arguments that are 1 (the JIT turns them
    into constants). Returns {regs, stack, shared, warps, stages}.
    """
    major, minor = ARCHS[arch]
    constexprs = dict(constexprs)
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs or name in unit:
            sig[name] = "constexpr"
            constexprs.setdefault(name, 1)
        elif name.endswith("_ptr"):
            sig[name] = "*" + (NAMES[dtype] if name in io else "fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "eps":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if _is_outer_stride(name):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", major * 10 + minor, 32),
                            options={"num_warps": warps, "num_stages": stages})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    return {"regs": int(m.group(1)), "stack": int(m.group(2)), "shared": kernel.metadata.shared,
            "warps": warps, "stages": stages}


def dual_attention_jobs(arch, dtype, channels):
    """{name: (kernel, constexprs, warps, stages)} of the dual attention launchers (forward + backward)."""
    cfg = DA._block_sizes(channels, dtype, arch=ARCHS[arch])
    low = dtype in DA._LOW_PRECISION
    common = dict(PREC=DA._dot_precision(dtype), UPCAST=False, WIDE=False)
    sweep = dict(BLOCK_C=cfg.block_c, BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, **common)
    keep = (0, channels // 2, channels * 2 // 3, channels * 4 // 5)  # dense + three top-k branches
    return {
        "outer_fwd": (DA._outer_sweep_kernel, dict(WITH_NORMS=True, **sweep), cfg.warps, cfg.stages),
        "outer_bwd": (DA._outer_sweep_kernel, dict(WITH_NORMS=False, **sweep), cfg.warps, cfg.stages),
        "reduce_splits": (DA._reduce_splits_kernel, dict(BLOCK_S=DA._REDUCE_BLOCK_S, BLOCK_E=DA._REDUCE_BLOCK_E),
                          DA._REDUCE_WARPS, DA._REDUCE_STAGES),
        "forward_epilogue": (DA._forward_epilogue_kernel,
                             dict(KEEP=keep, NB=len(keep), HAS_SPARSE=True, BLOCK_C=cfg.block_c, BLOCK_R=cfg.block_r),
                             DA._EPILOGUE_WARPS, DA._EPILOGUE_STAGES),
        "forward_apply": (DA._forward_apply_kernel, dict(SPLIT=low, **sweep), cfg.warps, cfg.stages),
        "backward_epilogue": (DA._backward_epilogue_kernel, dict(NB=len(keep), BLOCK_C=cfg.block_c, BLOCK_R=cfg.block_r),
                              DA._EPILOGUE_WARPS, DA._EPILOGUE_STAGES),
        "backward_apply": (DA._backward_apply_kernel, dict(SPLIT=low, **sweep), cfg.warps, cfg.stages),
    }


def channel_norm_jobs(channels):
    """{name: (kernel, constexprs, warps, stages)} of the channel_norm launchers: LayerNorm with bias
    (x − μ) and bias-free (x only scaled), forward and backward."""
    stages = CN._NUM_STAGES
    bc, bn, one_chunk, warps = CN._blocks(channels, None)
    fwd = dict(ONE_CHUNK=one_chunk, BLOCK_C=bc, BLOCK_N=bn)
    bc, bn, one_chunk, bwd_warps = CN._blocks(channels, None, backward=True)
    bwd = dict(ONE_CHUNK=one_chunk, BLOCK_C=bc, BLOCK_N=bn)
    return {
        "norm_fwd": (CN._forward_kernel, dict(HAS_BIAS=True, SUBTRACT_MEAN=True, **fwd), warps, stages),
        "norm_fwd_biasfree": (CN._forward_kernel, dict(HAS_BIAS=False, SUBTRACT_MEAN=False, **fwd), warps, stages),
        "norm_bwd": (CN._backward_kernel, dict(SUBTRACT_MEAN=True, **bwd), bwd_warps, stages),
        "norm_bwd_biasfree": (CN._backward_kernel, dict(SUBTRACT_MEAN=False, **bwd), bwd_warps, stages),
    }


def main(arch, dtype_name, channels):
    """Print one JSON line {kernel: resources} for (arch, dtype, C)."""
    dtype = DTYPES[dtype_name]
    assert not DA._INTERPRET and not CN._INTERPRET
    out = {}
    for name, (fn, ce, warps, stages) in dual_attention_jobs(arch, dtype, channels).items():
        out[name] = compile_kernel(fn, arch, dtype, ce, warps, stages, DA_IO, {"sa_n", "sb_n", "sv_n", "so_n",
                                                                               "sq_n", "sk_n", "sg_n", "sd_n"})
    for name, (fn, ce, warps, stages) in channel_norm_jobs(channels).items():
        out[name] = compile_kernel(fn, arch, dtype, ce, warps, stages, CN_IO, {"sx_w", "sg_w"})
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ARCHS or sys.argv[2] not in DTYPES:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(ARCHS)}}} {{{','.join(DTYPES)}}} C")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
