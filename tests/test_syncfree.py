"""The sync-free ELBOs give Pyro's value and gradient, and read nothing back to the host."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from aevb.inference.objectives.annealing import KLWeight
from aevb.inference.objectives.syncfree import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
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


@pytest.mark.parametrize("elbo", [SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO])
def test_sync_free_elbos_never_read_a_tensor_back(elbo, monkeypatch):
    """With validation off, as the fast engine trains."""
    torch.manual_seed(0)
    model = VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))
    batch = data()
    estimator = elbo()
    estimator.differentiable_loss(model.model, model.guide, batch)  # Pyro guesses plate nesting

    def refuse(*_):
        raise AssertionError("a host read")

    with pyro.validation_enabled(False):
        with monkeypatch.context() as patch:
            for name in ("item", "__bool__", "tolist"):
                patch.setattr(torch.Tensor, name, refuse)
            estimator.differentiable_loss(model.model, model.guide, batch).backward()
        with monkeypatch.context() as patch, pytest.raises(AssertionError, match="host read"):
            for name in ("item", "__bool__"):  # the check has teeth: Pyro's own reads
                patch.setattr(torch.Tensor, name, refuse)
            Trace_ELBO().differentiable_loss(model.model, model.guide, batch)
