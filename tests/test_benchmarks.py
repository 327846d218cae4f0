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
    "scaling.py": ["--ranks", "1,2", "--batch-sizes", "16", "--steps", "2", "--repeats", "1"],
}
EXPECTED = {"throughput.py": "ratio aevb / hand-written", "scaling.py": "| 16 | 2 | 1 |"}


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
    assert EXPECTED[script] in out.stdout
