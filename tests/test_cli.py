"""Every CLI subcommand runs (smoke tests), and errors are one clear line with exit code 2."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from aevb.cli import build_parser, main

# analogies: tests/test_contract.py::test_specs_train_through_the_cli; sweep:
# tests/test_sweeps.py (the Ray test drives `aevb sweep`) and test_sweep_command_line below
TESTED = {"train", "evaluate", "sample", "experiment", "diagnose", "interpolate", "analogies",
          "impute", "sweep"}


def test_every_subcommand_has_a_smoke_test():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == TESTED, "add a smoke test for the new subcommand"


@pytest.mark.data
def test_train_evaluate_sample_and_resume(fashion_dir, tmp_path, capsys):
    run = tmp_path / "run"
    small = ["data.train_size=1000", "data.test_size=200", "eval.num_samples=10",
             "model.hidden_sizes=[64]", "model.z_dim=4", "train.epochs=1", "elbo=iwae",
             "num_particles=3"]
    assert main(["train", "--config", "configs/vae_fashion.yaml", "--run-dir", str(run),
                 "--data-dir", str(fashion_dir), "--no-progress", "--device", "cpu", *small]) == 0
    assert (run / "evaluation.json").is_file()
    assert main(["train", "--resume", str(run), "train.epochs=2", "--no-progress"]) == 0
    assert (run / "checkpoints" / "epoch-0002.pt").is_file()
    assert main(["evaluate", str(run), "--num-samples", "7", "--test-size", "50",
                 "--no-progress", "--out", str(tmp_path / "ev.json")]) == 0
    result = json.loads((tmp_path / "ev.json").read_text())
    assert result["num_samples"] == 7 and result["num_images"] == 50
    assert result["epochs_trained"] == 2
    first = run / "checkpoints" / "epoch-0001.pt"
    assert main(["evaluate", str(run), "--checkpoint", str(first), "--num-samples", "2",
                 "--test-size", "20", "--no-progress", "--out", str(tmp_path / "ev1.json")]) == 0
    # the record names the checkpoint evaluated, not the folder's newest
    assert json.loads((tmp_path / "ev1.json").read_text())["epochs_trained"] == 1
    assert main(["sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    # a picture's folder is made if missing, and its suffix names its format
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "new" / "s.jpg")]) == 0
    with Image.open(tmp_path / "new" / "s.jpg") as im:
        assert im.format == "JPEG" and not list((tmp_path / "new").glob(".*"))
    for extra in ([], ["--slerp"]):
        assert main(["interpolate", str(run), "--pair", "3,17", "--steps", "5", *extra]) == 0
    for name in ("interpolation-3-17-linear.png", "interpolation-3-17-slerp.png"):
        with Image.open(run / name) as im:
            assert im.size == (5 * 28 + 6 * 2, 28 + 2 * 2)  # one row of 5, 2-pixel padding
    assert main(["impute", str(run), "--mask", "center", "--steps", "6", "--images", "4"]) == 0
    report = json.loads((run / "impute-center-mwg.json").read_text())
    assert report["images"] == 4 and report["missing_per_image"] == 14 * 14
    assert report["heldout_log_likelihood"] < 0 and 0 < report["acceptance"] <= 1
    assert "heldout_log_likelihood_pixel_mean" in report  # binarized test images
    with Image.open(run / "impute-center-mwg.png") as im:
        assert im.size == (6 * 28 + 7 * 2, 4 * 28 + 5 * 2)  # input, 3 draws, mean, truth
    assert main(["evaluate", str(run), "--refine", "20", "--refine-lr", "0.05",
                 "--num-samples", "50", "--test-size", "30"]) == 0
    gap = json.loads((run / "amortization.json").read_text())
    assert gap["images"] == 30 and gap["refine_steps"] == 20 and gap["num_samples"] == 50
    assert gap["elbo_refined"] > gap["elbo_amortized"]  # refinement improves each q
    assert gap["inference_gap"] == pytest.approx(gap["amortization_gap"]
                                                 + gap["approximation_gap"], abs=1e-3)
    assert main(["impute", str(run), "--mask", "random:2"]) == 2
    assert "random:RATE with 0 < RATE < 1" in capsys.readouterr().err
    assert main(["interpolate", str(run), "--pair", "3,999"]) == 2  # 200 test images
    assert "not in the split's 200 images" in capsys.readouterr().err
    assert main(["diagnose", "gradients", str(run), "--estimators", "reparam,score,iwae3",
                 "--repeats", "5", "--batch-size", "20"]) == 0
    table = (run / "diagnostics" / "gradients.md").read_text()
    assert "| score | encoder |" in table and "| iwae3 | decoder |" in table
    assert (run / "diagnostics" / "gradients.png").stat().st_size > 0


@pytest.mark.data
def test_experiment_semisupervised(fashion_dir, tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(["experiment", "semisupervised", "--labels", "20", "--seeds", "1", "--epochs", "1",
                 "--methods", "m2,baseline", "--train-size", "200", "--test-size", "50",
                 "--data-dir", str(fashion_dir), "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert "| baseline | 20 | 1 |" in capsys.readouterr().out
    assert main(["experiment", "semisupervised", "--labels", "2x"]) == 2


def test_experiment_options_default_to_the_config_and_its_help_says_them(capsys):
    from aevb.cli import experiment_config
    from aevb.experiments.semisupervised import ExperimentConfig

    parse = build_parser().parse_args
    assert experiment_config(parse(["experiment", "semisupervised"])) == ExperimentConfig()
    cfg = experiment_config(parse(["experiment", "semisupervised", "--labels", "100,600",
                                   "--alpha", "1", "--methods", "m2,baseline"]))
    assert (cfg.labels, cfg.alpha, cfg.methods) == ([100, 600], 1.0, ["m2", "baseline"])
    assert cfg.y_balance == ExperimentConfig.y_balance  # not given: the config's own
    with pytest.raises(SystemExit):
        parse(["experiment", "semisupervised", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default {ExperimentConfig.alpha})" in shown
    assert "(default 100,600,1000,3000)" in shown
    # the settings of the MNIST tables, as the help's last lines name them, are its own options
    settings = shown.rsplit("--labelled-weight", 1)[1].split()
    cfg = experiment_config(parse(["experiment", "semisupervised", "--labelled-weight", *settings]))
    assert (cfg.labelled_weight, cfg.alpha, cfg.z_kl_start, cfg.z_kl_epochs, cfg.y_balance) == (
        "balanced", 1.0, 10.0, 10.0, 10.0)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "elbo=nope"]) == 2
    err = capsys.readouterr().err
    assert "aevb: error:" in err and "elbo, infovae, iwae, meanfield, mmd, renyi, rws, score" in err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "aevb.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert "train" in out.stdout and "evaluate" in out.stdout and "sample" in out.stdout


@pytest.mark.parametrize("argv, code, named", [
    (["--help"], 0, None),
    (["train", "--help"], 0, None),
    (["train", "--config", "{config}"], 2, "epoch"),  # a misspelt key
    (["train", "train.epochs=0"], 2, "train.epochs"),  # a value out of range
    (["train", "train.epochs=ten"], 2, "train.epochs"),  # a value of the wrong type
    (["train", "elbo=iwea"], 2, "'iwea' is not one of aae, elbo, infovae, iwae"),  # a registry name
    (["train", "model=vea"], 2, "'vea' is not one of dlgm"),
    (["train", "model.posterior=flow"], 2, "model.posterior"),
    (["train", "mmd_scale=3"], 2, "belongs to elbo=mmd"),  # another objective's key
    (["train", "elbo=infovae", "info_divergence=gan"], 2, "'gan' is not one of adversarial"),
    (["sweep", "elbo=elbo,iwea", "--out", "{config}.d"], 2, "'iwea'"),
])
def test_help_and_config_errors_answer_without_importing_torch(argv, code, named, tmp_path):
    """Start-up: torch, Pyro and torchvision take seconds to import; ``aevb --help`` and a
    config whose keys, types, ranges or registry names are wrong answer without them."""
    config = tmp_path / "typo.yaml"
    config.write_text("train: {epoch: 3}\n")
    argv = [a.format(config=config) for a in argv]
    probe = ("import contextlib, io, sys\n"
             "from aevb.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    code = main({argv!r})\n"
             "heavy = sorted({'torch', 'pyro', 'torchvision'} & set(sys.modules))\n"
             "print(code, heavy)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == f"{code} []", done.stdout + done.stderr
    if named:
        assert named in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_sweep_command_line_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path / "s")]) == 2
    assert "needs its grid" in capsys.readouterr().err
    assert main(["sweep", "elbo=elbo,iwae", "--out", str(tmp_path / "s"), "--metric", "x"]) == 2
    assert "--metric 'x'" in capsys.readouterr().err
    assert main(["sweep", "elbo=elbo,nope", "--out", str(tmp_path / "s")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_catalog_of_names_is_the_registries():
    """:mod:`aevb.catalog` answers name errors before torch is imported: it must list exactly
    what the shipped registries hold."""
    from aevb import catalog
    from aevb.data import DATASETS
    from aevb.inference.objectives import DIVERGENCES, OBJECTIVES
    from aevb.inference.training.engines import ENGINES
    from aevb.inference.training.initialization import INITIALIZATIONS
    from aevb.inference.training.optim import OPTIMIZERS
    from aevb.inference.training.schedules import SCHEDULES
    from aevb.models import MODELS
    from aevb.models.families import FAMILIES
    from aevb.models.networks import ACTIVATIONS, NETWORKS
    from aevb.models.posteriors import POSTERIORS

    registries = {"elbo": OBJECTIVES, "optim.name": OPTIMIZERS, "train.engine": ENGINES,
                  "train.init": INITIALIZATIONS,
                  "optim.schedule": SCHEDULES, "data.name": DATASETS, "model.network": NETWORKS,
                  "model.activation": ACTIVATIONS, "model.likelihood": FAMILIES,
                  "model.posterior": POSTERIORS, "model.name": MODELS,
                  "info_divergence": DIVERGENCES}
    def shipped(registry) -> list[str]:  # leaving out what the tests register for themselves
        entries = getattr(registry, "entries", {name: None for name in registry})
        return sorted(name for name, obj in entries.items() if obj is None or not (
            getattr(obj, "__module__", None) or type(obj).__module__).startswith(
                ("tests.", "test_")))

    assert set(registries) == set(catalog.NAMES)
    for key, registry in registries.items():
        assert sorted(catalog.NAMES[key][1]) == shipped(registry), key
