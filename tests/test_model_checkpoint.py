"""The project's safetensors checkpoints: bitwise round trip, atomic writes, clear errors."""
from __future__ import annotations

import functools
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ddsa_model
from ddsa_model import build_model, checkpoint_metadata, load_model, save_model
from ddsa_kernels import DualSelfAttentionCore


@functools.lru_cache(maxsize=None)
def _trained_like_tiny(seed: int = 0):
    """A tiny model with perturbed weights and BatchNorm statistics (shared; tests must not modify it)."""
    torch.manual_seed(seed)
    model = build_model("tiny", attention_backend="reference", attention="dual", ffn="sefn")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.train()
    model(torch.rand(2, 3, 16, 16))  # moves the BatchNorm running statistics away from (0, 1)
    return model.eval()


def test_round_trip_is_bitwise(tmp_path):
    model = _trained_like_tiny()
    path = tmp_path / "sub" / "model.safetensors"
    save_model(model, path, metadata={"iteration": "1200", "data": "RainTrainL"})
    loaded = load_model(path, attention_backend="reference")
    assert loaded.config == model.config and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert checkpoint_metadata(path) == {"iteration": "1200", "data": "RainTrainL"}
    assert os.listdir(path.parent) == ["model.safetensors"]  # no temp files left behind
    with safe_open(str(path), framework="pt") as f:  # plain safetensors with the config as JSON
        stored = json.loads(f.metadata()["config"])
    assert ddsa_model.DDSAConfig.from_dict(stored) == model.config


def test_backend_is_chosen_at_load_time(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_trained_like_tiny(), path)
    loaded = load_model(path, attention_backend="eager")
    assert {m.backend for m in loaded.modules() if isinstance(m, DualSelfAttentionCore)} == {"eager"}


def test_overwrite_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    model = _trained_like_tiny()
    save_model(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ddsa_model.checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(build_model("tiny"), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def _rewrite(path, edit):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t, m: t.pop("latent.0.attn.qkv.weight"), ["missing", "latent.0.attn.qkv.weight"]),
        (lambda t, m: t.__setitem__("latent.0.attn.extra", torch.zeros(2)), ["unexpected", "latent.0.attn.extra"]),
        (lambda t, m: t.__setitem__("output.weight", torch.zeros(3, 8, 3, 1)), ["wrong shape", "output.weight"]),
        (lambda t, m: m.__setitem__("config", "{not json"), ["config", "JSON"]),
        (lambda t, m: m.__setitem__("config", json.dumps({"dim": 4, "heads": [3, 1, 1, 1]})), ["config", "divisible"]),
        (lambda t, m: m.__setitem__("format", "other"), ["not a ddsa_model checkpoint"]),
        (lambda t, m: m.__setitem__("format_version", "99"), ["version"]),
    ],
)
def test_corrupted_checkpoints_give_clear_errors(tmp_path, edit, words):
    path = tmp_path / "m.safetensors"
    save_model(_trained_like_tiny(), path)
    _rewrite(path, edit)
    with pytest.raises(ValueError) as info:
        load_model(path)
    for word in words:
        assert word in str(info.value)


def test_not_a_safetensors_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint"):
        load_model(junk)
    truncated = tmp_path / "cut.safetensors"
    save_model(_trained_like_tiny(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint"):
        load_model(truncated)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.safetensors")
    pth = tmp_path / "model.pth"
    torch.save(_trained_like_tiny().state_dict(), pth)
    with pytest.raises(ValueError):
        load_model(pth)


def test_metadata_validation(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(build_model("tiny"), tmp_path / "a.safetensors", metadata={"config": "x"})
    with pytest.raises(ValueError, match="str to str"):
        save_model(build_model("tiny"), tmp_path / "a.safetensors", metadata={"iteration": 5})
    assert not (tmp_path / "a.safetensors").exists()


def test_shipped_weights_are_found_by_name_and_unknown_names_are_refused():
    from ddsa_model import pretrained

    for name, filename in pretrained.SHIPPED_WEIGHTS.items():
        path = pretrained.shipped_weights_path(name)
        assert os.path.basename(path) == filename and os.path.isfile(path)
        model = pretrained.load_weights(name)
        reference = pretrained.load_weights(path)
        for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
            assert torch.equal(a, b), k
    assert pretrained.default_weights_path() == pretrained.shipped_weights_path(pretrained.DEFAULT_NAME)
    with pytest.raises(ValueError, match="no shipped weights called 'nope'"):
        pretrained.shipped_weights_path("nope")
