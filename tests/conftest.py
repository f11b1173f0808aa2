import os
import zlib

import pytest
import torch

# Triton kernels run on the CPU through the interpreter when no GPU is present.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Every test starts from its own torch seed, so what it draws does not hang on which tests ran before it
# (selection, skips, order); DDSA_TEST_SEED=N shifts all seeds, to check that no bound rests on one lucky draw.
TEST_SEED = int(os.environ.get("DDSA_TEST_SEED", "0"))
SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test when it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _torch_seed_per_test(request):
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()) + TEST_SEED)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A ``tiny``-preset checkpoint written by save_model (seed 0) for CLI tests."""
    from ddsa_model import build_model, save_model

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    save_model(build_model("tiny"), path)
    return path


@pytest.fixture
def one_thread():
    """The CLI runs that use it pass --threads 1 (2-thread OpenMP stalls on a loaded CI box); restored after."""
    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)
