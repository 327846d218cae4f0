"""aevb from Python: :func:`fit` a model on data, :func:`load` a run back, :func:`evaluate` it.

::

    import aevb

    run = aevb.fit(MyModel(z_dim=16), data=x_train, elbo="iwae", num_particles=5, epochs=10)
    run.evaluate(x_test, num_samples=5000)   # the figures of evaluation.json, in nats
    run.sample(64); run.model; run.metrics; run.path
    run = aevb.load("runs/vae_fashion-20261201-101500")

``model`` is any object that keeps the contract of :mod:`aevb.models.base` (a class defined in
a notebook cell too), a registered name (``"vae"``), a ``path.py:Class`` reference or a
:class:`~aevb.models.spec.ModelSpec`. ``data`` is a tensor, a numpy array, a torch
``Dataset``, an ``(x, y)`` pair, a ``(train, valid, test)`` triple, a dict of named arrays
(:mod:`aevb.data.arrays`), a dataset name (``"mnist"``), or the path of an array file or an
image folder. The command line calls the same functions (:mod:`aevb.runs`).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from aevb.inference.batching import Split
from aevb.inference.errors import ConfigError
from aevb.inference.training.metrics import MetricsLog
from aevb.models.spec import ModelSpec
from aevb.models.spec.schema import to_dict as spec_to_dict

from . import runs
from .config import Config, ModelConfig, load_config, to_dict
from .data import DATASETS, InMemory, evaluation_part, from_object

#: keyword arguments of :func:`fit` and the config keys they set
FIT_KEYS = {"elbo": "elbo", "num_particles": "num_particles", "epochs": "train.epochs",
            "batch_size": "train.batch_size", "lr": "optim.lr", "seed": "seed",
            "device": "device", "progress": "train.progress", "beta": "kl.beta",
            "num_samples": "eval.num_samples"}


class Run:
    """A trained (or loaded) run: its folder, model, config and data.

    :ivar path: the run folder. :ivar model: the trained model. :ivar config: the
        :class:`~aevb.config.Config` that ran (defaults resolved).
    """

    def __init__(self, trained: runs.Trained):
        self._trained = trained
        self.path: Path = trained.run_dir
        self.model = trained.model
        self.config: Config = trained.cfg
        self.data = trained.data
        self.device = trained.device

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={runs.model_label(self.config)})"

    @property
    def metrics(self) -> list[dict]:
        """The per-epoch rows of ``metrics.jsonl``."""
        return MetricsLog(self.path, tensorboard=False).rows()

    @property
    def evaluation(self) -> dict | None:
        """``evaluation.json`` of the run, or ``None`` before one was written."""
        path = self.path / "evaluation.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _split(self, data) -> tuple[str, Split]:
        if data is None:
            if self.data is None:
                raise ConfigError("this run's data is not loaded; pass the data to evaluate on")
            return runs.evaluation_split(self.data)
        part = evaluation_part(from_object(data, "evaluation data"), self.config.data,
                               self.device)
        return "given", part

    def evaluate(self, data=None, num_samples: int | None = None, *, batch_size: int | None = None,
                 sample_chunk: int | None = None, seed: int | None = None,
                 write: bool = False, overwrite: bool = False) -> dict:
        """Test ELBO, importance-sampled log p(x) (k = ``num_samples``, default the config's
        5000), active units, in nats per datapoint, on ``data`` (default the run's test
        split), as ``aevb evaluate`` computes them; ``write`` saves ``evaluation.json``, which
        an evaluation with fewer samples or images replaces only with ``overwrite``."""
        name, split = self._split(data)
        ev = self.config.eval
        if write and not overwrite:
            runs.refuse_weaker(self.path / "evaluation.json", num_samples or ev.num_samples,
                               len(split))
        cfg = replace(self.config, eval=replace(
            ev, sample_chunk=sample_chunk or ev.sample_chunk, batch_size=batch_size or ev.batch_size,
            seed=ev.seed if seed is None else seed), train=replace(self.config.train, progress=False))
        info = {"split": name}
        if name != "given" and self.data is not None:
            info |= {"data": self.data.description, "data_source": self.data.source}
        return runs.write_evaluation(self.model, split, cfg, self.path,
                                     num_samples or ev.num_samples, self.device, info,
                                     write=write, epochs_trained=self._trained.epochs_trained)

    @torch.no_grad()
    def sample(self, n: int = 64, seed: int | None = 0) -> torch.Tensor:
        """``n`` draws of the model's ``generate`` (means of p(x|z), z from the prior), as
        ``aevb sample`` makes them (same seed, same images)."""
        if not hasattr(self.model, "generate"):
            raise ConfigError(f"{type(self.model).__name__} has no generate(n); it cannot sample")
        if seed is not None:
            torch.manual_seed(seed)
        self.model.eval()
        return self.model.generate(n)


    def analogies(self, rows: int = 10, data=None) -> torch.Tensor:
        """The analogies grid of a model that reads labels (M2, CVAE): ``rows`` test images,
        each followed by its style decoded with every class
        (:func:`aevb.uses.conditional.analogies`; a grid of C + 1 columns)."""
        from aevb.models.base import labels_of
        from aevb.uses.conditional import analogies

        _, split = self._split(data)
        y = split.y[:rows] if split.y is not None and labels_of(self.model) == "required" \
            else None
        return analogies(self.model, split.x[:rows], y)

    @torch.no_grad()
    def samples_by_class(self, per_class: int = 8, seed: int | None = 0) -> torch.Tensor:
        """``per_class`` rows of class-conditional samples, one class per column
        (:func:`aevb.uses.conditional.samples_by_class`)."""
        from aevb.uses.conditional import samples_by_class

        if seed is not None:
            torch.manual_seed(seed)
        return samples_by_class(self.model, per_class)

    def amortization_gap(self, steps: int = 100, lr: float = 1e-2, samples: int = 10,
                         num_samples: int = 1000, images: int | None = None, seed: int = 0,
                         data=None) -> dict:
        """The inference gap of the first ``images`` test images split into its amortization
        and approximation parts (:func:`aevb.uses.amortization.amortization_gap`), with what
        they were computed on, as ``aevb evaluate --refine STEPS`` writes it."""
        from aevb.uses.amortization import amortization_gap, can_refine

        if not can_refine(self.model):
            raise ConfigError(f"{type(self.model).__name__} has no posterior_params(x) and "
                              "posterior_from(params); its q cannot be refined per image")
        name, split = self._split(data)
        x = split.x[:images] if images else split.x
        torch.manual_seed(seed)
        result = amortization_gap(self.model, x, steps, lr, samples, num_samples)
        info = {"split": name, "seed": seed, "model": runs.model_label(self.config)}
        if name != "given" and self.data is not None:
            info["data"] = self.data.description
        return result | info

    @torch.no_grad()
    def impute(self, images: int = 8, mask: str = "center", sampler: str = "mwg",
               steps: int = 200, seed: int = 0, data=None) -> tuple[dict, torch.Tensor]:
        """Fill the ``mask``'s missing pixels of the first ``images`` test images
        (:func:`aevb.uses.imputation.impute`); returns the report (the mean imputation's
        squared error on the missing pixels and their log-likelihood, in nats per image,
        against filling them with the training set's pixel means) and the picture's grid
        (rows: masked input, three chain draws, the mean imputation, the truth)."""
        from aevb.uses.imputation import impute, make_mask

        name, split = self._split(data)
        x = split.x[:images]
        try:
            observed = make_mask(mask, tuple(x.shape), seed).to(x.device)
            torch.manual_seed(seed)
            result = impute(self.model, x, observed, sampler, steps, truth=x)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        missing = ~observed
        train = self.data.train.x if self.data is not None else split.x
        pixel_mean = train.float().mean(0, keepdim=True).expand_as(x)
        report = {"split": name, "images": len(x), "mask": mask, "sampler": sampler,
                  "steps": steps, "seed": seed, "acceptance": result.acceptance,
                  "missing_per_image": float(missing.flatten(1).sum(-1).float().mean()),
                  "squared_error": float(((result.mean - x) ** 2)[missing].sum() / len(x)),
                  "squared_error_pixel_mean": float(((pixel_mean - x) ** 2)[missing].sum()
                                                    / len(x))}
        if result.heldout_log_likelihood is not None:
            report["heldout_log_likelihood"] = float(result.heldout_log_likelihood.mean())
        if bool(((x == 0) | (x == 1)).all()):  # binary pixels: the pixel-mean Bernoulli
            p = pixel_mean.clamp(1e-3, 1 - 1e-3)
            ll = x * p.log() + (1 - x) * (1 - p).log()
            report["heldout_log_likelihood_pixel_mean"] = float(ll[missing].sum() / len(x))
        shown = torch.where(observed, x, torch.full_like(x, 0.5))
        draws = [result.samples[i] for i in (steps // 2, 3 * steps // 4, steps - 1)]
        grid = torch.stack([shown, *draws, result.mean, x], dim=1).flatten(0, 1)
        return report, grid

    def interpolate(self, a: int, b: int, steps: int = 10, path: str = "linear",
                    data=None) -> torch.Tensor:
        """``(steps, *x_shape)``: the decoded path from image ``a``'s code to image ``b``'s
        (indices into ``data``, default the run's test split), ``path`` ``linear`` or
        ``slerp`` (:func:`aevb.uses.interpolation.interpolate`); a model that reads labels
        keeps image ``a``'s label where the split has labels (M2: its own most probable
        class), as ``aevb interpolate`` draws it."""
        from aevb.models.base import labels_of
        from aevb.uses.interpolation import interpolate

        _, split = self._split(data)
        for i in (a, b):
            if not 0 <= i < len(split):
                raise ConfigError(f"image {i} is not in the split's {len(split)} images; give "
                                  f"indices in [0, {len(split) - 1}]")
        y_a = split.y[a] if split.y is not None and labels_of(self.model) == "required" else None
        return interpolate(self.model, split.x[a], split.x[b], steps, path, y_a)


def _data_settings(data) -> tuple[list[str], object]:
    """Overrides naming the data, and a data source object for in-memory data."""
    if data is None:
        return [], None
    if isinstance(data, str | Path):
        text = str(data)
        if isinstance(data, str) and text in DATASETS and not Path(text).exists():
            return [f"data.name={text}"], None
        path = Path(text).expanduser()
        if not path.exists():
            raise ConfigError(f"data={text!r} is neither a dataset ({', '.join(DATASETS.names())})"
                              f" nor an existing file or folder")
        kind = "images" if path.is_dir() else "array"
        return [f"data.name={kind}", f"data.path={path.resolve()}"], None
    return ["data.name=in-memory"], InMemory(from_object(data))


def fit(model="vae", data=None, *, elbo: str | None = None,
        num_particles: int | None = None, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
        device: str | None = None, progress: bool | None = None, beta: float | None = None,
        num_samples: int | None = None, config: str | Path | Config | None = None,
        overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path | None = None,
        resume: bool = False, evaluate: bool = True) -> Run:
    """Train ``model`` on ``data`` and return the :class:`Run`.

    :param model: a model object, a registered name, ``path.py:Class`` or a ``ModelSpec``.
    :param data: see the module docstring; ``None``: the config's data (default Fashion-MNIST).
    :param elbo: the objective (``elbo``, ``meanfield``, ``iwae``, ``renyi``, ``rws``, ...).
    :param num_particles: L, or k of the importance-weighted objectives.
    :param config: a config file, the name of a shipped one (``"vae_fashion"``) or a
        :class:`~aevb.config.Config`; the keyword arguments and ``overrides`` (``key=value``)
        go on top of it.
    :param run_dir: the run folder (default ``runs/<model>-<time>``).
    :param resume: continue the run in ``run_dir`` (a model object gets its state loaded).
    :param evaluate: write ``evaluation.json`` and the pictures at the end (k =
        ``num_samples``, default the config's 5000).
    """
    given = [f"{FIT_KEYS[k]}={v}" for k, v in (
        ("elbo", elbo), ("num_particles", num_particles), ("epochs", epochs),
        ("batch_size", batch_size), ("lr", lr), ("seed", seed), ("device", device),
        ("progress", progress), ("beta", beta), ("num_samples", num_samples)) if v is not None]
    data_overrides, source = _data_settings(data)
    model_overrides: list[str] = []
    model_object = None
    spec = None
    if isinstance(model, ModelSpec):
        spec = spec_to_dict(model)
        model_overrides = ["model.name=spec"]
    elif isinstance(model, str | Path):
        model_overrides = [f"model.name={model}"]
    else:
        model_object = model
        model_overrides = [f"model.name={runs.object_name(model)}"]
    items = [*model_overrides, *data_overrides, *given, *overrides]
    run_path = Path(run_dir) if run_dir is not None else None
    if resume:
        if run_path is None:
            raise ConfigError("resume=True needs run_dir= (the run to continue)")
        saved = runs.saved_config(run_path)
        if model == "vae":  # the default: continue the run's own model
            items = [i for i in items if i not in model_overrides]
        cfg = load_config(None, items, base=saved, data_source=source)
    elif isinstance(config, Config):
        cfg = load_config(None, items, base=to_dict(config), data_source=source)
    else:
        cfg = load_config(config, items, data_source=source)
    if spec is not None:
        cfg = replace(cfg, model=replace(cfg.model, spec=spec))
    if model_object is not None:
        # the object is built already: a config file's model section does not apply to it
        named = [o.split("=", 1)[0] for o in overrides if o.startswith("model.")]
        if named:
            raise ConfigError(f"{named[0]} is set, but the model is an object: give its "
                              f"settings to its constructor")
        cfg = replace(cfg, model=ModelConfig(name=runs.object_name(model_object)))
    if run_path is None:
        run_path = runs.default_run_dir(re.split(r"[:/.]", runs.model_label(cfg))[-1])
    trained = runs.execute(cfg, run_path, resume=resume, model=model_object,
                           data_source=source, final_evaluation=evaluate)
    return Run(trained)


def load(path: str | Path, model=None, data=None, *, trust_code: bool = False,
         checkpoint: str | Path | None = None, device: str | None = None) -> Run:
    """A run folder back as a :class:`Run` (its newest checkpoint, or ``checkpoint``).

    :param model: an object to load the trained state into; needed for a run of a model
        object (a class from a notebook cell cannot be imported back).
    :param data: the data of a run trained on in-memory data (else it is read as recorded).
    :param trust_code: import the user's model file a run names (its code runs).
    """
    source = InMemory(from_object(data)) if data is not None else None
    trained = runs.load_run(Path(path), Path(checkpoint) if checkpoint else None, device,
                            model=model, trust_code=trust_code, data_source=source,
                            with_data=None)
    return Run(trained)


def evaluate(run: Run | str | Path, data=None, num_samples: int | None = None, **options) -> dict:
    """:meth:`Run.evaluate` of a run or a run folder (see :func:`load`)."""
    if not isinstance(run, Run):
        run = load(run, trust_code=options.pop("trust_code", False))
    return run.evaluate(data, num_samples, **options)
