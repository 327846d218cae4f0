"""Known answers: the linear-Gaussian model's exact log p(x) against every estimator."""

import math

import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from aevb.inference.objectives.importance import ImportanceWeightedELBO
from aevb.models import Batch, LinearGaussianVAE


@pytest.fixture
def lg():
    torch.manual_seed(1)
    model = LinearGaussianVAE(x_dim=5, z_dim=2, sigma=0.6)
    model.set_near_optimal_guide(inflate=1.6)  # deliberately imperfect guide: a real gap
    return model


def iwae_bound(model, x, k, reps):
    """Mean over ``reps`` draws of the per-datapoint IWAE_k estimate, shape (M,)."""
    est = ImportanceWeightedELBO(num_particles=k)
    vals = []
    with torch.no_grad():
        for _ in range(reps):
            log_w, _ = est.log_weights(model.model, model.guide, Batch(x))
            vals.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(vals).mean(0)


def test_importance_sampled_log_likelihood_converges_to_exact(lg):
    x = lg.sample_data(20)
    exact = lg.log_marginal(x).detach()
    errors = [float((iwae_bound(lg, x, k, 4) - exact).abs().mean()) for k in (1, 10, 5000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_elbo_le_iwae_le_log_px_and_iwae_non_decreasing_in_k(lg):
    x = lg.sample_data(30)
    exact = lg.log_marginal(x).detach().mean()
    elbo = -Trace_ELBO(num_particles=20000, vectorize_particles=True).loss(
        lg.model, lg.guide, Batch(x)) / len(x)
    bounds = [float(iwae_bound(lg, x, k, reps=400 // k + 20).mean()) for k in (1, 2, 5, 20, 100)]
    assert bounds[0] == pytest.approx(elbo, abs=0.02)
    assert all(b2 >= b1 - 0.005 for b1, b2 in zip(bounds, bounds[1:], strict=False)), bounds
    assert bounds[-1] - bounds[0] > 0.1  # the guide is imperfect, so k matters
    assert bounds[-1] <= float(exact) + 0.005


def test_iwae_with_one_particle_is_the_elbo(lg):
    """Same seed, same single sample: IWAE_1 and Trace_ELBO are the same number, also scaled."""
    x = lg.sample_data(16)
    batch = Batch(x, index=torch.arange(16), num_data=1000)
    est = ImportanceWeightedELBO(num_particles=1)
    est.loss(lg.model, lg.guide, batch)  # the first call inspects the model (uses the RNG)
    torch.manual_seed(3)
    iwae = est.differentiable_loss(lg.model, lg.guide, batch).detach()
    torch.manual_seed(3)
    elbo = Trace_ELBO().differentiable_loss(lg.model, lg.guide, batch).detach()
    assert float(iwae) == pytest.approx(float(elbo), rel=1e-5)


def test_iwae_loss_is_the_per_datapoint_bound_scaled_by_n_over_m(lg):
    x = lg.sample_data(8)
    est = ImportanceWeightedELBO(num_particles=7)
    torch.manual_seed(5)
    log_w, scale = est.log_weights(lg.model, lg.guide, Batch(x, index=torch.arange(8),
                                                              num_data=80))
    torch.manual_seed(5)
    loss = est.differentiable_loss(lg.model, lg.guide, Batch(x, index=torch.arange(8),
                                                              num_data=80))
    assert log_w.shape == (7, 8) and scale == 10.0
    expected = -10.0 * (torch.logsumexp(log_w, 0) - math.log(7)).sum()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_pyro_renyi_alpha0_is_per_datapoint_only_without_minibatch_scaling(lg):
    """Why aevb has its own IWAE estimator.

    Pyro's RenyiELBO(alpha=0) keeps the data plate, so on a full batch it is the per-datapoint
    IWAE bound. But it log-sum-exps the *scaled* log-weights, so under the paper's N/M
    minibatch scaling it computes log mean_k exp((N/M) log w) instead of
    (N/M) log mean_k w: no longer a lower bound — it exceeds the exact (N/M) sum log p(x).
    """
    x = lg.sample_data(64)
    k, reps = 50, 20
    exact = float(lg.log_marginal(x).detach().sum())
    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    ours = ImportanceWeightedELBO(num_particles=k)
    full = Batch(x)
    scaled = Batch(x, index=torch.arange(64), num_data=640)  # N/M = 10

    def mean_loss(est, batch):
        return sum(est.loss(lg.model, lg.guide, batch) for _ in range(reps)) / reps

    assert mean_loss(renyi, full) == pytest.approx(mean_loss(ours, full), abs=0.5)
    assert -mean_loss(ours, scaled) <= 10 * exact  # a bound
    assert -mean_loss(renyi, scaled) > 10 * exact + 100  # not a bound


def test_analytic_kl_equals_sampled_kl_in_expectation(lg):
    x = lg.sample_data(10)
    n = 200000
    with torch.no_grad():
        sampled = Trace_ELBO(num_particles=n, vectorize_particles=True).loss(
            lg.model, lg.guide, Batch(x))
        analytic = TraceMeanField_ELBO(num_particles=n, vectorize_particles=True).loss(
            lg.model, lg.guide, Batch(x))
        # standard error of the sampled estimate, from the per-particle spread
        log_w, _ = ImportanceWeightedELBO(num_particles=20000).log_weights(
            lg.model, lg.guide, Batch(x))
    stderr = float(log_w.sum(1).std()) / math.sqrt(n)
    assert abs(sampled - analytic) < 5 * stderr + 1e-3
    exact = -float(lg.exact_elbo(x).detach().sum())  # both estimate the closed-form ELBO
    assert abs(analytic - exact) < 5 * stderr + 1e-3


def test_renyi_bound_is_iwae_at_alpha_0_elbo_at_1_and_falls_with_alpha(lg):
    """Li & Turner (2016): on the same samples, L_0 = IWAE_k, L_1 = the mean log-weight, and
    L_alpha falls as alpha rises; all lie below the exact log p(x)."""
    from aevb.inference.objectives.importance import RenyiBound

    x = lg.sample_data(12)
    batch = Batch(x, index=torch.arange(12), num_data=120)
    k = 50
    ests = {a: RenyiBound(a, num_particles=k) for a in (0.0, 0.5, 1.0)}
    ests["iwae"] = ImportanceWeightedELBO(num_particles=k)
    losses = {}
    for name, est in ests.items():
        est.loss(lg.model, lg.guide, batch)  # the plate-nesting guess
        torch.manual_seed(4)
        losses[name] = float(est.differentiable_loss(lg.model, lg.guide, batch).detach())
    torch.manual_seed(4)
    log_w, _ = ests["iwae"].log_weights(lg.model, lg.guide, batch)
    assert losses[0.0] == pytest.approx(losses["iwae"], rel=1e-6)
    assert losses[1.0] == pytest.approx(float(-10.0 * log_w.detach().mean(0).sum()), rel=1e-5)
    assert losses[0.0] < losses[0.5] < losses[1.0]  # losses are negated bounds
    exact = float(lg.log_marginal(x).detach().sum()) * 10.0
    assert -losses[0.0] <= exact + 1.0
    with pytest.raises(ValueError, match=">= 0"):
        RenyiBound(-1.0)


def test_mmd_estimate_matches_the_closed_form_for_two_gaussians():
    """For x ~ N(mu, I), y ~ N(0, I) in D dims and k(a, b) = exp(-|a-b|^2 / 2h):
    E k = (h / (h + 2))^(D/2) exp(-|delta|^2 / (2 (h + 2))), so
    MMD^2 = 2 (h / (h + 2))^(D/2) (1 - exp(-|mu|^2 / (2 (h + 2))))."""
    from aevb.inference.objectives.mmd import mmd2_unbiased

    torch.manual_seed(0)
    d, h = 3, 3.0
    mu = torch.tensor([1.0, -0.5, 0.5])
    exact = 2 * (h / (h + 2)) ** (d / 2) * (1 - math.exp(-float(mu @ mu) / (2 * (h + 2))))
    estimates = torch.stack([mmd2_unbiased(torch.randn(200, d) + mu, torch.randn(200, d), h)
                             for _ in range(200)])
    assert float(estimates.mean()) == pytest.approx(exact, rel=0.03)
    same = torch.stack([mmd2_unbiased(torch.randn(200, d), torch.randn(200, d), h)
                        for _ in range(200)])
    assert abs(float(same.mean())) < 3 * float(same.std()) / math.sqrt(200)  # unbiased: mean 0


def test_mmd_objective_is_reconstruction_plus_scaled_mmd():
    from pyro import poutine

    from aevb.inference.objectives.infovae import MMDObjective
    from aevb.inference.objectives.mmd import mmd2_unbiased
    from aevb.models.vae import VAE

    torch.manual_seed(0)
    model = VAE((1, 4, 4), z_dim=2, hidden_sizes=(8,))
    x = torch.bernoulli(torch.rand(16, 1, 4, 4))
    batch = Batch(x, index=torch.arange(16), num_data=160)
    torch.manual_seed(2)
    loss = MMDObjective(mmd_scale=50.0, bandwidth=2.0).differentiable_loss(
        model.model, model.guide, batch)
    torch.manual_seed(2)
    guide = poutine.trace(model.guide).get_trace(batch)
    traced = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch)
    z_prior = traced.nodes["z"]["fn"].rsample()  # the objective's next draw: the prior's
    recon = traced.nodes["x"]["fn"].log_prob(x).sum() * 10.0
    expected = -recon + 50.0 * 160 * mmd2_unbiased(guide.nodes["z"]["value"], z_prior, 2.0)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)


def test_infovae_is_the_elbo_at_alpha_0_lambda_1_and_mmd_vae_at_alpha_1():
    """Zhao et al. (2019), eq. 6: (1 - α) KL per datapoint and (α + λ - 1) N MMD²."""
    from aevb.inference.objectives.infovae import InfoVAEObjective, MMDObjective
    from aevb.models.vae import VAE

    torch.manual_seed(0)
    model = VAE((1, 4, 4), z_dim=2, hidden_sizes=(8,))
    x = torch.bernoulli(torch.rand(16, 1, 4, 4))
    batch = Batch(x, index=torch.arange(16), num_data=160)

    def loss(objective):
        torch.manual_seed(3)
        return objective.differentiable_loss(model.model, model.guide, batch)

    torch.testing.assert_close(loss(InfoVAEObjective(alpha=0.0, lam=1.0)),
                               loss(Trace_ELBO()), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(loss(InfoVAEObjective(alpha=1.0, lam=50.0, bandwidth=2.0)),
                               loss(MMDObjective(50.0, bandwidth=2.0)))
    # in between: the ELBO's KL at weight 1 - α plus the MMD at α + λ - 1
    elbo, recon = loss(Trace_ELBO()), loss(InfoVAEObjective(alpha=1.0, lam=0.0))
    mmd = (loss(MMDObjective(1.0, bandwidth=2.0)) - recon) / 160
    mixed = loss(InfoVAEObjective(alpha=0.25, lam=3.0, bandwidth=2.0))
    torch.testing.assert_close(mixed, recon + 0.75 * (elbo - recon) + 2.25 * 160 * mmd,
                               rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        InfoVAEObjective(alpha=1.5)


def test_critic_optimum_is_the_log_density_ratio_of_two_known_gaussians():
    """The critic's logistic regression is minimized by T*(z) = log q(z) - log p(z)
    (Mescheder et al. 2017, Proposition 1): trained on samples of q = N(m, s²I) and p = N(0, I)
    in 2-D it recovers the ratio where the samples are, and E_q[T] the KL in closed form."""
    from torch.distributions import Independent, Normal, kl_divergence

    from aevb.inference.objectives.adversarial import Critic, critic_loss

    torch.manual_seed(0)
    q = Independent(Normal(torch.tensor([1.0, -0.5]), torch.tensor([0.7, 1.2])), 1)
    p = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    critic = Critic(2, hidden=64)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    for step in range(3000):
        if step == 2000:
            optimizer.param_groups[0]["lr"] = 3e-4
        optimizer.zero_grad()
        critic_loss(critic, q.sample((512,)), p.sample((512,))).backward()
        optimizer.step()
    with torch.no_grad():
        z = torch.cat([q.sample((2000,)), p.sample((2000,))])
        error = critic(z) - (q.log_prob(z) - p.log_prob(z))
        kl = critic(q.sample((20000,))).mean()
    exact_kl = float(kl_divergence(q, p))  # 0.76 nats
    assert float(error.abs().median()) < 0.05
    assert float(error.pow(2).mean().sqrt()) < 0.25
    assert float(kl) == pytest.approx(exact_kl, abs=0.05)


def test_adversarial_infovae_reduces_to_the_elbo_and_aae_is_its_alpha_1_lambda_1_case():
    """InfoVAE's eq. 6 with the adversarial divergence: the ELBO at α = 0, λ = 1 whatever the
    critic says; ``elbo=aae`` is α = 1, λ = 1: the reconstruction plus N·E_q[T(z)]. The
    divergence's gradient reaches the encoder and not the critic; the critic's own
    classification loss reaches the critic and not the encoder."""
    from aevb.inference.objectives.adversarial import AdversarialDivergence, critic_loss
    from aevb.inference.objectives.infovae import AAEObjective, InfoVAEObjective
    from aevb.models.vae import VAE

    torch.manual_seed(0)
    model = VAE((1, 4, 4), z_dim=2, hidden_sizes=(8,))
    x = torch.bernoulli(torch.rand(16, 1, 4, 4))
    batch = Batch(x, index=torch.arange(16), num_data=160)
    aae = AAEObjective(critic_hidden=16)
    aae.bind(2, torch.device("cpu"))
    critic = aae.critic

    def loss(objective):
        torch.manual_seed(3)
        return objective.differentiable_loss(model.model, model.guide, batch)

    elbo_case = InfoVAEObjective(0.0, 1.0, divergence=AdversarialDivergence(16))
    torch.testing.assert_close(loss(elbo_case), loss(Trace_ELBO()), rtol=1e-6, atol=1e-4)
    assert elbo_case.critic is None  # weight 0: the divergence is never evaluated nor built
    general = InfoVAEObjective(1.0, 1.0, divergence=aae.divergence)
    torch.testing.assert_close(loss(general), loss(aae))
    # the value: reconstruction plus N times the critic's mean logit on the posterior samples
    guide, traced = _replayed(model, batch)
    z_p = traced.nodes["z"]["fn"].rsample()  # the objective's next draw: the prior's
    z_q = guide.nodes["z"]["value"]
    expected = -recon_of(model, batch) + 160 * critic(z_q).mean()
    torch.testing.assert_close(loss(aae), expected, rtol=1e-5, atol=1e-3)
    # the gradients: the encoder's from N·E_q[T]; the critic's from its classification loss
    model.zero_grad()
    critic.zero_grad()
    loss(aae).backward()
    encoder_grad = [p.grad.clone() for p in model.encoder.parameters()]
    critic_grad = [p.grad.clone() for p in critic.parameters()]
    critic.zero_grad()
    critic_loss(critic, z_q.detach(), z_p.detach()).backward()
    for got, want in zip(critic_grad, [p.grad for p in critic.parameters()], strict=True):
        torch.testing.assert_close(got, want)
    model.zero_grad()
    (-recon_of(model, batch) + 160 * critic(z_q_of(model, batch)).mean()).backward()
    for got, want in zip(encoder_grad, [p.grad for p in model.encoder.parameters()], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _replayed(model, batch):
    from pyro import poutine

    torch.manual_seed(3)
    guide = poutine.trace(model.guide).get_trace(batch)
    return guide, poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(batch)


def recon_of(model, batch):
    """The N/M-scaled reconstruction log-likelihood at the guide's draw (seed 3)."""
    _, traced = _replayed(model, batch)
    return traced.nodes["x"]["fn"].log_prob(batch.x).sum() * batch.num_data / len(batch.x)


def z_q_of(model, batch):
    """The guide's draw of z (seed 3)."""
    guide, _ = _replayed(model, batch)
    return guide.nodes["z"]["value"]
