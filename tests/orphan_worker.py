"""A parent that starts one ``spawn`` worker (as the processes executor's pool does) and waits: the
test kills this parent with SIGKILL and checks that the worker ends by itself."""

import multiprocessing as mp
import sys
import time
from pathlib import Path


def worker(pid_file: str) -> None:
    from aevb.sweeps.executors import exit_with_parent

    exit_with_parent(interval=0.05)
    import os

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    process = mp.get_context("spawn").Process(target=worker, args=(sys.argv[1],))
    process.start()
    time.sleep(120)
