"""Data-parallel training (torchrun, gloo on CPU): the same steps as one process, checkpoints that
move between rank counts, and rank 0 alone writing the run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aevb.cli import main
from aevb.inference import Split
from aevb.inference.errors import ConfigError
from aevb.inference.objectives import build_objective
from aevb.inference.training import distributed
from aevb.inference.training.distributed import DistContext
from aevb.inference.training.engines import build_engine
from aevb.models.vae import VAE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def torchrun(*args: str, nproc: int = 2, cwd: Path = ROOT) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={nproc}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_ranks_take_the_steps_of_one_process_on_the_global_batches(tmp_path):
    """Parameters after two epochs under DDP equal one process stepping on the mean of the
    ranks' weighted shard losses (same shards, same random streams), for elbo and iwae, with
    a last global batch that splits unevenly (3 -> 2 + 1)."""
    sys.path.insert(0, str(HERE))
    import ddp_worker

    torchrun(str(HERE / "ddp_worker.py"), str(tmp_path / "out.pt"))
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    want = ddp_worker.reference(world_size=2)
    one_rank = ddp_worker.reference(world_size=1)
    for objective in want:
        for name, p in want[objective]["params"].items():
            torch.testing.assert_close(got[objective]["params"][name], p, rtol=1e-5, atol=1e-6)
        assert got[objective]["objective"] == pytest.approx(want[objective]["objective"], rel=1e-6)
        # other noise (one rank's stream) gives other parameters: the comparison can fail
        diff = max((one_rank[objective]["params"][n] - p).abs().max().item()
                   for n, p in want[objective]["params"].items())
        assert diff > 1e-3


def test_shards_partition_each_global_batch_with_weights_summing_to_the_ranks():
    split = Split(torch.rand(23, 1, 2, 2), torch.arange(23))
    shards = [list(distributed.shard_batches(split, 8, DistContext(r, 3),
                                             distributed.shuffle_generator(0, 1)))
              for r in range(3)]
    assert {len(s) for s in shards} == {3}  # 8 + 8 + 7; nothing dropped
    seen = []
    for step in zip(*shards, strict=True):
        assert sum(w for _, w in step) == pytest.approx(3.0)
        assert all(b.num_data == 23 for b, _ in step)
        seen += [int(i) for b, _ in step for i in b.index]
    assert sorted(seen) == list(range(23))
    # a last global batch smaller than the number of ranks is skipped (no empty shard)
    tiny = list(distributed.shard_batches(Split(torch.rand(9, 1, 2, 2), torch.arange(9)), 8,
                                          DistContext(0, 2), distributed.shuffle_generator(0, 1)))
    assert len(tiny) == 1


def test_global_batch_must_divide_among_ranks_and_svi_stays_single_process():
    with pytest.raises(ConfigError, match="multiple of the 3 ranks"):
        distributed.check_batch_size(128, DistContext(0, 3))
    model = VAE((1, 2, 2), z_dim=1, hidden_sizes=(4,))
    with pytest.raises(ConfigError, match="train.engine=fast"):
        build_engine("svi", model, build_objective("elbo"), "adam", 1e-3, ctx=DistContext(0, 2))


def _params(run: Path, epoch: int) -> dict:
    payload = torch.load(run / "checkpoints" / f"epoch-{epoch:04d}.pt", weights_only=True)
    return payload["model"]


def _ranks(run: Path) -> list[int]:
    return [json.loads(line)["ranks"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.data
def test_checkpoints_resume_across_rank_counts(fashion_dir, tmp_path, capsys):
    small = ["--config", "configs/vae_fashion.yaml", "--data-dir", str(fashion_dir), "--device",
             "cpu", "--no-progress", "data.train_size=600", "data.test_size=64",
             "eval.num_samples=5", "model.hidden_sizes=[32]", "model.z_dim=4", "train.batch_size=64"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    # two epochs on 2 ranks, launched through `aevb train --nproc 2`
    assert main(["train", "--nproc", "2", "--run-dir", str(whole), *small, "train.epochs=2"]) == 0
    assert (whole / "evaluation.json").is_file() and _ranks(whole) == [2, 2]
    # one epoch on 2 ranks, then resumed on 2 ranks: the same parameters (rank streams are
    # seeded per epoch, the permutation is common)
    torchrun("-m", "aevb.cli", "train", "--run-dir", str(part), *small, "train.epochs=1")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(part), str(copy)], check=True)
    torchrun("-m", "aevb.cli", "train", "--resume", str(part), "--no-progress",
             "train.epochs=2")
    for name, p in _params(whole, 2).items():
        torch.testing.assert_close(_params(part, 2)[name], p, rtol=1e-5, atol=1e-6)
    # the 2-rank checkpoint resumes in one process
    assert main(["train", "--resume", str(copy), "--no-progress", "train.epochs=2"]) == 0
    assert _ranks(copy) == [2, 1] and (copy / "checkpoints" / "epoch-0002.pt").is_file()
    # and a one-process checkpoint resumes on 2 ranks
    single = tmp_path / "single"
    assert main(["train", "--run-dir", str(single), *small, "train.epochs=1"]) == 0
    torchrun("-m", "aevb.cli", "train", "--resume", str(single), "--no-progress",
             "train.epochs=2")
    assert _ranks(single) == [1, 2]
    ev = json.loads((single / "evaluation.json").read_text())
    assert ev["epochs_trained"] == 2


@pytest.mark.data
def test_only_rank_zero_writes_one_run_folder(fashion_dir, tmp_path):
    """The ranks agree on rank 0's time-stamped default folder, and one folder is written."""
    torchrun("-m", "aevb.cli", "train", "--config", str(ROOT / "configs/vae_fashion.yaml"),
             "--data-dir", str(fashion_dir), "--device", "cpu", "--no-progress",
             "data.train_size=128", "data.test_size=32", "eval.num_samples=2",
             "model.hidden_sizes=[8]", "model.z_dim=2", "train.epochs=1",
             "train.batch_size=32", cwd=tmp_path)
    made = list((tmp_path / "runs").iterdir())
    assert len(made) == 1 and made[0].name.startswith("vae_fashion-")
    assert _ranks(made[0]) == [2]
    assert [p.name for p in (made[0] / "checkpoints").iterdir()] == ["epoch-0001.pt"]
    assert (made[0] / "evaluation.json").is_file()


@pytest.mark.data
def test_parallel_experiment_workers_write_the_sequential_table(fashion_dir, tmp_path, capsys):
    common = ["experiment", "semisupervised", "--labels", "20", "--seeds", "2", "--epochs",
              "1", "--methods", "m2,m1m2,baseline", "--train-size", "300", "--test-size", "60",
              "--data-dir", str(fashion_dir), "--device", "cpu", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one = (tmp_path / "one" / "results.csv").read_text()
    assert (tmp_path / "two" / "results.csv").read_text() == one
    assert len(list((tmp_path / "two" / "runs").glob("*/result.json"))) == 6
    # restarted, the workers read the finished runs back
    stamp = (tmp_path / "two" / "runs" / "m2-n20-seed0" / "result.json").stat().st_mtime_ns
    assert main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert (tmp_path / "two" / "runs" / "m2-n20-seed0" / "result.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "two" / "results.csv").read_text() == one
