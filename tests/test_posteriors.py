"""Posterior families of the VAE's guide (``model.posterior``): densities with known answers,
analytic KLs against torch.distributions, and meanfield refusing families without one."""

import json

import pytest
import torch
from pyro.distributions import Normal
from torch.distributions import MultivariateNormal, kl_divergence

from aevb.config import load_config
from aevb.inference.errors import ConfigError
from aevb.inference.objectives import IncompatibleObjective, build_objective, objective_for_model
from aevb.models.base import Batch
from aevb.models.families import build_family
from aevb.models.posteriors import POSTERIORS
from aevb.models.vae import VAE
from aevb.runs import train

D = 3


def params_for(family, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *family.param_shape, generator=gen)


def standard_prior(n):
    return Normal(torch.zeros(n, D), torch.ones(n, D)).to_event(1)


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_flow_log_prob_is_the_change_of_variables_with_an_autograd_jacobian(name):
    torch.manual_seed(0)
    family = build_family(name, (D,), size=3)
    for p in family.module.parameters():  # away from the identity-like initialisation
        torch.nn.init.normal_(p, std=0.5)
    params = params_for(family, n=1)
    q = family(params)
    z0 = q.base_dist.sample()
    flow = torch.distributions.transforms.ComposeTransform(q.transforms)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0)).squeeze(0), z0[0])
    expected = q.base_dist.log_prob(z0) - torch.linalg.slogdet(jac).logabsdet
    z = flow(z0)  # fills the transforms' caches, as sampling does
    assert not torch.allclose(z, z0, atol=1e-3)
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-4, atol=1e-4)


def test_lowrank_and_full_covariances_and_their_kls_match_torch():
    low = build_family("lowrank", (D,), size=2)
    params = params_for(low)
    loc, raw, factor = params.split([D, D, 2 * D], dim=-1)
    w = factor.unflatten(-1, (D, 2))
    cov = w @ w.transpose(-1, -2) + torch.diag_embed((torch.nn.functional.softplus(raw) + 1e-5) ** 2)
    torch.testing.assert_close(low(params).covariance_matrix, cov)
    reference = kl_divergence(MultivariateNormal(loc, covariance_matrix=cov),
                              MultivariateNormal(torch.zeros(D), torch.eye(D)))
    torch.testing.assert_close(kl_divergence(low(params), standard_prior(4)), reference)

    full = build_family("full", (D,))
    params = params_for(full, seed=1)
    tril = full.scale_tril(params)
    assert torch.all(tril.triu(1) == 0) and torch.all(tril.diagonal(dim1=-2, dim2=-1) > 0)
    cov = tril @ tril.transpose(-1, -2)
    reference = kl_divergence(MultivariateNormal(params[:, :D], covariance_matrix=cov),
                              MultivariateNormal(torch.zeros(D), torch.eye(D)))
    torch.testing.assert_close(kl_divergence(full(params), standard_prior(4)), reference)


@pytest.mark.parametrize("name", ["lowrank", "full"])
def test_analytic_kl_equals_its_monte_carlo_estimate(name):
    family = build_family(name, (D,))
    q, p = family(params_for(family, n=2)), standard_prior(2)
    torch.manual_seed(0)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(mc, kl_divergence(q, p), rtol=0.02, atol=0.02)


def tiny(posterior, size=None):
    torch.manual_seed(0)
    return VAE((1, 4, 4), z_dim=D, hidden_sizes=(16,), posterior=posterior, posterior_size=size)


def test_meanfield_refuses_posteriors_without_an_analytic_kl():
    x = torch.bernoulli(torch.rand(8, 1, 4, 4))
    for name in ("lowrank", "full", "diag"):
        objective_for_model("meanfield", 1, tiny(name), Batch(x))
    for name in ("mixture", "planar", "iaf"):
        with pytest.raises(IncompatibleObjective, match="no closed form for z.*use elbo=elbo"):
            objective_for_model("meanfield", 1, tiny(name), Batch(x))


@pytest.mark.parametrize("name", [n for n in POSTERIORS if n != "diag"])
def test_every_posterior_trains_under_elbo_and_iwae(name):
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(64, 1, 4, 4, generator=gen) * 0.8 + 0.1, generator=gen)
    for objective, k in (("elbo", 1), ("iwae", 3)):
        model = tiny(name, 2)
        obj = build_objective(objective, k)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
        batch = Batch(x, None, torch.arange(64), 64)
        with torch.no_grad():
            before = -sum(float(obj.differentiable_loss(model.model, model.guide, batch))
                          for _ in range(20)) / 20
        for _ in range(150):
            optimizer.zero_grad()
            obj.differentiable_loss(model.model, model.guide, batch).backward()
            optimizer.step()
        with torch.no_grad():
            after = -sum(float(obj.differentiable_loss(model.model, model.guide, batch))
                         for _ in range(20)) / 20
        assert after > before + 1.0, (name, objective, before, after)
        if name in ("planar", "iaf"):  # the flow's networks are the model's and they trained
            assert any(p.grad is not None and p.grad.abs().sum() > 0
                       for p in model.posterior_flow.parameters())


def test_posterior_config_keys_are_checked():
    with pytest.raises(ConfigError, match="'model.posterior'.*'gauss' is not one of diag, lowrank"):
        load_config(None, ["model.posterior=gauss"])
    cfg = load_config(None, ["model.posterior_size=2"])
    from aevb.builder import build_model

    with pytest.raises(ConfigError, match="posterior_size applies to"):
        build_model(cfg.model, (1, 28, 28))


@pytest.mark.data
def test_a_flow_posterior_trains_and_evaluates_through_the_trainer(fashion_dir, tmp_path):
    cfg = load_config("configs/vae_fashion.yaml", [
        f"data.data_dir={fashion_dir}", "data.train_size=1000", "data.test_size=100",
        "eval.num_samples=20", "model.hidden_sizes=[64]", "model.z_dim=4", "train.epochs=1",
        "train.progress=false", "train.tensorboard=false", "model.posterior=iaf",
        "model.posterior_size=2"])
    run = train(cfg, tmp_path / "iaf")
    result = json.loads((run / "evaluation.json").read_text())
    assert result["log_likelihood"] >= result["elbo"] - 1.0
    assert (run / "reconstructions.png").is_file()


def test_a_spec_latent_takes_a_flow_posterior_and_trains_its_networks():
    from aevb.models.spec import compile_spec

    spec = {
        "name": "iafspec",
        "networks": {"encoder": {"type": "mlp", "hidden": [8]},
                     "decoder": {"type": "mlp", "hidden": [8]}},
        "latents": {"z": {"type": "normal", "shape": [D],
                          "posterior": {"inputs": ["x"], "network": "encoder", "family": "iaf",
                                        "options": {"size": 2}}}},
        "observed": {"x": {"likelihood": "bernoulli", "parents": ["z"], "network": "decoder"}},
    }
    model = compile_spec(spec, (1, 2, 2))
    flow_params = list(model.flows.parameters())
    assert flow_params and all(any(p is q for q in model.parameters()) for p in flow_params)
    x = torch.bernoulli(torch.rand(16, 1, 2, 2))
    build_objective("elbo").differentiable_loss(model.model, model.guide, Batch(x)).backward()
    assert all(p.grad is not None for p in flow_params)
