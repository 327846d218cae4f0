"""Compile a :class:`~aevb.models.spec.schema.ModelSpec` into a Pyro model/guide pair.

The compiled :class:`SpecModel` keeps the contract of :mod:`aevb.models.base`: ``model(batch)``
samples every variable in topological order of the model's DAG inside the data plate
(conditional priors and likelihoods are ``family(network(parents))``), ``guide(batch)`` samples
the latents in topological order of the guide's DAG (``family(network(inputs))``), and every
network is a registered submodule. Sometimes-observed variables are observed in the model when
the batch carries them and sampled — or, when discrete, enumerated
(``infer={"enumerate": "parallel"}``) so that TraceEnum_ELBO sums them out exactly — when it does
not (Kingma et al. 2014, section 3.2). Everything a spec can get wrong is refused here, before
training, with a :class:`~aevb.models.spec.schema.SpecError` that names the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..base import Batch, LatentVariableModel
from ..families import FAMILIES, VALUE_TYPES, BernoulliFamily, Family, ValueType
from ..networks import ACTIVATIONS, build_network, final_linear
from ..posteriors import POSTERIORS
from ..registry import UnknownNameError
from ..zoo import register_model
from .graph import CycleError, topological_order
from .schema import ModelSpec, SpecError, load_spec, to_dict

BATCH_FIELDS = ("x", "y")
SECTIONS = ("inputs", "latents", "sometimes_observed", "observed")
ROLE = {"inputs": "input", "latents": "latent", "sometimes_observed": "sometimes",
        "observed": "observed"}


@dataclass
class Variable:
    """One variable of a compiled spec."""

    name: str
    role: str  # input | latent | sometimes | observed
    path: str  # its key in the spec, e.g. "latents.z"
    vtype: ValueType
    shape: tuple[int, ...]
    num_classes: int | None = None
    data: str | None = None  # the batch field it is read from

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.vtype.feature_shape(self.shape, self.num_classes)

    def encode(self, value: torch.Tensor) -> torch.Tensor:
        return self.vtype.encode(value, self.num_classes)


@dataclass
class Conditional:
    """``family(network(parents))``, or the variable's standard distribution when
    ``network`` is ``None``."""

    family: Family | None
    parents: list[str] = field(default_factory=list)
    network: str | None = None
    enumerate: bool = False
    aux_weight: float = 0.0
    balance_weight: float = 0.0


class _Compiler:
    def __init__(self, spec: ModelSpec, x_shape: Sequence[int], source: str | None):
        self.spec = spec
        self.x_shape = tuple(x_shape)
        self.source = source
        self.variables: dict[str, Variable] = {}
        self.priors: dict[str, Conditional] = {}
        self.posteriors: dict[str, Conditional] = {}
        self.likelihoods: dict[str, Family] = {}
        self.network_users: dict[str, str] = {}

    def error(self, path: str, message: str) -> SpecError:
        return SpecError(path, message, self.source)

    # -- variables ---------------------------------------------------------------------------
    def collect_variables(self) -> None:
        seen: dict[str, str] = {}
        for section in SECTIONS:
            for name, var in getattr(self.spec, section).items():
                path = f"{section}.{name}"
                if name in seen:
                    raise self.error(path, f"the name {name!r} is already used in {seen[name]}; "
                                           "variable names must be unique")
                if not name.isidentifier() or name == "data":
                    raise self.error(path, f"{name!r} cannot name a variable (use an identifier "
                                           "other than 'data', the plate's name)")
                seen[name] = section
                self.variables[name] = self.variable(name, section, var, path)

    def variable(self, name: str, section: str, var, path: str) -> Variable:
        role = ROLE[section]
        data = getattr(var, "data", None) or (name if role != "latent" else None)
        if data is not None and data not in BATCH_FIELDS:
            raise self.error(f"{path}.data", f"{data!r} is not a batch field; batches carry "
                                             f"{', '.join(BATCH_FIELDS)}")
        if role == "observed":
            family = self.family(f"{path}.likelihood", var.likelihood, None, var.options,
                                 var.shape, var.num_classes, name, data)
            self.likelihoods[name] = family
            vtype = VALUE_TYPES.get(family.value_type)
            return Variable(name, role, path, vtype, family.shape, var.num_classes, data)
        try:
            vtype = VALUE_TYPES.get(var.type)
        except UnknownNameError as exc:
            raise self.error(f"{path}.type", str(exc)) from None
        shape = self.value_shape(path, vtype, var.shape, var.num_classes, data)
        return Variable(name, role, path, vtype, shape, var.num_classes, data)

    def value_shape(self, path, vtype: ValueType, shape, num_classes, data) -> tuple[int, ...]:
        if data == "x" and not shape and vtype.name != "categorical":
            shape = list(self.x_shape)
        try:
            value_shape = vtype.value_shape(list(shape or []), num_classes)
        except ValueError as exc:
            raise self.error(f"{path}.shape", str(exc)) from None
        if data == "x" and value_shape != self.x_shape:
            raise self.error(f"{path}.shape", f"{list(value_shape)} does not match the data, whose "
                                              f"values have shape {list(self.x_shape)}; remove "
                                              "shape (it defaults to the data's) or fix it")
        return value_shape

    def family(self, path: str, name: str | None, vtype: ValueType | None, options: dict,
               shape=None, num_classes=None, var_name: str = "", data=None) -> Family:
        """Build a family; ``vtype`` (for latents) fixes the value type it must fit."""
        name = name or (vtype.default_family if vtype else "")
        if vtype is None and name in POSTERIORS or (vtype is None and name not in FAMILIES):
            likelihoods = [n for n in FAMILIES.names() if n not in POSTERIORS]
            raise self.error(path, f"unknown likelihood {name!r}; valid likelihoods: "
                                   f"{', '.join(likelihoods)}")
        try:
            cls = FAMILIES.get(name)
        except UnknownNameError as exc:
            raise self.error(path, str(exc)) from None
        if vtype is not None and cls.value_type != vtype.name:
            fitting = [n for n in FAMILIES.names() if FAMILIES.get(n).value_type == vtype.name]
            raise self.error(path, f"family {name!r} is for {cls.value_type} variables but "
                                   f"{var_name!r} is {vtype.name}; families for {vtype.name}: "
                                   f"{', '.join(fitting)}")
        if vtype is None:  # an observed variable: its type comes from its likelihood
            value_type = VALUE_TYPES.get(cls.value_type)
            shape = self.value_shape(path.rsplit(".", 1)[0], value_type, shape, num_classes, data)
        try:
            return cls(shape, num_classes, **dict(options))
        except (TypeError, ValueError) as exc:
            raise self.error(path.rsplit(".", 1)[0] + ".options", f"{name}: {exc}") from None

    # -- conditionals ------------------------------------------------------------------------
    def check_names(self, path: str, names: list[str]) -> None:
        for n in names:
            if n not in self.variables:
                raise self.error(path, f"unknown variable {n!r}; variables: "
                                       f"{', '.join(self.variables)}")

    def use_network(self, path: str, network: str | None, what: str) -> None:
        if network is None:
            raise self.error(path, f"missing: {what} needs the network that computes its "
                                   "parameters (a name from networks)")
        if network not in self.spec.networks:
            raise self.error(path, f"unknown network {network!r}; networks: "
                                   f"{', '.join(self.spec.networks) or '(none defined)'}")
        if network in self.network_users:
            raise self.error(path, f"network {network!r} already computes "
                                   f"{self.network_users[network]}; each network computes one "
                                   "distribution's parameters, so declare another network")
        self.network_users[network] = what

    def collect_conditionals(self) -> None:
        for name, var in self.variables.items():
            spec = _section(self.spec, var)[name]
            if var.role == "observed":
                self.check_names(f"{var.path}.parents", spec.parents)
                if not spec.parents:
                    raise self.error(f"{var.path}.parents", "missing: an observed variable's "
                                                            "likelihood is computed from its parents")
                self.use_network(f"{var.path}.network", spec.network, f"p({name}|.)")
                self.priors[name] = Conditional(self.likelihoods[name], list(spec.parents),
                                                spec.network)
            elif var.role in ("latent", "sometimes"):
                self.priors[name] = self.prior(var, spec.prior)
                self.posteriors[name] = self.posterior(var, spec.posterior)

    def prior(self, var: Variable, prior) -> Conditional:
        path = f"{var.path}.prior"
        self.check_names(f"{path}.parents", prior.parents)
        if not prior.parents:
            if prior.network is not None:
                raise self.error(f"{path}.network", "a standard prior has no network; give "
                                                    "parents too, or remove the network")
            return Conditional(None)
        self.use_network(f"{path}.network", prior.network, f"p({var.name}|.)")
        family = self.family(f"{path}.family", prior.family, var.vtype, prior.options, var.shape,
                             var.num_classes, var.name)
        return Conditional(family, list(prior.parents), prior.network)

    def posterior(self, var: Variable, post) -> Conditional:
        path = f"{var.path}.posterior"
        if post is None:
            raise self.error(path, f"missing: the guide does not cover {var.name!r}; add "
                                   "posterior: {inputs: [x], network: <a network>}")
        self.check_names(f"{path}.inputs", post.inputs)
        if not post.inputs:
            raise self.error(f"{path}.inputs", "missing: the variables the guide's network reads "
                                               "(e.g. [x])")
        if var.name in post.inputs:
            raise self.error(f"{path}.inputs", f"q({var.name}|.) cannot read {var.name} itself")
        self.use_network(f"{path}.network", post.network, f"q({var.name}|.)")
        family = self.family(f"{path}.family", post.family, var.vtype, post.options, var.shape,
                             var.num_classes, var.name)
        enumerate_ = var.vtype.enumerable if post.enumerate is None else post.enumerate
        if enumerate_ and not var.vtype.enumerable:
            raise self.error(f"{path}.enumerate", f"{var.vtype.name} variables cannot be "
                                                  "enumerated; remove enumerate")
        if post.aux_weight and var.role != "sometimes":
            raise self.error(f"{path}.aux_weight", "applies to sometimes_observed variables only "
                                                   "(it needs observed values)")
        if post.balance_weight < 0 or post.balance_weight and (
                var.role != "sometimes" or var.vtype.name != "categorical"
                or self.priors[var.name].network is not None):
            raise self.error(f"{path}.balance_weight", "needs a weight >= 0 on a "
                                                       "sometimes_observed categorical variable "
                                                       "with a standard prior")
        return Conditional(family, list(post.inputs), post.network, bool(enumerate_),
                           float(post.aux_weight), float(post.balance_weight))

    # -- graphs, networks, shapes --------------------------------------------------------------
    def order(self, which: str, nodes: list[str], conditionals: dict[str, Conditional]) -> list[str]:
        try:
            return topological_order(nodes, {n: conditionals[n].parents for n in nodes})
        except CycleError as exc:
            cycle = list(reversed(exc.cycle))  # parent -> child
            key = "parents" if which == "model" else "inputs"
            part = {"model": "prior.", "guide": "posterior."}[which]
            first = self.variables[cycle[0]]
            path = f"{first.path}.{'' if first.role == 'observed' else part}{key}"
            raise self.error(path, f"the {which} has a cycle: {' -> '.join(cycle)}; a variable "
                                   f"cannot depend on itself — remove one of these {key}") from None

    def unused_networks(self) -> None:
        for name in self.spec.networks:
            if name not in self.network_users:
                raise self.error(f"networks.{name}", "defined but used by no prior, posterior or "
                                                     "likelihood; remove it or use it")

    def build_networks(self) -> nn.ModuleDict:
        nets = nn.ModuleDict()
        by_network = {c.network: c for c in (*self.priors.values(), *self.posteriors.values())
                      if c.network is not None}
        for name, net_spec in self.spec.networks.items():  # spec order: the parameters' order
            cond = by_network[name]
            in_shapes = [self.variables[p].feature_shape for p in cond.parents]
            assert cond.family is not None
            out_shape = cond.family.param_shape
            path = f"networks.{name}"
            if net_spec.activation not in ACTIVATIONS:
                raise self.error(f"{path}.activation", f"unknown activation "
                                                       f"{net_spec.activation!r}; valid activations:"
                                                       f" {', '.join(ACTIVATIONS.names())}")
            if not all(isinstance(h, int) and h > 0 for h in net_spec.hidden):
                raise self.error(f"{path}.hidden", f"{net_spec.hidden}: hidden layer sizes are "
                                                   f"integers >= 1")
            try:
                net = build_network(net_spec.type, in_shapes, out_shape, net_spec.hidden,
                                    net_spec.activation, **net_spec.options)
            except UnknownNameError as exc:
                raise self.error(f"{path}.type", str(exc)) from None
            except (TypeError, ValueError) as exc:
                raise self.error(path, f"cannot build it for {self.network_users[name]}: "
                                       f"{exc}") from None
            self.probe(path, name, net, in_shapes, out_shape)
            nets[name] = net
        return nets

    def probe(self, path, name, net, in_shapes, out_shape) -> None:
        """Run the network on a batch of 2 and compare its output with the family's parameters."""
        with torch.no_grad():
            try:
                out = net(*[torch.zeros(2, *s) for s in in_shapes])
            except Exception as exc:  # noqa: BLE001 - any failure is a shape problem to report
                raise self.error(path, f"fails on inputs of shapes {[list(s) for s in in_shapes]} "
                                       f"({self.network_users[name]}): {exc}") from None
        if tuple(out.shape) != (2, *out_shape):
            raise self.error(path, f"outputs shape {list(out.shape[1:])} per datapoint, but "
                                   f"{self.network_users[name]} needs {list(out_shape)} (the "
                                   "parameters of its family)")

    def run(self):
        self.collect_variables()
        if not any(v.role == "observed" for v in self.variables.values()):
            raise self.error("observed", "missing: a model needs at least one observed variable")
        self.collect_conditionals()
        self.unused_networks()
        random_vars = [n for n, v in self.variables.items() if v.role != "input"]
        model_order = self.order("model", random_vars, self.priors)
        guide_order = self.order("guide", list(self.posteriors), self.posteriors)
        code = self.spec.code
        if code is not None and code not in self.posteriors:
            raise self.error("code", f"{code!r} is not a latent; latents: {', '.join(self.posteriors)}")
        return model_order, guide_order, self.build_networks()


def _section(spec: ModelSpec, var: Variable) -> dict:
    return getattr(spec, var.path.split(".", 1)[0])


@register_model("spec")
class SpecModel(LatentVariableModel):
    """A latent-variable model compiled from a spec (:mod:`aevb.models.spec.schema`).

    :param x_shape: shape of one observation of the batch field ``x``.
    :param spec: a :class:`~aevb.models.spec.schema.ModelSpec`, a mapping or a YAML file.
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28),
                 spec: ModelSpec | dict | str | Path | None = None):
        super().__init__()
        if spec is None:
            raise SpecError("", "model 'spec' needs a spec: aevb train --spec FILE.yaml")
        source = str(spec) if isinstance(spec, (str, Path)) else None
        self.spec = load_spec(spec)
        compiler = _Compiler(self.spec, x_shape, source)
        self.model_order, self.guide_order, self.networks = compiler.run()
        self.variables = compiler.variables
        self.priors, self.posteriors = compiler.priors, compiler.posteriors
        # families with parameters of their own (flow posteriors) train with the networks
        flows = {name: c.family.module for name, c in (*self.priors.items(),
                                                       *self.posteriors.items())
                 if c.family is not None and getattr(c.family, "module", None) is not None}
        if flows:
            self.flows = nn.ModuleDict(flows)
        self.x_shape = tuple(x_shape)
        self.observed_sites = tuple(n for n, v in self.variables.items() if v.role == "observed")
        self.enumerated_sites = tuple(n for n, c in self.posteriors.items() if c.enumerate)
        reads_y = {v.role for v in self.variables.values() if v.data == "y"}
        self.labels = ("required" if reads_y & {"input", "observed"} else
                       "optional" if "sometimes" in reads_y else "unused")
        continuous = [n for n in self.guide_order if not self.variables[n].vtype.enumerable]
        self.code = self.spec.code or (continuous or self.guide_order)[0]

    def spec_dict(self) -> dict:
        return to_dict(self.spec)

    def logit_layers(self) -> dict:
        out = {}
        for name in self.observed_sites:
            var, cond = self.variables[name], self.priors[name]
            if var.data == "x" and cond.network is not None and isinstance(cond.family,
                                                                           BernoulliFamily):
                layer = final_linear(self.networks[cond.network])
                if layer is not None:
                    out[name] = layer
        return out

    # -- the pieces ----------------------------------------------------------------------------
    def _given(self, batch: Batch, roles: tuple[str, ...]) -> dict[str, torch.Tensor]:
        values = {}
        for name, var in self.variables.items():
            if var.role in roles and var.data is not None:
                value = getattr(batch, var.data)
                if value is None and var.role in ("input", "observed"):
                    raise ValueError(f"the spec's {var.path} reads batch.{var.data}, but the batch "
                                     f"has none (a labelled dataset is needed)")
                if value is not None:
                    values[name] = value
        return values

    def _params(self, cond: Conditional, values: dict[str, torch.Tensor]) -> torch.Tensor:
        assert cond.network is not None
        inputs = [self.variables[p].encode(values[p]) for p in cond.parents]
        return self.networks[cond.network](*inputs)

    def _distribution(self, name: str, cond: Conditional, values, like: torch.Tensor):
        if cond.network is None:
            var = self.variables[name]
            return var.vtype.standard(var.shape, var.num_classes, like)
        assert cond.family is not None
        return cond.family(self._params(cond, values))

    # -- the model/guide pair ------------------------------------------------------------------
    def model(self, batch: Batch) -> None:
        values = self._given(batch, ("input",))
        observations = self._given(batch, ("observed", "sometimes"))
        with self.data_plate(batch):
            for name in self.model_order:
                obs = observations.get(name)
                fn = self._distribution(name, self.priors[name], values, batch.x)
                values[name] = pyro.sample(name, fn, obs=obs)

    def guide(self, batch: Batch) -> None:
        values = self._given(batch, ("input", "observed", "sometimes"))
        with self.data_plate(batch):
            for name in self.guide_order:
                cond = self.posteriors[name]
                if name in values:  # a sometimes-observed variable the batch carries
                    if cond.aux_weight:
                        log_q = self._distribution(name, cond, values, batch.x).log_prob(values[name])
                        # a guide factor enters the objective with a minus sign
                        pyro.factor(f"aux_{name}", -cond.aux_weight * log_q, has_rsample=True)
                    continue
                infer = {"enumerate": "parallel"} if cond.enumerate else {}
                fn = self._distribution(name, cond, values, batch.x)
                if cond.balance_weight:
                    self._balance(name, cond.balance_weight, fn, batch.x)
                values[name] = pyro.sample(name, fn, infer=infer)

    def _balance(self, name: str, weight: float, fn, like: torch.Tensor) -> None:
        """``weight * KL(q̄ || p)`` per datapoint, q̄ the batch's mean of ``fn``'s class
        probabilities and p the standard prior (:attr:`PosteriorSpec.balance_weight`)."""
        classes = fn.probs.shape[-1]
        q_bar = dist.Categorical(probs=fn.probs.reshape(-1, classes).mean(0))
        prior = self._distribution(name, self.priors[name], {}, like)
        p = dist.Categorical(logits=prior.logits.reshape(-1, classes)[0])
        kl = torch.distributions.kl_divergence(q_bar, p)
        # a guide factor enters the objective with a minus sign
        pyro.factor(f"balance_{name}", weight * kl.expand(like.shape[:1]), has_rsample=True)

    # -- pictures and diagnostics ----------------------------------------------------------------
    def _posterior_means(self, x: torch.Tensor, y: torch.Tensor | None,
                         stop: str | None = None) -> dict[str, torch.Tensor]:
        """The batch's values plus the guide's posterior means, in guide order (up to, not
        including, ``stop``)."""
        values = self._given(Batch(x, y), ("input", "observed", "sometimes"))
        for name in self.guide_order:
            if name == stop:
                break
            if name not in values:
                cond = self.posteriors[name]
                assert cond.family is not None
                values[name] = cond.family.mean(self._params(cond, values))
        return values

    def _observation_means(self, values: dict[str, torch.Tensor], like: torch.Tensor,
                           sample_latents: bool, prior_means: bool = False) -> torch.Tensor:
        """Run the model forward from ``values``; the mean of the (first) x-observation. A
        latent without a value is drawn from its prior (``sample_latents``) or set to its
        prior mean given its parents (``prior_means``)."""
        result = None
        for name in self.model_order:
            var, cond = self.variables[name], self.priors[name]
            if var.role == "observed":
                assert cond.family is not None
                values[name] = cond.family.mean(self._params(cond, values))
                if var.data == "x" and result is None:
                    result = values[name]
            elif name not in values and (sample_latents or prior_means):
                fn = self._distribution(name, cond, values, like)
                if not fn.batch_shape:
                    fn = fn.expand([like.shape[0]])
                values[name] = fn.sample() if sample_latents else fn.mean
        if result is None:
            raise ValueError("the spec has no observed variable read from batch.x to picture")
        return result

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of the ``code`` latent (the most probable class for a categorical)."""
        return self._posterior_means(x, y)[self.code]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._observation_means(self._posterior_means(x, y), x, sample_latents=False)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of p(x|...) with the ``code`` latent at ``z`` (``(n, *shape)``), the label
        (the categorical variable read from ``batch.y``) at ``y`` where the model has one, and
        every other latent at its prior mean given its parents."""
        values = {self.code: z}
        label = next((n for n, v in self.variables.items() if v.data == "y"), None)
        if label is not None:
            if y is None:
                raise ValueError("decode: this model's x depends on its label; pass y")
            values[label] = y
        return self._observation_means(values, z, sample_latents=False, prior_means=True)

    @torch.no_grad()
    def sample_prior(self, name: str, num_samples: int,
                     values: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``num_samples`` draws of latent ``name`` from its prior given ``values`` of its
        parents (each ``(num_samples, ...)``)."""
        like = next(self.parameters()).new_zeros(num_samples)
        fn = self._distribution(name, self.priors[name], dict(values or {}), like)
        if not fn.batch_shape:
            fn = fn.expand([num_samples])
        return fn.sample()

    @torch.no_grad()
    def generate(self, num_samples: int) -> torch.Tensor:
        """Ancestral samples of the latents; labels given as inputs cycle through the classes."""
        like = next(self.parameters()).new_zeros(num_samples)
        values = {}
        for name, var in self.variables.items():
            if var.role == "input":
                if var.vtype.name != "categorical":
                    raise ValueError(f"cannot generate: input {name!r} is not categorical, so "
                                     "there is no set of values to cycle through")
                values[name] = torch.arange(num_samples, device=like.device) % var.num_classes
        return self._observation_means(values, like, sample_latents=True)

    @torch.no_grad()
    def label_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(y|x) for the categorical variable read from ``batch.y`` (M2's
        classifier; Kingma et al. 2014 classify by its argmax)."""
        label = next((n for n in self.guide_order if self.variables[n].data == "y"
                      and self.variables[n].vtype.enumerable), None)
        if label is None:
            raise ValueError("the spec has no categorical variable read from batch.y")
        return self._params(self.posteriors[label], self._posterior_means(x, None, stop=label))

    @torch.no_grad()
    def observation_mean(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean of the x-observation given values of its parents (and their ancestors)."""
        like = next(self.parameters())
        return self._observation_means(dict(values), like, sample_latents=False)

    def check_data(self, x: torch.Tensor) -> None:
        for var in self.variables.values():
            if var.role == "observed" and var.data == "x":
                if tuple(x.shape[1:]) != var.shape:
                    raise ValueError(f"the spec's {var.path} has shape {list(var.shape)}, the data "
                                     f"{list(x.shape[1:])}")
                family = self.priors[var.name].family
                assert family is not None
                family.check_data(x)


def compile_spec(spec: ModelSpec | dict | str | Path, x_shape: Sequence[int] = (1, 28, 28)
                 ) -> SpecModel:
    """Compile ``spec`` (a dataclass, mapping or YAML file) for data of shape ``x_shape``."""
    return SpecModel(x_shape, spec)

