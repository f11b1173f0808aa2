"""What the network-level patch tests (test_patch, test_patch_published, test_published_nets) share: the
output and every gradient of a whole network, their comparison, and DRSformer's mixed-scale feed-forward
with its halves paired as a test names them (the published pairing or a broken one)."""
from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


def net_grads(net: nn.Module, x: Tensor):
    """(output, d/dx, {parameter name: gradient}) of ⟨net(x), w⟩ for a fixed random w (seed 1, drawn in float64
    on the CPU and rounded to the output's dtype and device: the same weights for every run), all detached; a
    torch.compile wrapper's ``_orig_mod.`` prefix is dropped from the names. Every parameter must receive a
    gradient."""
    x = x.detach().clone().requires_grad_(True)
    net.zero_grad(set_to_none=True)
    out = net(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out * weights.to(out.device, out.dtype)).sum().backward()
    grads = {}
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        grads[name.removeprefix("_orig_mod.")] = p.grad.detach().clone()
    return out.detach(), x.grad.detach(), grads


def assert_same_values_and_grads(a, b, rtol: float, atol: float) -> None:
    """Two :func:`net_grads` results agree: output, d/dx and the gradient of every parameter (same names)."""
    (out_a, gx_a, g_a), (out_b, gx_b, g_b) = a, b
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol)
    torch.testing.assert_close(gx_a, gx_b, rtol=rtol, atol=atol)
    assert g_a.keys() == g_b.keys()
    for name in g_a:
        torch.testing.assert_close(g_a[name], g_b[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def mixed_scale_forward(block: nn.Module, x: Tensor, pairs) -> Tensor:
    """DRSformer's mixed-scale feed-forward on ``block``'s own layers, with the four ReLU'd depth-wise halves
    (a3, b3 of the 3×3 branch, a5, b5 of the 5×5 one) fed to the second 3×3 and 5×5 convolutions as ``pairs``
    names them: (("a3", "a5"), ("b3", "b5")) is the published block; any other pairing is a broken variant."""
    x = block.project_in(x)
    a3, b3 = block.relu3(block.dwconv3x3(x)).chunk(2, dim=1)
    a5, b5 = block.relu5(block.dwconv5x5(x)).chunk(2, dim=1)
    halves = {"a3": a3, "b3": b3, "a5": a5, "b5": b5}
    into_3x3, into_5x5 = ([halves[name] for name in pair] for pair in pairs)
    first = block.relu3_1(block.dwconv3x3_1(torch.cat(into_3x3, dim=1)))
    second = block.relu5_1(block.dwconv5x5_1(torch.cat(into_5x5, dim=1)))
    return block.project_out(torch.cat([first, second], dim=1))
