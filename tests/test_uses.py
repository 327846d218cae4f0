"""What trained models are for: latent paths (aevb.uses)."""

import math
from pathlib import Path

import pytest
import torch

from aevb.models import VAE, LinearGaussianVAE, SpecModel
from aevb.uses.amortization import amortization_gap
from aevb.uses.conditional import analogies, samples_by_class
from aevb.uses.imputation import impute, make_mask
from aevb.uses.interpolation import interpolate, lerp, slerp

SPECS = Path(__file__).resolve().parents[1] / "configs" / "specs"


def test_slerp_keeps_the_norm_between_orthogonal_codes_and_meets_both_ends():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    t = torch.linspace(0, 1, 7)
    path = slerp(a, b, t)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(path.norm(dim=-1), torch.full((7,), 3.0))
    assert torch.allclose(path[3], torch.tensor([3.0, 3.0]) / math.sqrt(2))  # the arc's middle
    assert lerp(a, b, t)[3].norm() == pytest.approx(3 / math.sqrt(2))  # the chord's falls short
    assert torch.allclose(slerp(a, 2 * a, t), lerp(a, 2 * a, t))  # parallel: the straight line


def test_a_linear_decoder_maps_the_latent_line_to_the_line_between_the_decoded_ends():
    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=5, z_dim=2)
    x_a, x_b = torch.randn(5), torch.randn(5)
    path = interpolate(model, x_a, x_b, steps=5)
    ends = model.decode(torch.stack([model.encode(x_a), model.encode(x_b)]))
    assert torch.allclose(path, lerp(ends[0], ends[1], torch.linspace(0, 1, 5)), atol=1e-5)


def test_vae_paths_start_and_end_at_the_reconstructions():
    torch.manual_seed(0)
    model = VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))
    x = torch.bernoulli(torch.rand(2, 1, 6, 6))
    for path in ("linear", "slerp"):
        images = interpolate(model, x[0], x[1], steps=6, path=path)
        assert images.shape == (6, 1, 6, 6)
        assert torch.allclose(images[[0, -1]], model.reconstruct(x), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(model, x[0], x[1], steps=1)
    with pytest.raises(ValueError, match="not one of"):
        interpolate(model, x[0], x[1], path="curved")


def test_labelled_models_keep_one_class_along_the_path():
    torch.manual_seed(0)
    m2 = SpecModel((1, 6, 6), str(SPECS / "m2.yaml"))
    x = torch.bernoulli(torch.rand(2, 1, 6, 6))
    y = m2.label_logits(x[:1]).argmax(-1)
    images = interpolate(m2, x[0], x[1], steps=4)
    assert torch.allclose(images[0], m2.reconstruct(x[:1])[0], atol=1e-5)  # its own class
    assert images.shape == (4, 1, 6, 6)
    other = (y + 1) % 10
    assert not torch.allclose(interpolate(m2, x[0], x[1], steps=4, y_a=other[0]), images)
    cvae = SpecModel((1, 6, 6), str(SPECS / "cvae.yaml"))
    with pytest.raises(ValueError, match="requires labels"):
        interpolate(cvae, x[0], x[1])
    assert interpolate(cvae, x[0], x[1], steps=3, y_a=torch.tensor(4)).shape == (3, 1, 6, 6)


def test_analogies_hold_the_style_and_change_the_class_along_each_row():
    torch.manual_seed(0)
    for name, y in (("m2", None), ("cvae", torch.tensor([2, 7]))):
        model = SpecModel((1, 6, 6), str(SPECS / f"{name}.yaml"))
        x = torch.bernoulli(torch.rand(2, 1, 6, 6))
        grid = analogies(model, x, y)
        assert grid.shape == (2 * 11, 1, 6, 6)
        assert torch.equal(grid[0], x[0]) and torch.equal(grid[11], x[1])
        label = y if y is not None else model.label_logits(x).argmax(-1)
        own = model.reconstruct(x, y) if y is not None else model.reconstruct(x)
        for row in range(2):  # the image's own class reproduces its reconstruction
            assert torch.allclose(grid[row * 11 + 1 + label[row]], own[row], atol=1e-5)
        assert not torch.allclose(grid[1], grid[2])  # the class changes the image


def test_class_conditional_samples_share_z_along_a_row():
    torch.manual_seed(0)
    model = SpecModel((1, 6, 6), str(SPECS / "cvae.yaml"))
    torch.manual_seed(1)
    grid = samples_by_class(model, per_class=3)
    assert grid.shape == (30, 1, 6, 6)
    torch.manual_seed(1)
    z = model.sample_prior(model.code, 3)
    expected = model.decode(z.repeat_interleave(10, dim=0), y=torch.arange(10).repeat(3))
    assert torch.allclose(grid, expected)
    with pytest.raises(ValueError, match="no categorical label"):
        samples_by_class(VAE((1, 6, 6), z_dim=2, hidden_sizes=(8,)))


def exact_conditional(model, x, observed):
    """p(x_miss | x_obs) of the linear-Gaussian model: x ~ N(b, W W^T + sigma^2 I)."""
    cov = model.W @ model.W.T + model.log_sigma.exp() ** 2 * torch.eye(model.x_dim)
    o, m = observed, ~observed
    gain = cov[m][:, o] @ torch.linalg.inv(cov[o][:, o])
    mean = model.b[m] + gain @ (x[o] - model.b[o])
    return mean, cov[m][:, m] - gain @ cov[o][:, m]


@torch.no_grad()
def test_metropolis_within_gibbs_samples_the_exact_conditional_and_pseudo_gibbs_does_not():
    """Linear-Gaussian model, two of four coordinates missing, an encoder with the mean-field
    posterior's means and 1.5 times its scales: Metropolis-within-Gibbs (Mattei & Frellsen
    2018) samples p(x_miss | x_obs); pseudo-Gibbs (Rezende et al. 2014) inherits the encoder's
    over-dispersion."""
    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=4, z_dim=2, sigma=0.5)
    model.set_near_optimal_guide(inflate=1.5)
    x = model.sample_data(1)[0]
    observed = torch.tensor([True, True, False, False])
    mean, cov = exact_conditional(model, x, observed)
    chains, steps = 4000, 60
    batch, mask = x.expand(chains, 4), observed.expand(chains, 4)
    mwg = impute(model, batch, mask, sampler="mwg", steps=steps)
    draws = mwg.samples[-1][:, ~observed]  # one draw per chain, after 59 steps
    se = (cov.diagonal() / chains).sqrt()
    assert ((draws.mean(0) - mean).abs() < 4 * se).all()
    assert torch.allclose(torch.cov(draws.T), cov, rtol=0.08, atol=0.05)
    assert 0.2 < mwg.acceptance < 1.0
    assert torch.equal(mwg.samples[:, :, observed], batch[:, observed].expand(steps, -1, -1))
    gibbs = impute(model, batch, mask, sampler="pseudo-gibbs", steps=steps)
    spread = torch.cov(gibbs.samples[-1][:, ~observed].T).diagonal()
    assert (spread > 1.3 * cov.diagonal()).all() and gibbs.acceptance == 1.0
    # the single imputation is the conditional mean, to the chain's error
    assert ((mwg.mean[:, ~observed].mean(0) - mean).abs() < 4 * se).all()



@torch.no_grad()
def test_the_heldout_log_likelihood_is_the_exact_conditional_density():
    from aevb.uses.imputation import heldout_log_likelihood

    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=4, z_dim=2, sigma=0.5)
    model.set_near_optimal_guide(inflate=1.5)
    x = model.sample_data(3)
    observed = torch.tensor([True, False, True, False])
    estimate = heldout_log_likelihood(model, x, observed.expand(3, 4), num_samples=40000,
                                      chunk=4000)
    for i in range(3):
        mean, cov = exact_conditional(model, x[i], observed)
        exact = torch.distributions.MultivariateNormal(mean, cov).log_prob(x[i][~observed])
        assert float(estimate[i]) == pytest.approx(float(exact), abs=0.03)


def test_images_keep_their_observed_pixels_and_bad_input_is_named():
    torch.manual_seed(0)
    model = VAE((1, 6, 6), z_dim=3, hidden_sizes=(16,))
    x = torch.bernoulli(torch.rand(3, 1, 6, 6))
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., 2:4, 2:4] = False  # a centre square
    for sampler in ("mwg", "pseudo-gibbs"):
        result = impute(model, x, mask, sampler=sampler, steps=4)
        assert result.samples.shape == (4, 3, 1, 6, 6)
        assert torch.equal(result.samples[:, mask], x[mask].expand(4, -1))
        assert set(result.samples[:, ~mask].unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws
        assert ((result.mean[~mask] > 0) & (result.mean[~mask] < 1)).all()  # probabilities
    with pytest.raises(ValueError, match="not one of"):
        impute(model, x, mask, sampler="gibbs")
    with pytest.raises(ValueError, match="the mask has shape"):
        impute(model, x, mask[:1])
    with pytest.raises(ValueError, match="lacks prior"):
        impute(SpecModel((1, 6, 6), str(SPECS / "cvae.yaml")), x, mask)


def test_masks_hide_what_they_say():
    shape = (2, 1, 28, 28)
    centre = make_mask("center", shape)
    assert (~centre).sum() == 2 * 14 * 14 and not centre[0, 0, 14, 14]
    top = make_mask("top", shape)
    assert not top[..., :14, :].any() and top[..., 14:, :].all()
    bottom = make_mask("bottom", shape)
    assert bottom[..., :14, :].all() and not bottom[..., 14:, :].any()
    rate = (~make_mask("random:0.3", shape, seed=1)).float().mean()
    assert 0.27 < rate < 0.33
    assert torch.equal(make_mask("random:0.3", shape, seed=1), make_mask("random:0.3", shape,
                                                                          seed=1))
    for bad, message in (("random:1.5", "0 < RATE < 1"), ("left", "is not one of"),
                         ("nowhere.npy", "does not exist")):
        with pytest.raises(ValueError, match=message):
            make_mask(bad, shape)


def test_a_mask_file_broadcasts_over_the_images(tmp_path):
    import numpy as np

    grid = np.ones((28, 28))
    grid[:, :5] = 0
    np.save(tmp_path / "left.npy", grid)
    mask = make_mask(str(tmp_path / "left.npy"), (3, 1, 28, 28))
    assert mask.shape == (3, 1, 28, 28) and not mask[..., :5].any() and mask[..., 5:].all()
    np.save(tmp_path / "wrong.npy", np.ones((5, 5)))
    with pytest.raises(ValueError, match="does not broadcast"):
        make_mask(str(tmp_path / "wrong.npy"), (3, 1, 28, 28))


def test_refinement_reaches_the_best_diagonal_gaussian_from_a_poor_encoder():
    """Linear-Gaussian model: the best diagonal Gaussian per image has a closed form (the
    mean-field optimum; its ELBO is ``exact_elbo`` of the optimal guide). From a random
    encoder refinement reaches it, and the gaps add up to log p(x) - ELBO."""
    import copy

    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=4, z_dim=2, sigma=0.5)  # a random (poor) encoder
    x = model.sample_data(50)
    best = copy.deepcopy(model)
    with torch.no_grad():
        best.set_near_optimal_guide()
        optimum, poor = float(best.exact_elbo(x).mean()), float(model.exact_elbo(x).mean())
        log_px = float(model.log_marginal(x).mean())
    result = amortization_gap(model, x, steps=300, lr=0.05, samples=20, num_samples=2000)
    assert result["elbo_refined"] == pytest.approx(optimum, abs=0.03)
    assert result["elbo_amortized"] == pytest.approx(poor, abs=0.5)
    assert result["log_likelihood"] == pytest.approx(log_px, abs=0.02)
    assert result["amortization_gap"] == pytest.approx(optimum - poor, abs=0.5)
    assert result["inference_gap"] == pytest.approx(
        result["amortization_gap"] + result["approximation_gap"], abs=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # the network is left as it was
