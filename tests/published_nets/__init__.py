"""Stand-ins of the three published networks of the family, with their module structure.

One module per published file (each written from scratch; its docstring names the file it mirrors):

* ``idt_ddsa_arch`` — zt-fan/IDT-DDSA ``basicsr/models/archs/restormer_arch.py``, network ``Restormer``
  (family ``ddsa``: dual attention, SEFN feed-forward with functional ReLU, a level-0 ``refinement0``);
* ``drsformer_arch`` — cschenxiang/DRSformer ``basicsr/models/archs/DRSformer_arch.py``, network
  ``DRSformer`` (family ``drsformer``: four top-k branches, mixed-scale FFN, ``subnet`` MEFC at level 0
  and as ``refinement``);
* ``restormer_arch`` — swz30/Restormer ``basicsr/models/archs/restormer_arch.py``, network ``Restormer``
  (family ``restormer``: MDTA, GDFN).

``fingerprints/<family>.json`` holds the structure of the *published* network at the ddsa-small size
(every named module's path and class, every parameter and buffer name and shape, every module class's
constructor parameters and defaults) and seeded outputs at the tiny size; ``tests/test_published_nets.py``
holds the stand-ins to it. :func:`fingerprint` computes the same record for any network file, which is how
the committed ones were made from the published files (not part of this repository).

The modules import nothing from this repository, so they can also be loaded by file path
(``ddsa-bench patch --arch tests/published_nets/idt_ddsa_arch.py:Restormer``).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

FAMILIES = ("ddsa", "drsformer", "restormer")
HERE = Path(__file__).resolve().parent
FINGERPRINTS = HERE / "fingerprints"

#: family → (module file in this folder, network class name, the published repository and file).
SOURCES = {
    "ddsa": ("idt_ddsa_arch.py", "Restormer", "zt-fan/IDT-DDSA basicsr/models/archs/restormer_arch.py"),
    "drsformer": ("drsformer_arch.py", "DRSformer", "cschenxiang/DRSformer basicsr/models/archs/DRSformer_arch.py"),
    "restormer": ("restormer_arch.py", "Restormer", "swz30/Restormer basicsr/models/archs/restormer_arch.py"),
}
SIZES = ("small", "tiny")


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose among {', '.join(FAMILIES)}")


def small_kwargs(family: str) -> dict[str, Any]:
    """Constructor kwargs of the ddsa-small size: dim 16, blocks (1, 2, 2, 3), heads (1, 2, 4, 8), FFN ×2.66,
    no conv bias, WithBias norms, one refinement block (DRSformer has no such argument: its refinement is a
    ``subnet``)."""
    _check_family(family)
    kw: dict[str, Any] = {"dim": 16, "num_blocks": [1, 2, 2, 3], "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2.66,
                          "bias": False, "LayerNorm_type": "WithBias"}
    if family != "drsformer":
        kw["num_refinement_blocks"] = 1
    return kw


def tiny_kwargs(family: str) -> dict[str, Any]:
    """A smoke size for fast tests: dim 8, one block per level, heads (1, 2, 2, 4) (8, 8, 16, 16 channels a head)."""
    kw = small_kwargs(family)
    kw.update(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 2, 2, 4])
    return kw


def size_kwargs(family: str, size: str = "small") -> dict[str, Any]:
    """:func:`small_kwargs` or :func:`tiny_kwargs` by name."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose among {', '.join(SIZES)}")
    return small_kwargs(family) if size == "small" else tiny_kwargs(family)


def arch_module(family: str) -> ModuleType:
    """The stand-in module of ``family`` (imported as ``published_nets.<name>``)."""
    _check_family(family)
    return importlib.import_module(f"{__name__}.{SOURCES[family][0][:-3]}")


def arch_spec(family: str) -> str:
    """``PATH.py:CLASS`` of the family's stand-in network, the form ``ddsa-bench patch --arch`` takes."""
    _check_family(family)
    return f"{HERE / SOURCES[family][0]}:{SOURCES[family][1]}"


def build(family: str, size: str = "small", **overrides: Any) -> nn.Module:
    """The family's stand-in network at ``size`` ("small" or "tiny"), kwargs overridden by ``overrides``."""
    kw = size_kwargs(family, size)
    kw.update(overrides)
    return getattr(arch_module(family), SOURCES[family][1])(**kw)


def load_file(path: str | Path, name: str = "_network_file") -> ModuleType:
    """Import a Python file by path (not registered in ``sys.modules`` beyond the import itself)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _jsonable(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return "<required>"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def signatures(module: ModuleType) -> dict[str, list[list[Any]]]:
    """Every ``nn.Module`` class defined in ``module``: its ``__init__`` parameters (name, default), sorted by
    class name. Tuples and lists compare equal (both become lists)."""
    out = {}
    for name, obj in vars(module).items():
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
            params = list(inspect.signature(obj.__init__).parameters.values())[1:]
            out[name] = [[p.name, _jsonable(p.default)] for p in params]
    return dict(sorted(out.items()))


def structure(model: nn.Module) -> dict[str, list]:
    """Named modules (path, class name), parameters and buffers (name, shape), in registration order."""
    return {
        "modules": [[path, type(m).__name__] for path, m in model.named_modules()],
        "parameters": [[n, list(p.shape)] for n, p in model.named_parameters()],
        "buffers": [[n, list(b.shape)] for n, b in model.named_buffers()],
    }


def seeded_outputs(module: ModuleType, class_name: str, kwargs: dict[str, Any]) -> dict[str, list[float]]:
    """Outputs of ``class_name(**kwargs)`` built after ``torch.manual_seed(0)`` (default init, then float64) on
    ``torch.rand(2, 3, 32, 32)`` drawn after ``torch.manual_seed(1)``, in train and eval mode: the sum, the
    sum of absolute values and 24 sampled values. Equal structure and maths give equal numbers."""
    torch.manual_seed(0)
    model = getattr(module, class_name)(**kwargs).double()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    out = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        with torch.no_grad():
            y = model(x)
        out[mode] = [float(y.sum()), float(y.abs().sum())] + [float(v) for v in y[:, :, ::9, ::11].flatten()[:24]]
    return out


def fingerprint(module: ModuleType, family: str, source: str = "") -> dict[str, Any]:
    """The record kept in ``fingerprints/<family>.json`` for the network class of ``family`` in ``module``:
    structure at the ddsa-small size, constructor signatures, seeded outputs at the tiny size."""
    class_name = SOURCES[family][1]
    kwargs = small_kwargs(family)
    return {
        "family": family,
        "source": source or SOURCES[family][2],
        "class": class_name,
        "kwargs": kwargs,
        "signatures": signatures(module),
        **structure(getattr(module, class_name)(**kwargs)),
        "tiny_kwargs": tiny_kwargs(family),
        "tiny_seeded_outputs": seeded_outputs(module, class_name, tiny_kwargs(family)),
    }


def dump_fingerprint(record: dict[str, Any]) -> str:
    """JSON text of a :func:`fingerprint` record, one list entry a line."""
    lines = ["{"]
    items = list(record.items())
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], list):
            body = ",\n".join("  " + json.dumps(v) for v in value)
            lines.append(f" {json.dumps(key)}: [\n{body}\n ]{end}")
        elif isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f" {json.dumps(key)}: {{\n{body}\n }}{end}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{end}")
    return "\n".join(lines + ["}"]) + "\n"


def load_fingerprint(family: str) -> dict[str, Any]:
    """The committed fingerprint of the published network of ``family``."""
    _check_family(family)
    return json.loads((FINGERPRINTS / f"{family}.json").read_text())
