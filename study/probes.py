"""Bias, variance and MSE of gradient estimators against the exact gradient.

Definitions (DESIGN.md "Metrics"), for N estimates g_1..g_N of the true gradient g* [*B, K]:
- bias2    = ||mean_n g_n - g*||^2
- variance = trace of the sample covariance = sum_k Var_n(g_nk), with the N - 1 divisor
- mse      = bias2 + variance (the mean squared error of one estimate)
- cosine   = cos(mean_n g_n, g*)
- rel_rmse = sqrt(mse) / ||g*||
- bias2_floor = variance / N: what bias2 reads for an unbiased estimator, because the mean of N
  estimates still carries their noise. bias2 below a few times this floor is not resolvable.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["STAT_NAMES", "gradient_stats"]

STAT_NAMES = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor")


def gradient_stats(estimates: Tensor, exact: Tensor) -> dict[str, Tensor]:
    """Statistics of `estimates` [N, *B, K] against `exact` [*B, K]; each value is [*B].

    Undefined values (cosine or rel_rmse when a vector has zero norm) are NaN, not 0, so they
    cannot pass for a measurement.
    """
    n = estimates.shape[0]
    if n < 2:
        raise ValueError(f"gradient_stats needs at least 2 estimates for a variance, got {n}")
    if estimates.shape[1:] != exact.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} do not match exact {tuple(exact.shape)}")
    mean = estimates.mean(dim=0)  # [*B, K]
    bias2 = (mean - exact).square().sum(dim=-1)  # [*B]
    variance = estimates.var(dim=0, unbiased=True).sum(dim=-1)  # [*B]
    mse = bias2 + variance  # [*B]
    exact_norm = exact.norm(dim=-1)  # [*B]
    mean_norm = mean.norm(dim=-1)  # [*B]
    nan = torch.full_like(bias2, float("nan"))
    denom = exact_norm * mean_norm
    cosine = torch.where(denom > 0, (mean * exact).sum(dim=-1) / denom.clamp_min(torch.finfo(denom.dtype).tiny), nan)
    rel_rmse = torch.where(exact_norm > 0, mse.sqrt() / exact_norm.clamp_min(torch.finfo(denom.dtype).tiny), nan)
    return {
        "bias2": bias2,
        "variance": variance,
        "mse": mse,
        "cosine": cosine,
        "rel_rmse": rel_rmse,
        "bias2_floor": variance / n,
    }
