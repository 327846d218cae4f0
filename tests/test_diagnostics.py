"""Gradient-estimator diagnostics: the statistics are the sample moments of the gradient draws,
and reparameterization beats the score function on the encoder (Kingma & Welling 2014, 2.4)."""

import torch

from aevb.inference.evaluation.diagnostics import estimator_objective, gradient_statistics, parameter_groups
from aevb.models.base import Batch
from aevb.models.vae import VAE


def tiny():
    torch.manual_seed(0)
    return VAE((1, 4, 4), z_dim=2, hidden_sizes=(8,))


def batch():
    gen = torch.Generator().manual_seed(0)
    return Batch(torch.bernoulli(torch.rand(16, 1, 4, 4, generator=gen), generator=gen))


def test_statistics_are_the_moments_of_the_gradient_draws():
    model, b = tiny(), batch()
    objective = estimator_objective("reparam", model, b)
    objective.differentiable_loss(model.model, model.guide, b)  # Pyro's plate-nesting guess draws
    torch.manual_seed(1)
    rows = {r.group: r for r in gradient_statistics(model, objective, b, 30, "reparam")}
    torch.manual_seed(1)
    draws = []
    for _ in range(30):
        model.zero_grad()
        (objective.differentiable_loss(model.model, model.guide, b) / len(b)).backward()
        draws.append(torch.cat([p.grad.flatten() for _, p in parameter_groups(model, b)["encoder"]]))
    g = torch.stack(draws)
    enc = rows["encoder"]
    assert enc.parameters == g.shape[1]
    assert abs(enc.variance - torch.var(g, 0).mean().item()) < 1e-5 * enc.variance
    ratio = g.mean(0).abs() / g.std(0)
    assert abs(enc.snr - ratio[g.std(0) > 0].median().item()) < 1e-4
    assert abs(enc.grad_norm - g.mean(0).norm().item()) < 1e-5


def test_reparameterized_encoder_gradients_have_far_lower_variance_than_score_function():
    model, b = tiny(), batch()
    stats = {}
    for name in ("reparam", "score", "iwae5"):
        for r in gradient_statistics(model, estimator_objective(name, model, b), b, 40, name):
            stats[name, r.group] = r
    assert stats["score", "encoder"].variance > 10 * stats["reparam", "encoder"].variance
    assert stats["score", "encoder"].snr < stats["reparam", "encoder"].snr
    assert set(g for _, g in stats) == {"encoder", "decoder"}


def test_groups_split_guide_and_model_networks():
    groups = parameter_groups(VAE((1, 4, 4), z_dim=2, hidden_sizes=(8,), posterior="iaf",
                                  posterior_size=1), batch())
    assert all(n.startswith(("encoder", "posterior_flow")) for n, _ in groups["encoder"])
    assert any(n.startswith("posterior_flow") for n, _ in groups["encoder"])
    assert all(n.startswith("decoder") for n, _ in groups["decoder"])


def test_groups_follow_the_traces_not_the_module_names():
    """A model whose encoder is ``self.enc`` and decoder ``self.encoder_of_pixels``: the guide's
    sample sites depend on the first only."""
    import pyro
    import pyro.distributions as dist
    from pyro.nn import PyroModule
    from torch import nn

    class Odd(PyroModule):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(16, 4)
            self.encoder_of_pixels = nn.Linear(2, 16)

        def model(self, batch):
            with pyro.plate("data", len(batch)):
                z = pyro.sample("z", dist.Normal(torch.zeros(len(batch), 2), 1.0).to_event(1))
                logits = self.encoder_of_pixels(z).reshape(-1, 1, 4, 4)
                pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=batch.x)

        def guide(self, batch):
            h = self.enc(batch.x.reshape(len(batch), -1))
            with pyro.plate("data", len(batch)):
                pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    groups = parameter_groups(Odd(), batch())
    assert sorted(n for n, _ in groups["encoder"]) == ["enc.bias", "enc.weight"]
    assert sorted(n for n, _ in groups["decoder"]) == ["encoder_of_pixels.bias",
                                                      "encoder_of_pixels.weight"]
