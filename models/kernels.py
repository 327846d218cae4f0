r"""CPU kernels for the two elementwise functions of aevb's inner loops where torch's own are
slow on the CPU: softplus, :math:`\log(1 + e^x)`, and the Bernoulli log-density of an image,
:math:`\sum_d x_d l_d - \operatorname{softplus}(l_d)` for logits :math:`l`.

torch's CPU softplus goes through ``log1p``, about 3x slower than ``log`` here (float32, one
thread), and its ``binary_cross_entropy_with_logits`` is several autograd nodes forward and
backward. Both are computed here as :math:`\max(\log(1 + e^{\min(x, 20)}), x)`: torch's
softplus with its threshold of 20 (above it, :math:`x`), to float32 rounding; where
:math:`e^x` is below float32's epsilon it returns 0 for a value below 1e-7. Each is one autograd
node whose gradient is written out (:math:`\sigma(x)`; :math:`x_d - \sigma(l_d)`), and each
backward is itself differentiable. Other devices keep torch's kernels (``docs/performance.md``
has the measurements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: torch's softplus threshold (β = 1): above it softplus(x) is x
THRESHOLD = 20.0


def _ours(*tensors: torch.Tensor) -> bool:
    """Whether the kernels here apply: plain CPU tensors. A subclass (Pyro's
    ``ProvenanceTensor``, which ``TraceGraph_ELBO`` wraps around sampled values) keeps torch's
    ops, whose ``__torch_function__`` it overrides: through a custom autograd node it would
    hand on a tensor without the gradient's graph."""
    return all(type(t) is torch.Tensor and t.device.type == "cpu" for t in tensors)


def log1p_exp(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 + e^x)` below :data:`THRESHOLD`, :math:`x` above (no autograd node);
    torch's softplus off the CPU."""
    if not _ours(x):
        return F.softplus(x)
    out = x.clamp(max=THRESHOLD).exp_().add_(1.0).log_()
    return torch.maximum(out, x, out=out)


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return log1p_exp(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)


class _BernoulliLogDensity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, value)
        # the two sums first: the subtraction runs on one value per image, not per pixel
        return (logits * value).sum(-1) - log1p_exp(logits).sum(-1)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        logits, value = ctx.saved_tensors
        g = grad_output.unsqueeze(-1)
        grad_logits = (value - torch.sigmoid(logits)) * g
        grad_value = logits * g if ctx.needs_input_grad[1] else None
        return grad_logits, grad_value


def softplus(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 + e^x)` (β = 1, threshold 20), differentiable; torch's kernel off the
    CPU."""
    if not _ours(x):
        return F.softplus(x)
    return _Softplus.apply(x)


def bernoulli_log_density(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_d x_d l_d - \operatorname{softplus}(l_d)` over the last dimension: the log
    density of independent Bernoulli pixels with logits :math:`l` (Kingma & Welling 2014,
    appendix C.1), and for grey levels :math:`x_d \in [0, 1]` minus their binary
    cross-entropy. ``value`` broadcasts against ``logits`` (one image for k samples of its
    logits). On the CPU one autograd node; elsewhere minus the sum of torch's fused
    ``binary_cross_entropy_with_logits``."""
    ours = _ours(logits, value)
    grad = torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad)
    if (grad or not ours) and value.shape != logits.shape:
        logits, value = torch.broadcast_tensors(logits, value)
    if not ours:
        return F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1).neg()
    return _BernoulliLogDensity.apply(logits, value)
