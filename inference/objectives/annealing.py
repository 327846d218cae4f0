r"""A weight on the KL term: β-VAE (Higgins et al. 2017) and KL warm-up (Sønderby et al. 2016;
Bowman et al. 2016).

The weighted objective is

.. math:: \mathbb E_q[\log p(x|z)] - w\,\mathrm{KL}(q(z|x)\,\|\,p(z)),
          \qquad w(t) = \beta + (w_0 - \beta) \max\big(0, 1 - t / T\big),

with t the training progress in epochs (updated every step), T = ``kl.warmup_epochs`` and
w_0 the weight at the start (w = β throughout when T = 0). The warm-up of Sønderby et al. is
w_0 = 0 (the default): w rises linearly from 0 to β. A start *above* β anneals the weight down
to it instead; the semi-supervised M2 uses this on its continuous latent only (``sites``), so
that early in training the class is cheaper to carry in y than in z
(:mod:`aevb.inference.semisupervised`). It is implemented as a Pyro effect handler,
:class:`KLWeight`, that multiplies the ``scale`` of every *latent* sample site — in the model
(log p(z)) and in the guide (log q(z|x)) — by w, leaving observed sites alone: Trace_ELBO's
sampled KL, TraceMeanField_ELBO's analytic KL (which reads the guide site's scale) and the
score-function surrogate are all weighted exactly.

It means something only where the objective has a KL term: ``elbo``, ``meanfield`` and
``score``. The IWAE bound has none (it log-mean-exps whole importance weights), so ``iwae``
refuses a weight other than 1. A model whose discrete latents are enumerated takes a weight on
its continuous latents only (``kl.sites``), never on the summed-out sites.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

WEIGHTABLE = ("elbo", "meanfield", "score")


class KLWeight(Messenger):
    """Scales the log-density of every latent sample site by :attr:`weight` — or, with
    ``sites``, of the latent sites of those names only (observed sites are never scaled)."""

    def __init__(self, weight: float = 1.0, sites: frozenset[str] | None = None):
        super().__init__()
        self.weight = weight
        self.sites = None if sites is None else frozenset(sites)

    def _process_message(self, msg):
        if (msg["type"] == "sample" and not msg["is_observed"]
                and not isinstance(msg["fn"], _Subsample) and self.weight != 1.0
                and (self.sites is None or msg["name"] in self.sites)):
            msg["scale"] = msg["scale"] * self.weight


@dataclass(frozen=True)
class KLSchedule:
    """The KL weight w by epoch: from ``start`` linearly to β over ``warmup_epochs``.

    :param beta: the final weight β (1 = the ELBO).
    :param warmup_epochs: T, epochs over which w moves linearly from ``start`` to β (0 = w is
        β throughout).
    :param start: w_0, the weight at the start (0: the warm-up of Sønderby et al.; above β:
        annealing down to β).
    :param sites: the latent sites it weights (None: all)."""

    beta: float = 1.0
    warmup_epochs: float = 0.0
    start: float = 0.0
    #: the latent sites weighted (None: every latent site; see :class:`KLWeight`)
    sites: frozenset[str] | None = None

    @property
    def active(self) -> bool:
        return self.beta != 1.0 or (self.warmup_epochs > 0 and self.start != self.beta)

    def weight(self, progress: float) -> float:
        """w after ``progress`` epochs of training (fractional)."""
        if self.warmup_epochs <= 0:
            return self.beta
        left = max(0.0, 1.0 - progress / self.warmup_epochs)
        return self.beta + (self.start - self.beta) * left

    def handler(self, progress: float = 1.0) -> KLWeight:
        """A :class:`KLWeight` on :attr:`sites` at the weight after ``progress`` epochs."""
        return KLWeight(self.weight(progress), self.sites)
