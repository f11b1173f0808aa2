"""setup.py's CUDA arch list: the GPUs people train on when TORCH_CUDA_ARCH_LIST is unset."""
import importlib.util
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parent.parent / "setup.py"


@pytest.fixture(scope="module")
def setup_module():
    import setuptools

    calls = []
    original = setuptools.setup
    setuptools.setup = lambda **kw: calls.append(kw)  # load setup.py without running a build
    try:
        spec = importlib.util.spec_from_file_location("ddsa_setup", SETUP)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        setuptools.setup = original
    assert calls, "setup.py did not call setup()"
    return module


def test_default_covers_ampere_ada_hopper_with_ptx(setup_module):
    archs = setup_module.cuda_arch_list({}).split(";")
    assert archs == ["8.0", "8.6", "8.9", "9.0+PTX"]


def test_user_setting_wins(setup_module):
    assert setup_module.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "7.5"}) == "7.5"
    assert setup_module.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": ""}) == setup_module.DEFAULT_CUDA_ARCHS
