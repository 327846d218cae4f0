"""The spec: a latent-variable model as data (YAML, or the same structure as dataclasses).

Example (``configs/specs/vae.yaml``)::

    name: vae
    networks:
      encoder: {type: mlp, hidden: [400], activation: tanh}
      decoder: {type: mlp, hidden: [400], activation: tanh}
    latents:
      z:
        type: normal
        shape: [50]
        prior: standard
        posterior: {family: diag, inputs: [x], network: encoder}
    observed:
      x: {likelihood: bernoulli, parents: [z], network: decoder}

Sections: ``networks`` (named networks of :data:`~aevb.models.networks.NETWORKS`), ``inputs``
(conditioning values from the batch, not modelled: a CVAE's label), ``latents``,
``sometimes_observed`` (observed in the model when the batch carries them, inferred by the guide
when it does not: M2's label) and ``observed``. :func:`load_spec` merges a file or mapping over
these dataclasses and refuses unknown keys and ill-typed values with the path of the key;
:mod:`aevb.models.spec.compiler` checks the meaning (names, types, the DAG, shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class SpecError(ValueError):
    """A spec that cannot be compiled; the message starts with the path of the offending key."""

    def __init__(self, path: str, message: str, source: str | None = None):
        self.path = path
        where = f"spec {source}: " if source else "spec: "
        super().__init__(f"{where}{path}: {message}" if path else f"{where}{message}")


@dataclass
class NetworkSpec:
    """:param type: a name in :data:`~aevb.models.networks.NETWORKS` (``mlp``, ``conv``, ...).
    :param hidden: hidden layer sizes. :param activation: hidden activation.
    :param options: further keyword arguments of a user-registered network."""

    type: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400])
    activation: str = "tanh"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PriorSpec:
    """``standard`` (no parents: N(0, I), fair coins, uniform classes) or conditional:
    ``family(network(parents))``."""

    parents: list[str] = field(default_factory=list)
    network: str | None = None
    family: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PosteriorSpec:
    """The guide's q(v | inputs) = ``family(network(inputs))``.

    :param enumerate: discrete variables only; sum over the values exactly (TraceEnum_ELBO)
        instead of sampling. Default: true for categorical variables.
    :param aux_weight: sometimes-observed variables only: on batches that carry the value, add
        ``aux_weight * log q(v | inputs)`` per datapoint to the objective (the classification
        term of Kingma et al. 2014, eq. 9, with alpha = aux_weight * N_labelled).
    :param balance_weight: sometimes-observed categorical variables with a standard prior
        only: on batches without the value, subtract ``balance_weight * KL(q̄(v) || p(v))``
        per datapoint from the objective, q̄(v) the batch's mean of q(v | inputs). The bound
        lets one class's decoder take over the images of another, which q(v|x) then follows;
        this term holds the classes' shares of the unlabelled data at p(v)'s (the marginal
        entropy term of Springenberg 2016, CatGAN, eq. 7; Hu et al. 2017, IMSAT).
    """

    inputs: list[str] = field(default_factory=list)
    network: str | None = None
    family: str | None = None
    enumerate: bool | None = None
    aux_weight: float = 0.0
    balance_weight: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LatentSpec:
    """:param type: a name in :data:`~aevb.models.families.VALUE_TYPES`.
    :param shape: shape of one value (``normal``, ``bernoulli``).
    :param num_classes: number of classes (``categorical``)."""

    type: str = "normal"
    shape: list[int] = field(default_factory=list)
    num_classes: int | None = None
    prior: PriorSpec = field(default_factory=PriorSpec)
    posterior: PosteriorSpec | None = None


@dataclass
class SometimesObservedSpec(LatentSpec):
    """A latent whose value the batch sometimes carries (field ``data``, default the name)."""

    data: str | None = None


@dataclass
class ObservedSpec:
    """:param likelihood: a family of :data:`~aevb.models.families.FAMILIES`.
    :param shape: shape of one value; default (and checked against) the data's.
    :param data: the batch field it is read from (``x`` or ``y``); default the name."""

    likelihood: str = "bernoulli"
    parents: list[str] = field(default_factory=list)
    network: str | None = None
    shape: list[int] | None = None
    num_classes: int | None = None
    data: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class InputSpec:
    """A conditioning value taken from the batch and not modelled (a CVAE's label)."""

    type: str = "categorical"
    shape: list[int] = field(default_factory=list)
    num_classes: int | None = None
    data: str | None = None


@dataclass
class ModelSpec:
    """A whole model. ``code`` names the latent whose posterior mean ``encode`` returns (for
    latent plots and active units); default the first continuous latent the guide samples."""

    name: str = "model"
    description: str = ""
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    latents: dict[str, LatentSpec] = field(default_factory=dict)
    sometimes_observed: dict[str, SometimesObservedSpec] = field(default_factory=dict)
    observed: dict[str, ObservedSpec] = field(default_factory=dict)
    code: str | None = None


def _normalise(raw: dict) -> dict:
    """Shorthands: ``prior: standard``; a single name where a list is expected."""
    raw = dict(raw)
    for section in ("latents", "sometimes_observed"):
        variables = raw.get(section)
        if not isinstance(variables, dict):
            continue
        raw[section] = variables = dict(variables)
        for name, var in variables.items():
            if isinstance(var, dict):
                var = variables[name] = dict(var)
                if var.get("prior") in ("standard", None):
                    var["prior"] = {}
                for key, sub in (("prior", "parents"), ("posterior", "inputs")):
                    if isinstance(var.get(key), dict) and isinstance(var[key].get(sub), str):
                        var[key] = dict(var[key]) | {sub: [var[key][sub]]}
    observed = raw.get("observed")
    if isinstance(observed, dict):
        raw["observed"] = {n: (dict(v) | {"parents": [v["parents"]]})
                           if isinstance(v, dict) and isinstance(v.get("parents"), str) else v
                           for n, v in observed.items()}
    return raw


def load_spec(source: str | Path | dict | ModelSpec, name: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from a YAML file, a mapping or a spec.

    :raises SpecError: for a missing or malformed file, an unknown key or an ill-typed value;
        the message names the key's path.
    """
    if isinstance(source, ModelSpec):
        return source
    label = name
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = label or str(path)
        if not path.is_file():
            raise SpecError("", f"file {str(path)!r} does not exist", None)
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # yaml errors
            raise SpecError("", f"{str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, DictConfig):
            raise SpecError("", "the file must hold a mapping (name, networks, latents, ...)",
                            label)
        raw = OmegaConf.to_container(loaded)
    elif isinstance(source, dict):
        raw = source
    else:
        raise SpecError("", f"expected a file, a mapping or a ModelSpec, got {type(source).__name__}")
    assert isinstance(raw, dict)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ModelSpec), _normalise(raw))
        spec = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        msg = getattr(exc, "msg", str(exc)).split("\n")[0]
        if "not in struct" in msg or ("Key '" in msg and "not in" in msg):
            msg = f"unknown key {key.rsplit('.', 1)[-1]!r}; " + _valid_keys_hint(key)
        raise SpecError(key, msg, label) from None
    assert isinstance(spec, ModelSpec)
    return spec


_SECTION_TYPES = {"networks": NetworkSpec, "inputs": InputSpec, "latents": LatentSpec,
                  "sometimes_observed": SometimesObservedSpec, "observed": ObservedSpec}


def _valid_keys_hint(key: str) -> str:
    parts = key.split(".")
    node: Any = ModelSpec
    for i, part in enumerate(parts[:-1]):
        if node is ModelSpec and part in _SECTION_TYPES:
            node = _SECTION_TYPES[part]
            parts_left = parts[i + 2:-1]  # skip the variable name
            for sub in parts_left:
                node = {"prior": PriorSpec, "posterior": PosteriorSpec}.get(sub, node)
            break
    fields = sorted(getattr(node, "__dataclass_fields__", {}))
    return f"valid keys here: {', '.join(fields)}"


def to_dict(spec: ModelSpec) -> dict:
    """The spec as plain data (what a run's ``config.yaml`` stores)."""
    out = OmegaConf.to_container(OmegaConf.structured(spec))
    assert isinstance(out, dict)
    return out
