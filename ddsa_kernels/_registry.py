"""The table of backends of every op, and the one place that validates and resolves a backend name.

Each op (a folder of this package) has several interchangeable implementations. They are listed
here, explicitly, with what they support; nothing registers itself on import. An implementation is
an object (a module or a class) named by ``impl`` = ``"package.module"`` or ``"package.module:Name"``
with ``forward(...)`` and ``backward(...)`` functions (their signatures are the op's own, see the op's
``__init__``), and optionally ``availability() -> (bool, reason)``. It is imported on first use; an
import error (no Triton, extension not compiled) makes that backend unavailable with the error as the
reason, never an import error of this package.

Availability is probed once per process, all backends of an op together, and kept as plain Python
values, so that resolving ``backend="auto"`` inside a ``torch.compile``-traced function reads a dict
and calls nothing opaque (a first probe during tracing runs outside the traced code).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

_LOW_AND_FP32 = (torch.float16, torch.bfloat16, torch.float32)
_ALL_FLOATS = (*_LOW_AND_FP32, torch.float64)
_ANY_DEVICE = ("cpu", "cuda", "mps", "xpu", "meta")


@dataclass(frozen=True)
class BackendSpec:
    """One implementation of one op.

    name: the ``backend=`` value. impl: where ``forward``/``backward`` live. device_types and dtypes:
    what it runs. max_channels: the largest channel count it accepts (None: any), e.g. a kernel that
    keeps C×C tiles in shared memory. interpreter_on_cpu: also runs on CPU when TRITON_INTERPRET=1
    (Triton's interpreter, for tests; slow). fused: False for the unfused baseline, which is plain
    autograd of torch ops rather than a custom op.
    """

    name: str
    impl: str
    device_types: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    summary: str
    max_channels: Optional[int] = None
    interpreter_on_cpu: bool = False
    fused: bool = True


@dataclass(frozen=True)
class OpSpec:
    """The backends of one op and how ``backend="auto"`` picks among them.

    auto_order: per device type, the backends "auto" tries in turn (the first available one that
    supports the tensors wins; on CUDA, Triton comes first until the per-kernel timings of
    ddsa_bench/gpu/run.sh say otherwise). fallback: what "auto" takes when none of them fits.
    """

    backends: tuple[BackendSpec, ...]
    auto_order: dict[str, tuple[str, ...]]
    fallback: str

    def backend(self, name: str) -> BackendSpec:
        for spec in self.backends:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.backends)


def _reference(op: str, summary: str, *, fused: bool = True) -> BackendSpec:
    """The plain-PyTorch backend ``ops/<op>/reference.py``: any device, float64 capable."""
    return BackendSpec("reference", f"ddsa_kernels.ops.{op}.reference", _ANY_DEVICE, _ALL_FLOATS, summary, fused=fused)


def _triton(op: str, summary: str) -> BackendSpec:
    """The Triton backend ``ops/<op>/triton.py``: CUDA (or the interpreter on CPU), no float64."""
    return BackendSpec("triton", f"ddsa_kernels.ops.{op}.triton", ("cuda",), _LOW_AND_FP32, summary,
                       interpreter_on_cpu=True)


def _cpu(op: str, summary: str, dtypes: tuple[torch.dtype, ...] = _ALL_FLOATS) -> BackendSpec:
    """The C++ kernels of the compiled extension, ``CPU`` of ``ops/<op>/extension.py``."""
    return BackendSpec("cpu", f"ddsa_kernels.ops.{op}.extension:CPU", ("cpu",), dtypes, summary)


def _cuda(op: str, summary: str, max_channels: Optional[int] = None) -> BackendSpec:
    """The CUDA kernels of the compiled extension, ``CUDA`` of ``ops/<op>/extension.py``: no float64."""
    return BackendSpec("cuda", f"ddsa_kernels.ops.{op}.extension:CUDA", ("cuda",), _LOW_AND_FP32, summary,
                       max_channels=max_channels)


def _eager(op: str, summary: str) -> BackendSpec:
    """The unfused baseline ``EAGER`` of ``ops/<op>/naive.py``: the authors' torch ops with plain autograd."""
    return BackendSpec("eager", f"ddsa_kernels.ops.{op}.naive:EAGER", _ANY_DEVICE, _ALL_FLOATS, summary, fused=False)


def _kernel_op(op: str, *, reference: str, triton: str, cpu: str, cuda: str, eager: str,
               cuda_max_channels: Optional[int] = None) -> OpSpec:
    """An op with Triton, C++ and CUDA kernels (each entry a backend's summary): "auto" tries Triton, then the
    CUDA kernels on GPUs and the C++ kernels on CPU, else the reference."""
    return OpSpec(
        backends=(_reference(op, reference), _triton(op, triton), _cpu(op, cpu),
                  _cuda(op, cuda, max_channels=cuda_max_channels), _eager(op, eager)),
        auto_order={"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")},
        fallback="reference",
    )


def _cpu_kernel_op(op: str, *, reference: str, cpu: str, eager: str, fused_reference: bool = True) -> OpSpec:
    """An op whose only kernels are the extension's float32/float64 C++ ones (each entry a backend's summary):
    "auto" takes them on CPU and torch's own ops ("eager") elsewhere (cuDNN is fast on GPUs)."""
    return OpSpec(
        backends=(_reference(op, reference, fused=fused_reference), _cpu(op, cpu, (torch.float32, torch.float64)),
                  _eager(op, eager)),
        auto_order={"cuda": ("eager",), "cpu": ("cpu", "eager")},
        fallback="eager",
    )


OPS: dict[str, OpSpec] = {
    "dual_attention": _kernel_op(
        "dual_attention",
        reference="the two-sweep algorithm in plain PyTorch (float64 capable)",
        triton="fused Triton kernels",
        cpu="C++ kernels of the compiled extension",
        cuda="CUDA kernels of the compiled extension (C×C tiles in shared memory)",
        cuda_max_channels=128,
        eager="the authors'-style unfused computation with plain autograd (the benchmarks' baseline)",
    ),
    "channel_norm": _kernel_op(
        "channel_norm",
        reference="two-pass statistics and explicit backward in plain PyTorch (float64 capable)",
        triton="fused Triton kernels over pixel tiles",
        cpu="C++ kernels of the compiled extension",
        cuda="CUDA kernels of the compiled extension",
        eager="the authors' permute + LayerNorm + permute with plain autograd (the benchmarks' baseline)",
    ),
    "depthwise_conv": _cpu_kernel_op(
        "depthwise_conv",
        reference="K² shifted products and explicit backward in plain PyTorch (float64 capable)",
        cpu="C++ kernels of the compiled extension, directly on NCHW planes",
        eager="torch's own convolution (F.conv2d, groups=C) with plain autograd: cuDNN on CUDA",
    ),
    "depthwise_chain": _cpu_kernel_op(
        "depthwise_chain",
        reference="the chain and its explicit backward in plain PyTorch (float64 capable)",
        cpu="C++ kernels of the compiled extension: each plane's whole chain in one task",
        eager="the authors' conv2d + relu + cat with plain autograd: cuDNN on CUDA",
    ),
    "depthwise_chain_mlp": _cpu_kernel_op(
        "depthwise_chain_mlp",
        reference="matrix-product 1×1s around the chain's reference forward in plain PyTorch, autograd (float64 "
                  "capable)",
        fused_reference=False,
        cpu="C++ inference kernel: u and y of one band of rows in a per-thread buffer (with gradients: F.conv2d "
            "around the chain's cpu kernel)",
        eager="the authors' 1×1 conv2d, chain of conv2d + relu, 1×1 conv2d with plain autograd",
    ),
    "gated_ffn": _cpu_kernel_op(
        "gated_ffn",
        reference="matrix-product 1×1s, the depth-wise reference forward and a·Φ(a) GELU in plain PyTorch, autograd "
                  "(float64 capable)",
        fused_reference=False,
        cpu="C++ kernels: banded inference (u of one band of rows in a per-thread buffer); with gradients "
            "F.conv2d around the fused depth-wise + GELU gate and its backward",
        eager="the authors' conv2d 1×1, depth-wise conv2d, chunk, F.gelu, conv2d 1×1 with plain autograd",
    ),
    "mixed_scale_ffn": _cpu_kernel_op(
        "mixed_scale_ffn",
        reference="matrix-product 1×1s and each pair of K×K stages as one depth-wise reference forward in plain "
                  "PyTorch, autograd (float64 capable)",
        fused_reference=False,
        cpu="C++ kernels: banded inference (u and m of one band of rows in per-thread buffers); with gradients "
            "F.conv2d around the fused depth-wise middle and its backward",
        eager="the authors' conv2d / relu / chunk / cat with plain autograd",
    ),
}

_probed: dict[tuple[str, str], tuple[bool, str]] = {}
_impls: dict[tuple[str, str], Any] = {}


def op_spec(op: str) -> OpSpec:
    """The table entry of ``op``; ValueError for an unknown op."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    return OPS[op]


def backend_spec(name: str, *, op: str) -> BackendSpec:
    """The entry of backend ``name`` of ``op``; KeyError for an unknown backend."""
    return op_spec(op).backend(name)


def triton_interpreter() -> bool:
    """True when Triton kernels run through the interpreter (``TRITON_INTERPRET=1`` when this
    package was imported: Triton reads it once, too)."""
    return _INTERPRETER


_INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _load(op: str, spec: BackendSpec) -> tuple[bool, str]:
    module_name, _, attr = spec.impl.partition(":")
    try:
        obj = importlib.import_module(module_name)
        if attr:
            obj = getattr(obj, attr)
    except Exception as exc:  # a missing optional dependency or extension
        return False, f"{type(exc).__name__}: {exc}"
    _impls[(op, spec.name)] = obj
    check = getattr(obj, "availability", None)
    return check() if check is not None else (True, "")


def _probe_all(op: str) -> None:
    """Probe every backend of ``op`` not probed yet (imports, extension queries), caching the results."""
    for spec in op_spec(op).backends:
        key = (op, spec.name)
        if key not in _probed:
            _probed[key] = _load(op, spec)


def _availability(op: str, name: str) -> tuple[bool, str]:
    key = (op, name)
    if key not in _probed:
        backend_spec(name, op=op)  # an unknown name raises KeyError
        _probe_all(op)
    return _probed[key]


# Under torch.compile the lookup runs as plain Python while tracing and its result is used as a
# constant: the traced code neither probes (imports, extension calls: graph breaks) nor guards on
# the cache (whose first fill would invalidate the guards of the frame being traced). Results
# never change once probed, so the constant stays valid.
_availability_constant = torch._dynamo.assume_constant_result(_availability)


def availability(op: str, name: str) -> tuple[bool, str]:
    """(available, reason) of backend ``name`` of ``op`` in this process.

    The first call probes every backend of ``op`` at once; later calls read the cached plain values.
    """
    if torch.compiler.is_compiling():
        return _availability_constant(op, name)
    return _availability(op, name)


def implementation(op: str, name: str) -> Any:
    """The object holding ``forward``/``backward`` of an available backend."""
    ok, why = availability(op, name)
    if not ok:
        raise RuntimeError(f"backend={name!r} of {op} is not available in this process: {why}")
    return _impls[(op, name)]


def device_types(spec: BackendSpec) -> tuple[str, ...]:
    if spec.interpreter_on_cpu and triton_interpreter():
        return (*spec.device_types, "cpu")
    return spec.device_types


def _supports(spec: BackendSpec, device_type: str, dtype: torch.dtype, channels: Optional[int]) -> str:
    """Empty string when ``spec`` can run these tensors, else why not."""
    devices = device_types(spec)
    if device_type not in devices or dtype not in spec.dtypes:
        return (f"runs on {', '.join(devices)} with "
                f"{', '.join(str(d).replace('torch.', '') for d in spec.dtypes)}, "
                f"not {str(dtype).replace('torch.', '')} on {device_type}")
    if spec.max_channels is not None and channels is not None and channels > spec.max_channels:
        return f"supports at most C={spec.max_channels} channels, got C={channels}"
    return ""


def build_info(op: Optional[str] = None) -> dict:
    """Which backends this process can run: ``{op: {backend: "available" | the reason it is not}}``
    for every op, or ``{backend: ...}`` of one ``op``."""
    if op is None:
        return {name: build_info(name) for name in OPS}
    return {name: ("available" if ok else why) for name, (ok, why) in
            ((name, availability(op, name)) for name in op_spec(op).names)}


def available_backends(device: Optional[torch.device | str] = None, *, op: str) -> list[str]:
    """Names of the backends of ``op`` usable in this process (on ``device`` when given)."""
    spec = op_spec(op)
    names = [name for name in spec.names if availability(op, name)[0]]
    if device is not None:
        device_type = torch.device(device).type
        names = [n for n in names if device_type in device_types(spec.backend(n))]
    return names


def check_backend_name(name: str, op: str) -> str:
    """Raise ValueError unless ``name`` is "auto" or a backend of ``op``; return it.

    Availability is not checked here (a known backend may be missing in this process): that is
    reported when the op runs on actual tensors.
    """
    known = ("auto", *op_spec(op).names)
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"backend={name!r} is not a known backend; choose one of: {', '.join(known)}")
    return name


def resolve_backend(
    name: str,
    device: torch.device | str,
    dtype: torch.dtype,
    channels: Optional[int] = None,
    *,
    op: str,
) -> str:
    """Turn "auto" into a concrete backend of ``op``, or check that the named one can run these tensors.

    channels: the op's channel count (C per head for attention), checked against the backend's limit.
    """
    check_backend_name(name, op)
    device_type = torch.device(device).type
    spec = op_spec(op)
    if name == "auto":
        for candidate in spec.auto_order.get(device_type, ()):
            if availability(op, candidate)[0] and not _supports(spec.backend(candidate), device_type, dtype, channels):
                return candidate
        return spec.fallback
    ok, why = availability(op, name)
    if not ok:
        raise RuntimeError(f"backend={name!r} is not available in this process: {why}")
    problem = _supports(spec.backend(name), device_type, dtype, channels)
    if problem:
        raise RuntimeError(f"backend={name!r} cannot run these tensors: it {problem}")
    return name


def is_fused(name: str, *, op: str) -> bool:
    """False for the unfused backends (plain autograd of torch ops) rather than a custom op."""
    return backend_spec(name, op=op).fused
