"""ddsa_kernels: fused kernels for deraining transformers (DDSA, DRSformer, Restormer).

    from ddsa_kernels import dual_attention, available_backends
    out = dual_attention(q, k, v, temperature, weights, topk=(None, C * 7 // 10))
    y = channel_norm(x, weight, bias)            # LayerNorm over the channels of an NCHW map
    y = depthwise_conv(x, weight, bias)          # depth-wise K×K convolution, zero padding K // 2
    y = depthwise_chain(x, weight, bias)         # SEFN's y_i = relu(conv(y_{i-1} + x_i)) over channel groups
    z = depthwise_chain_mlp(x, w_in, b_in, w_dw, b_dw, w_out, b_out)   # 1×1 → that chain → 1×1 (inference fused)
    z = gated_ffn(x, w_in, b_in, w_dw, b_dw, w_out, b_out)     # Restormer's GDFN: 1×1, dwconv, GELU gate, 1×1
    z = mixed_scale_ffn(x, w_in, b_in, w3, b3, w5, b5, w3_1, b3_1, w5_1, b5_1, w_out, b_out)  # DRSformer's MSFN

Layout: one folder per op under ``ops/`` (``dual_attention/``, ``channel_norm/``, ``depthwise_conv/``,
``depthwise_chain/``, ``depthwise_chain_mlp/``: the public function and its autograd in ``__init__``, ``naive.py`` oracle and baseline,
``reference.py`` torch backend, ``triton.py``, ``extension.py`` for the compiled ``_C``),
``_registry.py`` the table of backends, ``module.py`` the nn.Modules, ``patch.py`` the drop-in patch
of the authors' networks, ``cpu_memory.py`` the malloc settings that keep large CPU tensors from
page-faulting on every call.
"""
from ._registry import available_backends, build_info, check_backend_name, resolve_backend
from .ops.dual_attention import dual_attention, eager_dual_attention, reference_dual_attention
from .ops.channel_norm import channel_norm, eager_channel_norm, reference_channel_norm
from .ops.depthwise_conv import depthwise_conv, eager_depthwise_conv, reference_depthwise_conv
from .ops.depthwise_chain import depthwise_chain, eager_depthwise_chain, reference_depthwise_chain
from .ops.depthwise_chain_mlp import depthwise_chain_mlp, eager_depthwise_chain_mlp, reference_depthwise_chain_mlp
from .ops.gated_ffn import eager_gated_ffn, gated_depthwise, gated_ffn, reference_gated_ffn
from .ops.mixed_scale_ffn import eager_mixed_scale_ffn, mixed_scale_ffn, reference_mixed_scale_ffn
from .module import ChannelNorm, DepthwiseConv2d, DualSelfAttentionCore, ddsa_topk, drsformer_topk, restormer_topk
from .patch import PatchReport, patch, unpatch
from .cpu_memory import tune_cpu_memory

__all__ = [
    "dual_attention",
    "channel_norm",
    "depthwise_conv",
    "depthwise_chain",
    "depthwise_chain_mlp",
    "available_backends",
    "build_info",
    "check_backend_name",
    "resolve_backend",
    "reference_dual_attention",
    "eager_dual_attention",
    "reference_channel_norm",
    "eager_channel_norm",
    "reference_depthwise_conv",
    "eager_depthwise_conv",
    "reference_depthwise_chain",
    "eager_depthwise_chain",
    "reference_depthwise_chain_mlp",
    "eager_depthwise_chain_mlp",
    "gated_ffn",
    "gated_depthwise",
    "reference_gated_ffn",
    "eager_gated_ffn",
    "mixed_scale_ffn",
    "reference_mixed_scale_ffn",
    "eager_mixed_scale_ffn",
    "ChannelNorm",
    "DepthwiseConv2d",
    "DualSelfAttentionCore",
    "ddsa_topk",
    "drsformer_topk",
    "restormer_topk",
    "patch",
    "unpatch",
    "PatchReport",
    "tune_cpu_memory",
]
__version__ = "0.1.0"
