"""The whole network on the ``tiny`` preset: backends, input sizes, BatchNorm modes, presets, compile."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

import ddsa_model
from ddsa_model import DDSAConfig, DDSANet, build_model, list_presets, pad_to_multiple
from ddsa_kernels import DualSelfAttentionCore, available_backends


def _tiny(seed: int = 0, **overrides) -> DDSANet:
    torch.manual_seed(seed)
    model = build_model("tiny", attention_backend="reference", **overrides)
    with torch.no_grad():  # non-trivial temperatures and branch weights
        for m in model.modules():
            if isinstance(m, DualSelfAttentionCore):
                m.temperature.uniform_(0.5, 3.0)
                m.weights.uniform_(-1.0, 1.0)
    return model.eval()


# -- backends ---------------------------------------------------------------------------------------
# Triton on a CPU runs in its (slow) interpreter and is tested by the kernel tests; here only on CUDA.
_CPU_BACKENDS = [b for b in available_backends("cpu", op="dual_attention") if b not in ("reference", "triton")]


@pytest.mark.parametrize("backend", ["auto", "eager", *_CPU_BACKENDS])
def test_backends_agree_with_reference(backend):
    model = _tiny()
    x = torch.rand(2, 3, 24, 16)
    with torch.no_grad():
        expected = model(x)
        model.set_attention_backend(backend)
        got = model(x)
    assert model.attention_backend == backend
    assert all(m.backend == backend for m in model.modules() if isinstance(m, DualSelfAttentionCore))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_backend_choice_is_validated():
    with pytest.raises(ValueError, match="not a known backend"):
        build_model("tiny", attention_backend="fastest")
    with pytest.raises(ValueError, match="not a known backend"):
        _tiny().set_attention_backend("nope")


def test_gradients_match_between_reference_and_eager():
    model = _tiny(seed=1).train()
    x = torch.rand(2, 3, 16, 16)
    grads = []
    for backend in ("reference", "eager"):
        model.set_attention_backend(backend)
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


# -- sizes and padding ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(37, 53), (5, 3), (1, 1), (8, 16)])
def test_any_input_size_comes_back(size):
    model = _tiny()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_odd_size_equals_reflect_pad_residual_crop():
    model = _tiny(seed=2)
    x = torch.rand(1, 3, 37, 53)
    padded = F.pad(x, (0, 3, 0, 3), mode="reflect")  # 37 -> 40, 53 -> 56
    with torch.no_grad():
        expected = (padded + model.residual(padded))[:, :, :37, :53]
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_pad_to_multiple_handles_tiny_images():
    x = torch.arange(15.0).reshape(1, 1, 5, 3)
    p = pad_to_multiple(x)
    assert p.shape == (1, 1, 8, 8)
    assert torch.equal(p[:, :, :5, :3], x)
    # first reflection step mirrors about the last row / column
    assert torch.equal(p[:, :, 5, :3], x[:, :, 3, :]) and torch.equal(p[:, :, 6, :3], x[:, :, 2, :])
    assert torch.equal(p[:, :, :5, 3], x[:, :, :, 1]) and torch.equal(p[:, :, :5, 4], x[:, :, :, 0])
    # only values of the image appear
    assert set(p.unique().tolist()) <= set(x.unique().tolist())
    one = torch.rand(1, 3, 1, 9)
    p1 = pad_to_multiple(one)
    assert p1.shape == (1, 3, 8, 16) and torch.equal(p1[:, :, 7, :9], one[:, :, 0])


def test_bad_inputs_are_named():
    model = _tiny()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# -- BatchNorm in the SA gates --------------------------------------------------------------------
def _bn_buffers(model):
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n}


def test_batchnorm_train_updates_running_stats_eval_does_not():
    model = _tiny(seed=3)
    x = torch.rand(2, 3, 16, 16)
    before = _bn_buffers(model)
    with torch.no_grad():
        model.eval()
        y_eval = model(x)
        assert all(torch.equal(before[n], b) for n, b in _bn_buffers(model).items())
        # eval: every image is processed independently of the batch
        torch.testing.assert_close(model(x[:1]), y_eval[:1], rtol=1e-5, atol=1e-6)
        model.train()
        y_train = model(x)
    after = _bn_buffers(model)
    assert all(not torch.equal(before[n], after[n]) for n in before)
    # train: batch statistics, so the output differs from eval and depends on the batch
    assert not torch.allclose(y_train, y_eval, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(model(x[:1]), y_train[:1], atol=1e-6)


# -- presets, ablations, config -------------------------------------------------------------------
def test_presets_listed_with_counts():
    presets = list_presets()
    assert set(presets) >= {"ddsa", "ddsa-official", "ddsa-small", "tiny"}
    for name, info in presets.items():
        with torch.device("meta"):
            model = build_model(name)
        assert info["params"] == sum(p.numel() for p in model.parameters())
        assert info["description"]
    assert presets["ddsa-official"]["params"] == 40_618_940
    assert 200_000 <= presets["ddsa-small"]["params"] <= 2_000_000
    assert presets["tiny"]["params"] < 100_000
    assert "ddsa-official" in ddsa_model.format_presets()


@pytest.mark.parametrize("attention", ["dual", "dense", "sparse"])
@pytest.mark.parametrize("ffn", ["sefn", "gdfn", "sefn-no-sa"])
def test_ablation_switches(attention, ffn):
    model = _tiny(attention=attention, ffn=ffn)
    cores = [m for m in model.modules() if isinstance(m, DualSelfAttentionCore)]
    branches = {"dual": 2, "dense": 1, "sparse": 1}[attention]
    assert all(c.weights.numel() == branches for c in cores)
    assert all((c.topk[0] is None) == (attention != "sparse") for c in cores)
    gates = [m for m in model.modules() if isinstance(m, ddsa_model.SpatialAttentionGate)]
    assert (len(gates) > 0) == (ffn == "sefn")
    assert all(isinstance(b.ffn, ddsa_model.GDFN if ffn == "gdfn" else ddsa_model.SEFN) for b in model.modules()
               if isinstance(b, ddsa_model.DATB))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert model(x).shape == x.shape


def test_config_json_round_trip_and_validation():
    config = ddsa_model.get_preset_config("ddsa-small", attention="sparse")
    text = json.dumps(dataclasses.asdict(config))
    assert DDSAConfig.from_json(text) == config
    assert build_model("ddsa-small", attention="sparse").config == config
    with pytest.raises(ValueError, match="not divisible"):
        DDSAConfig(dim=6, heads=(4, 1, 1, 1))
    with pytest.raises(ValueError, match="attention"):
        DDSAConfig(attention="topk")
    with pytest.raises(ValueError, match="unknown DDSAConfig field"):
        DDSAConfig.from_dict({"dim": 8, "depth": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("ddsa-huge")
    with pytest.raises(ValueError, match="keep no entry"):
        DDSAConfig(dim=2, heads=(2, 1, 1, 1))


# -- torch.compile ----------------------------------------------------------------------------------
def test_attention_block_compiles_fullgraph():
    """The op is a custom op: dynamo traces the block without a graph break (fullgraph=True)."""
    torch._dynamo.reset()
    block = _tiny().encoder2[0].attn.train()
    x = torch.randn(2, block.qkv.in_channels, 8, 8, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    torch.testing.assert_close(y, block(x), rtol=1e-5, atol=1e-6)
    y.square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    block(x).square().sum().backward()
    torch.testing.assert_close(g, x.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_whole_model_compiles_with_inductor():
    torch._dynamo.reset()
    model = _tiny()
    x = torch.rand(1, 3, 21, 30)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
