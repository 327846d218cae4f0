"""Every benchmark script runs with tiny settings; a new script must be listed here."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_ARGS = {
    "throughput.py": ["--objectives", "elbo,iwae:2", "--batch-sizes", "64", "--steps", "3",
                      "--repeats", "1", "--train-size", "600", "--eval-images", "20",
                      "--eval-k", "50", "--eval-chunks", "25x10,10x5",
                      "--device", "cpu"],
    "m2_enumeration.py": ["--steps", "2", "--rounds", "1", "--threads", "1"],
    "m2_step.py": ["--steps", "2", "--rounds", "1", "--threads", "1"],
    "contention.py": ["--pairs", "train:eval", "--budgets", "on", "--rounds", "1",
                      "--train-units", "3", "--eval-units", "1", "--eval-k", "20"],
    "scaling.py": ["--ranks", "1,2", "--batch-sizes", "16", "--steps", "2", "--repeats", "1"],
    "burda.py": ["--rows", "vae1,iwae2_k5", "--stages", "2", "--samples", "5", "--train-size",
                 "200", "--test-size", "20", "--out", "{tmp}/burda", "--no-progress"],
    "kingma_welling.py": ["--z-dims", "3", "--samples-evaluated", "400", "--track-size", "50",
                          "--samples", "3", "--train-size", "200", "--test-size", "20", "--out",
                          "{tmp}/kw", "--no-progress"],
    "zoo.py": ["--rows", "vae,sbn_ws,vqvae", "--epochs", "1", "--samples", "10", "--train-size",
               "600", "--test-size", "20", "--out", "{tmp}/zoo", "--no-progress"],
}
EXPECTED = {"throughput.py": "ratio aevb / hand-written", "m2_enumeration.py": "speed-up (reference",
            "m2_step.py": "ratio aevb / hand-written (median",
            "contention.py": "worst ratio: budget on",
            "scaling.py": "| 16 | 2 | 1 |", "zoo.py": "| SBN 200 / wake-sleep | -",
            "burda.py": "| 2 layers, IWAE k=5 | 83.89 |",
            "kingma_welling.py": "| 3 | wake-sleep |"}


def test_every_benchmark_is_listed():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py"}
    assert scripts == set(SMOKE_ARGS), "add the new benchmark to SMOKE_ARGS"


@pytest.mark.data
@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_benchmark_runs(script, fashion_dir, tmp_path):
    out = run_script(script, fashion_dir, tmp_path)
    assert EXPECTED[script] in out.stdout
    if script == "zoo.py":  # finished rows are read back, not re-run; the table keeps them
        assert "| VQ-VAE (K=128" in out.stdout and "| IWAE k=50 | not run yet" in out.stdout
        again = run_script(script, fashion_dir, tmp_path)
        assert "[zoo]" not in again.stdout and EXPECTED[script] in again.stdout
        other = run_script(script, fashion_dir, tmp_path, "--epochs", "2", check=False)
        assert other.returncode != 0 and "holds rows run with" in other.stderr


def run_script(script, fashion_dir, tmp_path, *extra, check=True):
    args = [a.replace("{tmp}", str(tmp_path)) for a in SMOKE_ARGS[script]]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, *extra,
         "--data-dir", str(fashion_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_the_gpu_check_script_parses_and_names_its_two_steps():
    """``benchmarks/gpu_check.sh`` runs on a GPU machine only; here: its syntax, its usage."""
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "prepare | run" in usage.stderr
