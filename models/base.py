"""The contract between a latent-variable model and aevb's training, evaluation and CLI.

A model is a :class:`~pyro.nn.PyroModule` with two methods, ``model(batch)`` and
``guide(batch)``, written with Pyro primitives. Every observed site and every latent site that
belongs to one datapoint lives inside the plate returned by :meth:`LatentVariableModel.data_plate`
(named ``"data"``), which carries the paper's minibatch scaling N/M (Kingma & Welling 2014,
eq. 8). The model never computes its own loss: the objective (``elbo``, ``meanfield``, ``iwae``,
``score``) is chosen by the trainer.

Optional methods used for pictures and diagnostics: ``encode(x)`` (posterior mean of the
latent code), ``reconstruct(x)`` (mean of p(x|z) at z = encode(x)), ``generate(n)`` (means of
p(x|z) for z drawn from the prior) and ``check_data(x)`` (raise ``ValueError`` for data the
likelihood cannot score).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro.nn import PyroModule

# aevb trains with torch optimizers over ``module.parameters()`` (the ELBOModule pattern), so
# PyroModule parameters must belong to their module and not be synchronised through Pyro's
# global parameter store, where two instances with the same names would silently share values.
pyro.settings.set(module_local_params=True)


@dataclass
class Batch:
    """A minibatch as the model and guide see it.

    :param torch.Tensor x: observations, shape ``(M, *x_shape)``.
    :param torch.Tensor y: labels, shape ``(M,)``, or ``None``.
    :param torch.Tensor index: positions of the batch in the full dataset (``pyro.plate``'s
        subsample indices), or ``None``.
    :param int num_data: N, the size of the full dataset; ``None`` means the batch is the whole
        dataset and no N/M scaling is applied (as in evaluation, where figures are per datapoint).
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    index: torch.Tensor | None = None
    num_data: int | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


DATA_PLATE = "data"


class LatentVariableModel(PyroModule):
    """Base class of aevb's models; see the module docstring for the contract."""

    #: names of the sample sites that are observed in ``model``
    observed_sites: tuple[str, ...] = ("x",)

    def data_plate(self, batch: Batch) -> pyro.plate:
        """The datapoint plate with the N/M scaling of Kingma & Welling (2014), eq. 8."""
        size = len(batch)
        if batch.num_data is None:
            return pyro.plate(DATA_PLATE, size, dim=-1, device=batch.x.device)
        index = batch.index
        if index is None:
            index = torch.arange(size, device=batch.x.device)
        return pyro.plate(DATA_PLATE, batch.num_data, subsample=index, dim=-1)

    def model(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def guide(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` when the likelihood cannot score ``x``. Default: accept."""
