r"""A weight on the KL term: β-VAE (Higgins et al. 2017) and KL warm-up (Sønderby et al. 2016;
Bowman et al. 2016).

The weighted objective is

.. math:: \mathbb E_q[\log p(x|z)] - w\,\mathrm{KL}(q(z|x)\,\|\,p(z)),
          \qquad w(t) = \beta \min\big(1, t / T\big),

with t the training progress in epochs (updated every step) and T = ``kl.warmup_epochs``
(w = β throughout when T = 0). It is implemented as a Pyro effect handler,
:class:`KLWeight`, that multiplies the ``scale`` of every *latent* sample site — in the model
(log p(z)) and in the guide (log q(z|x)) — by w, leaving observed sites alone: Trace_ELBO's
sampled KL, TraceMeanField_ELBO's analytic KL (which reads the guide site's scale) and the
score-function surrogate are all weighted exactly.

It means something only where the objective has a KL term: ``elbo``, ``meanfield`` and
``score``. The IWAE bound has none (it log-mean-exps whole importance weights), so ``iwae``
refuses a weight other than 1, as do models whose discrete latents are enumerated.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

WEIGHTABLE = ("elbo", "meanfield", "score")


class KLWeight(Messenger):
    """Scales the log-density of every latent sample site by :attr:`weight`."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if (msg["type"] == "sample" and not msg["is_observed"]
                and not isinstance(msg["fn"], _Subsample) and self.weight != 1.0):
            msg["scale"] = msg["scale"] * self.weight


@dataclass(frozen=True)
class KLSchedule:
    """:param beta: the final weight β (1 = the ELBO). :param warmup_epochs: T, epochs of
    linear warm-up from 0 to β (0 = none)."""

    beta: float = 1.0
    warmup_epochs: float = 0.0

    @property
    def active(self) -> bool:
        return self.beta != 1.0 or self.warmup_epochs > 0

    def weight(self, progress: float) -> float:
        """w after ``progress`` epochs of training (fractional)."""
        if self.warmup_epochs <= 0:
            return self.beta
        return self.beta * min(1.0, progress / self.warmup_epochs)
