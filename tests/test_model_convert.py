"""The authors' checkpoint converter against the shared key list and an independent oracle network.

``tests/official_arch.py`` rebuilds the authors' network with their tensor names; random weights
loaded into it and, through ``load_official_checkpoint``, into DDSANet must give the same outputs.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import ddsa_model
from ddsa_model import DDSAConfig, count_parameters, ddsa_to_official, detect_config, load_official_checkpoint
from ddsa_model.convert import official_to_ddsa
from official_arch import OfficialDDSA

OFFICIAL_PARAMS = 40_618_940
SMALL = dict(dim=8, num_blocks=(1, 1, 2, 1), num_refinement_blocks=2, heads=(1, 2, 2, 4), ffn_expansion_factor=2.66)


def _key_list(shared_data: str) -> dict:
    with open(os.path.join(shared_data, "official_state_dict_keys.json")) as f:
        return json.load(f)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, including temperatures, branch weights, norms and BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("temperature"):
                t.copy_(torch.rand(t.shape, generator=gen) * 2.5 + 0.5)
            elif t.dim() <= 1:
                t.copy_(torch.rand(t.shape, generator=gen) - 0.5 + (1.0 if name.endswith("weight") else 0.0))
            else:
                fan_in = t[0].numel()
                t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) / math.sqrt(fan_in))


def _oracle(seed: int = 0, **cfg) -> OfficialDDSA:
    net = OfficialDDSA(**cfg)
    _randomize(net, seed)
    return net


# -- names, shapes and parameter count vs the authors' released model ----------------------------
@pytest.mark.parametrize("depth", [4, 2])
def test_names_and_shapes_match_authors_key_list(shared_data, depth):
    entry = _key_list(shared_data)[f"refinement_blocks_{depth}"]
    reference = {n: tuple(s) for n, s in entry["state_dict"].items()}
    preset = "ddsa-official" if depth == 4 else "ddsa"
    with torch.device("meta"):
        ours = ddsa_model.build_model(preset)
        oracle = OfficialDDSA(num_refinement_blocks=depth)
    exported = {n: tuple(t.shape) for n, t in ddsa_to_official(ours.state_dict()).items()}
    assert exported == reference
    assert {n: tuple(t.shape) for n, t in oracle.state_dict().items()} == reference
    # and the forward mapping sends every authors' name onto one of ours
    meta_state = {n: torch.empty(s, device="meta") for n, s in reference.items()}
    mapped = official_to_ddsa(meta_state)
    assert {n: tuple(t.shape) for n, t in mapped.items()} == {n: tuple(t.shape) for n, t in ours.state_dict().items()}
    assert detect_config(meta_state) == ours.config
    n_params = sum(math.prod(s) for n, s in reference.items() if not n.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count_parameters(ours.config) == n_params == entry["num_parameters"]


def test_official_preset_parameter_count():
    assert count_parameters(ddsa_model.get_preset_config("ddsa-official")) == OFFICIAL_PARAMS
    assert ddsa_model.list_presets()["ddsa-official"]["params"] == OFFICIAL_PARAMS


# -- outputs vs the oracle ------------------------------------------------------------------------
def _agree(oracle: OfficialDDSA, model: torch.nn.Module, x: torch.Tensor, atol: float = 1e-4) -> None:
    with torch.no_grad():
        expected = oracle(x)
        got = model(x)
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    assert err <= atol, f"max |ours - authors'| = {err:.3g}"


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_converted_model_matches_oracle_eval(backend):
    oracle = _oracle(seed=1, **SMALL).eval()
    model = load_official_checkpoint({"params": oracle.state_dict()}, attention_backend=backend)
    assert not model.training
    assert model.config == DDSAConfig(**SMALL)
    x = torch.rand(2, 3, 16, 24)
    _agree(oracle, model, x)


def test_converted_model_matches_oracle_on_odd_size_with_reflect_padding():
    oracle = _oracle(seed=2, **SMALL).eval()
    model = load_official_checkpoint(oracle.state_dict())  # a bare state dict
    x = torch.rand(1, 3, 21, 30)
    padded = F.pad(x, (0, 2, 0, 3), mode="reflect")  # the authors' test scripts: reflect to a multiple of 8
    with torch.no_grad():
        expected = oracle(padded)[:, :, :21, :30]
        got = model(x)
    assert (got - expected).abs().max().item() <= 1e-4


def test_converted_model_matches_oracle_in_training_mode():
    """Batch statistics in the SA gates and their running-stat updates agree as well."""
    oracle = _oracle(seed=3, **SMALL).train()
    model = load_official_checkpoint({"params": oracle.state_dict()}).train()
    x = torch.rand(2, 3, 16, 16)
    _agree(oracle, model, x)
    exported = ddsa_to_official(model.state_dict())
    for name, t in oracle.state_dict().items():
        if "running" in name or "num_batches" in name:
            torch.testing.assert_close(exported[name], t, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_full_official_network_matches_oracle():
    oracle = _oracle(seed=4).eval()
    model = load_official_checkpoint({"params": oracle.state_dict()})
    assert model.num_parameters() == OFFICIAL_PARAMS
    _agree(oracle, model, torch.rand(1, 3, 32, 40))


# -- checkpoint containers -------------------------------------------------------------------------
def test_file_with_params_and_params_ema(tmp_path):
    raw, ema = _oracle(seed=5, **SMALL).eval(), _oracle(seed=6, **SMALL).eval()
    path = tmp_path / "net_g_latest.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    x = torch.rand(1, 3, 16, 16)
    _agree(ema, load_official_checkpoint(path), x)                       # auto prefers the EMA weights
    _agree(raw, load_official_checkpoint(str(path), param_key="params"), x)
    with pytest.raises(ValueError, match="no 'params_x' entry"):
        load_official_checkpoint(path, param_key="params_x")


def test_dataparallel_prefix_is_stripped():
    oracle = _oracle(seed=7, **SMALL).eval()
    state = {f"module.{n}": t for n, t in oracle.state_dict().items()}
    _agree(oracle, load_official_checkpoint({"params": state}), torch.rand(1, 3, 8, 16))


def test_missing_num_batches_tracked_is_tolerated():
    oracle = _oracle(seed=8, **SMALL).eval()
    state = {n: t for n, t in oracle.state_dict().items() if not n.endswith("num_batches_tracked")}
    # 8×16, not 8×8: at 8×8 the latent level has one pixel, every score is ±τ and the authors'
    # top-k (exactly k) and the op (every tie kept) legitimately differ, depending on the input.
    x = torch.rand(1, 3, 8, 16, generator=torch.Generator().manual_seed(8))
    _agree(oracle, load_official_checkpoint(state), x)


def test_bad_tensors_are_listed_in_one_error():
    state = dict(_oracle(seed=9, **SMALL).state_dict())
    del state["encoder_level2.0.attn.qkv.weight"]
    del state["latent.0.attn.attn1"]
    state["encoder_level1.0.ffn.extra.weight"] = torch.zeros(3)
    state["decoder_level3.1.attn.project_out.weight"] = torch.zeros(16, 15, 1, 1)
    with pytest.raises(ValueError) as info:
        load_official_checkpoint({"params": state})
    message = str(info.value)
    for name in ("encoder_level2.0.attn.qkv.weight", "latent.0.attn.attn1",
                 "encoder_level1.0.ffn.extra.weight", "decoder_level3.1.attn.project_out.weight"):
        assert name in message


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="weights_only"):
        load_official_checkpoint(junk)
    pickled = tmp_path / "object.pth"
    torch.save({"params": {"x": torch.zeros(1)}, "opt": DDSAConfig()}, pickled)  # needs full unpickling
    with pytest.raises(ValueError, match="weights_only"):
        load_official_checkpoint(pickled)
    with pytest.raises(ValueError, match="no tensor 'patch_embed.proj.weight'"):
        load_official_checkpoint({"params": {"foo": torch.zeros(1)}})


def test_command_line_conversion(tmp_path, capsys):
    from ddsa_model.convert import main

    oracle = _oracle(seed=10, **SMALL).eval()
    source, output = tmp_path / "net_g.pth", tmp_path / "out" / "ddsa.safetensors"
    torch.save({"params": oracle.state_dict()}, source)
    assert main([str(source), str(output)]) == 0
    assert "parameters" in capsys.readouterr().out
    _agree(oracle, ddsa_model.load_model(output), torch.rand(1, 3, 8, 16))
    assert main([str(tmp_path / "absent.pth"), str(tmp_path / "x.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
