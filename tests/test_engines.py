"""The training engines: the fast path and Pyro's SVI path take the same steps."""

import pyro
import pytest
import torch

from aevb.inference import Split
from aevb.inference.errors import ConfigError
from aevb.inference.objectives import build_objective, objective_for_model
from aevb.inference.training import train_epoch
from aevb.inference.training.engines import ENGINES, build_engine
from aevb.models.base import Batch
from aevb.models.spec import compile_spec
from aevb.models.vae import VAE


def tiny_vae() -> VAE:
    torch.manual_seed(0)
    return VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))


def trajectory(engine_name: str, objective: str, k: int, batches: list[Batch]) -> list[float]:
    model = tiny_vae()
    engine = build_engine(engine_name, model, build_objective(objective, k), "adam", 1e-2)
    pyro.set_rng_seed(1)
    losses = []
    with engine.epoch():
        for b in batches:
            losses.append(float(engine.step(b)))
    return losses


@pytest.mark.parametrize("objective,k", [("elbo", 1), ("meanfield", 1), ("iwae", 4)])
def test_fast_and_svi_engines_follow_the_same_elbo_trajectory(objective, k):
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(64, 1, 6, 6, generator=gen), generator=gen)
    batches = [Batch(x[i:i + 16], None, torch.arange(i, i + 16), 64) for i in range(0, 64, 16)] * 8
    fast = trajectory("fast", objective, k, batches)
    svi = trajectory("svi", objective, k, batches)
    assert fast[-1] < fast[0]  # it trains
    # same random numbers, same estimator, same Adam: equal up to float rounding
    assert fast == pytest.approx(svi, rel=1e-4)


def test_svi_engine_trains_a_model_with_enumerated_labels():
    spec = {
        "name": "m2tiny",
        "networks": {"classifier": {"type": "mlp", "hidden": [8]},
                     "encoder": {"type": "mlp", "hidden": [8]},
                     "decoder": {"type": "mlp", "hidden": [8]}},
        "sometimes_observed": {"y": {"type": "categorical", "num_classes": 3,
                                     "posterior": {"inputs": ["x"], "network": "classifier",
                                                   "enumerate": True}}},
        "latents": {"z": {"type": "normal", "shape": [2],
                          "posterior": {"inputs": ["x", "y"], "network": "encoder"}}},
        "observed": {"x": {"likelihood": "bernoulli", "parents": ["y", "z"],
                           "network": "decoder"}},
    }
    model = compile_spec(spec, (1, 2, 2))
    x = torch.bernoulli(torch.rand(32, 1, 2, 2))
    batch = Batch(x, None, torch.arange(32), 32)
    before = [p.detach().clone() for p in model.parameters()]
    engine = build_engine("svi", model, objective_for_model("elbo", 1, model, batch), "adam", 1e-2)
    for _ in range(3):
        assert torch.isfinite(engine.step(batch))
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_checkpoint_state_names_its_engine():
    model = tiny_vae()
    fast = build_engine("fast", model, build_objective("elbo"), "adam", 1e-3)
    svi = build_engine("svi", model, build_objective("elbo"), "adam", 1e-3)
    split = Split(torch.bernoulli(torch.rand(32, 1, 6, 6)), torch.zeros(32, dtype=torch.long))
    train_epoch(model, svi, split, 16, progress=False)
    state = svi.state_dict()
    assert state["engine"] == "svi"
    with pytest.raises(ConfigError, match="train.engine=svi"):
        fast.load_state_dict(state)
    again = build_engine("svi", model, build_objective("elbo"), "adam", 1e-3)
    again.load_state_dict(state)  # PyroOptim state round-trips
    train_epoch(model, again, split, 16, progress=False)


def test_plain_torch_optimizer_state_from_older_checkpoints_loads_into_fast():
    model = tiny_vae()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    fast = build_engine("fast", model, build_objective("elbo"), "adam", 1e-3)
    fast.load_state_dict(opt.state_dict())


def test_unknown_engine_is_refused_with_the_valid_names():
    from aevb.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.engine=turbo"])
    for name in ENGINES.names():
        assert name in str(info.value)
