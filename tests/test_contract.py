"""Any model keeping the contract trains through aevb: user files, specs, objective checks."""

import json
import textwrap

import pytest
import torch
from PIL import Image
from pyro.infer import TraceEnum_ELBO

from aevb.builder import build_model
from aevb.cli import main
from aevb.config import load_config
from aevb.inference.errors import ConfigError
from aevb.models import Batch
from aevb.runs import objective_from_config

SMALL = ["data.train_size=600", "data.test_size=100", "eval.num_samples=10", "train.epochs=1",
         "--no-progress", "--device", "cpu"]

USER_MODEL = '''
import pyro
import torch
from pyro import distributions as dist
from torch import nn

from aevb.models import LatentVariableModel, register_model


@register_model("tiny_user_vae")
class TinyVAE(LatentVariableModel):
    """A user's model: plain Pyro, no aevb helpers but the data plate."""

    def __init__(self, x_shape=(1, 28, 28), code_size=3):
        super().__init__()
        self.code_size = code_size
        self.enc = nn.Linear(784, 2 * code_size)
        self.dec = nn.Linear(code_size, 784)

    def model(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(batch.x.new_zeros(self.code_size), 1.0).to_event(1))
            logits = self.dec(z).unflatten(-1, (1, 28, 28))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=batch.x)

    def guide(self, batch):
        loc, raw = self.enc(batch.x.flatten(1)).chunk(2, -1)
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))

    def encode(self, x):
        return self.enc(x.flatten(1)).chunk(2, -1)[0]

    def generate(self, n):
        return torch.sigmoid(self.dec(torch.randn(n, self.code_size))).unflatten(-1, (1, 28, 28))
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    # one file per session: its @register_model("tiny_user_vae") runs once
    path = tmp_path_factory.mktemp("user") / "my_model.py"
    path.write_text(textwrap.dedent(USER_MODEL))
    return path


@pytest.mark.data
@pytest.mark.parametrize("reference", [":TinyVAE", ":tiny_user_vae"])
def test_user_model_from_a_file_trains_checkpoints_resumes_and_evaluates(
        fashion_dir, tmp_path, user_file, reference, capsys):
    run = tmp_path / "run"
    args = ["--data-dir", str(fashion_dir), *SMALL]
    assert main(["train", f"model={user_file}{reference}", "model.options={code_size: 4}",
                 "--run-dir", str(run), *args]) == 0
    assert json.loads((run / "evaluation.json").read_text())["active_units"] is not None
    assert (run / "samples.png").is_file() and (run / "latent.png").is_file()
    # a run folder names code: it is imported only with the user's consent
    for command in (["train", "--resume", str(run), "train.epochs=2"], ["sample", str(run)],
                    ["evaluate", str(run), "--num-samples", "5"]):
        assert main([*command, "--no-progress"] if command[0] != "sample" else command) == 2
    assert "--trust-model-file" in capsys.readouterr().err
    assert not (run / "checkpoints" / "epoch-0002.pt").exists()
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress",
                 "--trust-model-file"]) == 0
    assert (run / "checkpoints" / "epoch-0002.pt").is_file()
    assert main(["evaluate", str(run), "--num-samples", "5", "--no-progress",
                 "--out", str(tmp_path / "ev.json"), "--trust-model-file"]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["epochs_trained"] == 2
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"),
                 "--trust-model-file"]) == 0


@pytest.mark.data
@pytest.mark.parametrize("spec, extra", [("cvae", []), ("dlgm2", ["elbo=iwae", "num_particles=3"]),
                                         ("m2", [])])
def test_specs_train_through_the_cli(fashion_dir, tmp_path, spec, extra):
    run = tmp_path / spec
    assert main(["train", "--spec", f"configs/specs/{spec}.yaml", "--run-dir", str(run),
                 "--data-dir", str(fashion_dir), *SMALL, *extra]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert -1000 < result["log_likelihood"] < 0 and result["log_likelihood"] >= result["elbo"] - 1
    assert "spec" in (run / "config.yaml").read_text()  # the run holds its model, not a path
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress"]) == 0
    # what a trained spec model is for: paths, and for labelled models conditional generation
    assert main(["interpolate", str(run), "--pair", "0,1", "--steps", "4"]) == 0
    assert (run / "interpolation-0-1-linear.png").is_file()
    labelled = spec != "dlgm2"
    assert main(["analogies", str(run), "--rows", "3"]) == (0 if labelled else 2)
    assert main(["sample", str(run), "--by-class", "-n", "20"]) == (0 if labelled else 2)
    if labelled:
        with Image.open(run / "analogies.png") as im:
            assert im.size == (11 * 28 + 12 * 2, 3 * 28 + 4 * 2)  # 3 rows: image + 10 classes
        with Image.open(run / "samples-by-class-2.png") as im:
            assert im.size == (10 * 28 + 11 * 2, 2 * 28 + 3 * 2)


def test_a_bad_spec_is_refused_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("latents:\n  z: {shape: [2], prior: {parents: [w]}}\n"
                   "observed:\n  x: {parents: [z], network: dec}\nnetworks:\n  dec: {}\n")
    run = tmp_path / "run"
    assert main(["train", "--spec", str(bad), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"spec {bad}: " in err or "latents.z" in err
    assert "latents.z.prior.parents: unknown variable 'w'" in err
    assert not run.exists()


def cfg_for(*overrides, spec=None):
    return load_config(None, list(overrides), spec=spec)


@pytest.mark.parametrize("spec, objective, message", [
    ("configs/specs/m2.yaml", "iwae", r"elbo=iwae cannot handle the enumerated discrete latent\(s\) "
                                      r"y .*use elbo=elbo"),
    ("configs/specs/gmvae.yaml", "score", r"elbo=score cannot handle"),
    ("configs/specs/m2.yaml", "aae", r"elbo=aae cannot handle the enumerated discrete latent"),
])
def test_objectives_that_cannot_handle_a_model_are_refused_before_training(spec, objective, message):
    cfg = cfg_for(f"elbo={objective}", spec=spec)
    model = build_model(cfg.model, (1, 28, 28))
    batch = Batch(torch.bernoulli(torch.rand(2, 1, 28, 28)), torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match=message):
        objective_from_config(cfg, model, batch)
    ok = objective_from_config(cfg_for("elbo=elbo", spec=spec), model, batch)
    assert isinstance(ok.elbo, TraceEnum_ELBO)


def test_meanfield_takes_an_enumerated_mixture_with_its_closed_form_kl():
    """The mixture VAE's c is summed out and KL(q(z|x,c) || p(z|c)) has a closed form."""
    from aevb.inference.objectives.syncfree import TraceEnumMeanField_ELBO

    cfg = cfg_for("elbo=meanfield", spec="configs/specs/gmvae.yaml")
    model = build_model(cfg.model, (1, 28, 28))
    batch = Batch(torch.bernoulli(torch.rand(2, 1, 28, 28)))
    objective = objective_from_config(cfg, model, batch)
    assert isinstance(objective.elbo, TraceEnumMeanField_ELBO)
    assert torch.isfinite(objective.differentiable_loss(model.model, model.guide, batch))


def test_reparameterization_only_objectives_refuse_sampled_discrete_latents(tmp_path):
    spec = tmp_path / "sbn.yaml"
    spec.write_text(textwrap.dedent("""
        networks: {q: {hidden: [8]}, p: {hidden: [8]}}
        latents:
          h: {type: bernoulli, shape: [5], prior: standard, posterior: {inputs: [x], network: q}}
        observed:
          x: {parents: [h], network: p}
    """))
    model = build_model(cfg_for(spec=spec).model, (1, 28, 28))
    batch = Batch(torch.bernoulli(torch.rand(2, 1, 28, 28)))
    for name in ("meanfield", "renyi", "mmd", "aae"):
        with pytest.raises(ConfigError, match=rf"elbo={name} needs reparameterized latents, but "
                                              r"the guide samples h without rsample"):
            objective_from_config(cfg_for(f"elbo={name}", spec=spec), model, batch)
    for name in ("elbo", "score", "iwae", "rws", "wake-sleep"):
        objective_from_config(cfg_for(f"elbo={name}", spec=spec), model, batch)


def test_config_keys_a_model_does_not_take_are_refused(user_file):
    cfg = cfg_for(f"model={user_file}:TinyVAE", "model.z_dim=7")
    with pytest.raises(ConfigError, match=r"'model.z_dim' is set, but model .* takes no 'z_dim' "
                                          r"argument; its arguments: x_shape, code_size"):
        build_model(cfg.model, (1, 28, 28))
    cfg = cfg_for(f"model={user_file}:TinyVAE", "model.options={depth: 3}")
    with pytest.raises(ConfigError, match=r"model.options.depth"):
        build_model(cfg.model, (1, 28, 28))


def test_model_names_and_files_that_do_not_exist_are_named(tmp_path, user_file):
    with pytest.raises(ConfigError, match=r"model.name.*does not exist"):
        cfg_for(f"model={tmp_path}/nope.py:X")
    with pytest.raises(ConfigError, match=r"has no model 'Nope'; models found there: TinyVAE"):
        build_model(cfg_for(f"model={user_file}:Nope").model, (1, 28, 28))
    with pytest.raises(ConfigError, match=r"unknown model 'vea'; valid models: .*vae"):
        cfg_for("model=vea")
    with pytest.raises(ConfigError, match=r"model.name=spec needs a spec"):
        build_model(cfg_for("model=spec").model, (1, 28, 28))
