"""What the tests and benchmarks compare the ops with; not part of the user API.

* ``naive_<op>``: the oracle of each op, written as plainly as possible (normalised copies, masked
  softmaxes, K² shifted products, channel contractions) and differentiable by autograd. Run it in
  float64: every backend is tested against it.
* ``eager_<op>``: the unfused computation as the authors' networks write it (``F.conv2d``,
  ``LayerNorm`` over permuted maps, ``torch.topk`` masks), plain autograd in the input dtype: the
  "eager" backend of each op and the benchmarks' baseline.

    from ddsa_kernels.testing import naive_gated_ffn
    want = naive_gated_ffn(*(t.double() for t in args))
"""
from .ops.channel_norm.naive import eager_channel_norm, naive_channel_norm
from .ops.depthwise_chain.naive import eager_depthwise_chain, naive_depthwise_chain
from .ops.depthwise_chain_mlp.naive import eager_depthwise_chain_mlp, naive_depthwise_chain_mlp
from .ops.depthwise_conv.naive import eager_depthwise_conv, naive_depthwise_conv
from .ops.dual_attention.naive import eager_dual_attention, naive_dual_attention
from .ops.gated_ffn.naive import eager_gated_depthwise, eager_gated_ffn, naive_gated_depthwise, naive_gated_ffn
from .ops.mixed_scale_ffn.naive import eager_mixed_scale_ffn, eager_mixed_scale_middle, naive_mixed_scale_ffn

__all__ = [
    "naive_dual_attention",
    "naive_channel_norm",
    "naive_depthwise_conv",
    "naive_depthwise_chain",
    "naive_depthwise_chain_mlp",
    "naive_gated_ffn",
    "naive_gated_depthwise",
    "naive_mixed_scale_ffn",
    "eager_dual_attention",
    "eager_channel_norm",
    "eager_depthwise_conv",
    "eager_depthwise_chain",
    "eager_depthwise_chain_mlp",
    "eager_gated_ffn",
    "eager_gated_depthwise",
    "eager_mixed_scale_ffn",
    "eager_mixed_scale_middle",
]
