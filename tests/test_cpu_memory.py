"""``ddsa_kernels.tune_cpu_memory`` (called by every CLI): glibc accepts the settings, and they really
stop repeated large allocations from page-faulting afresh. Faults are counted with getrusage in a
child process, tuned and with the opt-out, so the two runs differ only in the setting."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddsa_kernels import tune_cpu_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# torch asks for huge pages with madvise, which the kernel honours in mode "madvise" or "always"
THP_USABLE = THP_MODE_FILE.exists() and "[never]" not in THP_MODE_FILE.read_text()

CHILD = textwrap.dedent("""
    import resource, sys, torch
    from ddsa_kernels import tune_cpu_memory
    settings = tune_cpu_memory()

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def layer():  # feature maps of 24, 24 and 12 MB alive together, then freed, as in a forward pass
        maps = [torch.empty(n).fill_(1.0) for n in (6_000_000, 6_000_000, 3_000_000)]
        del maps

    layer()  # the first round faults in either case
    before = faults()
    for _ in range(10):
        layer()
    medium = faults() - before
    before = faults()
    torch.empty(50_000_000).fill_(1.0)  # 200 MB: above any malloc threshold, mapped afresh each time
    large = faults() - before
    print(settings.malloc_retains_freed, settings.huge_pages_requested, medium, large)
""")


def _child(opt_out: bool) -> tuple[bool, bool, int, int]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env.update(DDSA_SYSTEM_MALLOC="1" if opt_out else "0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=120, check=True).stdout.split()
    return out[0] == "True", out[1] == "True", int(out[2]), int(out[3])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_repeated_large_allocations_stop_faulting():
    retained, huge, medium, large = _child(opt_out=False)
    retained_default, huge_default, medium_default, large_default = _child(opt_out=True)
    assert retained and huge and not retained_default and not huge_default
    pages = 60_000_000 // 4096  # one round's maps
    # the default unmaps or trims some of the maps and faults them in again (how many varies with the
    # heap's history); tuned, the freed memory is reused: over 10 rounds, less than half of one round
    assert medium < pages // 2
    assert medium_default > 2 * medium
    # a fresh 200 MB block faults once per 4 KiB page by default
    assert large_default > 0.9 * 200_000_000 // 4096
    if THP_USABLE:  # ... and once per 2 MiB huge page (plus a few) with huge pages
        assert large < 0.05 * large_default


def test_opt_out_is_honoured(monkeypatch):
    monkeypatch.setenv("DDSA_SYSTEM_MALLOC", "1")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    settings = tune_cpu_memory()
    assert not settings.malloc_retains_freed and not settings.huge_pages_requested
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ


def test_an_explicit_huge_page_setting_is_kept(monkeypatch):
    monkeypatch.setenv("DDSA_SYSTEM_MALLOC", "0")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    assert tune_cpu_memory().huge_pages_requested is False
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
