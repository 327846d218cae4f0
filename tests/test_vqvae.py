"""VQ-VAE: the objective's terms by hand, the straight-through gradient, the EMA codebook, the
causal prior, perplexity, and a short run on real data that uses many codes."""

import json
import math

import pyro
import pytest
import torch

from aevb.config import load_config
from aevb.inference.objectives import build_objective
from aevb.models import VQVAE, Batch
from aevb.models.vqvae import GRID, CodePrior, perplexity
from aevb.runs import train


def images(n=6, seed=0):
    return torch.bernoulli(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)))


def test_the_loss_is_reconstruction_plus_prior_plus_codebook_and_commitment_terms():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, commitment=0.3, ema=False, prior="uniform")
    model.initialized.fill_(True)  # no data-dependent initialisation in this pass
    x = images()
    loss = build_objective("elbo", 1).differentiable_loss(model.model, model.guide, Batch(x))
    with torch.no_grad():
        z_e = model.encoder(x)
        codes = model.nearest_codes(z_e)
        z_q = model.codebook[codes].movedim(-1, -3)
        distances = ((z_e.unsqueeze(1) - model.codebook.view(1, 8, 4, 1, 1)) ** 2).sum(2)
        assert torch.equal(codes, distances.argmin(1))
        log_lik = model.likelihood(model.decoder(z_q)).log_prob(x).sum()
        vq = (1 + 0.3) * ((z_e - z_q) ** 2).sum()
        expected = -log_lik + len(x) * GRID * GRID * math.log(8) + vq
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)
    # evaluation passes carry no codebook/commitment term: a lower bound on log p(x)
    model.eval()
    with torch.no_grad():
        bound = -build_objective("elbo", 1).differentiable_loss(model.model, model.guide, Batch(x))
    torch.testing.assert_close(bound, log_lik - len(x) * GRID * GRID * math.log(8), rtol=1e-5,
                               atol=1e-3)


def test_the_encoder_gets_the_decoders_gradient_straight_through():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, commitment=0.0, prior="uniform")
    x = images()
    build_objective("elbo", 1).differentiable_loss(model.model, model.guide, Batch(x)).backward()
    grad = model.encoder[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0  # only the reconstruction reaches it here
    assert not any(isinstance(b, torch.nn.Parameter) for b in [model.codebook])


def test_ema_codebook_moves_towards_the_mean_of_its_assigned_vectors():
    model = VQVAE(num_codes=2, code_dim=1, ema_decay=0.5, prior="uniform")
    with torch.no_grad():
        model.codebook.copy_(torch.tensor([[0.0], [10.0]]))
        model.ema_sum.copy_(model.codebook)
        model.ema_count.fill_(1.0)
    z_e = torch.full((1, 1, GRID, GRID), 2.0)  # every vector nearest code 0
    model._update_codebook(z_e, model.nearest_codes(z_e))
    # count_0 = 0.5 + 0.5*49, sum_0 = 0.5*0 + 0.5*98 -> 49 / 25 (smoothing is ~1e-5)
    torch.testing.assert_close(model.codebook[0, 0], torch.tensor(49 / 25), rtol=1e-4, atol=0.0)
    torch.testing.assert_close(model.codebook[1, 0], torch.tensor(10.0), rtol=1e-3, atol=0.0)


def test_the_prior_is_causal_in_raster_order():
    torch.manual_seed(0)
    prior = CodePrior(num_codes=5, channels=8)
    codes = torch.randint(5, (1, GRID, GRID))
    base = prior.logits(codes)
    i, j = 3, 4
    changed = codes.clone()
    changed[0, i, j] = (codes[0, i, j] + 1) % 5
    diff = (prior.logits(changed) - base).abs().sum(-1)[0]
    flat = diff.flatten()
    pos = i * GRID + j
    assert flat[: pos + 1].max() == 0  # positions up to and including (i, j) do not see it
    assert flat[pos + 1:].max() > 0
    samples = prior.sample(3, "cpu")
    assert samples.shape == (3, GRID, GRID) and samples.max() < 5


def test_the_first_batch_initialises_the_codebook_and_dead_codes_restart():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, ema=False, prior="uniform")
    x = images()
    pyro.poutine.trace(model.guide).get_trace(Batch(x))
    with torch.no_grad():
        outputs = model.encoder(x).movedim(1, -1).reshape(-1, 4)
    # every code now is one of the batch's encoder outputs
    assert all((outputs - e).abs().sum(-1).min() < 1e-6 for e in model.codebook)
    assert bool(model.initialized)
    model.usage.fill_(1.0)
    model.usage[3] = 0.0
    with torch.no_grad():
        model.codebook[3] = 1e3  # never the nearest: its usage stays 0, so it restarts
    before = model.codebook.clone()
    pyro.poutine.trace(model.guide).get_trace(Batch(images(seed=1)))
    assert not torch.equal(model.codebook[3], before[3])


def test_perplexity():
    assert perplexity(torch.tensor([2.0, 2.0, 0.0, 0.0])) == pytest.approx(2.0)
    assert perplexity(torch.ones(16)) == pytest.approx(16.0)
    assert perplexity(torch.tensor([5.0, 0.0])) == pytest.approx(1.0)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="prior='pixelsnail': use autoregressive or uniform"):
        VQVAE(prior="pixelsnail")
    with pytest.raises(ValueError, match="28x28"):
        VQVAE(x_shape=(1, 32, 32))


@pytest.mark.data
def test_a_short_run_uses_many_codes_and_learns_a_prior_that_generates(fashion_dir, tmp_path):
    cfg = load_config(None, [f"data.data_dir={fashion_dir}", "data.train_size=3000",
                             "data.test_size=300", "data.validation_size=300", "eval.num_samples=1",
                             "train.epochs=2",
                             "train.progress=false", "train.tensorboard=false", "model=vqvae",
                             "model.options={num_codes: 32, code_dim: 8}"])
    pyro.set_rng_seed(0)
    run = train(cfg, tmp_path / "run")
    figures = json.loads((run / "evaluation.json").read_text())
    assert figures["codes_used"] > 1 and figures["perplexity"] > 2
    assert figures["reconstruction"] < 300, figures  # nats per image; untrained ~540
    assert figures["active_units"] is None
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["valid_elbo"] > rows[0]["valid_elbo"]
    assert (run / "samples.png").is_file()


def test_the_trainers_dry_run_leaves_the_codebook_alone():
    from aevb.runs import objective_from_config

    model = VQVAE(num_codes=8, code_dim=4)
    before = {n: b.clone() for n, b in model.named_buffers()}
    objective_from_config(load_config(None, ["model=vqvae"]), model, Batch(images(2)))
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())
    assert not bool(model.initialized)  # the first training batch initialises the codebook
