"""The sweep engine: the grid syntax, the table over seeds, restarts (skip, resume, extend,
refuse), the executors (local, processes, a real local Ray cluster with a worker killed
mid-run) and MLflow tracking read back through MLflow's own client."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aevb.inference.errors import ConfigError, RunDirError
from aevb.sweeps import Sweep, build_executor, parse
from aevb.sweeps.grid import Axis, cells, split_values
from aevb.sweeps.table import summarize

ROOT = Path(__file__).resolve().parents[1]


# -- the grid -------------------------------------------------------------------------------------
def test_grid_syntax_axes_fixed_ranges_and_brackets():
    fixed, axes = parse(["elbo=elbo,iwae", "num_particles=5", "seed=0:3",
                         "model.hidden_sizes=[200, 200],[400]", "kl.beta=range(1,6,2)"])
    assert fixed == ["num_particles=5"]
    assert [(a.name, a.values) for a in axes] == [
        ("elbo", ("elbo", "iwae")), ("seed", ("0", "1", "2")),
        ("model.hidden_sizes", ("[200, 200]", "[400]")), ("kl.beta", ("1", "3", "5"))]
    grid = cells(axes)
    assert len(grid) == 2 * 3 * 2 * 3
    assert grid[0].overrides == ("elbo=elbo", "seed=0", "model.hidden_sizes=[200, 200]",
                                 "kl.beta=1")
    assert grid[0].name == "elbo=elbo,seed=0,model.hidden_sizes=_200,_200_,kl.beta=1"
    assert split_values("{a: 1, b: [1, 2]},x") == ["{a: 1, b: [1, 2]}", "x"]


@pytest.mark.parametrize("tokens, words", [
    (["elbo"], "not KEY=VALUES"), (["seed=3:3"], "empty range"), (["elbo=elbo,,iwae"], "empty"),
    (["elbo=a,a"], "repeats"), (["seed=0:2", "seed=4"], "twice"), (["x=[1,2"], "unbalanced"),
])
def test_grid_syntax_errors_name_the_fix(tokens, words):
    with pytest.raises(ConfigError, match=words):
        parse(tokens)


def test_named_choices_stand_for_their_overrides():
    axis = Axis("row", ("vae", "iwae5"), {"vae": ("elbo=elbo",),
                                          "iwae5": ("elbo=iwae", "num_particles=5")})
    assert [c.overrides for c in cells([axis])] == [("elbo=elbo",),
                                                    ("elbo=iwae", "num_particles=5")]


# -- the table ------------------------------------------------------------------------------------
def test_table_mean_interval_and_paired_difference_known_answer():
    # a: 1, 2, 3 over seeds 0..2; b = a + 0.5 + tiny noise: the paired difference's interval is
    # far narrower than either row's own interval
    a = {0: 1.0, 1: 2.0, 2: 3.0}
    b = {0: 1.5, 1: 2.6, 2: 3.4}
    points = [({"m": "a", "seed": s}, v) for s, v in a.items()]
    points += [({"m": "b", "seed": s}, v) for s, v in b.items()]
    points.append(({"m": "b", "seed": 3}, None))  # no such figure: left out
    rows = {r["m"]: r for r in summarize(points, ["m"], "seed", {"m": "a"})}
    assert rows["a"]["mean"] == pytest.approx(2.0)
    assert rows["a"]["ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3), abs=1e-3)
    assert rows["b"]["seeds"] == 3 and math.isnan(rows["a"]["paired_diff"])
    diffs = [0.5, 0.6, 0.4]
    assert rows["b"]["paired_diff"] == pytest.approx(0.5)
    sd = math.sqrt(sum((d - 0.5) ** 2 for d in diffs) / 2)
    assert rows["b"]["paired_ci95"] == pytest.approx(4.303 * sd / math.sqrt(3), abs=1e-3)
    assert rows["b"]["paired_ci95"] < rows["b"]["ci95"] / 5


# -- running ------------------------------------------------------------------------------------
def tiny(fashion_dir: Path, epochs: int = 2, size: int = 300) -> list[str]:
    return [f"data.data_dir={fashion_dir}", f"data.train_size={size}", "data.test_size=50",
            "data.validation_size=50", f"train.epochs={epochs}", "train.batch_size=50",
            "eval.num_samples=4", "train.progress=false", "train.tensorboard=false",
            "num_particles=2", "model.hidden_sizes=[32]", "model.z_dim=4", "device=cpu"]


def grid_sweep(out: Path, fashion_dir: Path, tokens: list[str], **options) -> Sweep:
    fixed, axes = parse([*tiny(fashion_dir, **options.pop("tiny", {})), *tokens])
    return Sweep(out, axes, fixed, "vae_fashion", "log_likelihood", reference={"elbo": "elbo"},
                 **options)


def test_sweep_restart_skips_extends_and_refuses(fashion_dir, tmp_path):
    out = tmp_path / "est"
    rows = grid_sweep(out, fashion_dir, ["elbo=elbo,iwae", "seed=0:2"]).run(progress=False)
    assert [(r["elbo"], r["seeds"]) for r in rows] == [("elbo", 2), ("iwae", 2)]
    assert rows[1]["paired_seeds"] == 2 and math.isfinite(rows[1]["paired_diff"])
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["elbo=elbo,seed=0", "elbo=elbo,seed=1", "elbo=iwae,seed=0", "elbo=iwae,seed=1"]
    assert {"results.md", "results.csv", "results.png", "runs.csv", "sweep.json"} <= {
        p.name for p in out.iterdir()}
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/evaluation.json")}
    # the same command again: nothing re-runs, the table is the same
    again = grid_sweep(out, fashion_dir, ["elbo=elbo,iwae", "seed=0:2"]).run(progress=False)
    assert again == rows
    assert stamp == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/evaluation.json")}
    # a value added to an axis: only its cells run
    more = grid_sweep(out, fashion_dir, ["elbo=elbo,iwae", "seed=0:3"]).run(progress=False)
    assert [r["seeds"] for r in more] == [3, 3]
    assert stamp == {p: p.stat().st_mtime_ns for p in stamp}
    assert json.loads((out / "sweep.json").read_text())["axes"]["seed"] == ["0", "1", "2"]
    # another setting: refused, naming it, before anything is written
    with pytest.raises(RunDirError, match=r"optim.lr \(unset -> 0.01\)"):
        grid_sweep(out, fashion_dir, ["elbo=elbo,iwae", "seed=0:3", "optim.lr=0.01"]).run(
            progress=False)
    with pytest.raises(RunDirError, match=r"kl.beta \(not an axis -> an axis\)"):
        grid_sweep(out, fashion_dir, ["elbo=elbo,iwae", "seed=0:3", "kl.beta=1,2"]).run(
            progress=False)
    # more epochs: every cell trains on from its checkpoint; the record says so
    grid_sweep(out, fashion_dir, ["elbo=elbo,iwae", "seed=0:3"],
               tiny={"epochs": 3}).run(progress=False)
    record = json.loads((out / "runs" / "elbo=iwae,seed=0" / "run.json").read_text())
    assert record["resumes"][-1]["changes"] == {"train.epochs": [2, 3]}


def test_a_bad_cell_is_refused_before_any_folder_is_written(fashion_dir, tmp_path):
    with pytest.raises(ConfigError, match="num_particles"):
        grid_sweep(tmp_path / "bad", fashion_dir, ["num_particles=2,0"]).run(progress=False)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="--reference elbo=elbo"):
        fixed, axes = parse(["seed=0:2"])
        Sweep(tmp_path / "bad", axes, fixed, reference={"elbo": "elbo"})
    with pytest.raises(ConfigError, match="--metric"):
        Sweep(tmp_path / "bad", axes, fixed, metric="accuracy")


def test_processes_executor_through_the_api_writes_the_local_table(fashion_dir, tmp_path):
    import aevb

    tokens = ["elbo=elbo,iwae", "seed=0"]
    local = grid_sweep(tmp_path / "local", fashion_dir, tokens).run(progress=False)
    grid = dict(t.split("=", 1) for t in tiny(fashion_dir)) | {"elbo": ["elbo", "iwae"],
                                                               "seed": range(1)}
    pool = aevb.sweep("vae_fashion", grid, out=tmp_path / "pool", reference={"elbo": "elbo"},
                      executor="processes", workers=2, progress=False)
    # the same table: a worker may run with another thread count than this process, which
    # changes the float summation order (the fifth significant digit), nothing else
    assert_same_rows(pool, local)
    assert_same_rows(*(list(csv.DictReader((tmp_path / name / "results.csv").open()))
                       for name in ("pool", "local")))


def assert_same_rows(ours: list[dict], theirs: list[dict]) -> None:
    """Equal rows: the same keys and texts, numbers equal to float rounding (nan equal to nan)."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            try:
                x, y = float(a[key]), float(b[key])
            except (TypeError, ValueError):
                assert a[key] == b[key], key
                continue
            assert x == pytest.approx(y, rel=1e-5, nan_ok=True), key
    with pytest.raises(ConfigError, match="--workers 0"):
        build_executor("processes", workers=0)


# -- a real local Ray cluster --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path_factory):
    """``ray start --head --block`` bounded to 2 CPUs; the whole process group is stopped at
    the end (no other Ray on the machine is touched)."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("Ray is not installed (pip install 'aevb[ray]')")
    port = _free_port()
    temp = Path(f"/tmp/aevb-ray-{os.getpid()}")  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
         "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run([ray_bin, "status", "--address", address], capture_output=True)
        if probe.returncode == 0:
            break
        time.sleep(1)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the local Ray head did not start in 90 s")
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(5)
    with contextlib.suppress(ProcessLookupError):  # what did not end on SIGTERM
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()
    shutil.rmtree(temp, ignore_errors=True)


def test_ray_cluster_retries_a_killed_run_which_resumes_and_the_table_is_local_s(
        fashion_dir, tmp_path, ray_cluster):
    out = tmp_path / "ray"
    tokens = ["elbo=elbo,iwae"]
    grid = [*tiny(fashion_dir, epochs=25, size=400), *tokens]
    driver = subprocess.Popen(
        [sys.executable, "-m", "aevb.cli", "sweep", "--config", "vae_fashion", *grid,
         "--out", str(out), "--reference", "elbo=elbo", "--executor", "ray", "--address",
         ray_cluster], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # kill the worker of the first run once it has written a checkpoint or two
    run_dir = out / "runs" / "elbo=elbo"
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and killed is None:
        checkpoints = sorted((run_dir / "checkpoints").glob("*.pt")) if run_dir.is_dir() else []
        lock = run_dir / ".aevb.lock"
        if checkpoints and lock.is_file() and not (run_dir / "evaluation.json").exists():
            try:
                killed = json.loads(lock.read_text())["pid"]
            except (ValueError, KeyError):
                killed = None
                continue
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert killed is not None, "the run finished before the test could kill its worker"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumes"], "the retried run started over instead of resuming"
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").open()]
    assert epochs == list(range(1, 26))
    # the same grid in this process: the same table
    fixed, axes = parse(grid)
    local = Sweep(tmp_path / "local", axes, fixed, "vae_fashion", reference={"elbo": "elbo"})
    rows = local.run(progress=False)
    assert (out / "results.csv").read_text() == (tmp_path / "local" / "results.csv").read_text()
    assert len(rows) == 2


# -- MLflow ---------------------------------------------------------------------------------------
def test_mlflow_tracking_of_a_sweep_read_back_with_mlflows_client(fashion_dir, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = grid_sweep(tmp_path / "tracked", fashion_dir, ["elbo=elbo,iwae"], mlflow=uri,
                       experiment="estimators")
    sweep.run(progress=False)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("estimators")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["elbo"] for r in runs) == ["elbo", "iwae"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["elbo"] == run.data.tags["elbo"]
        assert run.data.params["train.epochs"] == "2"
        history = client.get_metric_history(run.info.run_id, "valid_elbo")
        assert [m.step for m in history] == [1, 2]
        folder = Path(run.data.tags["aevb.run_dir"])
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
        assert [m.value for m in history] == pytest.approx([r["valid_elbo"] for r in rows])
        evaluation = json.loads((folder / "evaluation.json").read_text())
        assert run.data.metrics["final/log_likelihood"] == pytest.approx(
            evaluation["log_likelihood"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"evaluation.json", "config.yaml", "samples.png"} <= artifacts
    # two more epochs: the same MLflow runs go on (resumed), tagged with what changed
    grid_sweep(tmp_path / "tracked", fashion_dir, ["elbo=elbo,iwae"], mlflow=uri,
               experiment="estimators", tiny={"epochs": 4}).run(progress=False)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_elbo")] == [
            1, 2, 3, 4]
        assert run.data.tags["resumed.train.epochs"] == "2 -> 4"
    assert mlflow.__version__
