"""``eval.track``: learning curves on the training and test data that change no training step."""

import json

import numpy as np
import torch

from aevb.config import load_config
from aevb.inference.training.checkpoint import list_checkpoints, load_checkpoint
from aevb.runs import train

SMALL = ["model.hidden_sizes=[16]", "model.z_dim=2", "train.epochs=2", "train.batch_size=50",
         "train.progress=false", "train.tensorboard=false", "data.binarization=dynamic"]


def test_tracked_elbos_are_logged_and_change_no_parameter(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.random((300, 1, 6, 6)).astype(np.float32),
             x_test=rng.random((60, 1, 6, 6)).astype(np.float32))
    data = ["data.name=array", f"data.path={path}"]
    plain = train(load_config(None, [*data, *SMALL]), tmp_path / "plain", final_evaluation=False)
    tracked = train(load_config(None, [*data, *SMALL, "eval.track=[train,test]",
                                       "eval.track_size=40"]), tmp_path / "tracked",
                    final_evaluation=False)
    a = load_checkpoint(list_checkpoints(plain)[-1])["model"]
    b = load_checkpoint(list_checkpoints(tracked)[-1])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(r) for r in (tracked / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_elbo"] < 0 and r["test_elbo"] < 0 for r in rows)
    # the learning curve rises on the training images as the model learns them
    assert rows[-1]["train_elbo"] > rows[0]["train_elbo"]
