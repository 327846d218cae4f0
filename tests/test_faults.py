"""Fault injection: kills, divergence, concurrent writers, bad input, full and read-only disks.

Every fault is a row of ``docs/results/faults.md`` (``@fault(row)``); the table is rewritten by
``AEVB_FAULT_REPORT=docs/results/faults.md pytest tests/test_faults.py``. What every row holds:
a clear one-line error (``aevb: error: ...``, exit 2) or a correct run, no traceback, and
nothing that was saved lost.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.cli import main
from aevb.inference.training.checkpoint import list_checkpoints, load_checkpoint
from aevb.lock import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]
#: a small model, a few seconds per run
SMALL = ["model.hidden_sizes=[32]", "model.z_dim=2", "eval.num_samples=4", "eval.num_images=16",
         "train.tensorboard=false", "train.batch_size=50"]
ROWS: dict[str, str] = {}


def fault(row: str):
    """Name the table row a test checks (its result goes into docs/results/faults.md)."""
    def mark(fn):
        ROWS[fn.__name__] = row
        return fn
    return mark


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """600 binary 8x8 images (labels too), as an array file."""
    rng = np.random.default_rng(0)
    x = (rng.random((600, 1, 8, 8)) < 0.3).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=x, y=rng.integers(0, 10, 600))
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    """Run ``aevb ARGV`` in this process; its exit code and stderr (checked for tracebacks)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, err


def refused(capsys, *argv, says: str) -> str:
    """``aevb ARGV`` fails with exit 2 and one ``aevb: error:`` line containing ``says``."""
    rc, err = cli(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("aevb: error:")]
    assert rc == 2 and len(errors) == 1, err
    assert says in errors[0], errors[0]
    return errors[0]


def train(capsys, data, run, *extra, epochs=1) -> int:
    rc, err = cli(capsys, "train", "--data", data, "--run-dir", run, "--no-progress", *SMALL,
                  f"train.epochs={epochs}", *extra)
    assert rc == 0, err
    return rc


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- the record is true --------------------------------------------------------------------

@fault("`--resume RUN optim.lr=X` trains at X: the optimizer's param groups, the checkpoint, "
       "config.yaml, run.json's resumes and the metrics all say X")
def test_resume_lr_override_reaches_the_optimizer(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    rc, err = cli(capsys, "train", "--resume", run, "optim.lr=0.0002", "train.epochs=2",
                  "--no-progress")
    assert rc == 0 and "optim.lr: 0.001 -> 0.0002" in err
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert {g["lr"] for g in state["optimizer"]["state"]["param_groups"]} == {0.0002}
    assert state["config"]["optim"]["lr"] == 0.0002
    assert [r["lr"] for r in rows(run)] == [0.001, 0.0002]
    resumes = json.loads((run / "run.json").read_text())["resumes"]
    assert resumes[-1]["epoch"] == 1 and resumes[-1]["changes"]["optim.lr"] == [0.001, 0.0002]


@fault("a checkpoint written by an older aevb (its config lacks a newer key) resumes without a "
       "spurious recorded change")
def test_keys_newer_than_the_saved_config_are_no_change():
    from aevb.config import Config, to_dict
    from aevb.resume import plan

    saved = to_dict(Config())
    del saved["eval"]["track"]  # a checkpoint written before eval.track existed
    assert plan(saved, to_dict(Config()), 1, "fast").changes == {}


@fault("`--resume` changing what the run is (model, data, seed, optimizer, engine) is refused "
       "before anything is written")
def test_resume_cannot_change_the_model_or_seed(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    before = snapshot(run)
    refused(capsys, "train", "--resume", run, "model.z_dim=3", "train.epochs=2",
            says="cannot change model.z_dim")
    refused(capsys, "train", "--resume", run, "seed=3", "train.epochs=2", says="cannot change seed")
    assert snapshot(run) == before


@fault("`--resume RUN train.epochs=1` on a 2-epoch run is refused (nothing rewritten)")
def test_resume_to_fewer_epochs_is_refused(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run, epochs=2)
    before = snapshot(run)
    refused(capsys, "train", "--resume", run, "train.epochs=1", says="already trained 2 epochs")
    assert snapshot(run) == before
    rc, err = cli(capsys, "train", "--resume", run, "--no-progress")  # finished: nothing to do
    assert rc == 0 and "nothing to train" in err
    assert snapshot(run) == before | {Path("run.json"): (run / "run.json").read_bytes()}


@fault("`--resume RUN elbo=iwae` without num_particles (k = 1, the ELBO) is refused with the "
       "fix; with k it trains and the metrics carry objective and k per epoch")
def test_resume_to_iwae_needs_k(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    refused(capsys, "train", "--resume", run, "elbo=iwae", "train.epochs=2",
            says="give num_particles=K")
    rc, _ = cli(capsys, "train", "--resume", run, "elbo=iwae", "num_particles=3",
                "train.epochs=2", "--no-progress")
    assert rc == 0
    assert [(r["objective"], r["num_particles"]) for r in rows(run)] == [("elbo", 1), ("iwae", 3)]


@fault("`aevb evaluate RUN --num-samples 10` does not replace a k = 5000 evaluation without "
       "--overwrite (or --out)")
def test_weaker_evaluation_does_not_replace_a_stronger_one(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run, "eval.num_samples=20")
    before = (run / "evaluation.json").read_bytes()
    refused(capsys, "evaluate", run, "--num-samples", "10", "--no-progress",
            says="would replace it with a weaker figure")
    assert (run / "evaluation.json").read_bytes() == before
    rc, _ = cli(capsys, "evaluate", run, "--num-samples", "10", "--out", tmp_path / "k10.json",
                "--no-progress")
    assert rc == 0 and json.loads((tmp_path / "k10.json").read_text())["num_samples"] == 10
    import aevb
    from aevb.inference.errors import ConfigError

    loaded = aevb.load(run)
    with pytest.raises(ConfigError, match="weaker figure"):  # the API keeps it too
        loaded.evaluate(num_samples=5, write=True)
    assert (run / "evaluation.json").read_bytes() == before
    rc, _ = cli(capsys, "evaluate", run, "--num-samples", "10", "--overwrite", "--no-progress")
    assert rc == 0 and json.loads((run / "evaluation.json").read_text())["num_samples"] == 10


# --- divergence ----------------------------------------------------------------------------

@fault("`optim.lr=1e3` / `1e6`: stops in the diverging epoch with one message naming it and the "
       "fix; the last good checkpoint is kept; metrics stay valid JSON")
def test_divergence_stops_cleanly_and_keeps_the_last_good_checkpoint(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    good = snapshot(run / "checkpoints")
    for lr in ("1e3", "1e6"):
        refused(capsys, "train", "--resume", run, f"optim.lr={lr}", "train.epochs=4",
                "train.keep_checkpoints=1", "--no-progress", says="training diverged in epoch 2")
        assert snapshot(run / "checkpoints") == good
        assert [r["epoch"] for r in rows(run)] == [1]
    rc, _ = cli(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress")
    assert rc == 0 and [r["epoch"] for r in rows(run)] == [1, 2]


@fault("a NaN or huge lr before the first checkpoint: no dead end, `--resume` starts the run "
       "over with its saved config")
def test_divergence_before_the_first_checkpoint_can_be_started_over(capsys, data, tmp_path):
    run = tmp_path / "run"
    refused(capsys, "train", "--data", data, "--run-dir", run, "--no-progress", *SMALL,
            "optim.lr=1e6", says="start it over with `aevb train --resume")
    assert not list_checkpoints(run)
    refused(capsys, "train", "--data", data, "--run-dir", run, *SMALL,
            says="start it over with `aevb train --resume")
    rc, err = cli(capsys, "train", "--resume", run, "optim.lr=1e-3", "train.epochs=1",
                  "--no-progress")
    assert rc == 0 and "starting it over" in err and len(list_checkpoints(run)) == 1


def _poisoned_step(monkeypatch, poison):
    """The fast engine's ``poison(engine, step)`` runs after each real step."""
    from aevb.inference.training import engines

    real, count = engines.FastEngine.step, {"n": 0}

    def step(self, *batches, weight=1.0):
        loss = real(self, *batches, weight=weight)
        count["n"] += 1
        return poison(self, count["n"], loss)
    monkeypatch.setattr(engines.FastEngine, "step", step)


@fault("a −inf loss stops the run; metrics.jsonl never holds `-Infinity` (not JSON)")
def test_infinite_loss_is_divergence_and_metrics_stay_json(capsys, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(capsys, data, run)
    _poisoned_step(monkeypatch, lambda eng, n, loss: loss * float("inf") if n == 3 else loss)
    refused(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress",
            says="the training objective is")
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


@fault("non-finite gradients at an epoch's last step: the divergence message, not an 80-line "
       "ValueError traceback")
def test_nan_parameters_at_the_last_step(capsys, data, tmp_path, monkeypatch):
    run = tmp_path / "run"

    def poison(engine, n, loss):
        if n == 10:  # 540 training images / 50 = the 11th step is the last; poison the 10th's
            with torch.no_grad():
                next(engine.model.parameters()).fill_(float("nan"))
        return loss
    _poisoned_step(monkeypatch, poison)
    refused(capsys, "train", "--data", data, "--run-dir", run, "--no-progress", *SMALL,
            "train.epochs=2", says="training diverged in epoch 1")


# --- one writer per folder, no litter, no dead ends ---------------------------------------

def _lock_of(pid: int) -> dict:
    import socket

    from aevb.lock import _start_time

    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid), "since": "now"}


@fault("two writers on one run folder (a second `train --run-dir`, or `--resume` while it "
       "runs): refused, naming the holder; a dead holder's lock is taken over")
def test_one_writer_per_run_folder(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_NAME).write_text(json.dumps(_lock_of(holder.pid)))
        before = snapshot(run)
        refused(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress",
                says=f"in use by process {holder.pid}")
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        (fresh / LOCK_NAME).write_text(json.dumps(_lock_of(holder.pid)))
        refused(capsys, "train", "--data", data, "--run-dir", fresh, *SMALL, says="in use by")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    rc, _ = cli(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress")  # stale
    assert rc == 0 and not (run / LOCK_NAME).exists() and len(rows(run)) == 2


@fault("temporary files of an interrupted checkpoint write are removed at the next start")
def test_temporaries_are_cleaned(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    litter = run / "checkpoints" / ".epoch-0002.pt.abc123.tmp"
    litter.write_bytes(b"x" * 1000)
    (run / ".metrics.jsonl.xyz.tmp").write_text("{")
    rc, _ = cli(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress")
    assert rc == 0 and not list(run.rglob("*.tmp"))


def _kill_run(args: list[str], env: dict, kill_at) -> int:
    """Start ``fault_worker.py ARGS``; ``kill_at(proc)`` returns when to SIGKILL it (or None to
    let it finish). Its exit code (−9 when killed)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fault_worker.py"), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if kill_at(proc):
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(err.decode())
    assert b"Traceback" not in err, err.decode()
    return proc.returncode


@fault("kill -9 mid-epoch and during checkpoint writes, several times at random moments: every "
       "resume ends bit-identical to an uninterrupted run, no temporary file is left")
def test_kill_9_anywhere_and_resume_exactly(data, tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    common = ["--no-progress", *SMALL, "train.epochs=6", "train.batch_size=4",
              "eval.num_samples=2"]
    straight = tmp_path / "straight"
    assert _kill_run(["train", "--data", str(data), "--run-dir", str(straight), *common], env,
                     lambda p: False) == 0
    run, marker = tmp_path / "killed", tmp_path / "writing"
    rng, kills, log = random.Random(0), 0, []
    first = ["train", "--data", str(data), "--run-dir", str(run), *common]
    again = ["train", "--resume", str(run), "--no-progress"]

    def newest() -> int:
        found = list_checkpoints(run)
        return int(found[-1].stem.split("-")[1]) if found else 0

    def during_write(proc):  # SIGKILL while the 1st or 2nd checkpoint's temporary is written
        marker.unlink(missing_ok=True)
        target = rng.randint(1, 2)
        while not marker.exists() or len(marker.read_text().split()) < target:
            if proc.poll() is not None:
                return False
            time.sleep(0.01)
        return True

    def mid_epoch(proc):  # SIGKILL at a random moment of the epoch after the next checkpoint
        start = newest()
        while newest() == start:
            if proc.poll() is not None:
                return False
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.2))
        return proc.poll() is None

    for attempt in range(12):
        slow = attempt % 2 == 0
        env_ = env | ({"AEVB_TEST_WRITE_MARKER": str(marker), "AEVB_TEST_WRITE_DELAY": "1"}
                      if slow else {})
        args = again if run.exists() and (run / "config.yaml").exists() else first
        code = _kill_run(args, env_, (during_write if slow else mid_epoch) if attempt < 6
                         else (lambda p: False))
        kills += code == -signal.SIGKILL
        saved = [p.name for p in list_checkpoints(run)]
        log.append(f"{'write' if slow else 'epoch'} kill: rc {code}, checkpoints {saved}")
        if code == 0:
            break
    print("\n".join(log))
    assert kills >= 4 and code == 0, log
    assert sum(line.startswith("write kill: rc -9") for line in log) >= 2, log
    assert not list(run.rglob("*.tmp")) and not (run / LOCK_NAME).exists()
    a, b = load_checkpoint(list_checkpoints(straight)[-1]), load_checkpoint(list_checkpoints(run)[-1])
    assert a["epoch"] == b["epoch"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows(straight)] == \
        [{k: v for k, v in r.items() if k not in strip} for r in rows(run)]


# --- checkpoints and run folders that are not what they claim ------------------------------

@fault("truncated and random-bytes checkpoints: a clear error naming the file and an older "
       "checkpoint; nothing changed")
def test_truncated_and_random_checkpoints(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run, "train.keep_checkpoints=3", epochs=2)
    newest = list_checkpoints(run)[-1]
    for damage in (newest.read_bytes()[:500], os.urandom(4000)):
        newest.write_bytes(damage)
        before = snapshot(run)
        refused(capsys, "train", "--resume", run, "train.epochs=3", says="corrupt or truncated")
        refused(capsys, "evaluate", run, says="--checkpoint")
        assert snapshot(run) == before


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@fault("a pickle payload in a checkpoint (code that would create a file when unpickled): "
       "refused by weights_only, the file is never created")
def test_pickle_payload_runs_no_code(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    marker = tmp_path / "pwned"
    newest = list_checkpoints(run)[-1]
    with open(newest, "wb") as f:
        pickle.dump({"format": "aevb-checkpoint/1", "model": _Payload(marker)}, f)
    for argv in (["evaluate", run], ["sample", run], ["train", "--resume", run, "train.epochs=2"]):
        refused(capsys, *argv, says="corrupt or truncated")
    assert not marker.exists()


MODEL_FILE = '''
from pathlib import Path
Path({marker!r}).write_text("imported")
from aevb.models.vae import VAE as Model
'''


@fault("a run folder whose config names a model file: `sample`, `evaluate` and `--resume` "
       "import it only with --trust-model-file (or the same file on the command line)")
def test_untrusted_model_file_is_not_imported(capsys, data, tmp_path):
    marker = tmp_path / "imported"
    source = tmp_path / "my_model.py"
    source.write_text(MODEL_FILE.format(marker=str(marker)))
    run = tmp_path / "run"
    train(capsys, data, run, f"model={source}:Model")
    marker.unlink()
    for argv in (["sample", run, "-n", "4"], ["evaluate", run, "--out", tmp_path / "e.json"],
                 ["train", "--resume", run, "train.epochs=2"]):
        refused(capsys, *argv, says="--trust-model-file")
        assert not marker.exists()
    rc, _ = cli(capsys, "sample", run, "-n", "4", "--trust-model-file")
    assert rc == 0  # (the module is cached in this process by now: the marker says nothing)


# --- bad data ------------------------------------------------------------------------------

@fault("`--data-dir` pointing at an empty or missing folder: an error naming it, no fallback "
       "to another copy, no run folder")
def test_data_dir_that_holds_nothing(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, says in ((empty, "holds no mnist train files"), (tmp_path / "nope", "no such folder")):
        refused(capsys, "train", "--data", "mnist", "--data-dir", folder, "--run-dir",
                tmp_path / "run", *SMALL, says=says)
        assert not (tmp_path / "run").exists()


@fault("a truncated or corrupt `.gz` data file: an error naming the file and how to re-fetch it")
def test_corrupt_gz_names_the_file(capsys, tmp_path):
    import gzip

    folder = tmp_path / "mnist"
    folder.mkdir()
    good = gzip.compress(bytes(range(256)) * 400)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / f"{name}.gz").write_bytes(good[: len(good) // 2])  # truncated
    error = refused(capsys, "train", "--data", "mnist", "--data-dir", folder, "--run-dir",
                    tmp_path / "run", *SMALL, says="train-images-idx3-ubyte.gz")
    assert "fetch it again" in error and not (tmp_path / "run").exists()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    refused(capsys, "train", "--data", "mnist", "--data-dir", folder, "--run-dir",
            tmp_path / "run", *SMALL, says="train-images-idx3-ubyte.gz")


# --- every input validated at the edge ------------------------------------------------------

BAD_TRAIN = [
    (["seed=-1"], "'seed'"),
    (["optim.weight_decay=-1"], "optim.weight_decay"),
    (["num_particles=1000000000"], "lower num_particles"),
    (["num_particles=1e9"], "num_particles"),
    (["train.batch_size=0"], "train.batch_size"),
    (["model.options={foo: 1"], "could not be parsed"),
    (["--config", "{train5}"], "is a section"),
    (["--config", "{list}"], "must be a mapping"),
    (["--config", "{empty}"], "is empty"),
    (["--spec", "{neg}"], "latents.z.shape"),
    (["--spec", "{zero}"], "latents.z.shape"),
    (["--spec", "{tahn}"], "networks.encoder.activation"),
    (["--spec", "{poisson}"], "valid likelihoods: bernoulli, categorical, gaussian"),
    (["--run-dir", "/proc/aevb-run"], "cannot create run folder"),
    (["--run-dir", "{file}"], "is a file"),
    (["--nproc", "0"], "--nproc"),
]


def _bad_files(tmp_path: Path) -> dict:
    spec = (ROOT / "configs" / "specs" / "vae.yaml").read_text()
    files = {"train5": "train: 5\n", "list": "- 1\n- 2\n", "empty": "# nothing\n",
             "neg": spec.replace("shape: [50]", "shape: [-5]"),
             "zero": spec.replace("shape: [50]", "shape: [0]"),
             "tahn": spec.replace("activation: tanh}", "activation: tahn}", 1),
             "poisson": spec.replace("likelihood: bernoulli", "likelihood: poisson"),
             "file": ""}
    out = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        out[name] = str(path)
    return out


@fault("bad values (`seed=-1`, `weight_decay=-1`, `num_particles=1e9`, batch size 0, a malformed "
       "YAML override, YAML `train: 5`, a YAML list, an empty YAML, spec shapes `[-5]`/`[0]`, "
       "`activation: tahn`, `likelihood: poisson`, a run dir under /proc or that is a file): one "
       "line naming the key, exit 2, before any data is read or any folder is left")
def test_bad_train_input_is_one_line_and_leaves_nothing(capsys, data, tmp_path):
    files = _bad_files(tmp_path)
    for extra, says in BAD_TRAIN:
        run = tmp_path / "run"
        extra = [files.get(e.strip("{}"), e) for e in extra]
        small = [a for a in SMALL if not a.startswith("model.")] if "--spec" in extra else SMALL
        argv = ["train", "--data", data, *small, *extra]
        if "--run-dir" not in extra:
            argv += ["--run-dir", run]
        refused(capsys, *argv, says=says)
        assert not run.exists(), extra


@fault("bad options of the other commands (`evaluate --num-samples 0`, `--test-size 0`, `sample "
       "-n 0`, `diagnose gradients --batch-size 0`, `--estimators foo`, an estimator the model "
       "cannot take): one line, exit 2, before the work")
def test_bad_options_of_other_commands(capsys, data, tmp_path):
    run = tmp_path / "run"
    train(capsys, data, run)
    for argv, says in ((["evaluate", run, "--num-samples", "0"], "--num-samples"),
                       (["evaluate", run, "--test-size", "0"], "--test-size"),
                       (["sample", run, "-n", "0"], "must be >= 1"),
                       (["diagnose", "gradients", run, "--batch-size", "0"], "--batch-size"),
                       (["diagnose", "gradients", run, "--estimators", "foo"], "--estimators"),
                       (["evaluate", run, "--batch-size", "0"], "--batch-size"),
                       (["diagnose", "gradients", run, "--estimators", "reparam,mmd5"],
                        "leave mmd5 out of --estimators")):
        refused(capsys, *argv, says=says)
    m2 = tmp_path / "m2"  # an enumerated model: no score-function estimator
    rc, _ = cli(capsys, "train", "--data", data, "--spec", "m2", "--run-dir", m2, "--no-progress",
                "train.epochs=1", "eval.num_samples=2", "train.tensorboard=false")
    assert rc == 0
    refused(capsys, "diagnose", "gradients", m2, "--estimators", "reparam,score",
            says="leave score out of --estimators")


@fault("`kl.warmup_epochs=5` with `train.epochs=1`: a one-line warning that the KL weight ends "
       "below β")
def test_warmup_longer_than_training_warns(capsys, data, tmp_path):
    rc, err = cli(capsys, "train", "--data", data, "--run-dir", tmp_path / "run", "--no-progress",
                  *SMALL, "train.epochs=1", "kl.warmup_epochs=5")
    assert rc == 0 and "kl.warmup_epochs=5 > train.epochs=1" in err and "0.2" in err


# --- the file system -------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (a disk that fills up), or a skip where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the mocked ENOSPC test covers the write")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@fault("disk full (a 1 MiB tmpfs) during training: one line naming the write; the checkpoints "
       "already written load and resume elsewhere")
def test_disk_full_on_a_real_tmpfs(capsys, data, tmpfs, tmp_path):
    run = tmpfs / "run"
    rc, err = cli(capsys, "train", "--data", data, "--run-dir", run, "--no-progress", *SMALL,
                  "model.hidden_sizes=[600]", "train.epochs=20", "train.keep_checkpoints=20")
    assert rc == 2 and "No space left on device" in err, err
    saved = list_checkpoints(run)
    for path in saved:
        load_checkpoint(path)
    assert not list(run.rglob("*.tmp"))


@fault("disk full at a checkpoint write (mocked ENOSPC): the previous checkpoint is intact and "
       "the run resumes from it")
def test_disk_full_mocked(capsys, data, tmp_path, monkeypatch):
    from aevb.inference.training import checkpoint

    run = tmp_path / "run"
    train(capsys, data, run)
    real = checkpoint.torch.save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    refused(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress",
            says="the checkpoint of epoch 1 is kept")
    monkeypatch.setattr(checkpoint.torch, "save", real)
    assert [checkpoint_path.name for checkpoint_path in list_checkpoints(run)] == ["epoch-0001.pt"]
    assert not list(run.rglob("*.tmp"))
    rc, _ = cli(capsys, "train", "--resume", run, "train.epochs=2", "--no-progress")
    assert rc == 0 and len(rows(run)) == 2


@fault("a read-only file system: one line, nothing written")
def test_read_only_file_system(capsys, data, tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    refused(capsys, "train", "--data", data, "--run-dir", tmpfs / "run", *SMALL,
            says="Read-only file system")


@fault("files a run writes (metrics, config, run.json, evaluation, checkpoints, pictures) get "
       "the user's umask (0644 under 022), not 0600")
def test_file_modes_follow_the_umask(capsys, data, tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        train(capsys, data, run)
    finally:
        os.umask(old)
    for path in run.rglob("*"):
        if path.is_file() and "tensorboard" not in path.parts:
            assert path.stat().st_mode & 0o777 == 0o644, path
