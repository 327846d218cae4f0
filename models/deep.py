r"""Models with L stochastic layers, built as specs (:mod:`aevb.models.spec`) from a few numbers.

* ``dlgm``: the deep latent Gaussian model of Rezende, Mohamed & Wierstra (2014), in the
  bottom-up form of Burda et al. (2016, section 5): Gaussian layers
  :math:`p(z_L)\prod_{l<L} p(z_l|z_{l+1})\,p(x|z_1)` with guide
  :math:`q(z_1|x)\prod_{l>1} q(z_l|z_{l-1})`.
* ``sbn``: the sigmoid belief net (Neal 1992) with the Helmholtz machine's recognition network
  (Dayan, Hinton, Neal & Zemel 1995): Bernoulli layers of the same shape. With no hidden layers
  (the default) every conditional is a logistic regression on the layer above, the classic SBN.
  Its latents have no reparameterization; train it with ``elbo=wake-sleep``, ``rws``, ``iwae``
  (VIMCO gradients) or ``score``.

Both are :class:`~aevb.models.spec.SpecModel` subclasses, so they train, evaluate and picture like any
spec (``aevb train model=dlgm model.options={z_dims: [100, 50, 25]}``); ``spec_dict()`` shows
the spec they compile.
"""

from __future__ import annotations

from collections.abc import Sequence

from .spec import SpecModel
from .zoo import register_model


def layered_spec(name: str, value_type: str, z_dims: Sequence[int],
                 layer_hidden: Sequence[Sequence[int]], activation: str,
                 likelihood: str) -> dict:
    """A spec with stochastic layers ``z1``, ..., ``zL`` of sizes ``z_dims`` (``z1`` next to ``x``)
    of ``value_type``; the networks between layer l and the one below it have hidden sizes
    ``layer_hidden[l]``. The top layer's prior is the standard one (N(0, I) or fair coins)."""
    z_dims = [int(d) for d in z_dims]
    if not z_dims or min(z_dims) < 1:
        raise ValueError(f"z_dims must list L >= 1 positive layer sizes, got {z_dims}")
    if len(layer_hidden) != len(z_dims):
        raise ValueError(f"layer_hidden needs one list of hidden sizes per stochastic layer "
                         f"({len(z_dims)}), got {len(layer_hidden)}")
    names = [f"z{i + 1}" for i in range(len(z_dims))]
    networks, latents = {}, {}
    for i, (z, size, hidden) in enumerate(zip(names, z_dims, layer_hidden, strict=True)):
        net = {"type": "mlp", "hidden": [int(h) for h in hidden], "activation": activation}
        below = names[i - 1] if i else "x"
        networks[f"q_{z}"] = dict(net)
        networks[f"p_{below}"] = dict(net)
        above = names[i + 1] if i + 1 < len(names) else None
        latents[z] = {
            "type": value_type, "shape": [size],
            "prior": ({"parents": [above], "network": f"p_{z}"} if above else "standard"),
            "posterior": {"inputs": [below], "network": f"q_{z}"},
        }
    # the model samples from the top down; the spec's order does not matter to the compiler
    return {"name": name, "code": names[0], "networks": networks, "latents": latents,
            "observed": {"x": {"likelihood": likelihood, "parents": [names[0]],
                               "network": "p_x"}}}


def _hidden(layer_hidden, z_dims, default) -> list[list[int]]:
    if layer_hidden is None:
        return [list(default(z)) for z in z_dims]
    if all(isinstance(h, int) for h in layer_hidden):  # one list for every layer
        return [list(layer_hidden) for _ in z_dims]
    return [list(h) for h in layer_hidden]


@register_model("dlgm")
class DLGM(SpecModel):
    """Deep latent Gaussian model with ``len(z_dims)`` stochastic layers.

    :param z_dims: layer sizes from the bottom (next to x) up (default ``[100, 50]``).
    :param layer_hidden: hidden sizes of the networks into and out of each layer: one list per
        layer, or one list for all. Default two layers as wide as the stochastic layer
        (784-100-100-z100-50-50-z50 for the default sizes); Burda et al.'s (2016) two-layer
        architecture, 784-200-200-z100-100-100-z50, is ``layer_hidden=[[200, 200], [100, 100]]``.
    :param str activation: hidden activation (default ``tanh``).
    :param str likelihood: family of p(x|z1) (default ``bernoulli``).
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), z_dims: Sequence[int] = (100, 50),
                 layer_hidden: Sequence | None = None, activation: str = "tanh",
                 likelihood: str = "bernoulli"):
        hidden = _hidden(layer_hidden, z_dims, lambda z: [z, z])
        super().__init__(x_shape, layered_spec("dlgm", "normal", z_dims, hidden, activation,
                                               likelihood))


@register_model("sbn")
class SigmoidBeliefNet(SpecModel):
    """Sigmoid belief net with a Helmholtz-machine recognition network.

    :param z_dims: Bernoulli layer sizes from the bottom up (default ``[200]``).
    :param layer_hidden: hidden sizes of the conditionals (default none: logistic regressions,
        the classic SBN; Mnih & Gregor 2014 and Bornschein & Bengio 2015 use such nets).
    :param str activation: hidden activation when there are hidden layers.
    """

    def __init__(self, x_shape: Sequence[int] = (1, 28, 28), z_dims: Sequence[int] = (200,),
                 layer_hidden: Sequence | None = None, activation: str = "tanh"):
        hidden = _hidden(layer_hidden, z_dims, lambda z: [])
        super().__init__(x_shape, layered_spec("sbn", "bernoulli", z_dims, hidden, activation,
                                               "bernoulli"))
