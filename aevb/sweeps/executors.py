"""Where a sweep's runs execute: in this process, in a pool of local processes, or as Ray tasks.

A task is any picklable object with a ``key`` (its run folder's name) and a ``run()`` that
trains or resumes its run folder and returns its figures as a dict; every run folder is
resumable (:mod:`aevb.runs`), so an executor that runs a task again, after its worker died,
continues the run from its newest checkpoint. Executors are registered in :data:`EXECUTORS`:

``local``
    one task after another in this process.
``processes``
    ``workers`` processes on this machine (``spawn``), each ending with the driver; a worker
    gets its own GPU (``cuda:i mod #GPUs``) when tasks run on CUDA, else a share of the cores.
``ray``
    one Ray task per run (:func:`ray.remote` with its CPUs and GPUs), on the cluster at
    ``address`` (``auto``: the one ``ray start`` started on this machine; ``HOST:PORT``: a
    head node). A task whose worker process dies is retried (``max_retries``) and resumes
    from its checkpoint. Every node needs aevb installed and the sweep's folder at the same
    path (a shared filesystem): tasks write their run folders there and the driver reads them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from aevb.inference.errors import AevbError, ConfigError
from aevb.models.registry import Registry


class Task(Protocol):
    """One run of a sweep: its run folder's name (``key``) and ``run()``, which trains or resumes it and
    returns its figures."""
    key: str

    def run(self) -> dict: ...


class Executor(Protocol):
    """Runs a list of tasks somewhere; ``map`` yields (task, result) as each finishes."""
    def map(self, tasks: list[Task]) -> Iterator[tuple[Task, dict]]:
        """Run every task; yield (task, result) as each finishes."""
        ...


EXECUTORS: Registry = Registry("executor")


@EXECUTORS.register("local")
@dataclass
class Local:
    """One task after another, in this process."""

    def map(self, tasks):
        for task in tasks:
            yield task, task.run()


# -- local processes --------------------------------------------------------------------------
def exit_with_parent(interval: float = 1.0) -> threading.Thread:
    """End this process when the one that started it dies (killed by SIGKILL or SIGTERM, the
    pool never shuts its workers down). A daemon thread polls the parent's pid: a worker loses at
    most the epoch it was in, and its checkpoints (written atomically) stay as they were."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def _start_worker(counter, workers: int, cuda: bool) -> None:
    """A worker process's set-up: it ends with its parent; its GPU (``AEVB_WORKER_DEVICE``,
    which :func:`worker_device` reads) when the tasks run on CUDA, else a share of the cores."""
    import torch

    from aevb.inference.threads import ThreadBudget, share_threads

    exit_with_parent()
    logging.getLogger("pyro").setLevel(logging.WARNING)  # as in the command line: no INFO lines
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if cuda and torch.cuda.is_available():
        os.environ["AEVB_WORKER_DEVICE"] = f"cuda:{index % torch.cuda.device_count()}"
    elif ThreadBudget.wanted():
        share_threads()  # the workers share the cores (with any other aevb process) as one
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def worker_device(device: str) -> str:
    """The device a task configured with ``device`` runs on in this process: a pool worker's
    own GPU where the task asks for CUDA (``auto`` or ``cuda``), else ``device``."""
    assigned = os.environ.get("AEVB_WORKER_DEVICE")
    if assigned and device in ("auto", "cuda"):
        return assigned
    return device


def _run(task: Task) -> dict:
    return task.run()


@EXECUTORS.register("processes")
@dataclass
class Processes:
    """``workers`` local processes (``spawn``); ``cuda``: the tasks run on GPUs, one per worker."""

    workers: int = 2
    cuda: bool = False

    def __post_init__(self):
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: give the number of worker processes "
                              "(>= 1)")

    def map(self, tasks):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if not tasks:
            return
        context = mp.get_context("spawn")
        counter = context.Value("i", 0)
        with ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=context,
                                 initializer=_start_worker,
                                 initargs=(counter, self.workers, self.cuda)) as pool:
            futures = {pool.submit(_run, task): task for task in tasks}
            for future in as_completed(futures):
                yield futures[future], future.result()


# -- Ray ----------------------------------------------------------------------------------------
@EXECUTORS.register("ray")
@dataclass
class Ray:
    """Ray tasks on the cluster at ``address``, each asking for ``cpus`` CPUs and ``gpus`` GPUs;
    a task whose worker dies is run again up to ``max_retries`` times (and resumes)."""

    address: str = "auto"
    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 3

    def __post_init__(self):
        if self.cpus <= 0 or self.gpus < 0 or self.max_retries < 0:
            raise ConfigError("--cpus-per-run must be > 0, --gpus-per-run and --max-retries >= 0")

    def connect(self):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'aevb[ray]'") from None
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False,
                         logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise ConfigError(f"--address {self.address}: no Ray cluster there ({exc}); "
                                  "start one with `ray start --head` or give HOST:PORT of its "
                                  "head node") from None
        return ray

    def map(self, tasks):
        if not tasks:
            return
        ray = self.connect()
        remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus,
                            max_retries=self.max_retries)(_run)
        pending = {remote.remote(task): task for task in tasks}
        try:
            while pending:
                # a timeout, so that Ctrl-C reaches Python between waits
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            # a run's own error (a bad setting, a missing file) as it would read locally
            if isinstance(exc.cause, AevbError):
                raise exc.cause from None
            raise
        finally:
            for ref in pending:  # the driver stops: so do the runs it started
                ray.cancel(ref, force=True)


def build_executor(name: str, **options) -> Executor:
    """The executor ``name`` with the options that it takes (others are ignored)."""
    import dataclasses

    cls = EXECUTORS.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})
