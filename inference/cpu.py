"""What a process sets up before it computes on the CPU: a fair share of the cores
(:mod:`~aevb.inference.threads`) and a heap that keeps the memory of freed tensors.

torch takes a CPU tensor's memory from ``malloc``. glibc serves a large block (above its mmap
threshold, 128 KiB to start with) with a fresh ``mmap`` and returns it to the system when the
tensor is freed, and it gives back the free top of its heap above a trim threshold. The next
tensor of that size then page-faults on every 4 KiB page as it is first written. With the
thresholds adapting as glibc's do, this happens often enough on 10 MB activations to cost half
of an elementwise op: ``log(1 + e^x)`` on a 5000 x 500 layer took 33-37 ms in some processes and
16-18 ms in others, and 16-18 ms in every process with the heap kept; three epochs of M1+M2
(batch 500, ten classes enumerated) took 1.16-1.23x longer (``docs/performance.md``).
:func:`keep_freed_memory` raises the mmap threshold to 32 MiB (glibc's own ceiling for it) and
the trim threshold to 1 GiB: freed blocks up to that size stay in the heap for the next tensor.
The process's resident memory then stays near its peak instead of shrinking between steps.

It applies on Linux with glibc only, once per process, and stays off where the user chose
(``AEVB_KEEP_FREED_MEMORY=0``, a ``MALLOC_*`` threshold or ``GLIBC_TUNABLES`` set, or another
allocator such as jemalloc or tcmalloc preloaded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import torch

from aevb.inference.threads import share_threads

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30

_KEPT: bool | None = None


def heap_wanted() -> bool:
    """Whether :func:`keep_freed_memory` applies: glibc's allocator, not configured by the
    user."""
    if os.environ.get("AEVB_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(name.startswith("MALLOC_") and name.endswith("_THRESHOLD_") for name in os.environ):
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc, mimalloc
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module's docstring) once per process;
    returns whether they are set."""
    global _KEPT
    if _KEPT is None:
        _KEPT = False
        if heap_wanted():
            libc = ctypes.CDLL(ctypes.util.find_library("c"))
            _KEPT = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                         and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _KEPT


def prepare(device: torch.device) -> None:
    """Set up this process for computing on ``device``: on the CPU, its share of the cores
    (:func:`~aevb.inference.threads.share_threads`) and :func:`keep_freed_memory`. The trainer,
    the evaluation and the semi-supervised runner call it when they begin."""
    if device.type == "cpu":
        share_threads()
        keep_freed_memory()
