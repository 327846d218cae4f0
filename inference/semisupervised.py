"""Semi-supervised learning with deep generative models (Kingma, Rezende, Mohamed & Welling 2014).

* **Label splits**: a class-balanced labelled subset of N_labels training images (N_labels/C per
  class) drawn from a seed; the rest of the training set is unlabelled.
* **Batches**: every unlabelled image once per epoch; each unlabelled batch is paired with a
  labelled batch from the (recycled) labelled set. Each batch carries its own N/M scale, so one
  step's loss is the paper's J^alpha (eq. 9) estimated on the pair. With ``labelled_weight =
  "balanced"`` the labelled batches are scaled as if the labelled set were replicated to the
  unlabelled set's size (:data:`LABELLED_WEIGHTS`), with alpha's term unchanged.
* **Methods** (:data:`METHODS`): ``m2`` (the spec ``configs/specs/m2.yaml``: y observed on
  labelled batches, enumerated by TraceEnum_ELBO on unlabelled ones, plus
  alpha * log q(y|x) on labelled data with alpha = ``alpha`` * N); ``m1m2`` (M2 with a Gaussian
  likelihood on the latent code of a VAE, M1, trained on all training images); ``baseline``
  (the same q(y|x) network trained by cross-entropy on the labelled images only);
  ``m1baseline`` (that network on M1's codes, labelled images only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from aevb.configs import resolve
from aevb.inference.batching import Split
from aevb.inference.errors import ConfigError
from aevb.inference.objectives import KLSchedule, objective_for_model
from aevb.inference.objectives.importance import ImportanceWeightedELBO
from aevb.inference.threads import apply_share
from aevb.inference.training import initialization
from aevb.inference.training.engines import Engine, build_engine
from aevb.inference.training.loop import kl_clock
from aevb.inference.training.optim import build_optimizer
from aevb.models.base import Batch
from aevb.models.networks import build_network
from aevb.models.registry import Registry
from aevb.models.spec import load_spec
from aevb.models.spec.compiler import SpecModel
from aevb.models.spec.schema import to_dict


def shipped_spec(name: str) -> Path:
    """The spec file of a shipped spec (``m2``, ``m2_on_m1``; :mod:`aevb.configs`)."""
    return resolve(name, "spec")


# -- data -------------------------------------------------------------------------------------
@dataclass
class LabelSplit:
    """Indices of the labelled (class-balanced, drawn from the seed) and unlabelled training images."""
    labelled: torch.Tensor  # indices into the training set, sorted
    unlabelled: torch.Tensor


def label_split(y: torch.Tensor, num_labels: int, seed: int, num_classes: int = 10) -> LabelSplit:
    """A class-balanced labelled subset of ``num_labels`` indices (``num_labels / num_classes``
    per class), the same for the same ``seed``, and the complement."""
    if num_labels % num_classes:
        raise ConfigError(f"--labels {num_labels}: must be a multiple of the {num_classes} classes "
                          "(the labelled subset is class-balanced)")
    per_class = num_labels // num_classes
    gen = torch.Generator().manual_seed(seed)
    y = y.cpu()
    chosen = []
    for c in range(num_classes):
        members = (y == c).nonzero().squeeze(1)
        if len(members) < per_class:
            raise ConfigError(f"--labels {num_labels}: class {c} has only {len(members)} training "
                              f"images, fewer than the {per_class} needed")
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    labelled = torch.cat(chosen).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[labelled] = False
    return LabelSplit(labelled, mask.nonzero().squeeze(1))


def subset(split: Split, index: torch.Tensor) -> Split:
    """The split restricted to the images at ``index``."""
    index = index.to(split.x.device)
    return Split(split.x[index], split.y[index], split.dynamic,
                 None if split.scale is None else split.scale[index])


def recycled(split: Split, batch_size: int, num_data: int | None = None) -> Iterator[Batch]:
    """Shuffled passes over ``split`` without end, with the N/M scale of N = ``num_data``
    (default: the split's size)."""
    while True:
        for b in split.batches(batch_size, shuffle=True, scaled=True):
            yield b if num_data is None else Batch(b.x, b.y, b.index, num_data)


def paired_batches(unlabelled: Split, labelled_stream: Iterator[Batch], batch_size: int,
                   labelled_steps: int | None = None) -> Iterator[tuple[Batch, Batch | None]]:
    """Each unlabelled batch (labels removed) once, each with the next labelled batch; with
    ``labelled_steps`` = K only K of the steps, spread evenly over the epoch, carry one (the
    others ``None``)."""
    steps = math.ceil(len(unlabelled) / batch_size)
    every = 1 if labelled_steps is None else max(1, steps // labelled_steps)
    given = 0
    for i, b in enumerate(unlabelled.batches(batch_size, shuffle=True, scaled=True)):
        carry = labelled_steps is None or (i % every == 0 and given < labelled_steps)
        given += carry
        yield Batch(b.x, None, b.index, b.num_data), next(labelled_stream) if carry else None


@dataclass
class SemiData:
    """The splits a semi-supervised method trains and selects on: labelled, unlabelled,
    validation and test. ``valid`` and ``test`` are the images q(y|x) classifies;
    ``valid_observed`` (default ``valid``) the validation images as the generative model
    observes them, e.g. binarized where ``valid`` holds their grey levels."""
    labelled: Split
    unlabelled: Split
    valid: Split
    test: Split
    valid_observed: Split | None = None

    @property
    def num_train(self) -> int:
        return len(self.labelled) + len(self.unlabelled)

    @property
    def observed_valid(self) -> Split:
        """The validation split the generative model's diagnostics read."""
        return self.valid if self.valid_observed is None else self.valid_observed


@torch.no_grad()
def class_elbos(model: SpecModel, x: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``(M, C)``: for each image and class c, the single-sample ELBO with y = c observed,
    log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y), z ~ q(z|x,y): the per-datapoint log-weight
    of :class:`~aevb.inference.objectives.importance.ImportanceWeightedELBO`, with the guide's classification
    factor (not part of the ELBO) hidden."""
    guide = poutine.block(model.guide, hide_fn=lambda msg: msg["name"].startswith("aux_"))
    estimator = ImportanceWeightedELBO(num_particles=1, require_reparam=False)
    return torch.stack([
        estimator.log_weights(model.model, guide, Batch(x, torch.full(
            (len(x),), c, dtype=torch.long, device=x.device)))[0][0]
        for c in range(num_classes)], -1)


def generative_classifier(model: SpecModel):
    """The *generative* classifier x -> ELBO(x, y) for every y (:func:`class_elbos`), whose
    argmax is the class whose decoder explains x best."""
    classes = model.variables["y"].num_classes
    return lambda x: class_elbos(model, x, classes)


def generative_accuracy(model: SpecModel, split: Split, batch_size: int = 1000) -> float:
    """Accuracy of the generative classifier argmax_y ELBO(x, y) (:func:`generative_classifier`).
    Near chance means the decoder ignores y and z carries the class, so the unlabelled term of
    M2 can only teach q(y|x) to be uncertain."""
    return accuracy(generative_classifier(model), split, batch_size)


@torch.no_grad()
def confusion(classify, split: Split, batch_size: int = 1000) -> torch.Tensor:
    """The confusion matrix of ``classify`` (argmax q(y|x)) on a labelled split: entry [i, j]
    counts the images of class i classified as j (as many classes as ``classify`` scores)."""
    counts = None
    for b in split.batches(batch_size):
        scores = classify(b.x)
        classes = scores.shape[-1]
        pairs = b.y.long() * classes + scores.argmax(-1)
        batch_counts = torch.bincount(pairs.cpu(), minlength=classes * classes)
        counts = batch_counts if counts is None else counts + batch_counts
    if counts is None:
        raise ValueError("confusion: the split has no images")
    return counts.view(classes, classes)


def accuracy_of(counts: torch.Tensor) -> float:
    """The accuracy a confusion matrix (:func:`confusion`) records."""
    return int(counts.trace()) / int(counts.sum())


def accuracy(classify, split: Split, batch_size: int = 1000) -> float:
    """The accuracy of ``classify`` (argmax q(y|x)) on a labelled split."""
    return accuracy_of(confusion(classify, split, batch_size))


# -- methods ----------------------------------------------------------------------------------
@dataclass
class Settings:
    """How a semi-supervised method trains: batch size, learning rate, α, the labelled weight and batches,
    M2's z-KL schedule."""
    batch_size: int = 128
    lr: float = 1e-3
    alpha: float = 0.1  # alpha = alpha * N (Kingma et al. 2014, section 3.1.2)
    labelled_weight: str = "paper"  # see LABELLED_WEIGHTS
    labelled_batches: str = "every-step"  # see LABELLED_BATCHES
    z_kl_start: float = 1.0  # the weight on KL(q(z|x,y) || p(z)) at the start (see M2)
    z_kl_epochs: float = 0.0  # epochs over which it moves linearly to 1 (0: 1 throughout)
    weight_prior: float = 0.0  # λ of an N(0, I/λ) prior on every parameter (0: none)
    init_sd: float | None = None  # every parameter drawn from N(0, init_sd²) (None: torch's)
    elbo: str = "elbo"  # M2's estimator: see M2_ELBOS
    # M2: weight of KL(mean q(y|x) || p(y)) per unlabelled image (the spec's balance_weight)
    y_balance: float = 0.0

    @property
    def z_kl(self) -> KLSchedule:
        """The schedule of the weight on M2's continuous-latent KL term; it ends at 1, the
        paper's objective."""
        if self.z_kl_start <= 0 or self.z_kl_epochs < 0:
            raise ConfigError(f"--z-kl-start {self.z_kl_start} / --z-kl-epochs "
                              f"{self.z_kl_epochs}: need a start weight > 0 and epochs >= 0")
        return KLSchedule(beta=1.0, warmup_epochs=self.z_kl_epochs, start=self.z_kl_start)


# M2's bound, summed over y exactly, with KL(q(z|x,y) || p(z)) ...
M2_ELBOS = {
    # ... at the sampled z, log q(z|x,y) - log p(z): Pyro's TraceEnum_ELBO
    "elbo": "sampled",
    # ... in closed form (Kingma & Welling's estimator B, eq. 7), as Kingma et al.'s code
    # computes it: far less spread in the per-class bounds that train q(y|x) on unlabelled images
    "meanfield": "closed-form",
}


# How much the labelled images weigh in the generative part of the objective: the N that a
# labelled batch's N/M scale uses.
LABELLED_WEIGHTS = {
    # the paper's eq. 9: every image, labelled or not, counts once (N = N_labelled)
    "paper": lambda data: len(data.labelled),
    # the labelled set counts as if replicated to the unlabelled set's size (N = N_unlabelled),
    # so each step's labelled batch weighs as much as its unlabelled batch
    "balanced": lambda data: len(data.unlabelled),
}


# How often a step carries a labelled batch. "every-step": each unlabelled batch is paired with
# the next batch of the recycled labelled set. "once-per-epoch" (Pyro's ss_vae_M2 example):
# each labelled image once per epoch, its batches spread evenly over the epoch's steps and
# scaled up by steps / labelled steps, so that an epoch's expected objective is the same.
LABELLED_BATCHES = ("every-step", "once-per-epoch")


def labelled_steps(data: SemiData, settings: Settings) -> int | None:
    """Steps per epoch that carry a labelled batch (``None``: every step)."""
    if settings.labelled_batches not in LABELLED_BATCHES:
        raise ConfigError(f"--labelled-batches {settings.labelled_batches!r}: choose one of "
                          f"{', '.join(LABELLED_BATCHES)}")
    if settings.labelled_batches == "every-step":
        return None
    return math.ceil(len(data.labelled) / min(settings.batch_size, len(data.labelled)))


def labelled_weight(data: SemiData, settings: Settings) -> int:
    """N_l of :data:`LABELLED_WEIGHTS`: what the labelled images weigh in an epoch."""
    if settings.labelled_weight not in LABELLED_WEIGHTS:
        raise ConfigError(f"--labelled-weight {settings.labelled_weight!r}: choose one of "
                          f"{', '.join(LABELLED_WEIGHTS)}")
    return LABELLED_WEIGHTS[settings.labelled_weight](data)


def labelled_num_data(data: SemiData, settings: Settings) -> int:
    """The N of the labelled batches' N/M scale: N_l (:func:`labelled_weight`), times the steps
    per labelled step under ``once-per-epoch``."""
    n = labelled_weight(data, settings)
    k = labelled_steps(data, settings)
    if k is None:
        return n
    steps = math.ceil(len(data.unlabelled) / settings.batch_size)
    return round(n * steps / min(k, steps))


def weight_decay(settings: Settings, objective_size: float) -> float:
    """The weight decay that adds the N(0, I/λ) prior of ``settings.weight_prior`` = λ once to
    an objective that estimates ``objective_size`` times the per-image objective: λ on M2's
    N-scaled loss, λ / N_labelled on the baseline's mean cross-entropy (Kingma et al.'s code puts
    an N(0, I) prior, λ = 1, on every network's weights)."""
    if settings.weight_prior < 0:
        raise ConfigError(f"--weight-prior {settings.weight_prior}: give λ >= 0 (0: no prior)")
    return settings.weight_prior / objective_size


class Method:
    """One way of learning a classifier from a :class:`SemiData`. ``module`` holds every trained
    parameter (it is what checkpoints save, with ``optimizer``: a torch optimizer or an
    engine, anything with ``state_dict``); ``classify(x)`` returns class logits. Each method
    draws its parameters as :func:`aevb.inference.training.initialization.normal` says and puts
    the prior of :func:`weight_decay` on them."""

    module: nn.Module
    optimizer: torch.optim.Optimizer | Engine
    on_m1_features = False  # True: the runner hands it M1's latent codes instead of images

    def __init__(self, data: SemiData, settings: Settings):
        self.data, self.settings = data, settings
        self.labelled_stream = recycled(data.labelled, min(settings.batch_size, len(data.labelled)),
                                        labelled_num_data(data, settings))

    def train_epoch(self, epoch: int) -> dict:
        """Train epoch number ``epoch`` (1-based: a resumed run goes on with the next one)."""
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def diagnostics(self) -> dict:
        """Extra per-epoch figures for the run's metrics."""
        return {}


METHODS: Registry[type[Method]] = Registry("method")


def m2_spec(name: str, data: SemiData, settings: Settings) -> dict:
    """The M2 spec with aux_weight = alpha * N / N_l, N_l of :func:`labelled_weight`: the
    paper's alpha * N times the labelled mean of log q(y|x) becomes a per-labelled-image weight
    under the labelled batches' N_l/M scaling, whichever ``labelled_weight`` is chosen (under
    ``once-per-epoch`` the scale's extra steps factor applies to it as to the labelled ELBO, so
    an epoch's expected objective is unchanged); and balance_weight = ``settings.y_balance``."""
    if settings.y_balance < 0:
        raise ConfigError(f"--y-balance {settings.y_balance}: give a weight >= 0 (0: none)")
    spec = to_dict(load_spec(shipped_spec(name)))
    posterior = spec["sometimes_observed"]["y"]["posterior"]
    posterior["aux_weight"] = settings.alpha * data.num_train / labelled_weight(data, settings)
    posterior["balance_weight"] = settings.y_balance
    return spec


@METHODS.register("m2")
class M2(Method):
    r"""M2 from ``configs/specs/m2.yaml`` trained on labelled and unlabelled batches together.

    **Annealing the z-KL weight** (``Settings.z_kl_start`` = w_0 > 1, ``z_kl_epochs`` = T).
    The class can be carried by y or by z. An unlabelled image pays at most log C nats,
    KL(q(y|x) || p(y)), for a confident q(y|x); coding the class in z instead costs about the
    same in KL(q(z|x,y) || p(z)). Neither is preferred. Early in training q(y|x) is still
    random, so the decoder learns to ignore y and z takes the class. Then the unlabelled term
    :math:`\sum_y q(y|x)\,\mathcal L(x, y) + \mathcal H(q(y|x))` cannot tell the classes
    apart, and only its entropy acts on q(y|x), pushing it towards uniform. That is the
    erosion measured on MNIST (``docs/results/m2-mnist.md``). Weighting the z term by w > 1 makes z the
    dearer carrier, so the decoder learns to read the class from y while the labelled images
    teach q(y|x) which is which. The weight falls linearly to 1 over T epochs
    (:class:`~aevb.inference.objectives.annealing.KLSchedule`, updated every step) and stays
    there, so the trained model optimizes the paper's J^alpha (eq. 9); the schedule only chooses
    where it starts from. The weight scales z's sites alone (model and guide,
    :class:`~aevb.inference.objectives.annealing.KLWeight` with ``sites``), never the
    enumerated y.

    **Class balance** (``Settings.y_balance`` = b > 0; 0 is the paper's objective). Each
    unlabelled image trains the decoder of the classes q(y|x) gives it, so a class whose
    decoder explains another's images well takes them over, and q(y|x), fit to the bound,
    follows: on MNIST with 100 labels one subset had y = 3 take 36% of the 5s and 21% of the 8s,
    in q(y|x) and in the generative classifier alike (``docs/results/m2-mnist.md``). The term
    b N KL(q̄(y) || p(y)), q̄ the mean of q(y|x) over an unlabelled batch, holds each class's
    share of the unlabelled images at its prior share (the spec's ``balance_weight``).
    """

    spec_name = "m2"
    draws_images = True  # the analogies picture

    def __init__(self, data: SemiData, settings: Settings):
        super().__init__(data, settings)
        x_shape = tuple(data.unlabelled.x.shape[1:])
        self.module = SpecModel(x_shape, m2_spec(self.spec_name, data, settings))
        initialization.normal(self.module, settings.init_sd)
        self.module.to(data.unlabelled.x.device)
        first = next(data.unlabelled.batches(2))
        if settings.elbo not in M2_ELBOS:
            raise ConfigError(f"--elbo {settings.elbo!r}: choose one of {', '.join(M2_ELBOS)}")
        objective = objective_for_model(settings.elbo, 1, self.module, Batch(first.x, first.y))
        latents = frozenset(n for n, v in self.module.variables.items() if v.role == "latent")
        self.z_kl = replace(settings.z_kl, sites=latents)
        if self.z_kl.active:
            objective = objective.with_kl_weight(self.z_kl.handler(0.0))
        with torch.random.fork_rng(devices=[]):  # one validated dry run (no backward)
            for batch in (Batch(first.x, first.y), Batch(first.x)):
                objective.differentiable_loss(self.module.model, self.module.guide, batch)
        # the fast engine is also what the runner checkpoints as the optimizer
        self.optimizer = build_engine("fast", self.module, objective, "adam", settings.lr,
                                      weight_decay(settings, 1.0))

    def train_epoch(self, epoch: int) -> dict:
        self.module.train()
        total, steps = torch.zeros((), device=self.data.unlabelled.x.device), 0
        handler = self.optimizer.objective.kl_weight
        on_step = kl_clock(self.z_kl, self.optimizer.objective, epoch)
        per_epoch = math.ceil(len(self.data.unlabelled) / self.settings.batch_size)
        with self.optimizer.epoch():
            for unlabelled, labelled in paired_batches(
                    self.data.unlabelled, self.labelled_stream, self.settings.batch_size,
                    labelled_steps(self.data, self.settings)):
                if on_step is not None:
                    on_step(steps / per_epoch)
                batches = (unlabelled,) if labelled is None else (unlabelled, labelled)
                total += self.optimizer.step(*batches)
                steps += 1
        if not math.isfinite(float(total)):
            raise FloatingPointError("M2 training diverged (the objective is not finite); "
                                     "lower --lr")
        row = {"train_objective": -float(total) / steps / self.data.num_train}
        return row | ({"z_kl_weight": handler.weight} if handler is not None else {})

    def classify(self, x):
        return self.module.label_logits(x)

    def diagnostics(self) -> dict:
        self.module.eval()
        return {"valid_generative_accuracy": generative_accuracy(self.module,
                                                                 self.data.observed_valid)}


@METHODS.register("m1m2")
class M1M2(M2):
    """M2 with a Gaussian likelihood on M1's latent code (``configs/specs/m2_on_m1.yaml``).
    ``data`` holds M1's features already (see :func:`m1_features`)."""

    spec_name = "m2_on_m1"
    draws_images = False
    on_m1_features = True


@METHODS.register("baseline")
class Baseline(Method):
    """M2's q(y|x) network (784-500-10, softplus) trained by cross-entropy on the labelled
    images alone, for as many steps as M2 takes (one labelled batch per unlabelled batch)."""

    def __init__(self, data: SemiData, settings: Settings):
        super().__init__(data, settings)
        spec = load_spec(shipped_spec("m2")).networks["classifier"]
        x_shape = tuple(data.unlabelled.x.shape[1:])
        self.module = build_network(spec.type, [x_shape], (10,), spec.hidden, spec.activation)
        initialization.normal(self.module, settings.init_sd)
        self.module.to(data.unlabelled.x.device)
        self.optimizer = build_optimizer("adam", self.module.parameters(), settings.lr,
                                         weight_decay(settings, len(data.labelled)),
                                         foreach=True)

    def train_epoch(self, epoch: int) -> dict:
        self.module.train()
        steps = math.ceil(len(self.data.unlabelled) / self.settings.batch_size)
        total = torch.zeros(())
        for _ in range(steps):
            b = next(self.labelled_stream)
            apply_share()
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.module(b.x), b.y)
            loss.backward()
            self.optimizer.step()
            total = total + loss.detach().cpu()
        return {"train_cross_entropy": float(total) / steps}

    def classify(self, x):
        self.module.eval()
        return self.module(x)


@METHODS.register("m1baseline")
class M1Baseline(Baseline):
    """The baseline's classifier (50-500-10 here) trained by cross-entropy on M1's codes of the
    labelled images alone: what M1's features give without M2's unlabelled term (the paper's
    M1 + classifier, with an MLP in place of its TSVM)."""

    on_m1_features = True


@torch.no_grad()
def m1_features(m1, data: SemiData, seed: int, binarize: bool = True) -> SemiData:
    """M1's codes in place of the images (Kingma et al. 2014, section 3.2: M2 is trained on
    z1 ~ q(z1|x) of an M1 trained without labels). The training splits keep q(z1|x)'s mean and
    scale, so that every batch shows a fresh z1 (a :class:`~aevb.inference.Split` with ``scale``);
    validation and test images are classified from the mean. With ``binarize``, training images
    kept in [0, 1] under dynamic binarization are binarized once from ``seed`` first, so every
    code is of a binary image; without it they are encoded from their grey levels, as the
    validation and test images are when ``data`` holds grey levels for them (Kingma et al.'s
    code encodes every split's grey levels)."""
    m1.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def encode(split: Split, sampled: bool) -> Split:
        x = split.x
        if split.dynamic and binarize:
            x = torch.bernoulli(x.cpu(), generator=gen).to(x.device)
        posteriors = [m1.posterior(x[i:i + 1000]) for i in range(0, len(x), 1000)]
        loc = torch.cat([q.mean for q in posteriors])
        scale = torch.cat([q.stddev for q in posteriors]) if sampled else None
        return Split(loc, split.y, False, scale)

    return SemiData(encode(data.labelled, True), encode(data.unlabelled, True),
                    encode(data.valid, False), encode(data.test, False))
