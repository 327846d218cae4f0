"""Estimators of the variational objective, chosen by name with one flag (``elbo=NAME``).

===============  ==========================================================================
``elbo``         :class:`~pyro.infer.Trace_ELBO`: SGVB estimator A (Kingma & Welling 2014,
                 eq. 6), reparameterized, KL sampled.
``meanfield``    :class:`~pyro.infer.TraceMeanField_ELBO`: SGVB estimator B (eq. 7), KL analytic;
                 for a guide that enumerates one discrete site (M2's y),
                 :class:`~aevb.inference.objectives.syncfree.TraceEnumMeanField_ELBO`.
``iwae``         :class:`~aevb.inference.objectives.importance.ImportanceWeightedELBO`: the k-sample bound of
                 Burda et al. (2016) per datapoint; ``num_particles`` is k. Discrete latents get
                 VIMCO's gradient (Mnih & Rezende 2016).
``renyi``        :class:`~aevb.inference.objectives.importance.RenyiBound`: Li & Turner's (2016)
                 Rényi bound per datapoint, α = ``renyi_alpha`` (0 = iwae, 1 = elbo); ``num_particles`` is k.
``rws``          :class:`~aevb.inference.objectives.wakesleep.ReweightedWakeSleep`: reweighted wake-sleep
                 (Bornschein & Bengio 2015) per datapoint, k = ``num_particles``; the guide's
                 update mixes wake and sleep phases by ``rws_insomnia``. No pathwise gradient,
                 so discrete latents (a sigmoid belief net) train as well as Gaussian ones.
``wake-sleep``   the Helmholtz machine's algorithm (Hinton et al. 1995): ``rws`` with the guide
                 trained on dreams only (insomnia 0); k = 1 is the classic.
``mmd``          :class:`~aevb.inference.objectives.infovae.MMDObjective`: MMD-VAE / InfoVAE (Zhao et al.
                 2019), reconstruction minus λ·N·MMD² of aggregate posterior and prior,
                 λ = ``mmd_scale``.
``infovae``      :class:`~aevb.inference.objectives.infovae.InfoVAEObjective`: InfoVAE's α, λ family
                 (Zhao et al. 2019, eq. 6): (1 - α)·KL per datapoint, (α + λ - 1)·N·D(q(z) ‖ p(z));
                 α = 0, λ = 1 is the ELBO, α = 1 is ``mmd`` (``info_alpha``, ``info_lambda``);
                 D is MMD² or, with ``info_divergence=adversarial``, a critic's KL estimate.
``aae``          :class:`~aevb.inference.objectives.infovae.AAEObjective`: the adversarial
                 autoencoder (Makhzani et al. 2015), InfoVAE's α = 1, λ = 1 with the adversarial
                 divergence: a discriminator of ``critic_hidden`` units trained beside the model.
``score``        :class:`~pyro.infer.TraceGraph_ELBO` on a guide whose latents are made
                 non-reparameterizable: the score-function (REINFORCE) gradient (Williams 1992;
                 the estimator the paper compares against, section 2.4 and Figure 2).
===============  ==========================================================================

``elbo`` (with its enumerating variant) and ``meanfield`` are the subclasses of
:mod:`aevb.inference.objectives.syncfree`, whose ``differentiable_loss`` gives Pyro's value and
gradient without reading numbers back from the device on every step.

Each objective exposes ``differentiable_loss(model, guide, batch)``; the trainer calls
``backward`` on it and steps a torch optimizer (Pyro's ``ELBOModule`` pattern). An objective
that trains a network of its own (a critic, :attr:`Objective.critic`) builds it when it is
adapted to a model; the engines step it with the model and keep it in their checkpoints.

Not every objective handles every model. :func:`model_traits` reads a model's guide once
(enumerated discrete sites, non-reparameterizable sites) and :meth:`Objective.for_model` adapts
the objective to it — ``elbo`` switches to :class:`~pyro.infer.TraceEnum_ELBO` (as
:class:`~aevb.inference.objectives.syncfree.SyncFreeTraceEnum_ELBO`), which sums
enumerated sites out exactly — or refuses it before training starts with a message naming the
sites and the objectives that can.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.infer import ELBO, TraceGraph_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import kl_divergence

from aevb import catalog
from aevb.inference.objectives.annealing import WEIGHTABLE, KLWeight
from aevb.inference.objectives.importance import ImportanceWeightedELBO, RenyiBound
from aevb.inference.objectives.infovae import (
    DIVERGENCES,
    AAEObjective,
    InfoVAEObjective,
    MMDObjective,
)
from aevb.inference.objectives.syncfree import (
    SyncFreeTrace_ELBO,
    SyncFreeTraceEnum_ELBO,
    SyncFreeTraceMeanField_ELBO,
    TraceEnumMeanField_ELBO,
)
from aevb.inference.objectives.wakesleep import ReweightedWakeSleep
from aevb.models.base import Batch, labels_of
from aevb.models.registry import Registry


class NonReparameterized(TorchDistribution):
    """Wraps a distribution so that it samples without ``rsample``.

    Unlike flagging an instance with ``has_rsample_(False)``, the wrapper survives the
    ``expand`` that plates apply when they broadcast a site, so the flag cannot be lost.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base_dist):
        self.base_dist = base_dist
        super().__init__(base_dist.batch_shape, base_dist.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base_dist.support

    def expand(self, batch_shape, _instance=None):
        return NonReparameterized(self.base_dist.expand(batch_shape))

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape)

    def log_prob(self, value):
        return self.base_dist.log_prob(value)

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance


class ScoreFunction(Messenger):
    """Makes every latent sample site non-reparameterizable, so that estimators use the
    score-function gradient :math:`f(z)\\nabla_\\phi \\log q_\\phi(z)` for it."""

    def _pyro_sample(self, msg):
        if not msg["is_observed"] and not isinstance(msg["fn"], _Subsample):
            msg["fn"] = NonReparameterized(msg["fn"])


class ScoreFunctionELBO(TraceGraph_ELBO):
    """:class:`~pyro.infer.TraceGraph_ELBO` with a ``differentiable_loss``.

    Its value is the ELBO estimate; its gradient is that of TraceGraph_ELBO's surrogate loss
    (score-function terms with downstream-cost Rao-Blackwellization, Schulman et al. 2015), the
    gradient ``TraceGraph_ELBO.loss_and_grads`` would produce (aevb's tests check they agree).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return -elbo.detach() + (surrogate_loss - surrogate_loss.detach())


class IncompatibleObjective(ValueError):
    """The objective cannot train this model; the message says which can."""


@dataclass
class ModelTraits:
    """What an objective needs to know about a model's guide (latent sites by kind)."""

    enumerated: list[str] = field(default_factory=list)
    #: every latent sample site of the guide, in the order first seen
    latents: list[str] = field(default_factory=list)
    non_reparameterized: list[str] = field(default_factory=list)
    #: latent sites whose KL(q || p) has no closed form (``site: "Q || P"``)
    no_analytic_kl: dict[str, str] = field(default_factory=dict)
    #: ``(model order, guide order)`` of the latents when they differ (a bottom-up guide)
    order_mismatch: tuple[list[str], list[str]] | None = None
    #: sites the model marks for enumeration that the guide does not sample (found with
    #: ``analytic_kl``: Pyro contracts them in the model)
    model_enumerated: list[str] = field(default_factory=list)
    #: each latent site's size per datapoint (its value's elements after the batch dimension)
    latent_sizes: dict[str, int] = field(default_factory=dict)
    #: where the guide's samples live
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def model_traits(model, batch: Batch, analytic_kl: bool = False) -> ModelTraits:
    """Trace ``model.guide`` on ``batch`` (and on it without labels, for a model whose labels
    are optional) without touching the random stream, and collect its latent sites' kinds.
    With ``analytic_kl`` (objectives that need it) the model is replayed too, to find the
    latents whose KL(q || p) has no closed form."""
    batches = [batch]
    if labels_of(model) == "optional" and batch.y is not None:
        batches.append(Batch(batch.x, None, batch.index, batch.num_data))
    traits = ModelTraits(enumerated=list(getattr(model, "enumerated_sites", ())))
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    for b in batches:
        with torch.random.fork_rng(devices=devices), poutine.block(), torch.no_grad():
            trace = poutine.trace(model.guide).get_trace(b)
            if analytic_kl:
                _check_analytic_kl(model, trace, b, traits)
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or isinstance(site["fn"], _Subsample):
                continue
            if name not in traits.latents:
                traits.latents.append(name)
                value = site["value"]
                traits.latent_sizes[name] = int(value[0].numel()) if value.dim() else 1
                traits.device = value.device
            if site["infer"].get("enumerate") == "parallel":
                if name not in traits.enumerated:
                    traits.enumerated.append(name)
            elif not site["fn"].has_rsample and name not in traits.non_reparameterized:
                traits.non_reparameterized.append(name)
    return traits


def _check_analytic_kl(model, guide_trace, batch: Batch, traits: ModelTraits) -> None:
    """Record the latent sites whose KL(guide || model) torch.distributions cannot compute."""
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(batch)
    latents = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"
               and not s["is_observed"] and not isinstance(s["fn"], _Subsample)]
    model_order = [n for n in model_trace.nodes if n in latents]
    if model_order != latents:
        traits.order_mismatch = (model_order, latents)
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["infer"].get("enumerate") and name not in latents \
                and name not in traits.model_enumerated:
            traits.model_enumerated.append(name)
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or isinstance(site["fn"], _Subsample):
            continue
        prior = model_trace.nodes.get(name)
        if prior is None or prior["type"] != "sample":
            continue
        try:
            kl_divergence(site["fn"], prior["fn"])
        except NotImplementedError:
            q, p = _dist_name(site["fn"]), _dist_name(prior["fn"])
            culprits = [f"the {side} is a {kind}" for side, d in (("posterior q", q), ("prior p", p))
                        if (kind := _composite(d))]
            traits.no_analytic_kl[name] = f"{q} || {p}" + (
                f": {' and '.join(culprits)}" if culprits else "")


def _composite(name: str) -> str | None:
    """``mixture`` or ``flow`` for the distributions whose KL has no closed form by kind."""
    if "Mixture" in name:
        return "mixture"
    if "Transformed" in name or "Flow" in name:
        return "flow"
    return None


def _dist_name(d) -> str:
    while hasattr(d, "base_dist") and type(d).__name__ in ("Independent", "ExpandedDistribution"):
        d = d.base_dist
    return type(d).__name__


@dataclass
class Objective:
    """A named estimator plus how it treats the guide.

    :param str name: registry name.
    :param ELBO elbo: the Pyro objective.
    :param bool score_function: if True the guide's latents are sampled without rsample.
    :param ELBO enum_elbo: the estimator to use instead for models with enumerated discrete
        sites; ``None`` if the objective cannot handle them.
    :param bool needs_reparam: the estimator's gradient is only right for reparameterized latents.
    """

    name: str
    elbo: ELBO
    score_function: bool = False
    enum_elbo: ELBO | None = None
    needs_reparam: bool = False
    enumerates: bool = False
    needs_analytic_kl: bool = False
    kl_weight: KLWeight | None = None
    #: the traits of the model it was adapted to (:meth:`for_model`)
    traits: ModelTraits | None = None

    def for_model(self, traits: ModelTraits) -> Objective:
        """This objective adapted to a model with ``traits``.

        :raises IncompatibleObjective: naming the sites and the objectives that can handle them.
        """
        if traits.enumerated:
            if self.enum_elbo is None:
                can = [n for n in OBJECTIVES.names() if OBJECTIVES.get(n)(1).enum_elbo is not None]
                raise IncompatibleObjective(
                    f"elbo={self.name} cannot handle the enumerated discrete latent(s) "
                    f"{', '.join(traits.enumerated)} (the guide marks them "
                    f"infer={{'enumerate': 'parallel'}} to be summed out exactly); use "
                    f"elbo={' or elbo='.join(can)} (TraceEnum_ELBO)")
            if self.needs_analytic_kl:
                self._check_single_enumeration(traits)
            return replace(self, elbo=self.enum_elbo, enum_elbo=None, enumerates=True,
                           traits=traits)
        if self.needs_analytic_kl and traits.no_analytic_kl:
            sites = "; ".join(f"{n} ({kl})" for n, kl in traits.no_analytic_kl.items())
            raise IncompatibleObjective(
                f"elbo={self.name} computes KL(q || p) analytically, but it has no closed form "
                f"for {sites}; use elbo=elbo (KL sampled) or "
                "elbo=iwae")
        if self.needs_analytic_kl and traits.order_mismatch:
            model_order, guide_order = traits.order_mismatch
            raise IncompatibleObjective(
                f"elbo={self.name} computes each KL(q(z|.) || p(z|.)) analytically at the sampled "
                f"parents, which is exact only when the guide samples the latents in the model's "
                f"order; the model samples {', '.join(model_order)}, the guide "
                f"{', '.join(guide_order)} (a bottom-up guide). Use elbo=elbo or elbo=iwae")
        if self.needs_reparam and traits.non_reparameterized:
            raise IncompatibleObjective(
                f"elbo={self.name} needs reparameterized latents, but the guide samples "
                f"{', '.join(traits.non_reparameterized)} without rsample (discrete?); use "
                "elbo=elbo or elbo=score, whose score-function terms handle them")
        bind = getattr(self.elbo, "bind", None)
        if bind is not None:  # build what the objective trains (a critic) for these latents
            bind(sum(traits.latent_sizes[n] for n in traits.latents), traits.device)
        return replace(self, traits=traits)

    def _check_single_enumeration(self, traits: ModelTraits) -> None:
        """What :class:`TraceEnumMeanField_ELBO` sums exactly: one enumerated guide site, and
        every other latent reparameterized with a closed-form KL, the continuous ones sampled
        in the model's order.

        :raises IncompatibleObjective: before training, naming what breaks this.
        """
        problems = []
        if len(traits.enumerated) > 1:
            problems.append(f"the guide enumerates {len(traits.enumerated)} sites "
                            f"({', '.join(traits.enumerated)}), not one")
        if traits.model_enumerated:
            problems.append(f"the model enumerates {', '.join(traits.model_enumerated)}, which "
                            "the guide does not sample")
        if traits.non_reparameterized:
            problems.append(f"the guide samples {', '.join(traits.non_reparameterized)} "
                            "without rsample")
        no_kl = {n: kl for n, kl in traits.no_analytic_kl.items() if n not in traits.enumerated}
        if no_kl:
            problems.append("KL(q || p) has no closed form for "
                            + "; ".join(f"{n} ({kl})" for n, kl in no_kl.items()))
        if traits.order_mismatch:  # y is summed exactly: only the continuous latents' order
            model_order, guide_order = ([n for n in order if n not in traits.enumerated]
                                        for order in traits.order_mismatch)
            if model_order != guide_order:
                problems.append(f"the model samples {', '.join(model_order)}, the guide "
                                f"{', '.join(guide_order)} (a bottom-up guide)")
        if problems:
            raise IncompatibleObjective(
                f"elbo={self.name} sums out one enumerated guide site with every other KL in "
                f"closed form, but {'; '.join(problems)}; use elbo=elbo (TraceEnum_ELBO)")

    @property
    def num_particles(self) -> int:
        return self.elbo.num_particles

    @property
    def critic(self) -> torch.nn.Module | None:
        """The network the objective trains beside the model (``elbo=aae``'s discriminator),
        built by :meth:`for_model`; ``None`` for the others."""
        return getattr(self.elbo, "critic", None)

    def with_kl_weight(self, handler: KLWeight) -> Objective:
        """This objective with its KL term weighted by ``handler.weight`` (β, warm-up; see
        :mod:`aevb.inference.objectives.annealing`).

        :raises IncompatibleObjective: for objectives without a KL term (iwae) and for models
            whose discrete latents are enumerated.
        """
        if self.name not in WEIGHTABLE:
            raise IncompatibleObjective(
                f"kl.beta / kl.warmup_epochs weight the KL term, and elbo={self.name} has none "
                f"(its bound log-mean-exps whole importance weights); use elbo="
                f"{' or elbo='.join(WEIGHTABLE)}, or leave kl.beta=1 and kl.warmup_epochs=0")
        traits = self.traits or ModelTraits()
        if handler.sites is not None:
            unknown = sorted(handler.sites - set(traits.latents))
            if self.traits is not None and unknown:
                raise IncompatibleObjective(
                    f"kl.sites names {', '.join(unknown)}, which the guide does not sample; its "
                    f"latent sites are {', '.join(traits.latents)}")
        weighted = traits.latents if handler.sites is None else handler.sites
        summed = sorted(set(traits.enumerated) & set(weighted))
        if self.enumerates and (handler.sites is None or summed):
            sites = ", ".join(n for n in traits.latents if n not in traits.enumerated)
            raise IncompatibleObjective(
                f"kl.beta / kl.warmup_epochs would weight the enumerated discrete latent(s) "
                f"{', '.join(summed or traits.enumerated)}, which are summed out exactly; name "
                f"the continuous latents in kl.sites (here: kl.sites=[{sites}])")
        return replace(self, kl_weight=handler)

    def wrap_model(self, model: Callable) -> Callable:
        return self.kl_weight(model) if self.kl_weight is not None else model

    def wrap_guide(self, guide: Callable) -> Callable:
        guide = ScoreFunction()(guide) if self.score_function else guide
        return self.kl_weight(guide) if self.kl_weight is not None else guide

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs):
        model, guide = self.wrap_model(model), self.wrap_guide(guide)
        if not self.enumerates:
            return self.elbo.differentiable_loss(model, guide, *args, **kwargs)
        with warnings.catch_warnings():
            # a labelled batch of a model whose labels are optional has nothing to enumerate
            warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites")
            return self.elbo.differentiable_loss(model, guide, *args, **kwargs)


OBJECTIVES: Registry[Callable[..., Objective]] = Registry("objective")

#: objective-specific config keys and the objectives each belongs to (kept in
#: :mod:`aevb.catalog`, which the config's checks read before torch is imported)
OBJECTIVE_OPTIONS = catalog.OBJECTIVE_OPTIONS


@OBJECTIVES.register("elbo")
def _elbo(num_particles: int) -> Objective:
    """Trace_ELBO; TraceEnum_ELBO for models with enumerated sites."""
    return Objective("elbo", SyncFreeTrace_ELBO(num_particles=num_particles,
                                                vectorize_particles=True),
                     enum_elbo=SyncFreeTraceEnum_ELBO(num_particles=num_particles,
                                                      vectorize_particles=True))


@OBJECTIVES.register("meanfield")
def _meanfield(num_particles: int) -> Objective:
    # it needs reparameterized latents and a closed-form KL for every one; Pyro would silently
    # fall back to a sampled KL where there is none, so model_traits finds those sites first
    return Objective(
        "meanfield", SyncFreeTraceMeanField_ELBO(num_particles=num_particles,
                                                 vectorize_particles=True),
        enum_elbo=TraceEnumMeanField_ELBO(num_particles=num_particles, vectorize_particles=True),
        needs_reparam=True, needs_analytic_kl=True)


@OBJECTIVES.register("iwae")
def _iwae(num_particles: int) -> Objective:
    """The IWAE bound; latents sampled without rsample get VIMCO's score-function gradient."""
    return Objective("iwae", ImportanceWeightedELBO(num_particles=num_particles))


@OBJECTIVES.register("rws")
def _rws(num_particles: int, rws_insomnia: float = 1.0) -> Objective:
    """Reweighted wake-sleep per datapoint (Bornschein & Bengio 2015)."""
    return Objective("rws", ReweightedWakeSleep(num_particles, insomnia=rws_insomnia))


@OBJECTIVES.register("wake-sleep")
def _wake_sleep(num_particles: int) -> Objective:
    """Classic wake-sleep (Hinton et al. 1995): the guide learns from dreams only."""
    return Objective("wake-sleep", ReweightedWakeSleep(num_particles, insomnia=0.0))


@OBJECTIVES.register("renyi")
def _renyi(num_particles: int, renyi_alpha: float = 0.5) -> Objective:
    """Li & Turner's Rényi bound per datapoint (``renyi_alpha``; 0 = iwae, 1 = elbo)."""
    return Objective("renyi", RenyiBound(renyi_alpha, num_particles=num_particles),
                     needs_reparam=True)


@OBJECTIVES.register("mmd")
def _mmd(num_particles: int, mmd_scale: float = 1000.0) -> Objective:
    """MMD-VAE / InfoVAE (``mmd_scale`` is λ): reconstruction minus λ·N·MMD²(q(z), p(z))."""
    if num_particles != 1:
        raise ValueError("elbo=mmd draws one sample per datapoint; leave num_particles=1")
    return Objective("mmd", MMDObjective(mmd_scale), needs_reparam=True)


@OBJECTIVES.register("infovae")
def _infovae(num_particles: int, info_alpha: float = 0.0, info_lambda: float = 1000.0,
             info_divergence: str = "mmd", critic_hidden: int = 256) -> Objective:
    """InfoVAE (Zhao et al. 2019, eq. 6): reconstruction minus (1 - α)·KL(q(z|x) || p(z))
    minus (α + λ - 1)·N·D(q(z) || p(z)), D = ``info_divergence`` (MMD² or adversarial KL)."""
    if num_particles != 1:
        raise ValueError("elbo=infovae draws one sample per datapoint; leave num_particles=1")
    divergence = DIVERGENCES.get(info_divergence)(critic_hidden)
    return Objective("infovae", InfoVAEObjective(info_alpha, info_lambda, divergence=divergence),
                     needs_reparam=True)


@OBJECTIVES.register("aae")
def _aae(num_particles: int, critic_hidden: int = 256) -> Objective:
    """The adversarial autoencoder (Makhzani et al. 2015): InfoVAE's α = 1, λ = 1 with a
    discriminator of ``critic_hidden`` units estimating KL(q(z) || p(z))."""
    if num_particles != 1:
        raise ValueError("elbo=aae draws one sample per datapoint; leave num_particles=1")
    return Objective("aae", AAEObjective(critic_hidden), needs_reparam=True)


@OBJECTIVES.register("score")
def _score(num_particles: int) -> Objective:
    elbo = ScoreFunctionELBO(num_particles=num_particles, vectorize_particles=True)
    return Objective("score", elbo, score_function=True)


def build_objective(name: str, num_particles: int = 1, **options) -> Objective:
    """The objective registered as ``name`` with ``num_particles`` samples (L, or k for iwae
    and renyi) and its own ``options`` (``renyi_alpha`` for renyi).

    :raises UnknownNameError: for an unknown name; the message lists the valid ones.
    """
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    return OBJECTIVES.get(name)(num_particles, **options)


def objective_for_model(name: str, num_particles: int, model, batch: Batch,
                        **options) -> Objective:
    """The objective ``name`` adapted to ``model`` (:meth:`Objective.for_model` on the traits
    of its guide, read on ``batch``).

    :raises IncompatibleObjective: when the objective cannot train the model.
    """
    objective = build_objective(name, num_particles, **options)
    return objective.for_model(model_traits(model, batch, objective.needs_analytic_kl))
