import gzip
import struct

import numpy as np
import pytest
import torch

from inference import data as data_mod
from inference.config import DataConfig
from inference.errors import DataError


def write_idx(folder, n=30, seed=0, truncate=False):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem in ("train", "t10k"):
        body = images.tobytes()[: -10 if truncate else None]
        with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + body)
        with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.tobytes())
    return images, labels


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "SYSTEM_ROOT", tmp_path / "none")
    monkeypatch.delenv("AEVB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_reads_idx_files_and_splits(tmp_path, no_system_data):
    images, labels = write_idx(tmp_path)
    cfg = DataConfig(data_dir=str(tmp_path), validation_size=10, binarization="none")
    bundle = data_mod.load_data(cfg)
    assert (len(bundle.train), len(bundle.valid), len(bundle.test)) == (20, 10, 30)
    torch.testing.assert_close(bundle.train.x[:, 0] * 255, torch.from_numpy(images[:20]).float())
    assert bundle.valid.y.tolist() == labels[20:].tolist()


def test_env_var_is_used_after_data_dir(tmp_path, monkeypatch, no_system_data):
    write_idx(tmp_path)
    monkeypatch.setenv("AEVB_DATA_DIR", str(tmp_path))
    x, _, source = data_mod.load_split("fashion-mnist", "test", download=False)
    assert x.shape == (30, 1, 28, 28) and source == str(tmp_path)


def test_binarization_modes(tmp_path, no_system_data):
    write_idx(tmp_path)
    static = data_mod.load_data(DataConfig(data_dir=str(tmp_path), validation_size=10,
                                           binarization="static"))
    assert set(static.train.x.unique().tolist()) <= {0.0, 1.0}
    again = data_mod.load_data(DataConfig(data_dir=str(tmp_path), validation_size=10,
                                          binarization="static"))
    assert torch.equal(static.train.x, again.train.x)
    dynamic = data_mod.load_data(DataConfig(data_dir=str(tmp_path), validation_size=10))
    first = next(dynamic.train.batches(20)).x
    second = next(dynamic.train.batches(20)).x
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)  # a fresh draw each time an image is used
    assert torch.equal(dynamic.test.x, static.test.x) or set(dynamic.test.x.unique().tolist()) \
        <= {0.0, 1.0}


def test_scaled_batches_carry_indices_and_dataset_size(tmp_path, no_system_data):
    write_idx(tmp_path)
    bundle = data_mod.load_data(DataConfig(data_dir=str(tmp_path), validation_size=10))
    batches = list(bundle.train.batches(8, shuffle=True, scaled=True))
    assert [len(b) for b in batches] == [8, 8, 4]
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(20))
    assert all(b.num_data == 20 for b in batches)


def test_missing_data_error_names_every_option(no_system_data):
    with pytest.raises(DataError) as err:
        data_mod.load_split("fashion-mnist", "train", download=False)
    msg = str(err.value)
    for option in ("--data-dir", "AEVB_DATA_DIR", "apt-get install dataset-fashion-mnist",
                   "internet"):
        assert option in msg


def test_offline_download_failure_is_a_clear_error(no_system_data, monkeypatch):
    def offline(info, split):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(data_mod, "_download", offline)
    with pytest.raises(DataError, match="torchvision download failed"):
        data_mod.load_split("mnist", "train", download=True)


def test_truncated_idx_file_is_refused(tmp_path, no_system_data):
    write_idx(tmp_path, truncate=True)
    with pytest.raises(DataError, match="truncated"):
        data_mod.load_split("fashion-mnist", "train", str(tmp_path), download=False)


def test_fashion_mnist_real_files(fashion_dir):
    x, y, _ = data_mod.load_split("fashion-mnist", "test", str(fashion_dir), download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1000] * 10
