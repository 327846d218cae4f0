import os
from pathlib import Path

import pyro
import pytest
import torch

from aevb.data.idx import SYSTEM_ROOT

FASHION = SYSTEM_ROOT / "fashion-mnist"
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def _fashion_dir() -> Path | None:
    for d in (os.environ.get("AEVB_DATA_DIR"), FASHION):
        if d and (Path(d) / "train-images-idx3-ubyte.gz").is_file():
            return Path(d)
    return None


@pytest.fixture
def fashion_dir() -> Path:
    """Folder with Fashion-MNIST; skipped when absent unless AEVB_REQUIRE_DATA=1 (CI)."""
    d = _fashion_dir()
    if d is None:
        msg = ("Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or set "
               "AEVB_DATA_DIR)")
        if os.environ.get("AEVB_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
