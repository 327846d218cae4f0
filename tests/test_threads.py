"""Thread budgeting between aevb processes on one machine (aevb.inference.threads)."""

import subprocess
import sys
import time

import pytest
import torch

from aevb.inference.threads import ThreadBudget, _started


@pytest.fixture
def other_process():
    """A live process of this user, standing in for a second aevb process."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def register(folder, pid, started):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(pid)).write_text(started)


def test_the_share_halves_beside_a_second_process_and_grows_back_when_it_ends(tmp_path,
                                                                              other_process):
    folder = tmp_path / "processes"
    threads = torch.get_num_threads()
    budget = ThreadBudget(cores=4, folder=folder, interval=3600).start()
    try:
        assert budget.share == 4 and budget.processes() == 1
        register(folder, other_process.pid, _started(other_process.pid))
        assert budget.count() == 2
        assert budget.apply() == 2 and torch.get_num_threads() == 2
        other_process.kill()
        other_process.wait()
        assert budget.count() == 4 and budget.apply() == 4 and torch.get_num_threads() == 4
        assert not (folder / str(other_process.pid)).exists()  # its stale file is removed
    finally:
        budget.stop()
        torch.set_num_threads(threads)
    assert not any(folder.iterdir())  # stopping leaves the folder


def test_a_reused_pid_or_a_dead_one_does_not_count(tmp_path, other_process):
    folder = tmp_path / "processes"
    register(folder, other_process.pid, "1")  # the pid's process started at another time
    register(folder, 2**22 + 1, "")  # above Linux's largest pid: no such process
    budget = ThreadBudget(cores=4, folder=folder)
    assert budget.processes() == 1 and budget.count() == 4  # only this process, unregistered


def test_the_watcher_thread_recounts_and_the_compute_thread_adopts(tmp_path, other_process):
    folder = tmp_path / "processes"
    threads = torch.get_num_threads()
    budget = ThreadBudget(cores=4, folder=folder, interval=0.05).start()
    try:
        register(folder, other_process.pid, _started(other_process.pid))
        deadline = time.monotonic() + 5
        while budget.share != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert budget.share == 2
        assert torch.get_num_threads() == 4  # not before this thread's next apply
        budget.apply()
        assert torch.get_num_threads() == 2
    finally:
        budget.stop()
        torch.set_num_threads(threads)


@pytest.mark.parametrize("env", [{"OMP_NUM_THREADS": "2"}, {"AEVB_THREAD_BUDGET": "0"}])
def test_no_budget_where_the_user_chose_the_threads(env, monkeypatch):
    for name in ("OMP_NUM_THREADS", "AEVB_THREAD_BUDGET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert not ThreadBudget.wanted()


def test_a_budget_never_gives_more_threads_than_the_process_had(tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the user's choice, made in Python
        assert not ThreadBudget.wanted()
        assert ThreadBudget(folder=tmp_path).count() == 1
    finally:
        torch.set_num_threads(threads)


def test_a_process_that_stopped_computing_takes_no_share(tmp_path, other_process):
    import os

    folder = tmp_path / "processes"
    register(folder, other_process.pid, _started(other_process.pid))
    threads = torch.get_num_threads()
    budget = ThreadBudget(cores=4, folder=folder, interval=3600, idle=10.0).start()
    try:
        assert budget.count() == 2  # it computed just now (its file was written)
        old = time.time() - 60
        os.utime(folder / str(other_process.pid), (old, old))  # a minute without a step
        assert budget.count() == 4
    finally:
        budget.stop()
        torch.set_num_threads(threads)


def test_threads_a_process_fixed_are_taken_from_the_others_share(tmp_path, other_process):
    """A one-thread job (its threads set by the user) beside a budgeted one on 2 cores: the
    budgeted one takes the core that is left, not both; when the job ends, both again."""
    folder = tmp_path / "processes"
    threads = torch.get_num_threads()
    budget = ThreadBudget(cores=2, folder=folder, interval=3600).start()
    try:
        register(folder, other_process.pid, _started(other_process.pid) + "\n1")
        assert budget.census() == (1, 1) and budget.count() == 1
        other_process.kill()
        other_process.wait()
        assert budget.count() == 2
    finally:
        budget.stop()
        torch.set_num_threads(threads)


def test_a_process_with_fixed_threads_registers_them_and_keeps_them(tmp_path, monkeypatch):
    import aevb.inference.threads as threads_module

    folder = tmp_path / "processes"
    threads = torch.get_num_threads()
    monkeypatch.delenv("AEVB_THREAD_BUDGET", raising=False)
    monkeypatch.setattr(threads_module, "_cores", lambda: 4)
    monkeypatch.setattr(threads_module, "default_folder", lambda: folder)
    monkeypatch.setattr(threads_module, "_BUDGET", None)
    try:
        torch.set_num_threads(1)  # the user's choice, made in Python
        threads_module.share_threads()
        mine = folder / str(__import__("os").getpid())
        assert mine.read_text().split("\n")[1] == "1"
        sharer = subprocess.run(  # another aevb process, on 4 cores, counts it
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from aevb.inference.threads import ThreadBudget; "
             "b = ThreadBudget(cores=4, folder=Path(sys.argv[1])); print(b.census(), b.count())",
             str(folder)], capture_output=True, text=True, check=True, timeout=120).stdout
        assert sharer.split() == ["(1,", "1)", "3"]  # the 3 cores left
        assert threads_module.apply_share() is None and torch.get_num_threads() == 1
        threads_module.stop_sharing()
        assert not mine.exists()
        monkeypatch.setenv("AEVB_THREAD_BUDGET", "0")  # switched off: nothing registers
        threads_module.share_threads()
        assert threads_module._BUDGET is None and not any(folder.iterdir())
    finally:
        threads_module.stop_sharing()
        torch.set_num_threads(threads)
