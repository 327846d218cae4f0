"""Every benchmark script runs with tiny settings; a new script must be listed here."""

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMOKE_ARGS = {
    "throughput.py": ["--objectives", "elbo,iwae:2", "--batch-sizes", "64", "--steps", "3",
                      "--repeats", "1", "--train-size", "600", "--eval-images", "20",
                      "--eval-k", "50", "--eval-chunks", "25x10",
                      "--device", "cpu"],
    "m2_enumeration.py": ["--steps", "2", "--rounds", "1", "--threads", "1"],
    "m2_step.py": ["--steps", "2", "--rounds", "1", "--threads", "1", "--eval-k", "20",
                   "--eval-images", "4", "--eval-rounds", "1"],
    "amortization.py": ["--dataset", "fashion-mnist", "--train-size", "300", "--epochs", "1",
                        "--images", "10", "--refine", "2", "--num-samples", "5",
                        "--posteriors", "diag,iaf", "--out", "{tmp}/am", "--no-progress"],
    "adversarial.py": ["--dataset", "fashion-mnist", "--train-size", "300", "--epochs", "1",
                       "--images", "50", "--variants", "elbo,aae", "--out", "{tmp}/adv"],
    "contention.py": ["--pairs", "train:eval", "--budgets", "on", "--rounds", "1",
                      "--train-units", "3", "--eval-units", "1", "--eval-k", "20"],
    "scaling.py": ["--ranks", "1,2", "--batch-sizes", "16", "--steps", "2", "--repeats", "1"],
    "burda.py": ["--rows", "vae1,iwae2_k5", "--stages", "2", "--samples", "5", "--train-size",
                 "200", "--test-size", "20", "--out", "{tmp}/burda", "--no-progress"],
    "kingma_welling.py": ["--z-dims", "3", "--samples-evaluated", "400", "--track-size", "50",
                          "--samples", "3", "--train-size", "200", "--test-size", "20", "--out",
                          "{tmp}/kw", "--no-progress", "--workers", "2"],
    "sweep.py": ["--parts", "overhead", "--rounds", "1", "--cells", "1", "--train-size", "200",
                 "--epochs", "1"],
    "zoo.py": ["--rows", "vae,sbn_ws,vqvae", "--epochs", "1", "--samples", "10", "--train-size",
               "600", "--test-size", "20", "--out", "{tmp}/zoo", "--no-progress"],
}
EXPECTED = {"throughput.py": "ratio aevb fast / hand-written",
            "m2_enumeration.py": "speed-up reference / concat-linear (median",
            "m2_step.py": "ratio of times aevb / hand-written (median",
            "amortization.py": "| iaf |", "adversarial.py": "| aae | adversarial autoencoder",
            "contention.py": "worst ratio: budget on",
            "scaling.py": "| 16 | 2 | 1 |", "zoo.py": "| SBN 200 / wake-sleep | -",
            "burda.py": "| 2 layers, IWAE k=5 | 83.89 |",
            "kingma_welling.py": "| 3 | wake-sleep |", "sweep.py": "| difference |"}


def test_every_benchmark_is_listed():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SMOKE_ARGS) | {"m2_pyro_example.py", "classify_from.py",
                                         "at_budget.py", "m1m2_released_m1.py",
                                         "m1m2_reference.py", "confusion.py"}, \
        "add the new benchmark to SMOKE_ARGS"


# a stand-in for pyro's examples/vae folder, with its SSVAE's interface (not its code)
STAND_IN = """
import pyro, pyro.distributions as dist, torch
from torch import nn

class SSVAE(nn.Module):
    def __init__(self, z_dim, hidden_layers, config_enum, aux_loss_multiplier):
        super().__init__()
        self.classify = nn.Linear(784, 10)
        self.decode = nn.Linear(10, 784)

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", len(xs)):
            ys = pyro.sample("y", dist.OneHotCategorical(logits=xs.new_zeros(10)), obs=ys)
            pyro.sample("x", dist.Bernoulli(logits=self.decode(ys), validate_args=False)
                        .to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data", len(xs)):
            if ys is None:
                pyro.sample("y", dist.OneHotCategorical(logits=self.classify(xs)))

    def model_classify(self, xs, ys=None):
        pyro.module("ss_vae", self)

    def guide_classify(self, xs, ys=None):
        pass
"""


@pytest.mark.data
def test_the_pyro_example_benchmark_times_both_loops(fashion_dir, tmp_path):
    folder = tmp_path / "vae"
    (folder / "utils").mkdir(parents=True)
    (folder / "utils" / "custom_mlp.py").write_text("")
    (folder / "ss_vae_M2.py").write_text(STAND_IN)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "m2_pyro_example.py"), "--pyro-examples",
         str(folder), "--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--steps",
         "2", "--rounds", "1", "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio aevb / Pyro's example" in out.stdout
    refused = in_process("m2_pyro_example.py", "--pyro-examples", tmp_path / "nowhere")
    assert refused.returncode and "give a copy of pyro's examples/vae" in refused.stderr


@pytest.mark.data
def test_classify_from_rescores_every_pixel_space_run_both_ways(fashion_dir, tmp_path):
    from aevb.experiments.semisupervised import Experiment, ExperimentConfig

    out = tmp_path / "ss"
    Experiment(ExperimentConfig(labels=[20], seeds=1, epochs=1, methods=["baseline", "m1m2"],
                                train_size=300, test_size=100, batch_size=64, device="cpu",
                                data_dir=str(fashion_dir), classify_from="binarized"),
               out, progress=False).run_all()
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    lines = in_process("classify_from.py", out).stdout.splitlines()
    rows = [line for line in lines if line.startswith("| baseline") or line.startswith("| m1")]
    assert len(rows) == 1 and rows[0].startswith("| baseline-n20-seed0 | 1 | ")  # no M1 codes
    # its once-binarized figure is the runner's own score of the same checkpoint
    result = json.loads((out / "runs" / "baseline-n20-seed0" / "result.json").read_text())
    assert rows[0].split(" | ")[2] == f"{100 * result['final_test_accuracy']:.2f}%"
    assert before == sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())


@pytest.mark.data
def test_confusion_prints_each_runs_matrices_from_a_checkpoint_or_its_record(fashion_dir, tmp_path):
    from aevb.experiments.semisupervised import Experiment, ExperimentConfig

    out = tmp_path / "ss"
    Experiment(ExperimentConfig(labels=[20], seeds=1, epochs=1, methods=["m2", "baseline"],
                                train_size=300, test_size=100, batch_size=64, device="cpu",
                                data_dir=str(fashion_dir)), out, progress=False).run_all()
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    text = in_process("confusion.py", out).stdout
    sections = {part.split(",")[0]: part for part in text.split("\n## ")[1:]}
    assert sorted(sections) == ["baseline-n20-seed0", "m2-n20-seed0"]
    for name, part in sections.items():
        result = json.loads((out / "runs" / name / "result.json").read_text())
        # one epoch: the newest checkpoint is the best epoch's, whose matrix the runner kept
        matrix = [[int(v) for v in line.strip(" |").split(" | ")[1:]] for line in part.splitlines()
                  if line.startswith("| **")][:10]
        assert matrix == result["test_confusion"] and sum(map(sum, matrix)) == 100
        assert f"q(y|x): accuracy {100 * result['final_test_accuracy']:.2f}%" in part
        assert ("generative: accuracy" in part) == name.startswith("m2")
    assert before == sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    # --recorded prints the matrices the runs kept, and reads neither checkpoint nor data
    for checkpoints in out.glob("runs/*/checkpoints"):
        shutil.rmtree(checkpoints)
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    text = in_process("confusion.py", out, "--recorded", "--data-dir",
                      tmp_path / "absent").stdout
    recorded = {part.split(",")[0]: part for part in text.split("\n## ")[1:]}
    assert sorted(recorded) == sorted(sections)
    for name, part in recorded.items():
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert part.startswith(f"{name}, epoch {result['best_epoch']}\n")
        matrix = [[int(v) for v in line.strip(" |").split(" | ")[1:]] for line in part.splitlines()
                  if line.startswith("| **")]
        assert matrix == result["test_confusion"] and "generative" not in part
    assert before == sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())


@pytest.mark.data
def test_at_budget_reads_each_run_at_a_shorter_budget_from_its_rows(fashion_dir, tmp_path):
    from aevb.experiments.semisupervised import Experiment, ExperimentConfig

    out = tmp_path / "ss"
    Experiment(ExperimentConfig(labels=[20], seeds=2, epochs=2, methods=["baseline"],
                                train_size=300, test_size=100, batch_size=64, device="cpu",
                                data_dir=str(fashion_dir)), out, progress=False).run_all()
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())

    def table(epochs: int) -> list[str]:
        return in_process("at_budget.py", out, "--epochs", epochs).stdout.splitlines()

    at_two = table(2)  # the whole budget: the runner's own selection
    for seed in (0, 1):
        result = json.loads((out / "runs" / f"baseline-n20-seed{seed}" / "result.json").read_text())
        row = f"| baseline, 20 labels, seed {seed} | 2 | {result['best_epoch']} | "
        line = next(line for line in at_two if line.startswith(row))
        assert line.endswith(f"| {100 * result['test_accuracy']:.2f}% |")
    assert any(line.startswith("| baseline | 20 | 2 | ") for line in at_two)
    short = table(3)  # past every run: none is averaged
    assert sum("short of the budget" in line for line in short) == 2
    assert not any(line.startswith("| baseline | 20 |") for line in short)
    assert before == sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())

    # another setting on the first subset only: the difference is paired over seed 0 alone
    other = tmp_path / "other"
    Experiment(ExperimentConfig(labels=[20], seeds=1, epochs=2, methods=["baseline"],
                                train_size=300, test_size=100, batch_size=32, device="cpu",
                                data_dir=str(fashion_dir)), other, progress=False).run_all()
    paired = in_process("at_budget.py", out, "--epochs", 2, "--against", other).stdout.splitlines()
    ours, theirs = (json.loads((folder / "runs" / "baseline-n20-seed0" / "result.json")
                               .read_text())["test_accuracy"] for folder in (out, other))
    assert (f"| baseline | 20 | seed 0 {100 * ours:.2f}% / {100 * theirs:.2f}% | "
            f"{100 * (ours - theirs):+.2f} ± n/a |") in paired


def stand_in_released_m1(folder: Path) -> Path:
    """A stand-in for the released M1's encoder file of ``dpkingma/nips14-ssl`` under ``folder``:
    its layout, random weights; the mean of dimensions 0..4 varies over the images, that of the
    others does not."""
    import io
    import tarfile

    import numpy as np

    rng = np.random.default_rng(0)
    shapes = {"b0": (500, 1), "b1": (500, 1), "logvar_b": (50, 1), "logvar_w": (50, 500),
              "mean_b": (50, 1), "mean_w": (50, 500), "w0": (500, 784), "w1": (500, 500)}
    arrays = {k: rng.normal(0, 0.05, size) for k, size in shapes.items()}
    arrays["mean_w"][5:] = 0.0
    buffer = io.BytesIO()
    np.savez(buffer, *arrays.values())
    path = folder / "models" / "mnist_z_x_50-500-500_longrun" / "v.ndict.tar.gz"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("arrays.npz", buffer.getvalue()),
                           ("names.txt", "".join(f"{k}\n" for k in arrays).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


@pytest.mark.data
def test_m1m2_on_the_released_m1_reads_its_arrays_and_keeps_its_varying_dimensions(
        fashion_dir, tmp_path):
    stand_in_released_m1(tmp_path / "nips14-ssl")
    out = in_process("m1m2_released_m1.py", "--nips14-ssl", tmp_path / "nips14-ssl", "--dataset",
                     "fashion-mnist", "--labels", 20, "--epochs", 1, "--train-size", 300,
                     "--test-size", 100, "--data-dir", fashion_dir, "--out", tmp_path / "out",
                     "--labelled-weight", "paper", "--alpha", 0.1, "--batch-size", 50, "--lr",
                     "3e-4", "--z-kl-start", 1)
    assert out.returncode == 0, out.stderr[-2000:]
    recorded = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert {k: recorded[k] for k in ("labelled_weight", "alpha", "batch_size", "lr",
                                     "z_kl_start")} == {
        "labelled_weight": "paper", "alpha": 0.1, "batch_size": 50, "lr": 3e-4, "z_kl_start": 1.0}
    assert "released M1: 5 of 50 dimensions of z1 kept" in out.stdout
    assert "| M1+M2 on the released M1 | 20 | 0 |" in out.stdout
    assert (tmp_path / "out" / "runs" / "m1m2-n20-seed0" / "result.json").is_file()



@pytest.mark.data
def test_the_m1m2_reference_trains_resumes_and_refuses_other_settings(fashion_dir, tmp_path):
    folder = stand_in_released_m1(tmp_path / "nips14-ssl")
    out_dir = tmp_path / "out"

    def reference(*extra):
        return in_process("m1m2_reference.py", "--nips14-ssl", folder, "--dataset",
                          "fashion-mnist", "--labels", 20, "--train-size", 300, "--test-size",
                          100, "--hidden", 8, "--minibatches", 10, "--data-dir", fashion_dir,
                          "--out", out_dir, *extra)

    first = reference("--passes", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "5 of 50 dimensions of z1 kept; 20 labelled, 280 unlabelled" in first.stdout
    again = reference("--passes", "3")
    assert again.returncode == 0 and "resuming after pass 2" in again.stdout
    rows = (out_dir / "log.csv").read_text().splitlines()
    assert rows[0] == "pass,objective,valid_error,test_error,seconds"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    before = {p: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    other = reference("--passes", "4", "--alpha", "0.2")
    assert other.returncode != 0 and "alpha (0.1 -> 0.2)" in other.stderr.splitlines()[-1]
    assert before == {p: p.stat().st_mtime_ns for p in out_dir.iterdir()}


def test_the_m1m2_reference_bound_objective_and_adam_have_their_known_values(monkeypatch):
    import math

    import torch
    from torch.distributions import Normal, kl_divergence

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import m1m2_reference as ref

    n_x, n_z, n = 3, 4, 5
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(n_x, n, generator=gen), torch.randn(n_z, n, generator=gen)
    y = torch.eye(10)[:, torch.arange(n)]
    log_n01 = Normal(0.0, 1.0).log_prob(x).sum(0)
    # all parameters zero: q(z|x,y) = p(z) (no KL), p(x|y,z) = N(0, I)
    p = ref.init_params(n_x, 10, 6, n_z, 0.0, gen)
    assert torch.allclose(ref.bound(p, x, y, eps), log_n01 - math.log(10))
    # q(z|x,y) = N(m, s²) and p(x|y,z) not reading z: the bound is short of it by the analytic KL
    p["q_mean_b"] = torch.linspace(-1, 1, n_z)[:, None]
    p["q_logvar_b"] = torch.linspace(-0.5, 0.5, n_z)[:, None]
    kl = kl_divergence(Normal(p["q_mean_b"], (0.5 * p["q_logvar_b"]).exp()), Normal(0.0, 1.0))
    assert torch.allclose(ref.bound(p, x, y, eps), log_n01 - math.log(10) - kl.sum(), atol=1e-5)
    # ... and the sampled KL, log q(z) - log p(z) at z ~ q, averages to it
    many = torch.randn(n_z, 200_000, generator=gen)
    sampled = ref.bound(p, x[:, :1].expand(n_x, 200_000), y[:, :1].expand(10, 200_000), many,
                        analytic_kl=False)
    assert abs((log_n01[0] - math.log(10) - sampled.mean()) - kl.sum()) < 0.01
    # the objective with all parameters zero: q(y|x) uniform, so U(x) = log N(x; 0, I) exactly
    p = ref.init_params(n_x, 10, 6, n_z, 0.0, gen)
    n_l, n_u, m, alpha = 20, 30, 10, 0.1
    x_l, x_u = x[:, :2], x[:, 2:]
    labelled = log_n01[:2] - math.log(10) - alpha * (n_l + n_u) / n_l * math.log(10)
    prior = sum(-0.5 * math.log(2 * math.pi) * p[k].numel() for k in ref.PRIOR)
    expected = -((labelled.sum() + log_n01[2:].sum()) * m + prior) / (n_l + n_u)
    got = ref.objective(p, x_l, y[:, :2], x_u, alpha, n_l, n_u, m, gen)
    assert torch.allclose(got, expected)
    # every labelled code in each step (4 where the share is 2) weighs half as much
    labelled = log_n01[:4] - math.log(10) - alpha * (n_l + n_u) / n_l * math.log(10)
    expected = -((labelled.sum() / 2 + log_n01[4:].sum()) * m + prior) / (n_l + n_u)
    got = ref.objective(p, x[:, :4], y[:, :4], x[:, 4:], alpha, n_l, n_u, m, gen)
    assert torch.allclose(got, expected)
    # Kingma's Adam: a first step of lr·0.1/√0.001 = lr·√10 against the gradient's sign; a
    # parameter with no gradient yet stays where it is
    theta = {"a": torch.tensor([1.0, 1.0, 1.0], requires_grad=True)}
    adam = ref.KingmaAdam(theta, lr=0.01)
    (theta["a"] * torch.tensor([2.0, -0.5, 0.0])).sum().backward()
    adam.step()
    step = 0.01 * math.sqrt(10)
    assert torch.allclose(theta["a"], torch.tensor([1 - step, 1 + step, 1.0]))

@pytest.mark.data
@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_benchmark_runs(script, fashion_dir, tmp_path):
    out = run_script(script, fashion_dir, tmp_path)
    assert EXPECTED[script] in out.stdout
    if script == "zoo.py":  # finished rows are read back, not re-run; the table keeps them
        assert "| VQ-VAE (K=128" in out.stdout and "| IWAE k=50 | not run yet" in out.stdout
        stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("zoo/runs/*/evaluation.json")}
        again = run_script(script, fashion_dir, tmp_path)
        assert EXPECTED[script] in again.stdout and len(stamps) == 3
        assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
        other = run_script(script, fashion_dir, tmp_path, "--samples", "20", check=False)
        assert other.returncode != 0 and "eval.num_samples (10 -> 20)" in other.stderr
    if script == "burda.py":  # one table: the full-budget rows and those at a shorter budget
        table = run_script(script, fashion_dir, tmp_path, "--table", "--stages", "8").stdout
        lines = [line for line in table.splitlines() if line.startswith("| 2 layers, IWAE k=5")]
        assert len(lines) == 2 and "not started" in lines[0] and "| 0/3280 |" in lines[0]
        assert " ± " in lines[1] and "| 4/4 |" in lines[1]


# the scripts that time processes against each other, start their own (torchrun, executors'
# workers) or spend a budget of threads run as scripts; the others through their main
OWN_PROCESS = {"throughput.py", "scaling.py", "contention.py", "kingma_welling.py", "sweep.py"}


def run_script(script, fashion_dir, tmp_path, *extra, check=True):
    args = [a.replace("{tmp}", str(tmp_path)) for a in SMOKE_ARGS[script]]
    args += [*extra, "--data-dir", str(fashion_dir)]
    if script in OWN_PROCESS:
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    else:
        out = in_process(script, *args)
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out


def in_process(script: str, *args) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> args`` run through the script's ``main`` in this process,
    answered as :func:`subprocess.run` answers (a refusal's ``SystemExit`` is its return code):
    the test is spared a fresh interpreter's imports, about ten seconds each. As when run as a
    script, ``benchmarks/`` is first on the import path (the scripts import their siblings);
    the path, the module table and the process's torch threads are restored after."""
    argv, code = [str(a) for a in args], 0
    threads, stdout, stderr = torch.get_num_threads(), io.StringIO(), io.StringIO()
    name = f"benchmark_{Path(script).stem}"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as a script's __main__ is (dataclasses look it up)
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = module.main(argv) or 0
    except SystemExit as exit_:  # as the interpreter reads it
        if isinstance(exit_.code, int | None):  # None is 0
            code = exit_.code or 0
        else:  # a message: printed, and the exit code is 1
            code = 1
            stderr.write(f"{exit_.code}\n")
    finally:
        torch.set_num_threads(threads)
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop(name, None)
    return subprocess.CompletedProcess([script, *argv], code, stdout.getvalue(),
                                       stderr.getvalue())


def test_the_gpu_check_script_parses_and_names_its_two_steps():
    """``benchmarks/gpu_check.sh`` runs on a GPU machine only; here: its syntax, its usage."""
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "prepare | run" in usage.stderr
