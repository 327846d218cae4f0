"""The distribution as a user installs it: a wheel, installed into a fresh virtual environment,
runs `aevb train --config vae_fashion` (a config shipped inside the package) from an empty
folder outside the repository."""

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.data
def test_wheel_installs_into_a_fresh_venv_and_trains_a_shipped_config(tmp_path, fashion_dir):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    wheel = next(dist.glob("aevb-*.whl"))
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh_site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (torch, pyro, ...) come from this environment; aevb only from the wheel
    (fresh_site / "aevb_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([python, "-c", "import aevb, aevb.models; print(aevb.models.__file__)"],
                           cwd=work, check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(fresh_site)), where
    out = subprocess.run(
        [env_dir / "bin" / "aevb", "train", "--config", "vae_fashion", "--run-dir", "run",
         "--data-dir", str(fashion_dir), "--no-progress", "train.epochs=1",
         "data.train_size=256", "data.test_size=32", "eval.num_samples=4", "model.z_dim=2",
         "model.hidden_sizes=[16]", "train.tensorboard=false"],
        cwd=work, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((work / "run" / "evaluation.json").read_text())["num_images"] == 32
    assert not (work / "configs").exists()
