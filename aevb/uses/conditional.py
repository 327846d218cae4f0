"""Conditional generation for models that read labels (M2, the CVAE spec): analogies and
class-conditional samples.

*Analogies* (Kingma et al. 2014, Figure 1): a test image's style, the posterior mean of
q(z|x, y), held fixed while y takes every class and the decoder draws the mean of p(x|y, z).
The style is inferred with the image's own label where the model requires one (a CVAE) or
is given it, and with the class q(y|x) finds most probable otherwise (M2).
*Class-conditional samples*: z from the prior p(z), y set to each class in turn.
"""

from __future__ import annotations

import torch

from aevb.models.base import labels_of


def label_classes(model) -> int:
    """The number of classes of the label the model reads (``batch.y``)."""
    variables = getattr(model, "variables", {})
    label = next((v for v in variables.values() if v.data == "y" and v.num_classes), None)
    if label is None or labels_of(model) == "unused" or not hasattr(model, "sample_prior"):
        raise ValueError(f"{type(model).__name__} has no categorical label to condition on "
                         "(conditional generation needs a spec model that reads batch.y, such "
                         "as m2 or cvae)")
    return label.num_classes


@torch.no_grad()
def analogies(model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``(len(x) * (C + 1), *x_shape)``, row by row: each image, then the decoded means with
    its style and each of the C classes (a grid of ``C + 1`` columns)."""
    classes = label_classes(model)
    model.eval()
    if labels_of(model) == "required" and y is None:
        raise ValueError(f"{type(model).__name__} requires labels: pass the images' y")
    if y is None:
        y = model.label_logits(x).argmax(-1)
    z = model.encode(x, y=y)
    ys = torch.arange(classes, device=x.device)
    rows = []
    for i in range(len(x)):
        rows += [x[i:i + 1], model.decode(z[i].expand(classes, *z.shape[1:]), y=ys)]
    return torch.cat(rows)


@torch.no_grad()
def samples_by_class(model, per_class: int = 8) -> torch.Tensor:
    """``(per_class * C, *x_shape)``: row r decodes one z from the prior with each of the C
    classes (a grid of C columns, one class per column). Where z's prior depends on y (a
    mixture prior, as in the GMVAE spec), each class draws its own z."""
    classes = label_classes(model)
    model.eval()
    label = next(n for n, v in model.variables.items() if v.data == "y")
    device = next(model.parameters()).device
    ys = torch.arange(classes, device=device).repeat(per_class)
    if label in model.priors[model.code].parents:
        z = model.sample_prior(model.code, len(ys), {label: ys})
    else:
        z = model.sample_prior(model.code, per_class).repeat_interleave(classes, dim=0)
    return model.decode(z, y=ys)
