"""Evaluation figures against known answers on the linear-Gaussian model."""

import pytest
import torch

from aevb.inference import Split
from aevb.inference.evaluation.likelihood import active_units, importance_sampled, mean_elbo
from aevb.models import LinearGaussianVAE


@pytest.fixture
def lg():
    torch.manual_seed(0)
    model = LinearGaussianVAE(x_dim=4, z_dim=3, sigma=0.5)
    model.set_near_optimal_guide(inflate=3.0)  # over-dispersed: a well-behaved IS proposal
    return model


@pytest.mark.parametrize("sample_chunk,batch_size", [(2000, 64), (300, 7)])
def test_chunked_importance_sampling_recovers_exact_log_likelihood(lg, sample_chunk, batch_size):
    x = lg.sample_data(64)
    split = Split(x, torch.zeros(64, dtype=torch.long))
    est = importance_sampled(lg, split, num_samples=2000, sample_chunk=sample_chunk,
                             batch_size=batch_size)
    exact = lg.log_marginal(x).detach()
    assert est["log_likelihood"].shape == (64,)
    error = est["log_likelihood"] - exact
    assert abs(float(error.mean())) < 0.03 and float(error.abs().max()) < 0.25
    # the mean log-weight is the ELBO: below log p(x) by the (positive) KL gap
    assert (est["elbo"] < est["log_likelihood"]).all()
    exact_elbo = lg.exact_elbo(x).detach()
    assert float(est["elbo"].mean()) == pytest.approx(float(exact_elbo.mean()), abs=0.05)
    assert mean_elbo(lg, split, num_particles=500) == pytest.approx(float(exact_elbo.mean()),
                                                                   abs=0.1)


def test_active_units_counts_units_whose_posterior_mean_varies(lg):
    x = lg.sample_data(2000)
    with torch.no_grad():
        lg.A[1] = 0.0  # unit 1's posterior mean no longer depends on x
        lg.A[2] *= 0.01  # unit 2's varies, but with variance far below 0.01
    split = Split(x, torch.zeros(2000, dtype=torch.long))
    assert active_units(lg, split) == 1
    expected_var = torch.diag(lg.A @ torch.cov(x.T) @ lg.A.T).detach()
    assert float(expected_var[0]) > 0.01 > float(expected_var[2])


def test_the_evaluation_bar_says_k_and_counts_images(lg, capsys):
    x = lg.sample_data(30)
    importance_sampled(lg, Split(x), num_samples=50, batch_size=7, progress=True)
    err = capsys.readouterr().err
    assert "log p(x): 50 importance samples x 30 images" in err
    assert "0/30 [" in err and "img/s" in err  # counted in images, not batches
