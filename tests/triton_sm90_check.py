"""Compile the Triton kernels for sm_90 (H100/H200) without a GPU and report their resources.

    python tests/triton_sm90_check.py fp16 96   ->  JSON {kernel: {regs, stack, shared}}

Used by tests/test_triton.py (in a subprocess: the kernels must not be in interpreter mode) to
check that every kernel compiles for Hopper with no register spills (stack = 0) and fits in
shared memory. Needs the Triton wheel's NVIDIA backend (ptxas, cuobjdump); no GPU.
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
import ddsa_kernels.ops.dual_attention.triton as T  # noqa: E402

IO_PTRS = {"a_ptr", "b_ptr", "q_ptr", "k_ptr", "v_ptr", "g_ptr", "out_ptr", "dq_ptr", "dk_ptr", "dv_ptr"}
NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def compile_kernel(fn, dtype, constexprs, warps, stages):
    """Compile one kernel for sm_90 with the JIT's usual specialisations; its resource usage."""
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs or name.endswith("_n") and name.startswith("s"):
            sig[name] = "constexpr"
            constexprs.setdefault(name, 1)  # unit stride along N: what the JIT specialises
        elif name.endswith("_ptr"):
            sig[name] = "*" + (NAMES[dtype] if name in IO_PTRS else "fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "eps":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("s") and name[-2:] in ("_b", "_h", "_c"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    return {"regs": int(m.group(1)), "stack": int(m.group(2)), "shared": kernel.metadata.shared}


def main(dtype_name, channels):
    """Compile the six kernels with the launch configuration the backend uses for (dtype, C)."""
    dtype = {v: k for k, v in NAMES.items()}[dtype_name]
    assert not T._INTERPRET
    block_c, block_n, warps = T._block_sizes(channels, dtype)
    block_r = T._row_blocks(block_c)[0]
    low = dtype != torch.float32
    common = dict(PREC=T._dot_precision(dtype), UPCAST=False, WIDE=False)
    keep = (0, channels // 2, channels * 2 // 3, channels * 4 // 5)
    jobs = {
        "outer": (T._outer_sweep_kernel, dict(BLOCK_C=block_c, BLOCK_N=block_n, WITH_NORMS=True, **common), warps, 3),
        "reduce_splits": (T._reduce_splits_kernel,
                          dict(BLOCK_S=T._REDUCE_BLOCK_S, BLOCK_E=T._REDUCE_BLOCK_E), 4, 2),
        "forward_epilogue": (T._forward_epilogue_kernel,
                             dict(KEEP=keep, NB=4, HAS_SPARSE=True, BLOCK_C=block_c, BLOCK_R=block_r), 4, 1),
        "forward_apply": (T._forward_apply_kernel, dict(BLOCK_C=block_c, BLOCK_N=block_n, SPLIT=low, **common), warps, 3),
        "backward_epilogue": (T._backward_epilogue_kernel, dict(NB=4, BLOCK_C=block_c, BLOCK_R=block_r), 4, 1),
        "backward_apply": (T._backward_apply_kernel, dict(BLOCK_C=block_c, BLOCK_N=block_n, SPLIT=low, **common), warps, 3),
    }
    print(json.dumps({name: compile_kernel(fn, dtype, dict(ce), w, s) for name, (fn, ce, w, s) in jobs.items()}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
