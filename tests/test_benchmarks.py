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
}


def test_every_benchmark_is_listed():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py"}
    assert scripts == set(SMOKE_ARGS), "add the new benchmark to SMOKE_ARGS"


@pytest.mark.data
@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_benchmark_runs(script, fashion_dir):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *SMOKE_ARGS[script],
         "--data-dir", str(fashion_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ratio aevb / hand-written" in out.stdout
