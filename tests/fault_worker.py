"""``python tests/fault_worker.py ARGS``: ``aevb ARGS`` with a slow, announced checkpoint write.

The fault-injection tests kill this process with SIGKILL in the middle of a write: before each
``fsync`` of an atomic write it creates the file named by ``AEVB_TEST_WRITE_MARKER`` and sleeps
``AEVB_TEST_WRITE_DELAY`` seconds, so the parent knows a temporary file is half-written.
"""

import os
import sys
import time

from aevb.cli import main

_fsync = os.fsync


def _announced_fsync(fd: int) -> None:
    marker = os.environ.get("AEVB_TEST_WRITE_MARKER")
    if marker and os.fstat(fd).st_size > 10_000:  # a checkpoint, not a metrics line
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(float(os.environ.get("AEVB_TEST_WRITE_DELAY", "0")))
    _fsync(fd)


os.fsync = _announced_fsync

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
