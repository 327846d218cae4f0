"""A process set up for the CPU (:mod:`aevb.inference.cpu`): glibc's heap keeps the memory of
freed tensors, so a new tensor reuses it instead of page-faulting on fresh memory."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from aevb.inference import cpu

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# minor page faults per 4 KiB page of tensors of 10, 11, ..., 20 MB, one at a time: glibc's own
# thresholds serve each from a fresh mmap (1.0: every page faults); a kept heap grows by the
# difference
FAULTS = textwrap.dedent("""
    import resource, torch
    from aevb.inference.cpu import keep_freed_memory
    assert keep_freed_memory()
    sizes = [(10 + i) << 20 >> 2 for i in range(11)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for n in sizes:
        torch.ones(n)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (sum(sizes) / 1024))
""")


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_a_large_tensor_takes_its_memory_from_the_heap_not_a_fresh_mmap():
    env = {k: v for k, v in os.environ.items() if k != "AEVB_KEEP_FREED_MEMORY"}
    env["OMP_NUM_THREADS"] = "1"  # no new threads (and their stacks) while it counts
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert float(out) < 0.75  # 0.44-0.48 here, against 1.00 with AEVB_KEEP_FREED_MEMORY=0


@pytest.mark.parametrize("name, value", [
    ("AEVB_KEEP_FREED_MEMORY", "0"),
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
    ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
    ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
])
def test_the_heap_is_left_alone_where_the_user_chose_an_allocator(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert not cpu.heap_wanted()


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_the_heap_is_kept_by_default(monkeypatch):
    for name in list(os.environ):
        if name == "AEVB_KEEP_FREED_MEMORY" or name.startswith("MALLOC_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert cpu.heap_wanted()
