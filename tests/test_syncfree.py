"""The sync-free ELBOs give Pyro's value and gradient, and read nothing back to the host."""

from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from aevb.inference.objectives.annealing import KLWeight
from aevb.inference.objectives.syncfree import (
    SyncFreeTrace_ELBO,
    SyncFreeTraceEnum_ELBO,
    SyncFreeTraceMeanField_ELBO,
)
from aevb.models.base import Batch
from aevb.models.deep import SigmoidBeliefNet
from aevb.models.vae import VAE


def value_and_grads(elbo, model, batch, seed=7, wrap=lambda f: f):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = elbo.differentiable_loss(wrap(model.model), wrap(model.guide), batch)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def assert_same(ours, pyros):
    assert ours[0] == pytest.approx(pyros[0], rel=1e-6)
    assert len(ours[1]) == len(pyros[1]) > 0
    for a, b in zip(ours[1], pyros[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def data(n=12, shape=(1, 6, 6)):
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(n, *shape, generator=gen), generator=gen)
    return Batch(x, None, torch.arange(n), 10 * n)  # scaled by N/M


@pytest.mark.parametrize("ours,pyros", [(SyncFreeTrace_ELBO, Trace_ELBO),
                                        (SyncFreeTraceMeanField_ELBO, TraceMeanField_ELBO)])
@pytest.mark.parametrize("k", [1, 3])
def test_sync_free_elbos_equal_pyros_in_value_and_gradient(ours, pyros, k):
    torch.manual_seed(0)
    model = VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))
    batch = data()
    args = {"num_particles": k, "vectorize_particles": True}
    assert_same(value_and_grads(ours(**args), model, batch),
                value_and_grads(pyros(**args), model, batch))


@pytest.mark.parametrize("ours,pyros", [(SyncFreeTrace_ELBO, Trace_ELBO),
                                        (SyncFreeTraceMeanField_ELBO, TraceMeanField_ELBO)])
def test_sync_free_elbos_keep_the_kl_weight(ours, pyros):
    """beta / warm-up scale the latent sites; both paths read the sites' scales."""
    torch.manual_seed(0)
    model = VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))
    weight = KLWeight(4.0)
    assert_same(value_and_grads(ours(), model, data(), wrap=weight),
                value_and_grads(pyros(), model, data(), wrap=weight))


def test_score_function_sites_take_pyros_own_particle_code():
    """A sigmoid belief net's Bernoulli guide has no rsample: the value is the ELBO, the
    gradient the score-function surrogate's, as in Pyro."""
    torch.manual_seed(0)
    model = SigmoidBeliefNet((1, 6, 6), z_dims=(5,))
    batch = data()
    assert_same(value_and_grads(SyncFreeTrace_ELBO(), model, batch),
                value_and_grads(Trace_ELBO(), model, batch))


SPECS = Path(__file__).resolve().parents[1] / "configs" / "specs"


def spec_model(name):
    from aevb.models.spec import SpecModel

    torch.manual_seed(0)
    return SpecModel((1, 6, 6), str(SPECS / f"{name}.yaml"))


# a labelled batch has no site to enumerate: Pyro's TraceEnum_ELBO, the reference, says so
_NOTHING_TO_ENUMERATE = pytest.mark.filterwarnings(
    "ignore:TraceEnum_ELBO found no sample sites:UserWarning")


@_NOTHING_TO_ENUMERATE
@pytest.mark.parametrize("spec,labelled", [("m2", False), ("m2", True), ("gmvae", False)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("validate", [True, False])
def test_sync_free_enum_elbo_equals_pyros_in_value_and_gradient(spec, labelled, k, validate):
    """M2's unlabelled batch (y enumerated), its labelled batch (nothing to enumerate), a
    Gaussian mixture VAE (the component enumerated), with the z-KL weight M2 trains with."""
    batch = data()
    if labelled:
        batch = Batch(batch.x, torch.arange(len(batch.x)) % 10, batch.index, batch.num_data)
    args = {"num_particles": k, "vectorize_particles": True}
    weight = KLWeight(3.0, sites={"z"})
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the two sum in different orders
    try:
        model = spec_model(spec)
        batch = Batch(batch.x.double(), batch.y, batch.index, batch.num_data)
        with pyro.validation_enabled(validate):
            assert_same(
                value_and_grads(SyncFreeTraceEnum_ELBO(**args), model, batch, wrap=weight),
                value_and_grads(TraceEnum_ELBO(**args), model, batch, wrap=weight))
    finally:
        torch.set_default_dtype(default)


def test_sync_free_enum_elbo_leaves_model_side_enumeration_to_pyro():
    """A discrete site the model enumerates (and the guide does not sample) needs Pyro's
    contraction: the same value and gradient as TraceEnum_ELBO."""
    import pyro.distributions as dist
    from pyro.infer import config_enumerate

    locs = torch.nn.Parameter(torch.tensor([-1.0, 2.0]))
    shift = torch.nn.Parameter(torch.tensor(0.3))
    x = torch.tensor([0.1, 1.5, -2.0, 2.2])

    @config_enumerate
    def model():
        u = pyro.sample("u", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 4):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
            pyro.sample("x", dist.Normal(locs[c] + u, 1.0), obs=x)

    def guide():
        pyro.sample("u", dist.Normal(shift, 0.5))

    results = []
    for elbo in (SyncFreeTraceEnum_ELBO(max_plate_nesting=1), TraceEnum_ELBO(max_plate_nesting=1)):
        locs.grad = shift.grad = None
        torch.manual_seed(3)
        loss = elbo.differentiable_loss(model, guide)
        loss.backward()
        results.append((float(loss.detach()), [locs.grad.clone(), shift.grad.clone()]))
    assert_same(*results)


def _vae():
    torch.manual_seed(0)
    return VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))


@pytest.mark.parametrize("ours,pyros,model", [
    (SyncFreeTrace_ELBO, Trace_ELBO, _vae),
    (SyncFreeTraceMeanField_ELBO, TraceMeanField_ELBO, _vae),
    (SyncFreeTraceEnum_ELBO, TraceEnum_ELBO, lambda: spec_model("m2")),  # Dice: (prob > 0).all()
])
def test_sync_free_elbos_never_read_a_tensor_back(ours, pyros, model, monkeypatch):
    """With validation off, as the fast engine trains; Pyro's own objective reads (the check
    has teeth)."""
    model = model()
    batch = data()
    ours, pyros = ours(), pyros()
    for elbo in (ours, pyros):
        elbo.differentiable_loss(model.model, model.guide, batch)  # Pyro guesses plate nesting

    def refuse(*_):
        raise AssertionError("a host read")

    with pyro.validation_enabled(False):
        with monkeypatch.context() as patch:
            for name in ("item", "__bool__", "tolist"):
                patch.setattr(torch.Tensor, name, refuse)
            ours.differentiable_loss(model.model, model.guide, batch).backward()
        with monkeypatch.context() as patch, pytest.raises(AssertionError, match="host read"):
            for name in ("item", "__bool__"):
                patch.setattr(torch.Tensor, name, refuse)
            pyros.differentiable_loss(model.model, model.guide, batch)


def _double(fn):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return fn()
    finally:
        torch.set_default_dtype(default)


@_NOTHING_TO_ENUMERATE
def test_enum_meanfield_on_a_labelled_batch_is_pyros_meanfield_elbo():
    """Nothing to enumerate (M2's y observed): on the same traces, the value and gradient of
    Pyro's TraceMeanField_ELBO, the z-KL weight included."""
    from aevb.inference.objectives.syncfree import (
        TraceEnumMeanField_ELBO,
        _pyro_particle,
        _single_enumeration_elbo,
    )

    def loss_and_grads(model, loss):
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def check():
        batch = data()
        batch = Batch(batch.x.double(), torch.arange(len(batch.x)) % 10, batch.index,
                      batch.num_data)
        model, weight = spec_model("m2"), KLWeight(3.0, sites={"z"})
        elbo = TraceEnumMeanField_ELBO(max_plate_nesting=1)
        torch.manual_seed(7)
        (model_trace, guide_trace), = elbo._get_traces(weight(model.model), weight(model.guide),
                                                       (batch,), {})
        assert guide_trace.nodes["z"]["scale"] == 30.0  # N/M = 10 times the weight 3
        ours = -_single_enumeration_elbo(model_trace, guide_trace, 1, analytic_kl=True)
        pyros = _pyro_particle(TraceMeanField_ELBO(), model_trace, guide_trace)
        assert_same(loss_and_grads(model, ours), loss_and_grads(model, pyros))

    _double(check)


def test_enum_meanfield_has_the_sampled_kls_mean_with_less_spread():
    """Summing y out with KL(q(z|x,y) || p(z)) in closed form (Kingma et al. 2014's bound)
    estimates what TraceEnum_ELBO's sampled log q - log p estimates: the means of many draws
    agree within their standard errors, and the closed form's draws spread far less."""
    from aevb.inference.objectives.syncfree import TraceEnumMeanField_ELBO

    def draws(elbo, model, batch, n=100):
        values = []
        with pyro.validation_enabled(False):  # checked by the tests above; here: speed
            for seed in range(n):
                torch.manual_seed(seed)
                values.append(float(elbo.differentiable_loss(model.model, model.guide, batch).detach()))
        return torch.tensor(values)

    def check():
        batch = data()
        batch = Batch(batch.x.double(), None, batch.index, batch.num_data)
        model = spec_model("m2")
        closed = draws(TraceEnumMeanField_ELBO(), model, batch)
        sampled = draws(SyncFreeTraceEnum_ELBO(), model, batch)  # Pyro's value (tested above)
        se = (closed.var() / len(closed) + sampled.var() / len(sampled)).sqrt()
        assert abs(closed.mean() - sampled.mean()) < 4 * se
        assert closed.std() < 0.3 * sampled.std()  # about 0.1 here

    _double(check)


def test_the_meanfield_objective_takes_an_enumerating_guide():
    from aevb.inference.objectives.registry import objective_for_model
    from aevb.inference.objectives.syncfree import TraceEnumMeanField_ELBO

    model = spec_model("m2")
    objective = objective_for_model("meanfield", 1, model, data())
    assert objective.enumerates and isinstance(objective.elbo, TraceEnumMeanField_ELBO)
    loss = objective.differentiable_loss(model.model, model.guide, data())
    assert torch.isfinite(loss)


class _Enumerating(torch.nn.Module):
    """A guide that enumerates y (and, with ``two``, c too) beside a Normal z; with ``own`` the
    model enumerates c itself, which the guide does not sample."""

    def __init__(self, own=False, two=False):
        super().__init__()
        self.own, self.two = own, two
        self.loc = torch.nn.Parameter(torch.zeros(3))

    def model(self, batch):
        dist = pyro.distributions
        with pyro.plate("data", len(batch.x)):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))
            c = 0.0
            if self.own or self.two:
                c = pyro.sample("c", dist.Categorical(logits=torch.zeros(2)),
                                infer={"enumerate": "parallel"} if self.own else {})
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + y + c, 1.0), obs=batch.x.flatten(1)[:, 0])

    def guide(self, batch):
        dist = pyro.distributions
        with pyro.plate("data", len(batch.x)):
            pyro.sample("y", dist.Categorical(logits=self.loc), infer={"enumerate": "parallel"})
            if self.two:
                pyro.sample("c", dist.Categorical(logits=self.loc[:2]),
                            infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(self.loc[0], 1.0))


@pytest.mark.parametrize("model,says", [(_Enumerating(own=True), "the model enumerates c"),
                                        (_Enumerating(two=True), r"enumerates 2 sites \(y, c\)")])
def test_meanfield_refuses_what_it_cannot_sum_before_training(model, says):
    """Before the first step (it used to raise NotImplementedError there), naming the site."""
    from aevb.inference.objectives.registry import IncompatibleObjective, objective_for_model

    with pytest.raises(IncompatibleObjective, match=says) as refused:
        objective_for_model("meanfield", 1, model, data())
    assert "use elbo=elbo" in str(refused.value)
    assert objective_for_model("elbo", 1, model, data()).enumerates  # TraceEnum_ELBO takes it
    assert objective_for_model("meanfield", 1, _Enumerating(), data()).enumerates
