"""The contract between a latent-variable model and aevb's training, evaluation and CLI.

Any class that keeps this contract trains, evaluates, samples, checkpoints and resumes through
``aevb`` with every objective that can handle it; the shipped models (``vae``, ``spec``, ...)
use no other path. A model

* is a :class:`~pyro.nn.PyroModule` (so its networks are registered modules and
  ``model.parameters()`` is what the optimizer steps), built as ``cls(x_shape=..., **options)``;
* has ``model(batch)`` and ``guide(batch)`` written with Pyro primitives, taking a
  :class:`Batch`. Every site that belongs to one datapoint lives inside the plate returned by
  :meth:`LatentVariableModel.data_plate` (named ``"data"``), which carries the paper's minibatch
  scaling N/M (Kingma & Welling 2014, eq. 8). The model never computes its own loss: the
  objective (``elbo``, ``meanfield``, ``iwae``, ``score``, ...) is chosen by the trainer;
* names its observed sites in ``observed_sites`` and says how it uses labels in ``labels``:
  ``"unused"``, ``"required"`` (a conditioning input, as in a CVAE) or ``"optional"`` (observed
  when the batch has them, inferred by the guide when not, as in M2; evaluation then reports
  log p(x) with the labels hidden);
* may mark discrete guide sites ``infer={"enumerate": "parallel"}``; the trainer then uses an
  objective that sums them out exactly (TraceEnum_ELBO) or refuses one that cannot.

Optional methods used for pictures and diagnostics: ``encode(x, y=None)`` (posterior mean of
the latent code), ``decode(z, y=None)`` (mean of p(x|.) at code ``z``; with ``encode`` it
makes :func:`aevb.uses.interpolation.interpolate` work), ``reconstruct(x, y=None)`` (mean of
p(x|.) at the posterior means),
``generate(n)`` (means of p(x|.) with the latents drawn from the prior), ``evaluation_figures(split,
batch_size)`` (a dict of the model's own test figures merged into ``evaluation.json``, such as
VQ-VAE's code perplexity) and ``check_data(x)``
(raise ``ValueError`` for data the likelihood cannot score). ``y`` is passed only to models whose
``labels`` is ``"required"`` (and to ``decode`` of a model that reads labels at all).

Register a model with :func:`aevb.models.zoo.register_model`, or point the CLI at a file:
``aevb train model=path/to/my_model.py:MyModel``.
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
    #: how the model uses ``batch.y``: ``"unused"``, ``"required"`` or ``"optional"``
    labels: str = "unused"

    def data_plate(self, batch: Batch) -> pyro.plate:
        """The datapoint plate with the N/M scaling of Kingma & Welling (2014), eq. 8."""
        size = len(batch)
        if batch.num_data is None:
            return pyro.plate(DATA_PLATE, size, dim=-1, device=batch.x.device)
        index = batch.index
        if index is None:
            index = torch.arange(size, device=batch.x.device)
        return pyro.plate(DATA_PLATE, batch.num_data, subsample=index, dim=-1,
                          device=batch.x.device)

    def model(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def guide(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` when the likelihood cannot score ``x``. Default: accept."""

    def logit_layers(self) -> dict:
        """The linear layers whose outputs are the logits of a Bernoulli likelihood of
        ``batch.x``, by site: what ``train.init=glorot`` starts at the data's mean
        (:mod:`aevb.inference.training.initialization`). Default: none."""
        return {}


def check_images(x: torch.Tensor, x_shape: tuple, likelihood) -> None:
    """``check_data`` of a model with one image observation: the shape, then the likelihood
    family's own check (e.g. a Bernoulli's data range)."""
    if tuple(x.shape[1:]) != tuple(x_shape):
        raise ValueError(f"the model expects images of shape {tuple(x_shape)}, "
                         f"the data has {tuple(x.shape[1:])}")
    likelihood.check_data(x)


LABEL_USES = ("unused", "required", "optional")


def labels_of(model) -> str:
    """The model's ``labels`` attribute (``"unused"`` when absent), checked."""
    use = getattr(model, "labels", "unused")
    if use not in LABEL_USES:
        raise ValueError(f"{type(model).__name__}.labels is {use!r}; use one of {', '.join(LABEL_USES)}")
    return use


def for_evaluation(model, batch: Batch) -> Batch:
    """The batch as evaluation shows it to ``model``: labels hidden unless the model needs them,
    so that figures are log p(x) (or log p(x|y) for a conditional model)."""
    if labels_of(model) == "required" or batch.y is None:
        return batch
    return Batch(batch.x, None, batch.index, batch.num_data)


def call_with_labels(model, method: str, x: torch.Tensor, y: torch.Tensor | None):
    """``model.<method>(x)``, passing ``y=`` to models that require labels."""
    fn = getattr(model, method)
    return fn(x, y=y) if labels_of(model) == "required" else fn(x)
