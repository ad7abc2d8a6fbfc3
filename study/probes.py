"""Bias, variance and MSE of gradient estimators against the exact gradient.

Definitions (DESIGN.md "Metrics"), for an estimator g of the true gradient g* [*B, K]:
- bias2    = ||E g - g*||^2, with E g estimated by the mean of the N estimates
- variance = trace of the covariance of g = sum_k Var(g_k) (sample covariance, N - 1 divisor)
- mse      = bias2 + variance (the mean squared error of one estimate)
- cosine   = cos(E g, g*)
- rel_rmse = sqrt(mse) / ||g*||
- bias2_floor = the variance of the mean the bias is read from, trace / N: what bias2 reads for an
  unbiased estimator, because that mean still carries the estimates' noise. bias2 below a few
  times this floor is not resolvable; 0 when the mean is known exactly (closed form).

`gradient_stats` takes N estimates of g itself. `sampled_stats` takes `Moments` of N single-sample
estimates of an estimator g that averages S of them (S i.i.d. samples: a training step's batch):
E g is the same, Var g = trace / S, and the floor is trace / N (the mean is over N single draws).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["STAT_NAMES", "Moments", "gradient_stats", "probe_stats", "sampled_stats"]

STAT_NAMES = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor")


def probe_stats(mean: Tensor, variance: Tensor, floor: Tensor, exact: Tensor) -> dict[str, Tensor]:
    """The statistics of STAT_NAMES from an estimator's mean [*B, K], variance [*B], the floor of
    its mean [*B] and the exact gradient [*B, K]; each value is [*B].

    Undefined values (cosine or rel_rmse when a vector has zero norm) are NaN, not 0, so they
    cannot pass for a measurement."""
    bias2 = (mean - exact).square().sum(dim=-1)  # [*B]
    mse = bias2 + variance  # [*B]
    exact_norm = exact.norm(dim=-1)  # [*B]
    mean_norm = mean.norm(dim=-1)  # [*B]
    nan = torch.full_like(bias2, float("nan"))
    tiny = torch.finfo(bias2.dtype).tiny
    denom = exact_norm * mean_norm
    cosine = torch.where(denom > 0, (mean * exact).sum(dim=-1) / denom.clamp_min(tiny), nan)
    rel_rmse = torch.where(exact_norm > 0, mse.sqrt() / exact_norm.clamp_min(tiny), nan)
    return {"bias2": bias2, "variance": variance, "mse": mse, "cosine": cosine, "rel_rmse": rel_rmse, "bias2_floor": floor}


def gradient_stats(estimates: Tensor, exact: Tensor) -> dict[str, Tensor]:
    """Statistics of N estimates [N, *B, K] of an estimator against `exact` [*B, K]; each is [*B]."""
    n = estimates.shape[0]
    if n < 2:
        raise ValueError(f"gradient_stats needs at least 2 estimates for a variance, got {n}")
    if estimates.shape[1:] != exact.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} do not match exact {tuple(exact.shape)}")
    variance = estimates.var(dim=0, unbiased=True).sum(dim=-1)  # [*B]
    return probe_stats(estimates.mean(dim=0), variance, variance / n, exact)


class Moments:
    """Running count, mean [*B, K] and trace of the sum of squared deviations [*B] of estimates
    that arrive in chunks, combined pairwise (Chan, Golub and LeVeque 1979) in float64, so that a
    chunk's float32 round-off does not accumulate over thousands of estimates."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None  # [*B, K], float64
        self.m2: Tensor | None = None  # sum_n ||g_n - mean||^2, [*B], float64

    def add(self, chunk: Tensor, dim: int = 0) -> None:
        """Add the estimates of `chunk`, whose dim `dim` indexes them."""
        n_b = chunk.shape[dim]
        mean_b = chunk.mean(dim=dim, keepdim=True)  # [.., 1, .., K]
        m2_b = (chunk - mean_b).square().sum(dim=dim).sum(dim=-1).double()  # [*B]
        mean_b = mean_b.squeeze(dim).double()  # [*B, K]
        if self.n == 0:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean  # [*B, K]
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta.square().sum(dim=-1) * (self.n * n_b / n)
        self.n = n


def sampled_stats(moments: Moments, exact: Tensor, samples: int = 1) -> dict[str, Tensor]:
    """Statistics against `exact` [*B, K] of the estimator that averages `samples` i.i.d.
    single-sample estimates, from `moments` of N single-sample estimates: mean as measured,
    variance = trace / samples, floor = trace / N. In exact's dtype."""
    if moments.n < 2:
        raise ValueError(f"sampled_stats needs at least 2 estimates for a variance, got {moments.n}")
    single = moments.m2 / (moments.n - 1)  # trace of one sample's covariance, [*B]
    stats = probe_stats(moments.mean, single / samples, single / moments.n, exact.double())
    return {key: value.to(exact.dtype) for key, value in stats.items()}
