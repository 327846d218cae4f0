"""Typed configuration: dataclasses validated by OmegaConf's structured configs.

A run is configured by a YAML file merged over these defaults, then by ``key=value`` overrides
(``elbo=iwae num_particles=5 train.epochs=3``). Unknown keys and ill-typed values are refused
with an error naming the key; :func:`validate` checks names against the registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aevb.configs import names as shipped_names
from aevb.configs import resolve as resolve_shipped
from aevb.inference.errors import ConfigError

# torch, Pyro and the model registries are imported where they are used, after the config's
# keys and types are checked: a typo answers before the seconds that importing torch takes

BINARIZATIONS = ("dynamic", "static", "none")
#: Adam's β2 (torch's default) where ``optim.beta1`` sets β1
ADAM_BETA2 = 0.999


@dataclass
class DataConfig:
    """Where the data comes from and how it is prepared (:mod:`aevb.data`).

    :param name: ``mnist``, ``fashion-mnist``, ``frey-face``, ``array`` (a ``.npy``/``.npz``/
        ``.pt`` file at ``path``) or ``images`` (a folder of images at ``path``);
        ``in-memory`` records data handed to :func:`aevb.fit`.
    :param path: the file or folder of ``array``, ``images`` (and ``frey-face``'s ``.mat``).
    :param data_dir: folder with the IDX files (overrides ``AEVB_DATA_DIR`` and system copies).
    :param binarization: ``dynamic`` (fresh Bernoulli draw each time a training image is used;
        Burda et al. 2016), ``static`` (drawn once from ``binarization_seed``) or ``none``;
        unset: the dataset's default (``dynamic`` for MNIST and Fashion-MNIST, else ``none``).
        Validation and test images are binarized once from ``binarization_seed`` unless ``none``.
    :param validation_size: observations held out from the end of the training data, a count
        or a fraction below 1; unset: the dataset's default (10000 for MNIST, else 0.1).
        Ignored when the data has its own validation split.
    :param train_size: use only the first n training images (quick runs); ``None`` = all.
    :param test_size: use only the first n test (and validation) images; ``None`` = all.
    :param image_size: ``[H, W]`` (or one int) to resize an image folder to; unset: the size
        of its images.
    :param channels: 1 (grayscale) or 3 (RGB) for an image folder; unset: from its first image.
    """

    name: str = "fashion-mnist"
    path: str | None = None
    data_dir: str | None = None
    binarization: str | None = None
    binarization_seed: int = 0
    validation_size: Any = None
    train_size: int | None = None
    test_size: int | None = None
    download: bool = True
    image_size: Any = None
    channels: int | None = None


@dataclass
class ModelConfig:
    """The model and its constructor arguments.

    :param name: a registered model (``vae``, ``spec``, ...) or a user's file,
        ``path/to/my_model.py:MyModel`` (a class, or a name the file registers).
    :param spec: the model spec of ``name: spec`` (filled by ``--spec FILE``; see
        :mod:`aevb.models.spec`).
    :param options: further constructor arguments of a user's model.

    The other keys are the arguments of the VAE-like models. Each one that is set is passed to
    the model's constructor (and refused when the constructor does not take it); one left unset
    (``null``) is not passed, so the constructor's own default applies. The run's ``run.json``
    records every argument the model was built with. ``posterior`` is the
    family of q(z|x) (``diag``, ``lowrank``, ``full``, ``mixture``, ``planar``, ``iaf``;
    :mod:`aevb.models.posteriors`) and ``posterior_size`` its rank, components or flow steps.
    """

    name: str = "vae"
    z_dim: int | None = None
    network: str | None = None
    hidden_sizes: list[int] | None = None
    activation: str | None = None
    likelihood: str | None = None
    min_scale: float | None = None
    posterior: str | None = None
    posterior_size: int | None = None
    spec: Any = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """:param name: ``adam`` or ``adagrad`` (the paper's). :param lr: learning rate.
    :param weight_decay: L2 penalty (an N(0, σ²I) weight prior, as the AEVB paper's).
    :param eps: the optimizer's ε (unset: torch's default). It is added to the root of the
        second moment of *aevb's* gradient, which is that of the N/M-scaled loss (the whole
        training set's ELBO); a paper's ε for a per-minibatch sum is N/M times larger here
        (Burda et al.'s 1e-4, batch 20 of 60000: 0.3).
    :param beta1: Adam's β1, the decay of its first-moment estimate (unset: torch's 0.9, the
        paper's; Burda et al.'s released code ran with 0.99); β2 stays torch's 0.999.
    :param schedule: the learning rate by epoch, ``constant`` or ``burda`` (lr·10^(−i/7) for
        3^i passes, i = 0..7; :mod:`aevb.inference.training.schedules`)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    eps: float | None = None
    beta1: float | None = None
    schedule: str = "constant"

    def options(self) -> dict:
        """The torch optimizer's settings beyond ``lr`` and ``weight_decay`` that are set."""
        return ({} if self.eps is None else {"eps": self.eps}) | (
            {} if self.beta1 is None else {"betas": (self.beta1, ADAM_BETA2)})


@dataclass
class TrainConfig:
    """How training runs (epochs, batches, progress, checkpoints, the engine).

    :param engine: ``fast`` (default: differentiable_loss + a foreach torch optimizer,
        validation off in the loop), ``graphed`` (the fast step replayed from CUDA graphs; CUDA
        and Adam only) or ``svi`` (Pyro's ``SVI`` + ``PyroOptim``); see
        :mod:`aevb.inference.training.engines`.
    :param init: how a new run's parameters start: ``torch`` (default) or ``glorot`` (Burda et
        al.'s code: Glorot-uniform weights, zero biases, the pixel logits' biases at the data's
        mean; :mod:`aevb.inference.training.initialization`)."""

    epochs: int = 10
    batch_size: int = 128
    progress: bool = True
    keep_checkpoints: int = 2
    tensorboard: bool = True
    engine: str = "fast"
    init: str = "torch"


@dataclass
class EvalConfig:
    """Evaluation at the end of training (and the defaults of ``aevb evaluate``).

    :param num_samples: k of the importance-sampled log-likelihood (5000, as Burda et al.).
    :param sample_chunk: importance samples per chunk (bounds memory). With ``batch_size`` it
        sets the rows of one pass through the decoder; 100 x 20 = 2000 rows keep the chunk's
        temporaries (samples x images x pixels) small enough to stay in cache, 24% faster on
        the CPU measured than 250 x 20 (``benchmarks/throughput.py``).
    :param batch_size: test images per chunk (bounds memory).
    :param seed: seeds the importance samples, so the CLI and the API give the same figures.
    :param track: splits (``train``, ``test``) whose mean single-sample ELBO is logged after
        every epoch as ``train_elbo`` / ``test_elbo`` (the validation ELBO always is): learning
        curves on the training and test data, as Kingma & Welling (2014)'s Figure 2. The
        training split is scored as the test split is (a fixed binarization, no minibatch noise).
    :param track_size: the first n images of each tracked split (unset: all).
    """

    num_samples: int = 5000
    sample_chunk: int = 100
    batch_size: int = 20
    num_images: int = 64
    seed: int = 0
    track: list[str] = field(default_factory=list)
    track_size: int | None = None


@dataclass
class KLConfig:
    """A weight w on the KL term (:mod:`aevb.inference.objectives.annealing`): β-VAE and KL warm-up.

    :param beta: the final weight β (1 = the ELBO; Higgins et al. 2017 use β > 1).
    :param warmup_epochs: epochs over which w moves linearly from ``start`` to β, updated
        every step (0 = w is β throughout).
    :param start: w at the start: 0 is the warm-up of Sønderby et al. (2016); above β the
        weight anneals down to β (M2's z, :class:`aevb.inference.semisupervised.M2`).
    :param sites: the latent sites weighted (default: all). Models with enumerated discrete
        latents (M2's y) need it, naming their continuous latents, e.g. ``[z]``.
    """

    beta: float = 1.0
    warmup_epochs: float = 0.0
    start: float = 0.0
    sites: list[str] | None = None

    def schedule(self):
        """The :class:`~aevb.inference.objectives.annealing.KLSchedule` of these settings."""
        from aevb.inference.objectives.annealing import KLSchedule

        return KLSchedule(self.beta, self.warmup_epochs, self.start,
                          None if self.sites is None else frozenset(self.sites))


@dataclass
class TrackingConfig:
    """Where a run reports besides its folder (:mod:`aevb.tracking`).

    :param mlflow: an MLflow tracking URI (``sqlite:///runs/mlflow.db``, ``file:./mlruns``,
        ``http://host:5000``): the run logs its config, per-epoch metrics, final figures and
        pictures there; unset: no MLflow.
    :param experiment: the MLflow experiment the run goes under (a sweep's runs share one).
    :param tags: tags of the MLflow run (a sweep sets the cell's grid coordinates).
    """

    mlflow: str | None = None
    experiment: str = "aevb"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    """A run's configuration.

    :param elbo: the objective (:data:`aevb.inference.objectives.OBJECTIVES`).
    :param num_particles: samples per datapoint: L for elbo/meanfield/score, k for
        iwae/renyi/rws/wake-sleep.
    :param renyi_alpha: α of ``elbo=renyi`` (Li & Turner 2016).
    :param rws_insomnia: the wake phase's share of the guide's update in ``elbo=rws`` (1: wake
        only, 0: sleep only; Bornschein & Bengio 2015).
    :param mmd_scale: λ of ``elbo=mmd`` (InfoVAE's MMD weight; Zhao et al. 2019 use 1000).
    :param info_alpha: α of ``elbo=infovae`` in [0, 1] (Zhao et al. 2019, eq. 6): the
        per-datapoint KL's weight is 1 - α.
    :param info_lambda: λ of ``elbo=infovae``: D(q(z) ‖ p(z))'s weight is α + λ - 1
        (α = 0, λ = 1: the ELBO; α = 1: ``elbo=mmd``).
    :param info_divergence: D of ``elbo=infovae``, a name in
        :data:`~aevb.inference.objectives.DIVERGENCES`: ``mmd`` (MMD², default) or
        ``adversarial`` (KL from a critic's density ratio, trained beside the model).
    :param critic_hidden: the hidden width of the critic (two layers) of ``elbo=aae`` and of
        ``elbo=infovae info_divergence=adversarial``.
    :param kl: the weight on the KL term (β-VAE, warm-up).
    :param tracking: MLflow tracking (:class:`TrackingConfig`).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    elbo: str = "elbo"
    num_particles: int = 1
    renyi_alpha: float = 0.5
    rws_insomnia: float = 1.0
    mmd_scale: float = 1000.0
    info_alpha: float = 0.0
    info_lambda: float = 1000.0
    info_divergence: str = "mmd"
    critic_hidden: int = 256
    seed: int = 0
    device: str = "auto"


def _friendly(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    msg = (getattr(exc, "msg", None) or str(exc) or type(exc).__name__).split("\n")[0]
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(OmegaConf.structured(Config), parent) if parent else \
            OmegaConf.structured(Config)
        valid = ", ".join(sorted(node.keys())) if node is not None else ""
        return ConfigError(f"unknown config key {key!r} in {source}; valid keys here: {valid}")
    return ConfigError(f"bad value for config key {key!r} in {source}: {msg}")


#: the sections of a config (keys whose value is a mapping of further keys)
SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
            "train": TrainConfig, "eval": EvalConfig, "kl": KLConfig,
            "tracking": TrackingConfig}


def _check_shape(conf, source: str) -> None:
    """A config source is a mapping, and each section in it is a mapping too."""
    if isinstance(conf, dict):
        conf = OmegaConf.create(conf)
    if not isinstance(conf, DictConfig):
        raise ConfigError(f"{source} must be a mapping of config keys (key: value), not a "
                          f"{type(conf).__name__.replace('Config', '').lower() or 'value'}")
    for section, cls in SECTIONS.items():
        value = conf.get(section) if section in conf else None
        if section in conf and not isinstance(value, DictConfig):
            keys = ", ".join(f.name for f in fields(cls))
            raise ConfigError(f"config key {section!r} in {source} is a section, not a value "
                              f"({value!r}); give its keys, e.g. {section}: {{{keys.split(',')[0]}"
                              f": ...}}; its keys: {keys}")


def _spec_source(path: str | Path) -> dict:
    """``--spec FILE`` (or the name of a shipped spec): the model section that selects the spec
    model and holds the spec."""
    from aevb.models.spec import SpecError, load_spec
    from aevb.models.spec.schema import to_dict

    try:
        spec = load_spec(resolve_shipped(path, "spec"))
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    return {"model": {"name": "spec", "spec": to_dict(spec)}}


def _shorthand(item: str) -> str:
    """``model=NAME`` (as in ``model=my_model.py:MyModel``) means ``model.name=NAME``."""
    return "model.name=" + item.split("=", 1)[1] if item.startswith("model=") else item


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None, spec: str | Path | None = None,
                data_source=None, registries: bool = True) -> Config:
    """Defaults, merged with ``base`` (a saved run's config), the YAML file at ``path`` (or a
    shipped config's name), the model spec file ``spec`` and then ``overrides``
    (``key=value``), in that order; validated (see :func:`validate` for ``data_source``).
    ``registries=False`` leaves out the checks that import torch (names against the registries
    themselves, model files, specs): a first pass over many configs (a sweep's cells)."""
    cfg = OmegaConf.structured(Config)
    sources: list[tuple[Any, str]] = []
    if base is not None:
        sources.append((base, "the saved run config"))
    if path is not None:
        path = resolve_shipped(path, "config")
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; give a path or the "
                              f"name of a shipped config ({', '.join(shipped_names())})")
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # yaml errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {first}") from None
        if isinstance(loaded, DictConfig) and not loaded:
            raise ConfigError(f"config file {str(path)!r} is empty; give at least one key (for "
                              f"example train: {{epochs: 10}}), or drop --config to train the "
                              f"defaults")
        sources.append((loaded, f"config file {str(path)!r}"))
    if spec is not None:
        sources.append((_spec_source(spec), f"spec {spec}"))
    for item in map(_shorthand, overrides or []):
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            sources.append((OmegaConf.from_dotlist([item]), f"override {item!r}"))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"override {item!r} could not be parsed ({problem}); write "
                              f"key=value with a YAML value, e.g. model.options={{foo: 1}}"
                              ) from None
    for conf, source in sources:
        _check_shape(conf, source)
        try:
            cfg = OmegaConf.merge(cfg, conf)
        except OmegaConfBaseException as exc:
            raise _friendly(exc, source) from None
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, Config)
    _check_values(config)  # before the registries (and torch) are imported
    _check_catalog(config)
    if not registries:
        return config
    from aevb.models.loading import absolute_reference

    config.model.name = absolute_reference(config.model.name)
    try:
        _check_names(config, data_source)
    except ConfigError as exc:
        if spec is not None and str(exc).startswith("spec: "):
            raise ConfigError(f"spec {spec}: {str(exc)[len('spec: '):]}") from None
        raise
    return config


def _check_catalog(cfg: Config) -> None:
    """Registry names against :mod:`aevb.catalog`, while it is the whole list (torch not yet
    imported): a mistyped name is refused in a fraction of a second."""
    from aevb import catalog

    if not catalog.authoritative():
        return
    import operator

    name = cfg.model.name
    reference = ".py:" in name or name.endswith(".py") or name.startswith(OBJECT_PREFIX)
    for key in catalog.NAMES:
        value = operator.attrgetter(key)(cfg)
        message = catalog.unknown(key, None if key == "model.name" and reference else value)
        if message:
            raise ConfigError(message)


def _check_name(key: str, value: str | None, registry) -> None:
    if value is not None and value not in registry:
        raise ConfigError(f"bad value for config key {key!r}: {value!r} is not one of "
                          f"{', '.join(registry.names())}")


def _check_objective_options(cfg: Config) -> None:
    """Each objective's own keys (:data:`aevb.catalog.OBJECTIVE_OPTIONS`) are set only for it,
    and in range."""
    from aevb.catalog import OBJECTIVE_OPTIONS

    for key, owners in OBJECTIVE_OPTIONS.items():
        value = getattr(cfg, key)
        if value != getattr(Config, key) and cfg.elbo not in owners:
            raise ConfigError(f"config key {key!r} is set, but elbo={cfg.elbo}; it belongs to "
                              f"elbo={' or elbo='.join(owners)}")
        if isinstance(value, (int, float)) and value < 0:
            raise ConfigError(f"bad value for config key {key!r}: must be >= 0, got {value}")
    if cfg.critic_hidden < 1:
        raise ConfigError(f"bad value for config key 'critic_hidden': the critic's width is "
                          f">= 1, got {cfg.critic_hidden}")
    if cfg.critic_hidden != Config.critic_hidden and cfg.elbo == "infovae" \
            and cfg.info_divergence != "adversarial":
        raise ConfigError("config key 'critic_hidden' is set, but info_divergence="
                          f"{cfg.info_divergence} trains no critic; add "
                          "info_divergence=adversarial or leave critic_hidden out")


def _check_values(cfg: Config) -> None:
    """The checks of :func:`validate` that need no registry (ranges, seeds, shapes): they run
    before torch is imported."""
    _check_objective_options(cfg)
    if cfg.data.binarization is not None and cfg.data.binarization not in BINARIZATIONS:
        raise ConfigError(f"bad value for config key 'data.binarization': "
                          f"{cfg.data.binarization!r} is not one of {', '.join(BINARIZATIONS)}")
    if cfg.device != "auto" and cfg.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"bad value for config key 'device': {cfg.device!r}; use auto, cpu or cuda")
    positive = {
        "num_particles": cfg.num_particles, "model.z_dim": cfg.model.z_dim,
        "train.epochs": cfg.train.epochs, "train.batch_size": cfg.train.batch_size,
        "eval.num_samples": cfg.eval.num_samples, "eval.sample_chunk": cfg.eval.sample_chunk,
        "eval.batch_size": cfg.eval.batch_size, "optim.lr": cfg.optim.lr,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "data.train_size": cfg.data.train_size, "data.test_size": cfg.data.test_size,
        "data.channels": cfg.data.channels, "optim.eps": cfg.optim.eps,
        "model.posterior_size": cfg.model.posterior_size, "model.min_scale": cfg.model.min_scale,
        "eval.num_images": cfg.eval.num_images, "eval.track_size": cfg.eval.track_size,
    }
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise ConfigError(f"bad value for config key {key!r}: must be > 0, got {value}")
    if cfg.optim.beta1 is not None:
        if not 0 <= cfg.optim.beta1 < 1:
            raise ConfigError(f"bad value for config key 'optim.beta1': must be in [0, 1), got "
                              f"{cfg.optim.beta1}")
        if cfg.optim.name != "adam":
            raise ConfigError(f"optim.beta1 is Adam's; optim.name={cfg.optim.name} has none "
                              f"(drop optim.beta1 or use optim.name=adam)")
    unknown = sorted(set(cfg.eval.track) - set(TRACKABLE))
    if unknown:
        raise ConfigError(f"bad value for config key 'eval.track': {unknown}; give a list out of "
                          f"{', '.join(TRACKABLE)} (the validation ELBO is always logged)")
    hidden = cfg.model.hidden_sizes
    if hidden is not None and not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ConfigError(f"bad value for config key 'model.hidden_sizes': {hidden}; give "
                          f"layer sizes >= 1, e.g. [400]")
    for key, value in {"seed": cfg.seed, "eval.seed": cfg.eval.seed,
                       "data.binarization_seed": cfg.data.binarization_seed}.items():
        if not 0 <= value < 2**32:
            raise ConfigError(f"bad value for config key {key!r}: a seed is in [0, 2**32), got "
                              f"{value}")
    if cfg.info_alpha > 1:
        raise ConfigError(f"bad value for config key 'info_alpha': InfoVAE's α is in [0, 1], got "
                          f"{cfg.info_alpha}")
    if cfg.optim.weight_decay < 0:
        raise ConfigError(f"bad value for config key 'optim.weight_decay': must be >= 0, got "
                          f"{cfg.optim.weight_decay}")
    uri = cfg.tracking.mlflow
    if uri is not None and (not uri.strip() or ("://" not in uri and not uri.startswith("file:")
                                                  and ":" in uri)):
        raise ConfigError(f"bad value for config key 'tracking.mlflow': {uri!r}; give an MLflow "
                          f"tracking URI, e.g. sqlite:///runs/mlflow.db, file:./mlruns or "
                          f"http://host:5000")


def validate(cfg: Config, data_source=None) -> None:
    """Check values against the ranges and the registries; raise :class:`ConfigError`.
    ``data_source`` is the :class:`~aevb.data.DataSource` of data handed over as an object
    (:func:`aevb.fit`); without one, ``data.name`` must be a registered dataset."""
    _check_values(cfg)
    _check_names(cfg, data_source)


def _check_names(cfg: Config, data_source=None) -> None:
    """The checks of :func:`validate` against the registries (they import torch)."""
    import torch

    from aevb.data import DATASETS
    from aevb.inference.objectives import DIVERGENCES, OBJECTIVES
    from aevb.inference.training.engines import ENGINES
    from aevb.inference.training.initialization import INITIALIZATIONS
    from aevb.inference.training.optim import OPTIMIZERS
    from aevb.inference.training.schedules import SCHEDULES
    from aevb.models.families import FAMILIES
    from aevb.models.loading import ModelLoadError, is_file_reference, resolve_model
    from aevb.models.networks import ACTIVATIONS, NETWORKS
    from aevb.models.posteriors import POSTERIORS
    from aevb.models.spec import SpecError, load_spec

    _check_name("elbo", cfg.elbo, OBJECTIVES)
    _check_name("optim.name", cfg.optim.name, OPTIMIZERS)
    _check_name("train.engine", cfg.train.engine, ENGINES)
    _check_name("train.init", cfg.train.init, INITIALIZATIONS)
    _check_name("optim.schedule", cfg.optim.schedule, SCHEDULES)
    if cfg.optim.schedule != "constant" and cfg.train.engine not in ("fast", "graphed"):
        raise ConfigError(f"optim.schedule={cfg.optim.schedule} needs train.engine=fast")
    if cfg.train.engine == "graphed" and (cfg.optim.name != "adam" or cfg.device.startswith(
            ("cpu", "mps")) or (cfg.device == "auto" and not torch.cuda.is_available())):
        raise ConfigError("train.engine=graphed captures CUDA graphs: it needs optim.name=adam "
                          "and a CUDA device; use train.engine=fast here")
    if data_source is None:
        _check_name("data.name", cfg.data.name, DATASETS)
        data_source = DATASETS.get(cfg.data.name)
    if is_file_reference(cfg.model.name):  # imported when the model is built (with consent)
        path = cfg.model.name.rsplit(".py:", 1)[0] + ".py" if ".py:" in cfg.model.name \
            else cfg.model.name
        if not Path(path).is_file():
            raise ConfigError(f"bad value for config key 'model.name': model file {path!r} "
                              f"does not exist")
    elif not cfg.model.name.startswith(OBJECT_PREFIX):
        try:
            resolve_model(cfg.model.name)
        except ModelLoadError as exc:
            raise ConfigError(f"bad value for config key 'model.name': {exc}") from None
    if cfg.model.spec is not None:
        from aevb.models.spec import compile_spec

        try:
            spec = load_spec(cfg.model.spec)
            x_shape = data_source.x_shape(cfg.data)
            if x_shape is not None:  # the whole compilation: spec errors before data is read
                with torch.random.fork_rng(devices=[]):  # leave the random stream untouched
                    compile_spec(spec, x_shape)
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
    _check_name("model.network", cfg.model.network, NETWORKS)
    _check_name("model.activation", cfg.model.activation, ACTIVATIONS)
    _check_name("model.likelihood", cfg.model.likelihood, FAMILIES)
    if cfg.model.posterior is not None and cfg.model.posterior not in POSTERIORS:
        raise ConfigError(f"bad value for config key 'model.posterior': {cfg.model.posterior!r} "
                          f"is not one of {', '.join(POSTERIORS)}")
    _check_name("info_divergence", cfg.info_divergence, DIVERGENCES)
    if cfg.kl.beta <= 0 or cfg.kl.warmup_epochs < 0 or cfg.kl.start < 0:
        raise ConfigError(f"bad value for config key 'kl.beta' / 'kl.warmup_epochs' / "
                          f"'kl.start': need beta > 0, warmup_epochs >= 0 and start >= 0, got "
                          f"{cfg.kl.beta}, {cfg.kl.warmup_epochs} and {cfg.kl.start}")
    sites = cfg.kl.sites
    if sites is not None and (not isinstance(sites, list) or not sites
                              or not all(isinstance(n, str) for n in sites)):
        raise ConfigError(f"bad value for config key 'kl.sites': {sites!r}; give a list of "
                          f"latent site names, e.g. kl.sites=[z], or leave it unset (all)")
    size = cfg.data.validation_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | float)
                             or size < 0 or (size >= 1 and size != int(size))):
        raise ConfigError(f"bad value for config key 'data.validation_size': {size!r}; give a "
                          f"count (0 = no validation split) or a fraction in (0, 1)")
    image_size = cfg.data.image_size
    if image_size is not None:
        sizes = [image_size] if isinstance(image_size, int) else list(image_size)
        if not 1 <= len(sizes) <= 2 or not all(isinstance(v, int) and v > 0 for v in sizes):
            raise ConfigError(f"bad value for config key 'data.image_size': {image_size!r}; "
                              f"give [H, W] or one size in pixels")


#: the splits ``eval.track`` can name
TRACKABLE = ("train", "test")

#: ``model.name`` of a model object handed to :func:`aevb.fit` (``object:module.Class``)
OBJECT_PREFIX = "object:"


def to_yaml(cfg: Config) -> str:
    """The config as YAML (a run folder's ``config.yaml``)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_dict(data: dict, data_source=None) -> Config:
    """Rebuild a :class:`Config` saved in a checkpoint or ``config.yaml``."""
    return load_config(base=data, data_source=data_source)


def to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts (what checkpoints and ``run.json`` record)."""
    out = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(out, dict)
    return out
