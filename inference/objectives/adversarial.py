r"""An adversarially estimated divergence between the aggregate posterior and the prior: the
density-ratio trick behind adversarial autoencoders (Makhzani et al. 2015) and Adversarial
Variational Bayes (Mescheder, Nowozin & Geiger 2017, Proposition 1).

A critic :math:`T_\psi(z)` is trained by logistic regression to tell the batch's posterior
samples :math:`z \sim q(z) = \mathbb E_x q(z|x)` from prior samples :math:`z \sim p(z)`:

.. math:: \min_\psi\; \mathbb E_{q(z)}\big[\operatorname{softplus}(-T_\psi(z))\big]
          + \mathbb E_{p(z)}\big[\operatorname{softplus}(T_\psi(z))\big],

whose optimum is the log density ratio :math:`T^*(z) = \log q(z) - \log p(z)` (the Bayes
classifier's logit with equal class sizes). The divergence the encoder is trained against is
then :math:`\mathrm{KL}(q(z)\,\|\,p(z)) = \mathbb E_{q(z)}[T^*(z)]`, estimated on the batch with
the critic held fixed. Its pathwise gradient is the KL's: the term that the fixed critic drops,
:math:`\mathbb E_q[\nabla_\phi \log q_\phi(z)]`, has expectation zero (Mescheder et al. 2017,
Proposition 2).

Both players step at once, on one loss: :meth:`AdversarialDivergence.__call__` returns the KL
estimate, whose gradient reaches the encoder only (the critic's parameters enter it detached,
through :func:`torch.func.functional_call`), and a surrogate whose value is zero and whose
gradient is the critic's classification loss's (the samples enter it detached), so it reaches
the critic only. The objective weights the first and adds the second as it is: the critic's
step does not depend on InfoVAE's weights or on N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from aevb.models.networks import mlp


class Critic(nn.Module):
    """:math:`T_\\psi(z)`: an MLP from a flat latent vector to one logit (LeakyReLU hidden
    layers, as the adversarial autoencoder's discriminator, Makhzani et al. 2015, section 2)."""

    def __init__(self, latent_size: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.net = mlp([latent_size, *[hidden] * layers, 1], "leaky_relu")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def critic_loss(critic: nn.Module, z_q: torch.Tensor, z_p: torch.Tensor) -> torch.Tensor:
    """The critic's logistic-regression loss (posterior samples labelled 1, prior samples 0),
    each class's mean; minimized by :math:`T^*(z) = \\log q(z) - \\log p(z)`."""
    return F.softplus(-critic(z_q)).mean() + F.softplus(critic(z_p)).mean()


class AdversarialDivergence:
    """InfoVAE's divergence D(q(z) ‖ p(z)) as KL, estimated with a trained :class:`Critic`.

    :param hidden: the critic's hidden width (two hidden layers).
    """

    name = "adversarial"

    def __init__(self, hidden: int = 256):
        self.hidden = int(hidden)
        self.critic: Critic | None = None

    def bind(self, latent_size: int, device: torch.device) -> None:
        """Build the critic for flat latents of ``latent_size`` on ``device`` (once)."""
        if self.critic is None:
            self.critic = Critic(latent_size, self.hidden).to(device)
        elif self.critic.net[0].in_features != latent_size:
            raise ValueError(f"the critic was built for {self.critic.net[0].in_features} latent "
                             f"dimensions, this model has {latent_size}")

    def __call__(self, z_q: torch.Tensor, z_p: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(KL estimate, the critic's zero-valued surrogate loss)`` on samples of shape
        (M, D) from q(z) and p(z)."""
        if self.critic is None:
            self.bind(z_q.shape[-1], z_q.device)
        critic = self.critic
        frozen = {n: p.detach() for n, p in critic.named_parameters()}
        kl = functional_call(critic, frozen, (z_q,)).mean()
        classification = critic_loss(critic, z_q.detach(), z_p.detach())
        return kl, classification - classification.detach()
