"""Training on real Fashion-MNIST images: improvement, outputs, exact resume, bad input."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from aevb.config import load_config
from aevb.inference.errors import CheckpointError, ConfigError, DataError, RunDirError
from aevb.inference.training.checkpoint import list_checkpoints, load_checkpoint
from aevb.runs import train

pytestmark = pytest.mark.data

SMALL = ["data.train_size=3000", "data.test_size=500", "eval.num_samples=20",
         "model.hidden_sizes=[200]", "model.z_dim=10", "train.progress=false",
         "train.tensorboard=false"]


def small_config(fashion_dir, *extra):
    return load_config("configs/vae_fashion.yaml",
                       [*SMALL, f"data.data_dir={fashion_dir}", "train.epochs=1", *extra])


def untrained_valid_elbo(cfg) -> float:
    from aevb.builder import build_model
    from aevb.data import load_data
    from aevb.inference.evaluation.likelihood import mean_elbo

    torch.manual_seed(cfg.seed)
    return mean_elbo(build_model(cfg.model, (1, 28, 28)), load_data(cfg.data).valid)


def test_short_run_improves_validation_elbo_and_writes_every_output(fashion_dir, tmp_path,
                                                                     monkeypatch):
    import aevb.runs

    cfg = small_config(fashion_dir, "model.z_dim=2")
    untrained = untrained_valid_elbo(cfg)
    pictures_before_evaluation = []
    evaluate = aevb.runs.write_evaluation

    def observed(model, split, cfg, run_dir, *args, **kwargs):
        pictures_before_evaluation.extend(sorted(p.name for p in run_dir.glob("*.png")))
        return evaluate(model, split, cfg, run_dir, *args, **kwargs)

    monkeypatch.setattr(aevb.runs, "write_evaluation", observed)
    run = train(cfg, tmp_path / "run")
    # the pictures come first: the k-sample evaluation is the long wait
    assert pictures_before_evaluation == ["curves.png", "latent.png", "manifold.png",
                                          "reconstructions.png", "samples.png"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["valid_elbo"] > untrained + 50
    for name in ("config.yaml", "metrics.csv", "evaluation.json", "samples.png",
                 "reconstructions.png", "latent.png", "manifold.png", "curves.png"):
        assert (run / name).is_file(), name
        if name.endswith(".png"):
            with Image.open(run / name) as im:
                im.verify()
    result = json.loads((run / "evaluation.json").read_text())
    assert result["num_samples"] == 20 and result["num_images"] == 500
    assert result["data"]["subset"] is True
    assert result["elbo"] <= result["log_likelihood"] < 0


@pytest.mark.parametrize("objective", [[], ["elbo=aae", "critic_hidden=32"]],
                         ids=["elbo", "aae"])
def test_two_epochs_equal_one_epoch_plus_resume(fashion_dir, tmp_path, objective):
    """Also for an objective with a critic of its own: the checkpoint carries the critic."""
    straight = train(small_config(fashion_dir, "train.epochs=2", *objective), tmp_path / "a",
                     final_evaluation=False)
    first = train(small_config(fashion_dir, *objective), tmp_path / "b", final_evaluation=False)
    train(small_config(fashion_dir, "train.epochs=2", *objective), first, resume=True,
          final_evaluation=False)
    a = load_checkpoint(list_checkpoints(straight)[-1])
    b = load_checkpoint(list_checkpoints(first)[-1])
    assert a["epoch"] == b["epoch"] == 2
    states = [(a["model"], b["model"])]
    if objective:
        states.append((a["optimizer"]["critic"], b["optimizer"]["critic"]))
        assert a["optimizer"]["critic"]["net.0.weight"].shape == (32, 10)
    for state_a, state_b in states:
        for key in state_a:
            torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-6, atol=1e-7)
    rows_a = (straight / "metrics.jsonl").read_text().splitlines()
    rows_b = (first / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(r).items() if k not in ("seconds", "images_per_s")}
             for r in rows_a + rows_b]
    assert strip[:2] == strip[2:]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_corrupt_or_truncated_checkpoint_is_refused_and_nothing_is_lost(fashion_dir, tmp_path):
    run = train(small_config(fashion_dir, "train.epochs=2"), tmp_path / "run",
                final_evaluation=False)
    newest = list_checkpoints(run)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="corrupt or truncated.*--checkpoint .*epoch-0001"):
        train(small_config(fashion_dir, "train.epochs=3"), run, resume=True)
    newest.write_bytes(b"not a checkpoint at all")
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="corrupt"):
        train(small_config(fashion_dir, "train.epochs=3"), run, resume=True)
    assert _snapshot(run) == before


def test_existing_run_folder_is_not_overwritten(fashion_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="--resume"):
        train(small_config(fashion_dir), run)
    assert (run / "precious.txt").read_text() == "keep me"


def test_data_outside_unit_interval_for_bernoulli_is_refused(tmp_path, monkeypatch):
    import aevb.runs as runs
    from aevb.inference import DataBundle, Split

    def fake_load(cfg, device, source=None):
        s = Split(torch.full((4, 1, 28, 28), 255.0), torch.zeros(4, dtype=torch.long))
        return DataBundle(s, s, s, "fake", {})

    monkeypatch.setattr(runs, "load_data", fake_load)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        train(load_config(None, ["train.progress=false"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_and_objective_are_named():
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'.*epochs"):
        load_config("configs/vae_fashion.yaml", ["train.epoch=3"])
    with pytest.raises(ConfigError, match="'elbo'.*'vi'.*elbo, infovae, iwae, meanfield, mmd, "
                                          "renyi, rws, score, wake-sleep"):
        load_config("configs/vae_fashion.yaml", ["elbo=vi"])
    with pytest.raises(ConfigError, match="'train.batch_size'.*must be > 0"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="'renyi_alpha' is set, but elbo=elbo"):
        load_config(None, ["renyi_alpha=0.2"])
    with pytest.raises(ConfigError, match="'mmd_scale' is set, but elbo=iwae; it belongs to"):
        load_config(None, ["mmd_scale=10", "elbo=iwae"])
    with pytest.raises(ConfigError, match="'critic_hidden' is set, but elbo=elbo; it belongs "
                                          "to elbo=infovae or elbo=aae"):
        load_config(None, ["critic_hidden=10"])
    with pytest.raises(ConfigError, match="info_divergence=mmd trains no critic"):
        load_config(None, ["elbo=infovae", "critic_hidden=10"])
    with pytest.raises(ConfigError, match="'info_divergence'.*'gan' is not one of adversarial, mmd"):
        load_config(None, ["elbo=infovae", "info_divergence=gan"])


@pytest.mark.parametrize("objective", ["meanfield", "iwae", "score", "renyi", "mmd", "rws",
                                       "wake-sleep"])
def test_every_objective_trains_on_real_data(fashion_dir, tmp_path, objective):
    cfg = small_config(fashion_dir, f"elbo={objective}",
                       f"num_particles={1 if objective in ('mmd', 'wake-sleep') else 2}",
                       "data.train_size=1000")
    run = train(cfg, tmp_path / objective, final_evaluation=False)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["objective"] == objective
    assert row["valid_elbo"] > untrained_valid_elbo(cfg) + 10


def test_the_adversarial_divergence_matches_the_aggregate_posterior_to_the_prior(
        fashion_dir, tmp_path):
    """InfoVAE with the adversarial divergence (α = 1): the critic learns to tell q(z) from
    p(z), and the encoder, trained against its KL estimate, moves q(z) onto p(z). Measured by
    the MMD² of the posterior means to prior draws in a 2-D latent space, against the same model
    trained without the divergence (λ = 0: an autoencoder with a noisy code): ``elbo=aae``
    (λ = 1) narrows it, λ = 20 all but closes it."""
    from aevb.inference.objectives.mmd import mmd2_unbiased
    from aevb.runs import load_run

    mmd = {}
    for name, extra in (("ae", ["elbo=infovae", "info_alpha=1", "info_lambda=0"]),
                        ("aae", ["elbo=aae"]),
                        ("lambda20", ["elbo=infovae", "info_alpha=1", "info_lambda=20",
                                      "info_divergence=adversarial"])):
        cfg = small_config(fashion_dir, "train.epochs=10", "model.z_dim=2", *extra)
        trained = load_run(train(cfg, tmp_path / name, final_evaluation=False))
        torch.manual_seed(0)
        with torch.no_grad():
            z_q = trained.model.encode(trained.data.valid.x[:1000])
        mmd[name] = float(mmd2_unbiased(z_q, torch.randn_like(z_q), 2.0))
    assert mmd["aae"] < 0.8 * mmd["ae"], mmd
    assert mmd["lambda20"] < 0.1 * mmd["ae"], mmd


@pytest.mark.parametrize("extra", [
    ["data.binarization=none", "model.likelihood=gaussian", "model.min_scale=0.05",
     "optim.name=adagrad", "optim.lr=0.01"],
    ["model.network=conv", "model.hidden_sizes=[64]", "data.binarization=static"],
])
def test_other_likelihoods_networks_and_optimizers_train(fashion_dir, tmp_path, extra):
    cfg = small_config(fashion_dir, "data.train_size=1000", *extra)
    run = train(cfg, tmp_path / "run")
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["valid_elbo"] > untrained_valid_elbo(cfg)
    assert json.loads((run / "evaluation.json").read_text())["note"] is None


def test_bernoulli_on_grayscale_is_labelled_not_a_log_likelihood(fashion_dir, tmp_path):
    cfg = small_config(fashion_dir, "data.train_size=500", "data.binarization=none")
    with pytest.warns(UserWarning, match="not log-likelihoods"):
        run = train(cfg, tmp_path / "run")
    assert "not log-likelihoods" in json.loads((run / "evaluation.json").read_text())["note"]


class NotATensor:
    """Unpickling this would need code outside torch's weights-only allowlist."""


def test_checkpoints_are_loaded_with_weights_only(tmp_path):
    """A checkpoint that would execute code when unpickled is refused, not run."""
    evil = tmp_path / "run" / "checkpoints" / "epoch-0001.pt"
    evil.parent.mkdir(parents=True)
    torch.save({"format": "aevb-checkpoint/1", "payload": NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(evil)
    assert evil.is_file()


def test_cuda_request_without_cuda_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(load_config(None, ["device=cuda"]), tmp_path / "run")


def test_burda_schedule_stages_and_its_rates_reach_the_optimizer(tmp_path):
    """lr·10^(-i/7) for 3^i passes, i = 0..7: 3280 passes; the run's metrics and its optimizer
    carry each epoch's rate, and the optimizer the ε and β1 the config names, also on resume."""
    from aevb.inference.training.schedules import SCHEDULES, burda_passes, burda_stage

    assert burda_passes() == 3280 and burda_passes(1) == 4
    assert [burda_stage(e) for e in (1, 2, 4, 5, 13, 14, 3280, 4000)] == [0, 1, 1, 2, 2, 3, 7, 7]
    lr = SCHEDULES.get("burda")(1e-3)
    assert lr(1) == 1e-3 and abs(lr(3280) - 1e-3 * 10 ** -1) < 1e-15
    x = torch.bernoulli(torch.full((40, 1, 4, 4), 0.3))
    import aevb

    run = aevb.fit(aevb.VAE(x_shape=(1, 4, 4), z_dim=2, hidden_sizes=(8,)), data=x, epochs=5,
                   evaluate=False, run_dir=tmp_path / "run",
                   overrides=["optim.schedule=burda", "optim.eps=1e-4", "optim.beta1=0.99",
                              "train.batch_size=20", "data.validation_size=0",
                              "train.progress=false"])
    assert [r["lr"] for r in run.metrics] == [lr(e) for e in range(1, 6)]
    assert all("valid_elbo" not in r for r in run.metrics)  # no validation split asked for
    state = aevb.runs.load_checkpoint(aevb.runs.latest_checkpoint(run.path))["optimizer"]
    group = state["state"]["param_groups"][0]
    assert group["lr"] == lr(5) and group["eps"] == 1e-4 and tuple(group["betas"]) == (0.99, 0.999)
    run = aevb.fit(aevb.VAE(x_shape=(1, 4, 4), z_dim=2, hidden_sizes=(8,)), data=x, epochs=6,
                   evaluate=False, run_dir=tmp_path / "run", resume=True,
                   overrides=["optim.schedule=burda", "optim.eps=1e-4", "optim.beta1=0.9",
                              "train.batch_size=20", "data.validation_size=0",
                              "train.progress=false"])
    state = aevb.runs.load_checkpoint(aevb.runs.latest_checkpoint(run.path))["optimizer"]
    assert tuple(state["state"]["param_groups"][0]["betas"]) == (0.9, 0.999)


@pytest.mark.parametrize("overrides, message", [
    (["optim.beta1=1.0"], "'optim.beta1': must be in \\[0, 1\\)"),
    (["optim.name=adagrad", "optim.beta1=0.99"], "optim.beta1 is Adam's"),
])
def test_beta1_outside_adam_or_its_range_is_refused(overrides, message):
    from aevb.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(load_config(None, overrides))


def test_glorot_initialization_has_glorot_weights_zero_biases_and_the_data_mean_as_logits():
    """train.init=glorot (Burda et al.'s code): U(-a, a), a = sqrt(6 / (fan_in + fan_out)), with
    variance a²/3; zero biases; a Bernoulli decoder's output bias = logit of the clipped mean
    image. A decoder that ends in a transposed convolution has no logit layer to set."""
    from aevb.inference.training.initialization import INITIALIZATIONS
    from aevb.models.deep import DLGM
    from aevb.models.vae import VAE

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((200, 1, 28, 28), 0.2))
    x[:, :, 0] = 0.0  # a blank row: its mean clips to 0.001
    expected = torch.logit(x.mean(0).flatten().clamp(0.001, 0.999))
    for model, logit_of in ((VAE(hidden_sizes=(400,)), lambda m: m.decoder.net[-1]),
                            (DLGM(layer_hidden=[[200, 200], [100, 100]]), None)):
        INITIALIZATIONS.get("glorot")(model, x)
        layers = model.logit_layers()
        assert list(layers) == ["x"]
        if logit_of is not None:
            assert layers["x"] is logit_of(model)
        assert torch.allclose(layers["x"].bias, expected)
        assert float(layers["x"].bias.detach()[0]) == pytest.approx(float(torch.logit(torch.tensor(0.001))))
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                a = (6 / (layer.in_features + layer.out_features)) ** 0.5
                weight = layer.weight.detach()
                assert float(weight.abs().max()) <= a
                if weight.numel() > 50_000:
                    assert float(weight.var()) == pytest.approx(a * a / 3, rel=0.05)
                if layer is not layers["x"]:
                    assert not layer.bias.any()
    conv = VAE(network="conv")
    assert conv.logit_layers() == {}
    INITIALIZATIONS.get("glorot")(conv, x)  # weights only


def test_a_run_starts_from_its_init_and_a_resume_cannot_change_it(tmp_path):
    import aevb

    x = torch.bernoulli(torch.full((40, 1, 4, 4), 0.3))
    settings = ["train.batch_size=20", "data.validation_size=0", "train.progress=false",
                "optim.lr=1e-9"]
    run = aevb.fit(aevb.VAE(x_shape=(1, 4, 4), z_dim=2, hidden_sizes=(8,)), data=x, epochs=1,
                   evaluate=False, run_dir=tmp_path / "run", overrides=[*settings,
                                                                        "train.init=glorot"])
    state = aevb.runs.load_checkpoint(aevb.runs.latest_checkpoint(run.path))["model"]
    mean = torch.logit(x.mean(0).flatten().clamp(0.001, 0.999))
    assert torch.allclose(state["decoder.net.2.bias"], mean, atol=1e-6)
    with pytest.raises(ConfigError, match="--resume cannot change train.init"):
        aevb.fit(aevb.VAE(x_shape=(1, 4, 4), z_dim=2, hidden_sizes=(8,)), data=x, epochs=2,
                 evaluate=False, run_dir=tmp_path / "run", resume=True,
                 overrides=[*settings, "train.init=torch"])
