"""The registry's channel limit of the "cuda" backend, checked without a GPU: C > 128 is refused
with the limit and the count in the message, never silently run elsewhere when named."""
import pytest
import torch

from ddsa_kernels import _registry


def test_cuda_backend_refuses_more_than_128_channels_and_says_so():
    cuda = _registry.backend_spec("cuda", op="dual_attention")
    assert cuda.max_channels == 128
    assert _registry._supports(cuda, "cuda", torch.float16, 128) == ""
    assert _registry._supports(cuda, "cuda", torch.float16, 160) == "supports at most C=128 channels, got C=160"


def test_named_cuda_backend_raises_with_the_channel_limit(monkeypatch):
    """With the backend made available, resolving it for C = 160 raises (no silent fallback); "auto"
    skips it for that C and still takes it at C = 128."""
    monkeypatch.setitem(_registry._probed, ("dual_attention", "cuda"), (True, ""))
    monkeypatch.setitem(_registry._probed, ("dual_attention", "triton"), (False, "hidden by the test"))
    with pytest.raises(RuntimeError, match=r"backend='cuda' cannot run these tensors: it supports at most "
                                           r"C=128 channels, got C=160"):
        _registry.resolve_backend("cuda", "cuda", torch.float32, channels=160, op="dual_attention")
    assert _registry.resolve_backend("cuda", "cuda", torch.float32, channels=128, op="dual_attention") == "cuda"
    assert _registry.resolve_backend("auto", "cuda", torch.float32, channels=160, op="dual_attention") == "reference"
    assert _registry.resolve_backend("auto", "cuda", torch.float32, channels=128, op="dual_attention") == "cuda"
