r"""The InfoVAE objective (Zhao, Song & Ermon 2019, eq. 6) and its special cases:

.. math:: \mathcal L = \sum_i \Big(\mathbb E_{q(z|x_i)}[\log p(x_i|z)]
          - (1-\alpha)\,\mathrm{KL}\big(q(z|x_i)\,\|\,p(z)\big)\Big)
          \;-\; (\alpha+\lambda-1)\, N\, D\big(q(z)\,\|\,p(z)\big).

α = 0, λ = 1 is the ELBO. The divergence D between the aggregate posterior
q(z) = E_x q(z|x) and the prior is one of :data:`DIVERGENCES`: ``mmd``, the squared maximum
mean discrepancy (:mod:`.mmd`, Zhao et al. eq. 10), or ``adversarial``, KL(q(z) ‖ p(z)) from a
trained critic's density ratio (:mod:`.adversarial`). The MMD-VAE is α = 1 with ``mmd``
(:class:`MMDObjective`); the adversarial autoencoder (Makhzani et al. 2015) is α = 1, λ = 1
with ``adversarial`` (:class:`AAEObjective`): the reconstruction, and the aggregate posterior
matched to the prior by a discriminator, no per-datapoint KL.

The per-datapoint terms are estimated on the minibatch with the plate's N/M scale, the KL from
the guide's own sample (as ``Trace_ELBO`` does); D on the batch's posterior samples and as
many prior samples. Every latent site must be reparameterized and lie in the datapoint plate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.subsample_messenger import _Subsample

from aevb.inference.objectives.adversarial import AdversarialDivergence
from aevb.inference.objectives.mmd import MMD
from aevb.models.base import DATA_PLATE
from aevb.models.registry import Registry

#: InfoVAE's divergences D(q(z) ‖ p(z)) by name (``info_divergence``): factories of the
#: config's ``critic_hidden``. A divergence is called as ``D(z_q, z_p) -> (estimate,
#: surrogate)``, and ``D.bind(latent_size, device)`` builds what it trains (``D.critic``,
#: ``None`` when nothing)
DIVERGENCES: Registry[Callable[[int], MMD | AdversarialDivergence]] = Registry("divergence")


@DIVERGENCES.register("mmd")
def _mmd(critic_hidden: int) -> MMD:
    """MMD² with a Gaussian kernel of bandwidth the latent dimension; no critic."""
    return MMD()


@DIVERGENCES.register("adversarial")
def _adversarial(critic_hidden: int) -> AdversarialDivergence:
    """KL(q(z) ‖ p(z)) from a critic of two hidden layers of ``critic_hidden`` units."""
    return AdversarialDivergence(critic_hidden)


class InfoVAEObjective(ELBO):
    """The InfoVAE loss with weights ``alpha`` (α) and ``lam`` (λ) and the divergence
    ``divergence`` (an instance from :data:`DIVERGENCES`; default :class:`~.mmd.MMD` with
    kernel ``bandwidth``)."""

    #: the name refusals use
    label = "infovae"

    def __init__(self, alpha: float = 0.0, lam: float = 1000.0, bandwidth: float | None = None,
                 plate_name: str = DATA_PLATE, divergence=None):
        super().__init__(num_particles=1)
        if lam < 0:
            raise ValueError(f"λ (info_lambda / mmd_scale) must be >= 0, got {lam}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"α (info_alpha) must be in [0, 1], got {alpha}")
        self.alpha, self.lam = float(alpha), float(lam)
        self.divergence = MMD(bandwidth) if divergence is None else divergence
        self.plate_name = plate_name

    @property
    def critic(self) -> torch.nn.Module | None:
        """The network the divergence trains beside the model (``None`` for MMD)."""
        return self.divergence.critic

    def bind(self, latent_size: int, device: torch.device) -> None:
        """Build what the divergence trains, for ``latent_size`` flat latent dimensions."""
        self.divergence.bind(latent_size, device)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        model_trace.compute_log_prob()
        kl_weight = 1.0 - self.alpha
        if kl_weight:
            guide_trace.compute_log_prob()
        reconstruction: torch.Tensor | float = 0.0
        kl: torch.Tensor | float = 0.0
        posterior, prior = [], []
        num_data = None
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            if site["is_observed"]:
                reconstruction = reconstruction + site["log_prob_sum"]
                continue
            frames = [f for f in site["cond_indep_stack"] if f.name == self.plate_name]
            if not frames or not guide_trace.nodes[name]["fn"].has_rsample:
                raise ValueError(f"{self.label} needs every latent site reparameterized and "
                                 f"inside the {self.plate_name!r} plate; {name!r} is not; use elbo")
            if kl_weight:  # log q(z|x) - log p(z) at the guide's sample, N/M-scaled
                kl = kl + guide_trace.nodes[name]["log_prob_sum"] - site["log_prob_sum"]
            value = site["value"]
            num_data = value.shape[0] * float(site["scale"])  # M times the plate's N/M
            posterior.append(value.reshape(value.shape[0], -1))
            draw = site["fn"].rsample() if site["fn"].has_rsample else site["fn"].sample()
            prior.append(draw.reshape(value.shape[0], -1))
        if not posterior:
            raise ValueError(f"{self.label} found no latent site in the model")
        z_q, z_p = torch.cat(posterior, -1), torch.cat(prior, -1)
        if len(z_q) < 2:
            raise ValueError(f"{self.label} needs minibatches of at least 2 datapoints")
        divergence_weight = self.alpha + self.lam - 1.0
        loss = -reconstruction + kl_weight * kl
        if divergence_weight:
            estimate, surrogate = self.divergence(z_q, z_p)
            loss = loss + divergence_weight * num_data * estimate + surrogate
        return loss

    def _get_trace(self, model, guide, args, kwargs):  # ELBO's abstract hook; not used
        raise NotImplementedError("InfoVAEObjective computes its loss in differentiable_loss")

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class MMDObjective(InfoVAEObjective):
    """The MMD-VAE: InfoVAE with α = 1, the MMD divergence, ``mmd_scale`` = λ."""

    label = "mmd"

    def __init__(self, mmd_scale: float = 1000.0, bandwidth: float | None = None,
                 plate_name: str = DATA_PLATE):
        super().__init__(1.0, mmd_scale, bandwidth, plate_name)
        self.mmd_scale = self.lam


class AAEObjective(InfoVAEObjective):
    """The adversarial autoencoder (Makhzani et al. 2015) as InfoVAE's α = 1, λ = 1 case: the
    reconstruction minus N·KL(q(z) ‖ p(z)), the divergence estimated by a discriminator
    (:class:`~.adversarial.AdversarialDivergence` with ``critic_hidden`` hidden units)."""

    label = "aae"

    def __init__(self, critic_hidden: int = 256, plate_name: str = DATA_PLATE):
        super().__init__(1.0, 1.0, plate_name=plate_name,
                         divergence=AdversarialDivergence(critic_hidden))
