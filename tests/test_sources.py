"""Each kind of data a user brings trains one epoch from the command line, with the MLP and the
conv networks (which adapt to the image shape): an array file, a folder of RGB 32x32 images
with class subfolders, and a file laid out as Frey Face's frey_rawface.mat."""

import json

import numpy as np
import pytest

from aevb.cli import main

from .test_data import write_frey, write_image_folder

TINY = ["train.epochs=1", "train.batch_size=16", "eval.num_samples=3", "eval.num_images=4",
        "model.z_dim=2", "model.hidden_sizes=[16]", "train.tensorboard=false", "--no-progress"]


def source(kind, tmp_path):
    if kind == "array":
        x = np.random.default_rng(0).integers(0, 256, (60, 12, 12), dtype=np.uint8)
        np.savez(tmp_path / "mine.npz", x=x, y=np.arange(60) % 4)
        return ["--data", str(tmp_path / "mine.npz")], (1, 12, 12)
    if kind == "rgb-folder":
        root = write_image_folder(tmp_path / "imgs", size=(32, 32), per_class=24)
        return ["--data", str(root)], (3, 32, 32)
    write_frey(tmp_path / "frey_rawface.mat", n=60)
    return ["--data", "frey-face", f"data.data_dir={tmp_path}", "data.download=false",
            "model.likelihood=gaussian"], (1, 28, 20)


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("kind", ["array", "rgb-folder", "frey-face"])
def test_each_source_trains_with_each_network(kind, network, tmp_path):
    args, shape = source(kind, tmp_path)
    run = tmp_path / "run"
    assert main(["train", *args, f"model.network={network}", "--run-dir", str(run), *TINY]) == 0
    record = json.loads((run / "run.json").read_text())
    assert tuple(record["data"]["x_shape"]) == shape
    result = json.loads((run / "evaluation.json").read_text())
    assert np.isfinite(result["log_likelihood"])
    assert (run / "reconstructions.png").is_file() and (run / "samples.png").is_file()


def test_shipped_configs_resolve_by_name(tmp_path, monkeypatch, capsys):
    from aevb.config import load_config

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the package's own are read
    assert load_config("vae_fashion").model.z_dim == 50
    assert load_config("vae_frey").data.name == "frey-face"
    assert load_config(None, spec="dlgm2").model.name == "spec"
    assert main(["train", "--config", "no_such_config", "--run-dir", str(tmp_path / "r")]) == 2
    assert "vae_fashion" in capsys.readouterr().err  # the shipped ones are listed
