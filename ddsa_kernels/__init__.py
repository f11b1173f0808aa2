"""ddsa_kernels: fused kernels for deraining transformers (DDSA, DRSformer, Restormer).

    from ddsa_kernels import dual_attention, available_backends
    out = dual_attention(q, k, v, temperature, weights, topk=(None, C * 7 // 10))
    y = channel_norm(x, weight, bias)            # LayerNorm over the channels of an NCHW map
    y = depthwise_conv(x, weight, bias)          # depth-wise K×K convolution, zero padding K // 2
    y = depthwise_chain(x, weight, bias)         # SEFN's y_i = relu(conv(y_{i-1} + x_i)) over channel groups
    z = depthwise_chain_mlp(x, w_in, b_in, w_dw, b_dw, w_out, b_out)   # 1×1 → that chain → 1×1 (inference fused)
    z = gated_ffn(x, w_in, b_in, w_dw, b_dw, w_out, b_out)     # Restormer's GDFN: 1×1, dwconv, GELU gate, 1×1
    z = mixed_scale_ffn(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out)  # DRSformer's MSFN

Layout: one folder per op under ``ops/`` (the public function and its autograd in ``__init__``,
``naive.py`` the oracle ``naive_<op>`` and the authors'-style baseline ``eager_<op>``, ``reference.py``
the plain-PyTorch backend, ``triton.py``, ``extension.py`` for the compiled ``_C``; ``ops/_common.py``
what they share), ``_registry.py`` the table of every op's backends, ``module.py`` the nn.Modules,
``patch/`` the drop-in patch of the authors' networks, ``cpu_memory.py`` the malloc settings that keep
large CPU tensors from page-faulting on every call, ``testing.py`` the oracles and baselines for tests
and benchmarks.
"""
from ._registry import available_backends, build_info
from .ops.dual_attention import dual_attention
from .ops.channel_norm import channel_norm
from .ops.depthwise_conv import depthwise_conv
from .ops.depthwise_chain import depthwise_chain
from .ops.depthwise_chain_mlp import depthwise_chain_mlp
from .ops.gated_ffn import gated_depthwise, gated_ffn
from .ops.mixed_scale_ffn import mixed_scale_ffn
from .module import ChannelNorm, DepthwiseConv2d, DualSelfAttentionCore, ddsa_topk, drsformer_topk, restormer_topk
from .patch import PatchReport, patch, unpatch
from .cpu_memory import tune_cpu_memory

__all__ = [
    "dual_attention",
    "channel_norm",
    "depthwise_conv",
    "depthwise_chain",
    "depthwise_chain_mlp",
    "gated_ffn",
    "gated_depthwise",
    "mixed_scale_ffn",
    "patch",
    "unpatch",
    "PatchReport",
    "ChannelNorm",
    "DepthwiseConv2d",
    "DualSelfAttentionCore",
    "ddsa_topk",
    "drsformer_topk",
    "restormer_topk",
    "available_backends",
    "build_info",
    "tune_cpu_memory",
]
__version__ = "0.1.0"
