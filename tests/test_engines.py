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


def trajectory(engine_name: str, objective: str, k: int, batches: list[Batch],
               options: dict | None = None) -> list[float]:
    model = tiny_vae()
    engine = build_engine(engine_name, model, build_objective(objective, k), "adam", 1e-2,
                          options=options)
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


def test_optimizer_options_change_the_steps_alike_in_both_engines():
    """Adam's β1 and ε (``optim.beta1``, ``optim.eps``) reach the fast engine's torch optimizer
    and the svi engine's PyroOptim: the same trajectory in both, not the default one."""
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(64, 1, 6, 6, generator=gen), generator=gen)
    batches = [Batch(x[i:i + 16], None, torch.arange(i, i + 16), 64) for i in range(0, 64, 16)] * 4
    options = {"betas": (0.5, 0.999), "eps": 1.0}
    fast = trajectory("fast", "elbo", 1, batches, options)
    assert fast == pytest.approx(trajectory("svi", "elbo", 1, batches, options), rel=1e-4)
    assert fast[1:] != pytest.approx(trajectory("fast", "elbo", 1, batches)[1:], rel=1e-3)


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


# -- the graphed engine: its bookkeeping on the CPU (the capture itself needs CUDA; the GPU
# check, benchmarks/gpu_check.sh, runs it for real)
class _CpuGraphs:
    """Stand-ins for the CUDA calls: a capture records the step without running it (as CUDA
    capture does) and a replay runs it on the captured input buffers; Adam without
    ``capturable`` (which torch allows on CUDA only)."""

    @staticmethod
    def install(monkeypatch):
        from aevb.inference.training.engines import GraphedEngine

        monkeypatch.setattr(GraphedEngine, "_check_device", staticmethod(lambda device: None))
        monkeypatch.setattr(GraphedEngine, "optimizer_options", {})  # capturable: CUDA only
        monkeypatch.setattr(GraphedEngine, "_warm_up", lambda self, step: step())
        monkeypatch.setattr(GraphedEngine, "_capture", lambda self, step: step)


@pytest.mark.parametrize("objective,k", [("elbo", 1), ("meanfield", 1), ("iwae", 4)])
def test_graphed_engine_replays_the_fast_trajectory_through_its_input_buffers(
        objective, k, monkeypatch):
    _CpuGraphs.install(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(60, 1, 6, 6, generator=gen), generator=gen)
    # 16, 16, 16 and a last batch of 12, as an epoch of 60 images cuts them
    epoch = [Batch(x[i:i + 16], None, torch.arange(i, min(i + 16, 60)), 60) for i in range(0, 60, 16)]
    fast = trajectory("fast", objective, k, epoch * 4)
    model = tiny_vae()
    engine = build_engine("graphed", model, build_objective(objective, k), "adam", 1e-2)
    pyro.set_rng_seed(1)
    graphed = []
    with engine.epoch():
        for b in epoch * 4:
            graphed.append(float(engine.step(b)))
    assert graphed == pytest.approx(fast, rel=1e-5)
    # one graph for the full batches (captured at their second step), one for the last batch
    # (at the second epoch's); the rest replayed
    assert engine.captures == 2
    assert engine.replays == 16 - 2 - 2  # 16 steps less two eager firsts and two captures


def test_graphed_engine_recaptures_when_a_baked_in_number_changes(monkeypatch):
    _CpuGraphs.install(monkeypatch)
    from aevb.inference.objectives.annealing import KLSchedule

    model = tiny_vae()
    objective = build_objective("elbo").with_kl_weight(KLSchedule(beta=1.0).handler(0.5))
    engine = build_engine("graphed", model, objective, "adam", 1e-2)
    b = Batch(torch.bernoulli(torch.rand(8, 1, 6, 6)), None, torch.arange(8), 8)
    with engine.epoch():
        for _ in range(3):
            engine.step(b)
        assert (engine.captures, engine.replays) == (1, 1)
        engine.set_lr(1e-3)  # a schedule's new rate: eager, then a new graph
        for _ in range(3):
            engine.step(b)
        assert (engine.captures, engine.replays) == (2, 2)
        objective.kl_weight.weight = 0.75  # a warm-up's next weight
        engine.step(b)
        assert (engine.captures, engine.replays) == (2, 2)
        assert len(engine._graphs) == 0  # graphs of the old numbers are dropped


def test_graphed_engine_falls_back_to_eager_steps_when_capture_fails(monkeypatch):
    _CpuGraphs.install(monkeypatch)
    from aevb.inference.training.engines import GraphedEngine

    def refuse(self, step):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(GraphedEngine, "_capture", refuse)
    model = tiny_vae()
    engine = build_engine("graphed", model, build_objective("elbo"), "adam", 1e-2)
    b = Batch(torch.bernoulli(torch.rand(8, 1, 6, 6)), None, torch.arange(8), 8)
    with pytest.warns(UserWarning, match="cannot be captured"):
        for _ in range(2):
            engine.step(b)
    assert engine.eager_only and torch.isfinite(engine.step(b))


def test_graphed_engine_is_refused_where_it_cannot_run():
    from aevb.config import load_config

    with pytest.raises(ConfigError, match="CUDA device"):
        load_config(None, ["train.engine=graphed", "device=cpu"])
    with pytest.raises(ConfigError, match="optim.name=adam"):
        build_engine("graphed", tiny_vae(), build_objective("elbo"), "adagrad", 1e-2)
    with pytest.raises(ConfigError, match="CUDA device"):
        build_engine("graphed", tiny_vae(), build_objective("elbo"), "adam", 1e-2)


def test_fast_and_graphed_engines_read_each_others_optimizer_state(monkeypatch):
    _CpuGraphs.install(monkeypatch)
    model = tiny_vae()
    fast = build_engine("fast", model, build_objective("elbo"), "adam", 1e-3)
    graphed = build_engine("graphed", model, build_objective("elbo"), "adam", 1e-3)
    b = Batch(torch.bernoulli(torch.rand(8, 1, 6, 6)), None, torch.arange(8), 8)
    fast.step(b)
    graphed.load_state_dict(fast.state_dict())
    graphed.step(b)
    fast.load_state_dict(graphed.state_dict())


@pytest.mark.parametrize("objective,k", [("elbo", 1), ("meanfield", 1), ("iwae", 4),
                                         ("aae", 1)])
def test_fast_steps_read_nothing_back_to_the_host(objective, k, monkeypatch):
    """What CUDA graph capture needs of a step's objective (forward and backward): no
    ``item``, ``bool`` or ``tolist`` of a tensor, which would wait for the device (and abort a
    capture). (Adam's own reads are of its CPU step counter; the graphed engine's Adam is
    ``capturable``, its counter on the device.)"""
    from aevb.inference.objectives import objective_for_model

    model = tiny_vae()
    b = Batch(torch.bernoulli(torch.rand(8, 1, 6, 6)), None, torch.arange(8), 8)
    # adapted to the model, as the trainer does (aae builds its critic here)
    engine = build_engine("fast", model, objective_for_model(objective, k, model, b), "adam",
                          1e-2)
    with engine.epoch():
        engine.step(b)  # Pyro guesses the plate nesting on the first call (a read)

        def refuse(*_):
            raise AssertionError("a host read")

        with monkeypatch.context() as patch:
            for name in ("item", "__bool__", "tolist"):
                patch.setattr(torch.Tensor, name, refuse)
            for _ in range(2):
                engine._loss(b).backward()
