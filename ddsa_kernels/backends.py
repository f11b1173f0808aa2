"""Backend registry and dispatch.

A backend implements the forward and backward of the op for some devices and dtypes:

* ``forward(q, k, v, temperature (H,), weights (n,), keep, eps) -> (out, probs, gram, norms)``
  with out (B, H, C, N) in q's dtype and the O(C²) statistics described in ``epilogue.py``;
* ``backward(grad_out, q, k, v, temperature, weights, probs, gram, norms, keep, eps)
  -> (dq, dk, dv, d_temperature (H,), d_weights (n,))``.

``keep`` holds the per-branch keep-counts with 0 for a dense branch. temperature and weights
arrive in the accumulation dtype. Backends register themselves with :func:`register_backend`;
the built-in ones are imported lazily so a missing Triton or compiled extension is a reported
fallback, never an import error.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

# Preference order of backend="auto" per device type (first available and supporting wins).
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

_BUILTIN_MODULES = {
    "triton": "ddsa_kernels.triton_dual_attention",
    "cpu": "ddsa_kernels.extension",
    "cuda": "ddsa_kernels.extension",
}


@dataclass
class Backend:
    name: str
    forward: Callable
    backward: Callable
    device_types: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)
    is_available: Callable[[], tuple[bool, str]] = field(default=lambda: (True, ""))

    def supports(self, device_type: str, dtype: torch.dtype) -> bool:
        return device_type in self.device_types and dtype in self.dtypes


_REGISTRY: dict[str, Backend] = {}
_LOAD_ERRORS: dict[str, str] = {}
_loaded = False


def register_backend(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import reference_backend  # noqa: F401  (registers "reference")

    for name, module in _BUILTIN_MODULES.items():
        if name in _REGISTRY:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # a missing optional dependency or extension
            _LOAD_ERRORS.setdefault(name, f"{type(exc).__name__}: {exc}")
        if name not in _REGISTRY and name not in _LOAD_ERRORS:
            _LOAD_ERRORS[name] = f"module {module} did not register it"


def _status(name: str) -> tuple[bool, str]:
    _load_builtin()
    if name not in _REGISTRY:
        return False, _LOAD_ERRORS.get(name, "unknown backend")
    return _REGISTRY[name].is_available()


def build_info() -> dict[str, str]:
    """For every known backend: "available" or the reason it is not."""
    _load_builtin()
    names = list(dict.fromkeys(["reference", "triton", "cpu", "cuda", *_REGISTRY]))
    info = {}
    for name in names:
        ok, why = _status(name)
        info[name] = "available" if ok else why
    return info


def available_backends(device: Optional[torch.device | str] = None) -> list[str]:
    """Names of the backends usable in this process (for ``device`` when given)."""
    _load_builtin()
    names = [n for n in _REGISTRY if _status(n)[0]]
    if device is not None:
        device_type = torch.device(device).type
        names = [n for n in names if device_type in _REGISTRY[n].device_types]
    return names


def triton_on_cpu() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Turn "auto" into a concrete backend and check that a named one can run these tensors."""
    _load_builtin()
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device.type, ("reference",)):
            if candidate in _REGISTRY and _status(candidate)[0] and _REGISTRY[candidate].supports(device.type, dtype):
                return candidate
        return "reference"
    if name not in _REGISTRY and name not in _BUILTIN_MODULES:
        known = ", ".join(["auto", *build_info()])
        raise ValueError(f"backend={name!r} is not a known backend; choose one of: {known}")
    ok, why = _status(name)
    if not ok:
        raise RuntimeError(f"backend={name!r} is not available in this process: {why}")
    backend = _REGISTRY[name]
    if not backend.supports(device.type, dtype):
        raise RuntimeError(
            f"backend={name!r} does not support {dtype} tensors on {device.type} "
            f"(it runs on {', '.join(backend.device_types)} with "
            f"{', '.join(str(d).replace('torch.', '') for d in backend.dtypes)})"
        )
    return name


def check_backend_name(name: str) -> str:
    """Raise ValueError unless ``name`` is "auto", "eager" or a known backend; return it.

    Availability is not checked here (a known backend may still be missing in this process):
    that is reported when the op runs on actual tensors.
    """
    _load_builtin()
    known = ("auto", "eager", *build_info())
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"backend={name!r} is not a known backend; choose one of: {', '.join(known)}")
    return name


def get_backend(name: str) -> Backend:
    _load_builtin()
    return _REGISTRY[name]
