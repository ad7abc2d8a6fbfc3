"""Straight-through estimators whose estimate depends only on the sampled category D.

Each draws D ~ Cat(p), p = softmax(theta), by Gumbel-max, evaluates f at the one-hot D, and
returns a gradient computed from theta, tau, D and g = df/dy at D. With J(q) = diag(q) - q q^T:

- `st`: tempered straight-through (Bengio et al. 2013; slope-annealed, Paulus et al. 2021):
  (1/tau) J(softmax(theta/tau)) g. No Gumbel noise in the backward pass.
- `gst`: gapped straight-through (Fan et al. 2022): the backward pass of softmax((theta + m)/tau),
  m = sg(m1 - m2) a deterministic move of the logits: m1 = (max theta - theta) * D lifts D's
  logit to the maximum, m2 = relu(theta - max theta + gap) * (1 - D) pushes every other logit at
  least `gap` below it. gap = 1.0 (GST-1.0) or "p": gap = -log(1 - p_D) / p_D (GST-p), as in the
  authors' code (p_D scaled by 1 - 1e-5 there for stability).
- `reinmax` (Liu et al. 2023): 2 J(pi) g - 1/2 J(p) g, pi = (softmax(theta/tau) + D) / 2. The
  authors' code refuses tau < 1; here any tau > 0 is allowed, since the study is about tau.
- `zgr` (Shekhovtsov 2023, "ZGR"): 1/2 [J(p) g + ((D - p).g)(D - p)], the mean of the ST and
  REINFORCE-like terms of its surrogate x + (dx - sg(dx)), dx = 1/2 (p + sg(x - p) log p_x).
  It does not use tau.

Because the estimate is a function of D, its mean and variance are exact sums over the K
categories (study.estimators.category_moments).
"""

from __future__ import annotations

import torch
from torch import Tensor

from study.estimator_base import Draw, Estimator
from study.gumbel import one_hot, softmax, straight_through

__all__ = ["GappedST", "ReinMax", "TemperedST", "ZGR"]

_GST_P_SCALE = 1.0 - 1e-5  # the authors' stabiliser of p_D in GST-p's gap


def _jvp_softmax(q: Tensor, g: Tensor) -> Tensor:
    """J(q) g = q * g - q (q . g), for softmax outputs q and vectors g [..., K]."""
    return q * g - q * (q * g).sum(dim=-1, keepdim=True)


class _CategoryOnly(Estimator):
    """Gumbel-max draws; `backward_point` gives a tensor whose gradient, passed straight through
    the one-hot D, is the estimator's rule."""

    def draw(self, logits, noise, shape, *, emit_only=False, **options):
        base = super().draw(logits, noise, shape)
        return Draw(base.gumbel, base.index, extra=dict(options))

    def sample(self, logits: Tensor, draw: Draw, tau) -> Tensor:
        shape = (*draw.index.shape, logits.shape[-1])
        lg = logits.expand(shape)  # [G, S, *rest, K]
        vertex = one_hot(draw.index, lg.shape[-1], lg.dtype)  # D, the exact categorical sample
        return straight_through(vertex, self.backward_point(lg, vertex, tau, draw.extra))

    def backward_point(self, lg: Tensor, vertex: Tensor, tau, options: dict) -> Tensor:
        raise NotImplementedError


class TemperedST(_CategoryOnly):
    def backward_point(self, lg, vertex, tau, options):
        return softmax(lg / tau)  # gradient: (1/tau) J(softmax(theta/tau)) g


class GappedST(_CategoryOnly):
    def backward_point(self, lg, vertex, tau, options):
        with torch.no_grad():
            top = lg.max(dim=-1, keepdim=True).values  # [.., 1]
            gap = self._gap(lg, vertex, options["gap"])  # float or [.., 1]
            lift = (top - lg) * vertex  # m1: D's logit to the maximum
            push = (lg - top + gap).clamp_min(0.0) * (1.0 - vertex)  # m2: the others >= gap below it
        return softmax((lg + (lift - push)) / tau)

    @staticmethod
    def _gap(lg: Tensor, vertex: Tensor, gap) -> float | Tensor:
        if gap != "p":
            return float(gap)
        p_d = (torch.softmax(lg, dim=-1) * vertex).sum(dim=-1, keepdim=True) * _GST_P_SCALE  # [.., 1]
        p_d = p_d.clamp_min(torch.finfo(lg.dtype).tiny)
        return -torch.log1p(-p_d) / p_d


class _ReinMaxGrad(torch.autograd.Function):
    """Value 0; gradient w.r.t. the logits 2 J(pi) g - 1/2 J(p) g (Liu et al. 2023, Algorithm 2)."""

    @staticmethod
    def forward(ctx, logits: Tensor, vertex: Tensor, tau) -> Tensor:
        ctx.save_for_backward(logits, vertex)
        ctx.tau = tau
        return torch.zeros_like(logits)

    @staticmethod
    def backward(ctx, g: Tensor):
        logits, vertex = ctx.saved_tensors
        pi = 0.5 * (torch.softmax(logits / ctx.tau, dim=-1) + vertex)  # [.., K]
        p = torch.softmax(logits, dim=-1)  # [.., K]
        return 2.0 * _jvp_softmax(pi, g) - 0.5 * _jvp_softmax(p, g), None, None


class ReinMax(_CategoryOnly):
    def backward_point(self, lg, vertex, tau, options):
        return _ReinMaxGrad.apply(lg, vertex, tau)


class ZGR(_CategoryOnly):
    def backward_point(self, lg, vertex, tau, options):
        log_p = torch.log_softmax(lg, dim=-1)  # [.., K]
        p = log_p.exp()
        log_p_x = (log_p * vertex).sum(dim=-1, keepdim=True)  # log p_D, [.., 1]
        return 0.5 * (p + (vertex - p).detach() * log_p_x)
