"""Wake-sleep, reweighted wake-sleep and VIMCO against known answers: Pyro's RWS on one datapoint,
the inclusive-KL optimum of the linear-Gaussian model's guide, the exact gradient of a tiny
sigmoid belief net's IWAE bound, and a tiny SBN learned from data drawn from a known one."""

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import ReweightedWakeSleep as PyroRWS

from aevb.builder import build_model
from aevb.config import load_config
from aevb.inference import Split
from aevb.inference.errors import ConfigError
from aevb.inference.evaluation.likelihood import importance_sampled
from aevb.inference.objectives import build_objective, objective_for_model
from aevb.inference.objectives.importance import ImportanceWeightedELBO
from aevb.inference.objectives.wakesleep import ReweightedWakeSleep, dream
from aevb.models import DLGM, Batch, LinearGaussianVAE, SigmoidBeliefNet
from aevb.models.vae import VAE
from aevb.runs import objective_from_config


def grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def loss_grads(objective, model, batch, seed=3):
    pyro.set_rng_seed(seed)
    model.zero_grad()
    loss = objective.differentiable_loss(model.model, model.guide, batch)
    loss.backward()
    return loss.detach(), grads(model)


def test_rws_on_one_datapoint_equals_pyros_and_scales_like_iwae_on_a_minibatch():
    model = VAE(x_shape=(1, 4, 4), z_dim=3, hidden_sizes=(8,))
    x = torch.bernoulli(torch.rand(5, 1, 4, 4))
    ours = ReweightedWakeSleep(num_particles=4)
    # one datapoint: Pyro's whole-batch weights are the per-datapoint ones
    one = Batch(x[:1])
    _, expected = loss_grads(_PyroSum(PyroRWS(num_particles=4, max_plate_nesting=1)), model, one)
    _, got = loss_grads(ours, model, one)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    # a minibatch of 5 out of 50: the value is minus N/M times the IWAE bounds (the same samples),
    # and the decoder's gradient is the IWAE bound's
    batch = Batch(x, index=torch.arange(5), num_data=50)
    iwae = build_objective("iwae", 4).elbo
    value_iwae, grads_iwae = loss_grads(iwae, model, batch)
    value_rws, grads_rws = loss_grads(ours, model, batch)
    torch.testing.assert_close(value_rws, value_iwae)
    decoder = [i for i, (n, _) in enumerate(model.named_parameters()) if n.startswith("decoder")]
    for i in decoder:
        torch.testing.assert_close(grads_rws[i], grads_iwae[i])
    encoder = [i for i in range(len(grads_rws)) if i not in decoder]
    assert all(not torch.allclose(grads_rws[i], grads_iwae[i]) for i in encoder)


class _PyroSum:
    """Pyro's RWS as one differentiable loss (theta loss + phi loss, as its loss_and_grads)."""

    def __init__(self, rws):
        self.rws = rws

    def differentiable_loss(self, model, guide, batch):
        theta, phi = self.rws._loss(model, guide, (batch,), {})
        return theta + phi


def test_dreams_replace_the_observed_field_and_keep_the_latents():
    model = SigmoidBeliefNet(x_shape=(6,), z_dims=[3])
    batch = Batch(torch.zeros(7, 6), index=torch.arange(7), num_data=70)
    trace, dreamt = dream(model.model, batch)
    assert dreamt.x.shape == (7, 6) and dreamt.x is trace.nodes["x"]["value"]
    assert dreamt.index is batch.index and dreamt.num_data == 70
    assert trace.nodes["z1"]["value"].shape == (7, 3)


def test_dreams_go_back_into_a_field_the_model_observed_through_a_reshape():
    class FlatObservation(SigmoidBeliefNet):
        def model(self, batch):  # observes batch.x.reshape(M, -1), not batch.x itself
            flat = Batch(batch.x.reshape(len(batch), -1), batch.y, batch.index, batch.num_data)
            super().model(flat)

    model = FlatObservation(x_shape=(6,), z_dims=[3])
    batch = Batch(torch.zeros(7, 2, 3), index=torch.arange(7), num_data=70)
    trace, dreamt = dream(model.model, batch)
    assert dreamt.x.shape == (7, 2, 3)
    assert torch.equal(dreamt.x.reshape(7, 6), trace.nodes["x"]["value"])


def _fit_guide(objective, steps=1500, seed=0):
    """Train only the guide (A, c, log_s) of a fixed linear-Gaussian model."""
    torch.manual_seed(seed)
    model = LinearGaussianVAE(x_dim=3, z_dim=2, sigma=0.6)
    with torch.no_grad():
        model.W.copy_(torch.tensor([[1.0, 0.7], [0.6, 1.0], [0.9, 0.5]]))
    guide_params = [model.A, model.c, model.log_s]
    opt = torch.optim.Adam(guide_params, lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < steps // 2 else 0.2)
    for _ in range(steps):
        batch = Batch(model.sample_data(256))
        opt.zero_grad()
        objective.differentiable_loss(model.model, model.guide, batch).backward()
        opt.step()
        sched.step()
    return model


def _exact_posterior(model):
    s2 = model.log_sigma.exp() ** 2
    cov = torch.linalg.inv(torch.eye(2) + model.W.T @ model.W / s2)
    return cov @ model.W.T / s2, cov  # mean map (applied to x - b) and covariance


@pytest.mark.parametrize("name, num_particles, var_tol", [("wake-sleep", 1, 0.06),
                                                          ("rws", 50, 0.15)])
def test_sleep_and_wake_phases_fit_the_inclusive_kl_optimum_of_a_linear_gaussian_guide(
        name, num_particles, var_tol):
    """Both phases minimise KL(p(z|x) || q(z|x)) (inclusive); a diagonal q then has the exact
    posterior mean and the posterior's marginal variances, not the ELBO's 1/precision."""
    model = _fit_guide(build_objective(name, num_particles).elbo)
    mean_map, cov = _exact_posterior(model)
    with torch.no_grad():
        torch.testing.assert_close(model.A, mean_map, atol=0.05, rtol=0.0)
        torch.testing.assert_close(model.c, -mean_map @ model.b, atol=0.05, rtol=0.0)
        var = (2 * model.log_s).exp()
        torch.testing.assert_close(var, cov.diagonal(), rtol=var_tol, atol=0.0)
        # ... which differs from the exclusive (ELBO) optimum for this correlated posterior
        assert (cov.diagonal() / (1 / torch.linalg.inv(cov).diagonal())).min() > 1 + 2 * var_tol


def _sbn_exact(model, x):
    """Exact log p(x) per datapoint of a one-layer SBN by summing over every latent state."""
    (size,) = model.variables["z1"].shape
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=size)))
    logits = model.networks["p_x"](states)  # (S, D)
    log_px_z = (x.unsqueeze(1) * logits - torch.nn.functional.softplus(logits)).sum(-1)
    return torch.logsumexp(log_px_z - size * math.log(2), dim=1)


def _true_sbn_data(n, seed=0):
    torch.manual_seed(seed)
    truth = SigmoidBeliefNet(x_shape=(12,), z_dims=[3])
    with torch.no_grad():
        for p in truth.networks["p_x"].parameters():
            p.copy_(3 * torch.randn_like(p))
        z = torch.bernoulli(torch.full((n, 3), 0.5))
        x = torch.bernoulli(torch.sigmoid(truth.networks["p_x"](z)))
    return truth, x


def test_vimco_gradient_is_unbiased_for_the_iwae_bound_of_a_tiny_sbn():
    torch.manual_seed(1)
    model = SigmoidBeliefNet(x_shape=(3,), z_dims=[2])
    for p in model.parameters():
        torch.nn.init.normal_(p, std=1.0)
    x = torch.tensor([1.0, 0.0, 1.0])
    k, copies = 2, 100_000
    # exact E[log (w_a + w_b) / 2] over every pair of latent states
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
    q_logits = model.networks["q_z1"](x)
    log_q = (states * q_logits - torch.nn.functional.softplus(q_logits)).sum(-1)
    p_logits = model.networks["p_x"](states)
    log_p = (x * p_logits - torch.nn.functional.softplus(p_logits)).sum(-1) - 2 * math.log(2)
    log_w = log_p - log_q
    pair_q = log_q[:, None] + log_q[None, :]
    pair_bound = torch.logaddexp(log_w[:, None], log_w[None, :]) - math.log(k)
    exact = (pair_q.exp() * pair_bound).sum()
    model.zero_grad()
    exact.backward()
    expected = grads(model)
    # VIMCO on many copies of x: the loss is minus the sum of the copies' estimates
    objective = build_objective("iwae", k).elbo
    _, got = loss_grads(objective, model, Batch(x.expand(copies, 3)))
    got = [-g / copies for g in got]
    flat_e, flat_g = torch.cat([e.flatten() for e in expected]), torch.cat([g.flatten() for g in got])
    assert (flat_g - flat_e).norm() < 0.03 * flat_e.norm()
    # without the score-function term the guide's gradient is wrong
    _, partial = loss_grads(_NoScoreTerm(k), model, Batch(x.expand(copies, 3)))
    q_net = [i for i, (n, _) in enumerate(model.named_parameters()) if "q_z1" in n]
    e_q = torch.cat([expected[i].flatten() for i in q_net])
    p_q = torch.cat([-partial[i].flatten() / copies for i in q_net])
    assert (p_q - e_q).norm() > 0.3 * e_q.norm()


class _NoScoreTerm(ImportanceWeightedELBO):
    def score_surrogate(self, log_w, bound, log_q_score):
        return torch.zeros_like(bound)


@pytest.mark.parametrize("name, num_particles", [("wake-sleep", 1), ("rws", 5), ("iwae", 5)])
def test_wake_sleep_rws_and_iwae_improve_a_tiny_sbns_log_likelihood(name, num_particles):
    """Data from a known SBN (3 binary causes of 12 pixels); the model's exact log p(x) must
    close most of the gap between its initial value and the true model's."""
    truth, x = _true_sbn_data(2000)
    true_ll = _sbn_exact(truth, x).mean().item()
    torch.manual_seed(5)
    model = SigmoidBeliefNet(x_shape=(12,), z_dims=[3])
    with torch.no_grad():
        start = _sbn_exact(model, x).mean().item()
    objective = build_objective(name, num_particles).elbo
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        for idx in torch.randperm(2000, generator=gen).split(100):
            opt.zero_grad()
            objective.differentiable_loss(model.model, model.guide,
                                          Batch(x[idx], index=idx, num_data=2000)).backward()
            opt.step()
    with torch.no_grad():
        end = _sbn_exact(model, x).mean().item()
    assert end > start + 0.75 * (true_ll - start), (start, end, true_ll)


def test_importance_sampled_log_likelihood_of_an_sbn_matches_the_exact_sum():
    truth, x = _true_sbn_data(200)
    with torch.no_grad():
        exact = _sbn_exact(truth, x)
        for p in truth.networks["q_z1"].parameters():  # a uniform proposal over the 8 states
            p.zero_()
    figures = importance_sampled(truth, Split(x, torch.zeros(200)), num_samples=2000,
                                 sample_chunk=500)
    # the count of the dominant state among 2000 uniform draws varies by ~6%: per point ~0.06 nats
    torch.testing.assert_close(figures["log_likelihood"], exact, atol=0.25, rtol=0.0)
    assert abs(figures["log_likelihood"].mean() - exact.mean()) < 0.02
    assert (figures["elbo"] < exact).all()


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_dlgm_has_l_configurable_layers_and_meanfield_refuses_its_bottom_up_guide():
    model = build_model(_cfg("model=dlgm", "model.options={z_dims: [8, 4, 2]}").model, (1, 28, 28))
    assert isinstance(model, DLGM)
    assert model.model_order == ["z3", "z2", "z1", "x"] and model.guide_order == ["z1", "z2", "z3"]
    batch = Batch(torch.bernoulli(torch.rand(4, 1, 28, 28)))
    trace = pyro.poutine.trace(model.guide).get_trace(batch)
    assert [trace.nodes[f"z{i}"]["value"].shape[-1] for i in (1, 2, 3)] == [8, 4, 2]
    for name in ("elbo", "iwae", "rws"):
        objective = objective_from_config(_cfg("model=dlgm", f"elbo={name}", "num_particles=2"),
                                      model, batch)
        assert torch.isfinite(objective.differentiable_loss(model.model, model.guide, batch))
    with pytest.raises(ConfigError, match=r"the model samples z3, z2, z1, the guide z1, z2, z3"):
        objective_from_config(_cfg("model=dlgm", "elbo=meanfield"), model, batch)
    with pytest.raises(ConfigError, match=r"model.z_dim' is set, but model 'dlgm' takes no"):
        build_model(_cfg("model=dlgm", "model.z_dim=3").model, (1, 28, 28))


def test_sbn_objectives_and_refusals():
    model = SigmoidBeliefNet(x_shape=(1, 28, 28), z_dims=[10, 5])
    batch = Batch(torch.bernoulli(torch.rand(4, 1, 28, 28)))
    for name in ("wake-sleep", "rws", "iwae", "elbo", "score"):
        objective_for_model(name, 2, model, batch)
    with pytest.raises(ConfigError, match=r"rws_insomnia must be in \[0, 1\]"):
        objective_from_config(_cfg("model=sbn", "elbo=rws", "rws_insomnia=2"), model, batch)
    with pytest.raises(ConfigError, match=r"'rws_insomnia' is set, but elbo=iwae"):
        _cfg("elbo=iwae", "rws_insomnia=0.5")
    with pytest.raises(ConfigError, match="elbo=renyi needs reparameterized latents"):
        objective_from_config(_cfg("model=sbn", "elbo=renyi", "num_particles=2"), model, batch)


@pytest.mark.data
@pytest.mark.parametrize("overrides", [
    ["model=sbn", "model.options={z_dims: [50]}", "elbo=wake-sleep", "optim.lr=0.01"],
    ["model=sbn", "model.options={z_dims: [30, 15]}", "elbo=iwae", "num_particles=3",
     "optim.lr=0.01"],
    ["model=dlgm", "model.options={z_dims: [20, 10]}", "elbo=rws", "num_particles=3"],
])
def test_sbn_and_dlgm_train_and_evaluate_through_the_trainer(fashion_dir, tmp_path, overrides):
    import json

    from aevb.inference.evaluation.likelihood import mean_elbo
    from aevb.runs import train

    cfg = load_config(None, [f"data.data_dir={fashion_dir}", "data.train_size=2000",
                             "data.test_size=200", "eval.num_samples=50", "train.epochs=2",
                             "train.progress=false", "train.tensorboard=false", *overrides])
    torch.manual_seed(cfg.seed)
    from aevb.data import load_data
    before = mean_elbo(build_model(cfg.model, (1, 28, 28)), load_data(cfg.data).valid)
    run = train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["valid_elbo"] > before + 20
    figures = json.loads((run / "evaluation.json").read_text())
    assert figures["log_likelihood"] >= figures["elbo"] and figures["num_images"] == 200
