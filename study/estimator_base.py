"""The protocol every gradient estimator follows (study.estimators holds the registry).

An estimator is three steps over samples laid out [G, S, *rest, K] (G groups: the N estimates of a
probe or the R replicas of a population; S samples per group), see study.estimators:
`draw` (the randomness, none of it depending on tau), `sample` (the point(s) where f is
evaluated, carrying the estimator's gradient w.r.t. the logits), `surrogate` (a function of the
logits whose gradient is the estimate). An estimator that evaluates f at several points per
sample (REBAR: the category and two relaxed points; the unordered-set estimator: its k
categories) returns y with leading point dims [*points, G, S, *rest, K], and f's values and
gradients come back with the same leading dims; point 0 is the sample itself (its loss is the
sample's loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from study.gumbel import check_tau, gumbel_from_exponential, one_hot
from study.vocab import ESTIMATORS_INFO, resolve_options

__all__ = ["Draw", "Estimator", "LossFn", "NoiseSource", "estimator_options", "fresh_noise"]

LossFn = Callable[[Tensor], Tensor]
NoiseSource = Callable[[str, tuple[int, ...], int], Tensor]  # (name, shape, group_dim) -> i.i.d. Exp(1) of shape


def fresh_noise(generator: torch.Generator | None, dtype: torch.dtype, device: torch.device | str | None) -> NoiseSource:
    """A noise source that draws fresh Exp(1) numbers from `generator`, as -log U with U uniform
    (the transform of a population's random blocks; uniform_ and log beat exponential_ on CPU),
    contiguous in the shape asked for."""

    def noise(name: str, shape: tuple[int, ...], group_dim: int = 0) -> Tensor:
        u = torch.empty(shape, dtype=dtype, device=device).uniform_(generator=generator)  # ~U[0, 1)
        return u.clamp_min_(torch.finfo(dtype).tiny).log_().neg_()  # ~Exp(1)

    return noise


def estimator_options(name: str, options: dict) -> dict:
    """`options` checked against ESTIMATORS_INFO[name].options and completed with its defaults
    (study.vocab.resolve_options)."""
    return resolve_options(name, options)


@dataclass(frozen=True)
class Draw:
    """The randomness of a layout of samples [G, S, *rest, K]; none of it depends on tau."""

    gumbel: Tensor | None  # G ~ Gumbel(0, 1), [G, S, *rest, K] (None: an enumerated category, no noise)
    index: Tensor | None = None  # the categorical sample, [*points, G, S, *rest] (one-hot estimators)
    conditional: Tensor | None = None  # k Gumbels given the index, [k, G, S, *rest, K]
    extra: dict[str, Any] = field(default_factory=dict)  # what a sample step needs besides (options, exponentials)


class Estimator:
    """One gradient estimator: its draws, its sample, its gradient rule (see the module docstring),
    and, called with the public signature, N Monte Carlo estimates for any f."""

    one_hot = True  # its samples' values are one-hots: f is only ever evaluated at the K unit vectors
    emits_one_hot = True  # the sample a discriminator is shown (`emit`) is a one-hot
    pathwise = True  # its gradient flows through the sample (else through the score function)

    def __init__(self, name: str):
        self.name = name
        self.info = ESTIMATORS_INFO[name]

    def noise_segments(self, shape: tuple[int, ...], *, emit_only: bool = False, **options: int) -> list[tuple[str, tuple[int, ...]]]:
        """The Exp(1) draws of one group of samples of `shape` = (S, *rest, K), in the order `draw`
        requests them, without the group dim."""
        return [("gumbel", tuple(shape))]

    def draw(self, logits: Tensor, noise: NoiseSource, shape: tuple[int, ...], *, emit_only: bool = False, **options: int) -> Draw:
        """Draws for samples of `shape` [G, S, *rest, K] from detached logits [G, 1|S, *rest, K];
        `emit_only`: only what `emit` needs."""
        gumbel = gumbel_from_exponential(noise("gumbel", tuple(shape), 0))  # ~Gumbel(0, 1), [G, S, *rest, K]
        index = (logits.expand(shape) + gumbel).argmax(dim=-1) if self.one_hot else None  # [G, S, *rest]
        return Draw(gumbel, index)

    def emit(self, logits: Tensor, draw: Draw, tau: float | Tensor) -> Tensor:
        """The samples' values [G, S, *rest, K], no gradient wanted: the one-hot of the category."""
        return one_hot(draw.index, logits.shape[-1], logits.dtype)

    def sample(self, logits: Tensor, draw: Draw, tau: float | Tensor) -> Tensor:
        raise NotImplementedError

    def surrogate(self, logits: Tensor, y: Tensor, values: Tensor, grad: Tensor | None, draw: Draw | None = None) -> Tensor:
        """Pathwise: sum(y * dloss/dy) per group, whose gradient w.r.t. the logits is the loss's
        (dloss/dy held fixed: it is f's gradient at the sample's value)."""
        return (y * grad).sum(dim=tuple(range(1, y.ndim)))  # [G]

    def __call__(self, logits: Tensor, f: LossFn, *, tau: float | Tensor, num_estimates: int, samples_per_estimate: int,
                 generator: torch.Generator | None, noise: NoiseSource | None = None, **options: int) -> Tensor:
        """N independent estimates [N, *B, K]: every estimate gets its own copy of the logits, so the
        gradient of the summed surrogates w.r.t. that copy is that estimate (one batched pass)."""
        control = options.pop("control", None)  # REBAR / RELAX: adapted parameters, not an option
        options = estimator_options(self.name, options)
        if control is not None:  # per replica along the logits' first batch dim: dim 2 of [N, S, *B]
            options.update(control=control, control_dim=2)
        if self.info.uses_tau:
            check_tau(tau)
        n, s = num_estimates, samples_per_estimate
        theta = logits.detach().expand(n, *logits.shape).clone().requires_grad_(True)  # [N, *B, K]
        lead = theta.unsqueeze(1)  # [N, 1, *B, K]
        shape = (n, s, *logits.shape)
        noise = noise or fresh_noise(generator, logits.dtype, logits.device)
        with torch.enable_grad():
            draw = self.draw(lead.detach(), noise, shape, **options)
            y = self.sample(lead, draw, tau)  # [*points, N, S, *B, K]
            values, grad = self._f_and_grad(f, y, s)  # [*points, N, S, *B], [*points, N, S, *B, K]
            (estimates,) = torch.autograd.grad(self.surrogate(lead, y, values, grad, draw).sum(), theta)
        return estimates  # [N, *B, K]

    def _f_and_grad(self, f: LossFn, y: Tensor, samples: int) -> tuple[Tensor, Tensor | None]:
        """f at the samples and (pathwise) the gradient of mean_s f(y_s) w.r.t. y, by autograd."""
        if not self.pathwise:
            with torch.no_grad():
                return f(y), None
        point = y.detach().requires_grad_(True)
        values = f(point)  # [N, S, *B]
        (grad,) = torch.autograd.grad(values.sum() / samples, point)
        return values.detach(), grad



