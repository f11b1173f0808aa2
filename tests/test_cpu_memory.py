"""``ddsa_kernels.tune_cpu_memory`` (called by every CLI): glibc accepts the settings, and they really
stop repeated large allocations from page-faulting afresh. Faults are counted with getrusage in a
child process, tuned and with the opt-out, so the two runs differ only in the setting."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ddsa_kernels import tune_cpu_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")

WARM_UP_ROUNDS = 8  # small allocations made by torch's first calls split the heap for 1–4 rounds
COUNTED_ROUNDS = 10
CHILD = textwrap.dedent(f"""
    import resource, torch
    from ddsa_kernels import tune_cpu_memory
    accepted = tune_cpu_memory()

    def layer():  # feature maps of 24, 24 and 12 MB alive together, then freed, as in a forward pass
        maps = [torch.empty(n).fill_(1.0) for n in (6_000_000, 6_000_000, 3_000_000)]
        del maps

    for _ in range({WARM_UP_ROUNDS}):
        layer()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range({COUNTED_ROUNDS}):
        layer()
    print(accepted, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")
ROUND_PAGES = 60_000_000 // 4096  # the pages one round's maps touch


def _child(opt_out: bool) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    env.update(DDSA_SYSTEM_MALLOC="1" if opt_out else "0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=120, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_repeated_large_allocations_stop_faulting():
    # Tuned, the heap settles within 4 rounds and then faults nothing (30 of 30 children on a 2-core
    # machine): a steady state, checked in two children.
    for _ in range(2):
        accepted, faults = _child(opt_out=False)
        assert accepted
        assert faults < ROUND_PAGES // 100, f"{faults} pages faulted afresh over {COUNTED_ROUNDS} settled rounds"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_default_malloc_keeps_faulting():
    # The comparison that makes the setting worth having. By default glibc maps each map afresh every round,
    # except when its dynamic mmap threshold happens to rise above the maps' size first (2 of 16 children
    # there): one of four children faulting at least half a round per round is all this asks.
    runs = []
    for _ in range(4):
        accepted, faults = _child(opt_out=True)
        assert not accepted
        runs.append(faults)
        if faults > COUNTED_ROUNDS * ROUND_PAGES // 2:
            return
    pytest.fail(f"default malloc settled in all of {len(runs)} children: faults {runs}")


def test_opt_out_is_honoured(monkeypatch):
    monkeypatch.setenv("DDSA_SYSTEM_MALLOC", "1")
    assert tune_cpu_memory() is False
