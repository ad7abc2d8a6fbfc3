"""Gumbel noise, the Gumbel-max trick and the Gumbel-softmax relaxation.

References:
- Gumbel-max: argmax_k (logits_k + G_k), G_k ~ Gumbel(0, 1) i.i.d., is an exact sample of
  Categorical(softmax(logits)).
- Gumbel-softmax / Concrete: softmax((logits + G) / tau) (Jang et al. 2017, "Categorical
  Reparameterization with Gumbel-Softmax"; Maddison et al. 2017, "The Concrete Distribution").
- Conditional Gumbels given the argmax, for Gumbel-Rao (Paulus et al. 2021, "Rao-Blackwellizing
  the Straight-Through Gumbel-Softmax Gradient Estimator").

Every function follows the dtype and device of its inputs and draws all randomness from an
optional `torch.Generator`, so a fixed generator gives the same numbers every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_tau",
    "conditional_gumbel",
    "gumbel_from_exponential",
    "gumbel_max",
    "gumbel_noise",
    "gumbel_softmax",
    "one_hot",
    "softmax",
    "straight_through",
]


def gumbel_noise(
    shape: Sequence[int] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """I.i.d. standard Gumbel samples of `shape`, always finite.

    G = -log(E) with E ~ Exp(1). `exponential_` can return exactly 0 at float resolution, so E is
    clamped to the smallest normal number of the dtype instead of adding a magic epsilon.
    """
    tiny = torch.finfo(dtype).tiny
    exp1 = torch.empty(tuple(shape), dtype=dtype, device=device).exponential_(generator=generator)  # ~Exp(1)
    return -exp1.clamp_min_(tiny).log_()  # ~Gumbel(0, 1)


class _NarrowSoftmax(torch.autograd.Function):
    """Softmax over a short last dim as whole-tensor ops. torch's CPU kernel vectorises along the
    last dim, which leaves most of each vector idle when that dim holds a few dozen entries
    (benchmarks/README.md)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        e = (x - x.amax(dim=-1, keepdim=True)).exp_()  # max subtracted: no overflow
        y = e.div_(e.sum(dim=-1, keepdim=True))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        gy = grad * y
        return gy - y * gy.sum(dim=-1, keepdim=True)  # the softmax Jacobian-vector product


WHOLE_TENSOR_SOFTMAX_BELOW = 64  # categories: below this, the whole-tensor softmax is the faster one on CPU


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last dim, fast for the small K of these studies on CPU."""
    if x.shape[-1] < WHOLE_TENSOR_SOFTMAX_BELOW and x.device.type == "cpu":
        return _NarrowSoftmax.apply(x)
    return torch.softmax(x, dim=-1)


def gumbel_from_exponential(exp1: Tensor) -> Tensor:
    """Map Exp(1) samples to standard Gumbel samples: G = -log(E), E clamped away from 0."""
    return -exp1.clamp_min(torch.finfo(exp1.dtype).tiny).log()  # ~Gumbel(0, 1)


def check_tau(tau: float | Tensor) -> None:
    """Raise ValueError naming `tau` unless every entry is finite and > 0."""
    if isinstance(tau, Tensor):
        bad = ~(torch.isfinite(tau) & (tau > 0))
        if bool(bad.any()):
            raise ValueError(f"tau must be finite and > 0, got tau={tau[bad].flatten()[0].item()!r}")
        return
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a finite number > 0, got tau={tau!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"tau must be finite and > 0, got tau={tau!r}")


def one_hot(index: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """One-hot of `index` [...] as a float tensor [..., num_classes]."""
    out = torch.zeros(*index.shape, num_classes, dtype=dtype, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1.0)


def straight_through(forward: Tensor, surrogate: Tensor) -> Tensor:
    """Value of `forward`, gradient of `surrogate` (the straight-through trick)."""
    # forward - surrogate cancels in value but has no gradient, so d/dtheta = d surrogate/dtheta.
    return forward - surrogate.detach() + surrogate


def _noise_like(logits: Tensor, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
    if noise is not None:
        return noise
    return gumbel_noise(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)


def gumbel_max(
    logits: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Exact sample of Categorical(softmax(logits)) as argmax(logits + G) over the last dim."""
    g = _noise_like(logits, generator, noise)  # ~Gumbel(0, 1), [..., K]
    return (logits + g).argmax(dim=-1)  # [...]


def gumbel_softmax(
    logits: Tensor,
    tau: float | Tensor,
    *,
    hard: bool = False,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """softmax((logits + G) / tau) over the last dim (Jang et al. 2017; Maddison et al. 2017).

    With `hard=True` the forward value is the one-hot of argmax(logits + G), i.e. an exact
    categorical sample, and the backward pass is that of the soft sample (straight-through).
    `tau` is a float or a tensor broadcastable against `logits`; `noise` supplies G.
    """
    check_tau(tau)
    g = _noise_like(logits, generator, noise)  # ~Gumbel(0, 1), [..., K]
    perturbed = logits + g  # [..., K]
    y_soft = softmax(perturbed / tau)  # [..., K]
    if not hard:
        return y_soft
    # argmax of the perturbed logits, not of y_soft: at tiny tau y_soft can tie at 1.0 in float32.
    y_hard = one_hot(perturbed.argmax(dim=-1), logits.shape[-1], logits.dtype)  # [..., K]
    return straight_through(y_hard, y_soft)


def conditional_gumbel(
    logits: Tensor,
    index: Tensor,
    *,
    num_samples: int,
    generator: torch.Generator | None = None,
    exponentials: Tensor | None = None,
    differentiable: bool = False,
) -> Tensor:
    """Gumbel noise G [num_samples, ..., K] distributed as G | argmax(logits + G) = index.

    Uses the exponential-race construction of Paulus et al. (2021, App. C): with E_j ~ Exp(1)
    and Z = sum_j exp(logits_j), the winner's perturbed logit is log Z - log E_i, and each loser's
    is -log(E_j exp(-logits_j) + E_i / Z), computed in log space. By default the noise is a sample
    and carries no gradient; `differentiable=True` keeps it a function of the logits at fixed E
    (the reparameterisation REBAR needs, and Paulus et al.'s eq. 10): then logits + G has the
    gradient of the perturbed logits. `exponentials` [num_samples, ..., K] ~ Exp(1) may be
    supplied instead of drawing them from `generator`.
    """
    if not differentiable:
        logits = logits.detach()
    k = logits.shape[-1]
    tiny = torch.finfo(logits.dtype).tiny
    shape = (num_samples, *logits.shape)
    if exponentials is None:
        exponentials = torch.empty(shape, dtype=logits.dtype, device=logits.device).exponential_(generator=generator)  # ~Exp(1)
    log_e = exponentials.clamp_min(tiny).log()  # [S, ..., K]
    chosen = one_hot(index, k, torch.bool).expand(shape)  # [S, ..., K]
    log_e_win = (log_e * chosen).sum(dim=-1, keepdim=True)  # [S, ..., 1]
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)  # [..., 1]
    winner = log_z - log_e_win  # [S, ..., 1]
    losers = -torch.logaddexp(log_e - logits, log_e_win - log_z)  # [S, ..., K]
    perturbed = torch.where(chosen, winner, losers)  # [S, ..., K]
    return perturbed - logits  # ~Gumbel(0, 1) | argmax, [S, ..., K]
