"""torch.compile and the backend registry: resolving ``backend="auto"`` inside traced code reads
cached plain values, so the whole network traces as one graph, and the extension is queried once,
never from traced code. Run on the CPU with the extension made to report CUDA kernels, so the CUDA
backend's probe (the one that queries the extension) is exercised without a GPU."""
import pytest
import torch

from ddsa_kernels import _registry, dual_attention
from ddsa_kernels.testing import naive_dual_attention

_C = pytest.importorskip("ddsa_kernels._C", reason="compiled extension not built")


@pytest.fixture
def fresh_registry(monkeypatch):
    """An empty availability cache and an extension whose has_cuda() says True and counts its calls
    (recording whether each call came from code torch.compile was tracing); all restored after."""
    calls = []

    def has_cuda():
        calls.append(torch.compiler.is_compiling())
        return True

    monkeypatch.setattr(_C, "has_cuda", has_cuda)
    monkeypatch.setattr(_registry, "_probed", {})
    monkeypatch.setattr(_registry, "_impls", {})
    torch._dynamo.reset()
    yield calls
    torch._dynamo.reset()


def test_whole_model_traces_as_one_graph(fresh_registry):
    from ddsa_model import build_model

    torch.manual_seed(0)
    model = build_model("ddsa-small").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # the extension was asked at most once per op whose CUDA backend it holds (while building the
    # model, or as plain Python before the graph when the first use is traced), and never again
    assert 1 <= len(fresh_registry) <= len(_registry.OPS)
    queries = len(fresh_registry)
    with torch.no_grad():
        torch._dynamo.explain(model)(x)
        model(x)
    assert len(fresh_registry) == queries
    if not torch.cuda.is_available():  # the fake report reached the registry
        assert _registry.availability("dual_attention", "cuda") == (
            False, "extension has CUDA kernels but no CUDA device is visible")


def test_first_probe_inside_traced_function_does_not_break_graph(fresh_registry):
    """A fresh process whose first use of the op is inside torch.compile: the probe runs as plain
    Python outside the graph (at most one extension query) and the function is one graph."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 20, generator=gen) for _ in range(3))
    t, w = torch.tensor([0.5, 2.0]), torch.tensor([0.3, 0.7])

    def f(q, k, v):
        return dual_attention(q, k, v, t, w, (None, 5)) * 2

    explanation = torch._dynamo.explain(f)(q, k, v)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert len(fresh_registry) <= 1
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    want = 2 * naive_dual_attention(*(x.double() for x in (q, k, v, t, w)), (None, 5))
    torch.testing.assert_close(compiled(q, k, v).double(), want, rtol=1e-5, atol=1e-6)
    assert len(fresh_registry) <= 1
