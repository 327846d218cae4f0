import pyro
import pytest
import torch
from pyro.infer import TraceGraph_ELBO

from aevb.inference.objectives import OBJECTIVES, build_objective
from aevb.models import VAE, Batch, LinearGaussianVAE, UnknownNameError


def test_unknown_objective_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        build_objective("iwea")
    for name in ("elbo", "meanfield", "iwae", "score"):
        assert name in str(err.value)


@pytest.mark.parametrize("name", OBJECTIVES.names())
@pytest.mark.parametrize("k", [1, 3])
def test_every_objective_gives_finite_loss_and_gradients_to_encoder_and_decoder(name, k):
    model = VAE(z_dim=4, hidden_sizes=[16])
    x = torch.rand(6, 1, 28, 28).bernoulli()
    if name in ("mmd", "infovae", "aae") and k > 1:  # one sample per datapoint: refused
        with pytest.raises(ValueError, match="num_particles=1"):
            build_objective(name, k)
        return
    loss = build_objective(name, k).differentiable_loss(
        model.model, model.guide, Batch(x, index=torch.arange(6), num_data=60))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
    assert model.decoder.net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_minibatch_loss_and_gradients_are_scaled_by_n_over_m(name):
    """The plate's N/M factor multiplies the loss and every gradient once (not squared in the
    score-function term)."""
    model = LinearGaussianVAE()
    x = model.sample_data(4)
    obj = build_objective(name, 1)
    obj.differentiable_loss(model.model, model.guide, Batch(x))  # Pyro inspects the model once
    results = []
    for batch in (Batch(x), Batch(x, index=torch.arange(4), num_data=40)):
        pyro.set_rng_seed(2)
        model.zero_grad()
        loss = obj.differentiable_loss(model.model, model.guide, batch)
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (scaled, scaled_grads) = results
    assert scaled == pytest.approx(10 * full, rel=1e-5)
    for g_full, g_scaled in zip(full_grads, scaled_grads, strict=True):
        torch.testing.assert_close(g_scaled, 10 * g_full, rtol=1e-4, atol=1e-5)


def _encoder_grads(model, objective, x, repeats):
    grads = []
    for _ in range(repeats):
        model.zero_grad()
        objective.differentiable_loss(model.model, model.guide, Batch(x)).backward()
        grads.append(torch.cat([model.A.grad.flatten(), model.c.grad, model.log_s.grad]))
    return torch.stack(grads)


def test_score_function_and_reparameterized_gradients_agree_in_mean():
    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=3, z_dim=2)
    x = model.sample_data(4)
    reparam = _encoder_grads(model, build_objective("elbo", 50), x, 200)
    score = _encoder_grads(model, build_objective("score", 50), x, 200)
    se = (reparam.var(0) / 200 + score.var(0) / 200).sqrt()
    z = (reparam.mean(0) - score.mean(0)) / se
    assert z.abs().max() < 4.5, z
    assert (score.var(0) > reparam.var(0)).all()
    assert float(score.var(0).sum() / reparam.var(0).sum()) > 5


def test_score_objective_matches_tracegraph_loss_and_grads():
    """Our differentiable_loss for ``score`` gives TraceGraph_ELBO's own gradient."""
    model = LinearGaussianVAE(x_dim=3, z_dim=2)
    x = model.sample_data(5)
    obj = build_objective("score", 1)

    def guide(batch):  # pyro.module exposes the parameters as param sites to loss_and_grads
        pyro.module("lg", model)
        model.guide(batch)

    tracegraph = TraceGraph_ELBO()
    tracegraph.loss(model.model, obj.wrap_guide(guide), Batch(x))  # inspects the model once
    obj.differentiable_loss(model.model, guide, Batch(x))
    pyro.set_rng_seed(7)
    model.zero_grad()
    tracegraph.loss_and_grads(model.model, obj.wrap_guide(guide), Batch(x))
    expected = [p.grad.clone() for p in model.parameters()]
    pyro.set_rng_seed(7)
    model.zero_grad()
    obj.differentiable_loss(model.model, guide, Batch(x)).backward()
    for e, p in zip(expected, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, e)


def test_renyi_refuses_a_non_reparameterized_guide_and_iwae_takes_it_with_vimco():
    model = LinearGaussianVAE()
    from aevb.inference.objectives import ScoreFunction

    batch = Batch(model.sample_data(3))
    with pytest.raises(ValueError, match="renyi needs reparameterized latents"):
        build_objective("renyi", 2).elbo.differentiable_loss(
            model.model, ScoreFunction()(model.guide), batch)
    # the same samples give the same value; only the gradient's estimator differs
    pyro.set_rng_seed(1)
    pathwise = build_objective("iwae", 2).elbo.differentiable_loss(model.model, model.guide, batch)
    pyro.set_rng_seed(1)
    vimco = build_objective("iwae", 2).elbo.differentiable_loss(
        model.model, ScoreFunction()(model.guide), batch)
    torch.testing.assert_close(vimco, pathwise)


def test_a_critic_is_built_for_the_model_trained_by_fast_refused_by_svi_and_by_kl_weights():
    """``elbo=aae`` adapted to a model builds its critic for the model's latent size; the fast
    engine steps it with the model (and saves it); SVI, which sees the model's parameters only,
    and a KL weight, which aae has no term for, are refused with the way out."""
    from aevb.inference.errors import ConfigError
    from aevb.inference.objectives import IncompatibleObjective, KLSchedule, objective_for_model
    from aevb.inference.training.engines import build_engine

    model = VAE(z_dim=3, hidden_sizes=[16])
    batch = Batch(torch.rand(6, 1, 28, 28).bernoulli())
    objective = objective_for_model("aae", 1, model, batch, critic_hidden=8)
    assert objective.critic.net[0].in_features == 3 and objective.critic.net[0].out_features == 8
    engine = build_engine("fast", model, objective, "adam", 1e-3)
    trained = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in objective.critic.parameters()} <= trained
    assert {id(p) for p in model.parameters()} <= trained
    before = objective.critic.net[0].weight.clone()
    engine.step(batch)
    assert not torch.equal(before, objective.critic.net[0].weight)
    assert set(engine.state_dict()["critic"]) == set(objective.critic.state_dict())
    with pytest.raises(ConfigError, match="train.engine=svi .* trains a critic .*train.engine=fast"):
        build_engine("svi", model, objective, "adam", 1e-3)
    with pytest.raises(IncompatibleObjective, match="elbo=aae has none"):
        objective.with_kl_weight(KLSchedule(beta=0.5).handler())
    assert objective_for_model("elbo", 1, model, batch).critic is None
