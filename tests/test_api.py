"""aevb as a library: one namespace, a model object of the user's own trained on arrays with
aevb.fit, loaded back with aevb.load, the same figures as the CLI, and the contract as a user
meets it (plain PyroModules, their defaults, a plain pyro.plate refused)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

import aevb
from aevb.cli import main

TINY = ["train.batch_size=16", "eval.num_samples=4", "eval.num_images=4", "train.progress=false",
        "train.tensorboard=false"]


class MoGPriorVAE(PyroModule):
    """A plain PyroModule as a user writes it in a notebook cell: a VAE with a learned
    mixture-of-Gaussians prior, no aevb base class, no check_data, its own plate."""

    def __init__(self, x_dim=12, z_dim=2, components=3):
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Sequential(nn.Linear(x_dim, 16), nn.Tanh(), nn.Linear(16, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))
        self.locs = nn.Parameter(torch.randn(components, z_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def plate(self, batch):
        return pyro.plate("data", batch.num_data or len(batch), subsample=batch.index)

    def prior(self, n):
        mix = dist.Categorical(logits=self.logits)
        comp = dist.Normal(self.locs, 1.0).to_event(1)
        return dist.MixtureSameFamily(mix, comp).expand([n])

    def model(self, batch):
        with self.plate(batch):
            z = pyro.sample("z", self.prior(len(batch)))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=batch.x)

    def guide(self, batch):
        h = self.enc(batch.x)
        with self.plate(batch):
            pyro.sample("z", dist.Normal(h[..., :self.z_dim], h[..., self.z_dim:].exp())
                        .to_event(1))

    def generate(self, n):
        return torch.sigmoid(self.dec(self.prior(n).sample()))


def binary(n, d=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.3), generator=gen)


def test_everything_public_is_reachable_from_one_namespace():
    for name in ("fit", "load", "evaluate", "VAE", "LatentVariableModel", "Batch", "Run",
                 "register_model", "OBJECTIVES", "POSTERIORS", "DATASETS", "load_spec",
                 "load_config", "Config"):
        assert hasattr(aevb, name), name
    assert aevb.load_spec("dlgm2").name  # a shipped spec by name
    assert {"iwae", "meanfield", "elbo"} <= set(aevb.OBJECTIVES.names())


def test_a_script_beside_its_own_models_and_inference_modules_trains(tmp_path):
    (tmp_path / "models.py").write_text("raise RuntimeError('the user\\'s models.py')\n")
    (tmp_path / "inference.py").write_text("raise RuntimeError('the user\\'s inference.py')\n")
    (tmp_path / "train.py").write_text(textwrap.dedent(f"""
        import torch, aevb
        x = torch.bernoulli(torch.full((64, 1, 6, 6), 0.4))
        run = aevb.fit(aevb.VAE(x_shape=(1, 6, 6), z_dim=2, hidden_sizes=(8,)), data=x,
                       epochs=1, overrides={TINY!r}, run_dir="run")
        print(run.evaluation["num_images"], run.evaluation["split"])
        """))
    out = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["6", "valid"]  # round(10% of 64) held out; no test split given


def test_fit_a_notebook_class_on_arrays_then_load_evaluate_and_sample(tmp_path):
    x_train, x_test = binary(200).numpy(), binary(40, seed=1).numpy()
    torch.manual_seed(0)
    run = aevb.fit(MoGPriorVAE(), data=(x_train, None, x_test), elbo="iwae", num_particles=3,
                   epochs=2, overrides=TINY, run_dir=tmp_path / "run")
    assert [r["epoch"] for r in run.metrics] == [1, 2]
    assert run.metrics[0]["objective"] == "iwae" and run.metrics[0]["num_particles"] == 3
    saved = run.evaluation
    assert saved["split"] == "test" and saved["num_images"] == 40
    record = json.loads((run.path / "run.json").read_text())
    assert record["model"]["class"].endswith("MoGPriorVAE")
    assert record["data"]["x_shape"] == [12]
    again = run.evaluate()  # the run's own test split, the same seed: the same figures
    assert again["log_likelihood"] == pytest.approx(saved["log_likelihood"], abs=1e-5)
    with pytest.raises(aevb.ConfigError, match="pass one to load its state into"):
        aevb.load(run.path)
    loaded = aevb.load(run.path, model=MoGPriorVAE(), data=(x_train, None, x_test))
    for name, p in run.model.state_dict().items():
        assert torch.equal(p, loaded.model.state_dict()[name])
    assert loaded.evaluate()["log_likelihood"] == pytest.approx(saved["log_likelihood"],
                                                                abs=1e-5)
    given = run.evaluate(x_test, num_samples=4)  # arrays handed to evaluate
    assert given["log_likelihood"] == pytest.approx(saved["log_likelihood"], abs=1e-5)
    assert torch.equal(run.sample(5), loaded.sample(5)) and run.sample(5).shape == (5, 12)


def test_resume_loads_the_state_into_the_object_passed(tmp_path):
    x = binary(100)
    first = aevb.fit(MoGPriorVAE(), data=x, epochs=1, overrides=TINY, run_dir=tmp_path / "r",
                     evaluate=False)
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}
    fresh = MoGPriorVAE()
    run = aevb.fit(fresh, data=x, epochs=2, overrides=TINY, run_dir=tmp_path / "r", resume=True,
                   evaluate=False)
    assert run.model is fresh and [r["epoch"] for r in run.metrics] == [1, 2]
    assert any(not torch.equal(trained[k], v) for k, v in fresh.state_dict().items())


def test_api_and_cli_give_the_same_figures_on_the_same_run(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(120, 1, 8, 8, generator=gen)
    np.savez(tmp_path / "d.npz", x=x.numpy(), x_test=x[:30].numpy())
    run = aevb.fit("vae", data=tmp_path / "d.npz", epochs=1, run_dir=tmp_path / "run",
                   overrides=[*TINY, "model.z_dim=2", "model.hidden_sizes=[8]",
                              "data.binarization=static"])
    assert main(["evaluate", str(run.path), "--num-samples", "4", "--no-progress",
                 "--out", str(tmp_path / "cli.json")]) == 0
    cli = json.loads((tmp_path / "cli.json").read_text())
    api = aevb.evaluate(run.path, num_samples=4)
    for key in ("log_likelihood", "elbo", "active_units", "num_images"):
        assert api[key] == pytest.approx(cli[key], abs=1e-5), key
    assert main(["sample", str(run.path), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert torch.equal(aevb.load(run.path).sample(4), run.sample(4))


def test_a_plain_pyro_plate_is_refused_with_the_fix(tmp_path):
    class UnscaledPlate(MoGPriorVAE):
        def plate(self, batch):
            return pyro.plate("data", len(batch))

    with pytest.raises(aevb.ConfigError, match=r"scale 1, but a minibatch of 16 out of 90.*"
                                               r"data_plate"):
        aevb.fit(UnscaledPlate(), data=binary(100), epochs=1, overrides=TINY,
                 run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


USER_FILE = """
import pyro, torch
import pyro.distributions as dist
from torch import nn
from aevb import LatentVariableModel

class Small(LatentVariableModel):
    def __init__(self, x_shape, z_dim=16, width=8):
        super().__init__()
        self.z_dim = z_dim
        n = int(torch.tensor(x_shape).prod())
        self.enc, self.dec = nn.Linear(n, 2 * z_dim), nn.Linear(z_dim, n)
        self.x_shape = tuple(x_shape)

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(batch), self.z_dim), 1.).to_event(1))
            logits = self.dec(z).reshape(*z.shape[:-1], *self.x_shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(len(self.x_shape)),
                        obs=batch.x)

    def guide(self, batch):
        h = self.enc(batch.x.reshape(len(batch), -1))
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(h[:, :self.z_dim], h[:, self.z_dim:].exp()).to_event(1))
"""


def test_the_users_constructor_defaults_are_kept_and_recorded(tmp_path):
    (tmp_path / "small.py").write_text(USER_FILE)
    np.save(tmp_path / "x.npy", binary(60, d=9).reshape(60, 1, 3, 3).numpy())
    run = tmp_path / "run"
    assert main(["train", f"model={tmp_path / 'small.py'}:Small", "--data",
                 str(tmp_path / "x.npy"), "--run-dir", str(run), "train.epochs=1", *TINY]) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["model"]["arguments"] == {"x_shape": [1, 3, 3], "z_dim": 16, "width": 8}
    config = (run / "config.yaml").read_text()
    assert "z_dim: null" in config and "hidden_sizes: null" in config  # not set, not passed
    assert main(["train", f"model={tmp_path / 'small.py'}:Small", "model.hidden_sizes=[4]",
                 "--data", str(tmp_path / "x.npy"), "--run-dir", str(tmp_path / "r2"),
                 *TINY]) == 2


def test_meanfield_refusal_names_the_mixture_prior(tmp_path):
    with pytest.raises(aevb.ConfigError, match=r"z \(Normal \|\| MixtureSameFamily: the prior p "
                                               r"is a mixture\)"):
        aevb.fit(MoGPriorVAE(), data=binary(50), elbo="meanfield", epochs=1, overrides=TINY,
                 run_dir=tmp_path / "run")


def test_a_model_object_takes_a_shipped_config_without_its_model_section(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((60, 1, 4, 4), 0.3), generator=gen)
    model = aevb.VAE(x_shape=(1, 4, 4), z_dim=2, hidden_sizes=(8,))
    run = aevb.fit(model, data=x, config="vae_fashion", epochs=1, evaluate=False,
                   overrides=[*TINY, "data.validation_size=0.2"], run_dir=tmp_path / "run")
    assert run.config.model.z_dim is None and run.config.optim.lr == 1e-3
    with pytest.raises(aevb.ConfigError, match="model.z_dim is set, but the model is an object"):
        aevb.fit(model, data=x, overrides=["model.z_dim=3"], run_dir=tmp_path / "r2")
