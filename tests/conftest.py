import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pyro
import pytest
import torch

from aevb.data.idx import SYSTEM_ROOT
from aevb.inference.threads import _cores

# Each test process (the serial run, or each pytest-xdist worker of ``make test``) keeps its
# temporary files, and so aevb's thread budget (aevb.inference.threads.default_folder), to
# itself and the subprocesses its tests start. A worker beside it, or the user's own aevb jobs,
# would otherwise change a run's threads mid-way, and two runs that a test compares bit for bit
# would differ in their last digits.
_TMP = tempfile.mkdtemp(prefix="aevb-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = _TMP
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)

# Under pytest-xdist each worker takes its share of the cores, cores // workers threads (at
# least one), and passes it to the subprocesses its tests start: two workers of two threads
# each, on two cores, spin against each other in OpenMP's barriers and run slower together
# than one worker alone (docs/performance.md, "The test suite").
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1 and not os.environ.get("OMP_NUM_THREADS"):
    _THREADS = max(1, _cores() // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)
    torch.set_num_threads(_THREADS)

FASHION = SYSTEM_ROOT / "fashion-mnist"
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def _fashion_dir() -> Path | None:
    for d in (os.environ.get("AEVB_DATA_DIR"), FASHION):
        if d and (Path(d) / "train-images-idx3-ubyte.gz").is_file():
            return Path(d)
    return None


@pytest.fixture
def fashion_dir() -> Path:
    """Folder with Fashion-MNIST; skipped when absent unless AEVB_REQUIRE_DATA=1 (CI)."""
    d = _fashion_dir()
    if d is None:
        msg = ("Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or set "
               "AEVB_DATA_DIR)")
        if os.environ.get("AEVB_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


# --- the fault-injection table (tests/test_faults.py -> docs/results/faults.md) --------------
_FAULTS: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "test_faults.py::" not in report.nodeid:
        return
    name = report.nodeid.split("::")[-1]
    if report.when == "call" or report.outcome != "passed":
        _FAULTS[name] = "handled" if report.passed else report.outcome


def pytest_sessionfinish(session):
    """With ``AEVB_FAULT_REPORT=FILE``, write the table of faults tried and how each ended.

    Under pytest-xdist (``make test``) each worker sees only its own tests' reports; the
    controller sees them all, so only it writes."""
    out = os.environ.get("AEVB_FAULT_REPORT")
    if not out or not _FAULTS or hasattr(session.config, "workerinput"):
        return
    import platform
    from datetime import date

    from tests.test_faults import ROWS

    failed = [n for n, r in _FAULTS.items() if r != "handled"]
    lines = ["# Fault injection", "",
             "Each row is one test of `tests/test_faults.py` (part of CI); rewritten by "
             "`AEVB_FAULT_REPORT=docs/results/faults.md python -m pytest tests/test_faults.py`.",
             "Every CLI call in it is checked for a traceback on stderr, and every fault that "
             "interrupts a run is followed by a check that the checkpoints already written "
             "still load and the run resumes.", "",
             f"Last run {date.today()}, Python {platform.python_version()}, torch "
             f"{torch.__version__}: **{len(_FAULTS)} rows tried, {len(_FAULTS) - len(failed)} "
             f"handled; runs lost: {0 if not failed else 'see failures'}; tracebacks left: "
             f"{0 if not failed else 'see failures'}**.", "",
             "| fault or input | result |", "|---|---|"]
    lines += [f"| {ROWS.get(name, name)} | {result} |" for name, result in _FAULTS.items()]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
