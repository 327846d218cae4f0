"""Data sources: IDX files (torchvision's readers), a user's arrays and files, image folders
and Frey Face, each with its errors; the splits, binarization and batches they produce."""

import gzip
import struct

import numpy as np
import pytest
import torch

from aevb.config import DataConfig
from aevb.data import DATASETS, from_object, idx, load_data
from aevb.inference.errors import DataError

from .conftest import SHARED_MNIST

FASHION = DATASETS.get("fashion-mnist")


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
    monkeypatch.setattr(idx, "SYSTEM_ROOT", tmp_path / "none")
    monkeypatch.delenv("AEVB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_reads_idx_files_and_splits(tmp_path, no_system_data):
    images, labels = write_idx(tmp_path)
    cfg = DataConfig(data_dir=str(tmp_path), validation_size=10, binarization="none")
    bundle = load_data(cfg)
    assert (len(bundle.train), len(bundle.valid), len(bundle.test)) == (20, 10, 30)
    torch.testing.assert_close(bundle.train.x[:, 0] * 255, torch.from_numpy(images[:20]).float())
    assert bundle.valid.y.tolist() == labels[20:].tolist()


def test_env_var_is_used_after_data_dir(tmp_path, monkeypatch, no_system_data):
    write_idx(tmp_path)
    monkeypatch.setenv("AEVB_DATA_DIR", str(tmp_path))
    x, _, source = FASHION.load_split("test", download=False)
    assert x.shape == (30, 1, 28, 28) and source == str(tmp_path)


def test_binarization_modes(tmp_path, no_system_data):
    write_idx(tmp_path)
    static = load_data(DataConfig(data_dir=str(tmp_path), validation_size=10,
                                  binarization="static"))
    assert set(static.train.x.unique().tolist()) <= {0.0, 1.0}
    again = load_data(DataConfig(data_dir=str(tmp_path), validation_size=10,
                                 binarization="static"))
    assert torch.equal(static.train.x, again.train.x)
    dynamic = load_data(DataConfig(data_dir=str(tmp_path), validation_size=10))
    assert dynamic.description["binarization"] == "dynamic"  # MNIST's default, recorded
    first = next(dynamic.train.batches(20)).x
    second = next(dynamic.train.batches(20)).x
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)  # a fresh draw each time an image is used
    assert torch.equal(dynamic.test.x, static.test.x)  # test images: drawn once, same seed


def test_scaled_batches_carry_indices_and_dataset_size(tmp_path, no_system_data):
    write_idx(tmp_path)
    bundle = load_data(DataConfig(data_dir=str(tmp_path), validation_size=10))
    batches = list(bundle.train.batches(8, shuffle=True, scaled=True))
    assert [len(b) for b in batches] == [8, 8, 4]
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(20))
    assert all(b.num_data == 20 for b in batches)


def test_missing_data_error_names_every_option(no_system_data):
    with pytest.raises(DataError) as err:
        FASHION.load_split("train", download=False)
    msg = str(err.value)
    for option in ("--data-dir", "AEVB_DATA_DIR", "apt-get install dataset-fashion-mnist",
                   "internet"):
        assert option in msg


def test_offline_download_failure_is_a_clear_error(no_system_data, monkeypatch):
    def offline(split):
        raise OSError("Temporary failure in name resolution")

    mnist = DATASETS.get("mnist")
    monkeypatch.setattr(mnist, "_download", offline)
    with pytest.raises(DataError, match="torchvision download failed"):
        mnist.load_split("train", download=True)


@pytest.mark.parametrize("damage", ["truncate", "corrupt-gzip"])
def test_damaged_idx_file_is_refused_naming_it(tmp_path, no_system_data, damage):
    write_idx(tmp_path, truncate=damage == "truncate")
    path = tmp_path / "train-images-idx3-ubyte.gz"
    if damage == "corrupt-gzip":
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is not a readable IDX"):
        FASHION.load_split("train", str(tmp_path), download=False)


def test_fashion_mnist_real_files(fashion_dir):
    x, y, _ = FASHION.load_split("test", str(fashion_dir), download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1000] * 10


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="MNIST is in ../shared/data/mnist only")
def test_mnist_real_files_through_torchvision_readers():
    x, y, _ = DATASETS.get("mnist").load_split("train", str(SHARED_MNIST), download=False)
    assert x.shape == (60000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                          5851, 5949]


# -- a user's arrays --------------------------------------------------------------------------
def test_array_forms_give_the_same_observations():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 5, 5), dtype=np.uint8)
    raw = from_object(pixels)
    assert raw.train.x.shape == (12, 1, 5, 5) and raw.train.y is None
    torch.testing.assert_close(raw.train.x[:, 0] * 255, torch.from_numpy(pixels).float())
    hwc = from_object(torch.rand(6, 8, 8, 3))  # channels last -> first
    assert hwc.train.x.shape == (6, 3, 8, 8)
    pair = from_object((torch.rand(6, 10), torch.arange(6)))
    assert pair.train.x.shape == (6, 10) and pair.train.y.tolist() == list(range(6))
    triple = from_object((torch.rand(6, 10), None, torch.rand(3, 10)))
    assert triple.valid is None and len(triple.test) == 3
    ds = torch.utils.data.TensorDataset(torch.rand(4, 1, 3, 3), torch.tensor([0, 1, 0, 1]))
    assert from_object(ds).train.y.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 4)), "n > 0"),
    (np.array([[0.5, np.nan]]), "NaN"),
    (np.arange(8).reshape(2, 4), "dtype"),
    ((np.zeros((3, 4)), np.zeros(2)), "labels for 3 observations"),
    ("not an array", "expected a tensor"),
])
def test_bad_arrays_are_refused_with_the_problem(bad, message):
    with pytest.raises(DataError, match=message):
        from_object(bad)


def test_array_files_and_validation_fraction(tmp_path):
    x = np.random.default_rng(0).random((40, 6, 4)).astype(np.float32)
    y = np.arange(40) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:5], y_test=y[:5])
    np.save(tmp_path / "d.npy", x)
    torch.save({"x": torch.from_numpy(x)}, tmp_path / "d.pt")
    for name in ("d.npz", "d.npy", "d.pt"):
        bundle = load_data(DataConfig(name="array", path=str(tmp_path / name),
                                      validation_size=0.25))
        assert (len(bundle.train), len(bundle.valid)) == (30, 10)
        assert bundle.train.x_shape == (1, 6, 4)
        assert bundle.description["binarization"] == "none"  # a user's data: as given
    assert len(load_data(DataConfig(name="array", path=str(tmp_path / "d.npz"))).test) == 5


def test_array_file_errors_name_the_file(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy could not be read"):
        load_data(DataConfig(name="array", path=str(tmp_path / "junk.npy")))
    np.savez(tmp_path / "k.npz", images=np.zeros((3, 2)))
    with pytest.raises(DataError, match="no training data; name it 'x'"):
        load_data(DataConfig(name="array", path=str(tmp_path / "k.npz")))
    np.save(tmp_path / "wide.npy", np.full((10, 3), 2.0))
    from aevb.cli import main

    assert main(["train", "--data", str(tmp_path / "wide.npy"), "--run-dir",
                 str(tmp_path / "run"), "--no-progress"]) == 2  # Bernoulli needs [0, 1]
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="cannot be binarized"):
        load_data(DataConfig(name="array", path=str(tmp_path / "wide.npy"),
                             binarization="static"))


# -- image folders and Frey Face --------------------------------------------------------------
def write_image_folder(root, size=(32, 32), mode="RGB", per_class=4, classes=("cat", "dog")):
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (*size, channels) if channels == 3 else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                root / c / f"{i}.png")
    return root


def test_image_folder_gives_rgb_images_with_class_labels(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    bundle = load_data(DataConfig(name="images", path=str(root), validation_size=2))
    assert bundle.train.x_shape == (3, 32, 32)
    assert sorted(torch.cat([bundle.train.y, bundle.valid.y]).tolist()) == [0] * 4 + [1] * 4
    small = load_data(DataConfig(name="images", path=str(root), validation_size=2,
                                 image_size=[16, 12], channels=1))
    assert small.train.x_shape == (1, 16, 12)


def test_image_folder_of_mixed_sizes_asks_for_image_size(tmp_path):
    from PIL import Image

    root = tmp_path / "mixed"
    root.mkdir()
    Image.new("L", (8, 8)).save(root / "a.png")
    Image.new("L", (9, 8)).save(root / "b.png")
    with pytest.raises(DataError, match="data.image_size"):
        load_data(DataConfig(name="images", path=str(root), validation_size=1))
    assert load_data(DataConfig(name="images", path=str(root), validation_size=1,
                                image_size=8)).train.x_shape == (1, 8, 8)


def write_frey(path, n=50):
    from scipy.io import savemat

    faces = np.random.default_rng(0).integers(0, 256, (n, 28, 20), dtype=np.uint8)
    savemat(path, {"ff": faces.reshape(n, 560).T})  # one face a column, as the original
    return faces


def test_frey_face_file_layout(tmp_path):
    faces = write_frey(tmp_path / "frey_rawface.mat")
    bundle = load_data(DataConfig(name="frey-face", data_dir=str(tmp_path), download=False))
    assert bundle.train.x_shape == (1, 28, 20)
    assert (len(bundle.train), len(bundle.valid), bundle.test) == (45, 5, None)
    torch.testing.assert_close(bundle.train.x[0, 0] * 255, torch.from_numpy(faces[0]).float())
    assert bundle.description["binarization"] == "none"


def test_frey_face_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("AEVB_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="frey_rawface.mat not found"):
        load_data(DataConfig(name="frey-face", download=False))
