"""β-VAE and KL warm-up: the weight lands on the latent sites' scale, and nowhere else."""

import json

import pytest
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from aevb.config import load_config
from aevb.inference.errors import ConfigError
from aevb.inference.objectives import IncompatibleObjective, build_objective
from aevb.inference.objectives.annealing import KLSchedule, KLWeight
from aevb.models.base import Batch
from aevb.models.vae import VAE
from aevb.runs import train


def tiny():
    torch.manual_seed(0)
    return VAE((1, 4, 4), z_dim=3, hidden_sizes=(8,))


def batch():
    gen = torch.Generator().manual_seed(0)
    return Batch(torch.bernoulli(torch.rand(8, 1, 4, 4, generator=gen), generator=gen), None,
                 torch.arange(8), 100)


def test_beta_scales_the_latent_sites_in_model_and_guide_only():
    model, b = tiny(), batch()
    objective = build_objective("elbo").with_kl_weight(KLWeight(4.0))
    guide = poutine.trace(objective.wrap_guide(model.guide)).get_trace(b)
    replayed = poutine.trace(poutine.replay(objective.wrap_model(model.model), trace=guide)
                             ).get_trace(b)
    assert guide.nodes["z"]["scale"] == pytest.approx(4.0 * 100 / 8)
    assert replayed.nodes["z"]["scale"] == pytest.approx(4.0 * 100 / 8)
    assert replayed.nodes["x"]["scale"] == pytest.approx(100 / 8)


def test_meanfield_with_beta_subtracts_beta_times_the_analytic_kl():
    model, b = tiny(), batch()
    plain = build_objective("meanfield")
    weighted = plain.with_kl_weight(KLWeight(3.0))
    plain.differentiable_loss(model.model, model.guide, b)  # Pyro's plate-nesting guess draws
    torch.manual_seed(1)
    loss_1 = plain.differentiable_loss(model.model, model.guide, b)
    torch.manual_seed(1)
    loss_3 = weighted.differentiable_loss(model.model, model.guide, b)
    q = model.posterior(b.x)
    kl = kl_divergence(q, model.prior(b.x).expand(q.batch_shape)).sum() * 100 / 8
    torch.testing.assert_close(loss_3 - loss_1, 2.0 * kl, rtol=1e-4, atol=1e-3)


def test_warmup_is_linear_over_its_epochs_then_beta():
    schedule = KLSchedule(beta=2.0, warmup_epochs=4)
    assert [schedule.weight(t) for t in (0.0, 1.0, 2.0, 4.0, 6.5)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert KLSchedule(beta=4.0).weight(0.0) == 4.0 and not KLSchedule().active


def test_weight_is_refused_where_it_means_nothing():
    with pytest.raises(IncompatibleObjective, match="elbo=iwae has none"):
        build_objective("iwae", 5).with_kl_weight(KLWeight(2.0))
    with pytest.raises(ConfigError, match="kl.beta"):
        load_config(None, ["kl.beta=0"])
    with pytest.raises(ConfigError, match="'kl.start'"):
        load_config(None, ["kl.start=-1"])
    with pytest.raises(ConfigError, match="kl.sites=\\[z\\]"):
        load_config(None, ["kl.sites=[]"])


def test_an_enumerated_model_takes_a_weight_on_its_continuous_latents_only():
    """M2: y is summed out by TraceEnum_ELBO, so the weight may name z (``kl.sites``) and
    nothing that is enumerated; a name the guide does not sample is refused."""
    from aevb.inference.objectives import objective_for_model
    from aevb.models.spec import load_spec
    from aevb.models.spec.compiler import SpecModel
    from aevb.models.spec.schema import to_dict

    torch.manual_seed(0)
    model = SpecModel((1, 4, 4), to_dict(load_spec("configs/specs/m2.yaml")))
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    objective = objective_for_model("elbo", 1, model, Batch(x, torch.arange(6) % 10))
    assert objective.with_kl_weight(KLWeight(3.0, sites={"z"})).kl_weight.sites == {"z"}
    with pytest.raises(IncompatibleObjective, match=r"enumerated .* y, .*kl.sites=\[z\]"):
        objective.with_kl_weight(KLWeight(3.0))
    with pytest.raises(IncompatibleObjective, match=r"enumerated .* y,"):
        objective.with_kl_weight(KLWeight(3.0, sites={"z", "y"}))
    with pytest.raises(IncompatibleObjective, match="names w, which the guide does not sample"):
        objective.with_kl_weight(KLWeight(3.0, sites={"w"}))


@pytest.mark.data
def test_trainer_warms_the_kl_weight_up_per_step(fashion_dir, tmp_path):
    cfg = load_config("configs/vae_fashion.yaml", [
        f"data.data_dir={fashion_dir}", "data.train_size=512", "data.test_size=64",
        "model.hidden_sizes=[16]", "model.z_dim=2", "train.epochs=3", "train.progress=false",
        "train.tensorboard=false", "kl.beta=4", "kl.warmup_epochs=2", "elbo=meanfield"])
    run = train(cfg, tmp_path / "beta", final_evaluation=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_weight"] for r in rows] == pytest.approx([2.0, 4.0, 4.0])
    bad = load_config("configs/vae_fashion.yaml", [
        f"data.data_dir={fashion_dir}", "data.train_size=64", "elbo=iwae", "kl.beta=4",
        "train.progress=false"])
    with pytest.raises(ConfigError, match="has none"):
        train(bad, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
