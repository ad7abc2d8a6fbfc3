"""Gradient estimators of d/dlogits E_{z ~ Cat(softmax(logits))}[f(onehot(z))].

One signature for all of them (shapes: K categories, B = any batch dims, N estimates,
S samples per estimate):

    estimator(logits [*B, K], f, *, tau, num_estimates N, samples_per_estimate S,
              generator, **options) -> estimates [N, *B, K]

`f` maps a tensor of (relaxed) one-hot vectors [..., *B, K] to per-sample losses [..., *B]; the
leading dims are sample dims, so `f` must act on the last two groups only. Batch dims let one
call probe R replicas with R different discriminators at once.

All N estimates come from one batched forward and backward pass: every estimate gets its own
copy of the logits, so the gradient of the summed losses w.r.t. that copy is that estimate.
When the batch would exceed a memory budget it is split into a few chunks of estimates.

Estimators:
- `soft`: reparameterised Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017). Biased for
  tau > 0; f is evaluated at relaxed points.
- `hard`: straight-through Gumbel-softmax (Jang et al. 2017): f at the exact one-hot sample,
  gradient of the soft sample.
- `gumbel_rao`: Rao-Blackwellised straight-through (Paulus et al. 2021): the soft gradient
  averaged over `k` conditional Gumbels given the sampled argmax. k=1 is `hard` in distribution.
- `reinforce`: score function (Williams 1992), with a leave-one-out baseline when S > 1
  (Kool et al. 2019). Unbiased.
- `exact`: enumeration over the K categories; zero variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from study.gumbel import check_tau, conditional_gumbel, gumbel_max, gumbel_noise, gumbel_softmax, one_hot, softmax, straight_through

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "LossFn",
    "estimate_gradients",
    "exact_gradient",
]

LossFn = Callable[[Tensor], Tensor]

# Elements of the largest intermediate tensor per chunk (about 256 MiB in float64).
_CHUNK_ELEMENTS = 1 << 25


class Estimator(Protocol):
    def __call__(
        self,
        logits: Tensor,
        f: LossFn,
        *,
        tau: float | Tensor,
        num_estimates: int,
        samples_per_estimate: int,
        generator: torch.Generator | None,
        **options: object,
    ) -> Tensor: ...


def exact_gradient(logits: Tensor, f: LossFn) -> Tensor:
    """d/dlogits of sum_k softmax(logits)_k f(e_k), by enumeration. [*B, K] -> [*B, K].

    With p = softmax(logits) and F_k = f(e_k): dE/dlogits_k = p_k (F_k - sum_j p_j F_j).
    """
    logits = logits.detach()
    k = logits.shape[-1]
    batch = logits.shape[:-1]
    eye = torch.eye(k, dtype=logits.dtype, device=logits.device)  # [K, K]
    vertices = eye.view(k, *([1] * len(batch)), k).expand(k, *batch, k)  # [K, *B, K]
    with torch.no_grad():
        values = f(vertices)  # [K, *B]
        values = values.movedim(0, -1)  # [*B, K]
        p = torch.softmax(logits, dim=-1)  # [*B, K]
        mean = (p * values).sum(dim=-1, keepdim=True)  # [*B, 1]
        return p * (values - mean)  # [*B, K]


def _exact(logits, f, *, tau, num_estimates, samples_per_estimate, generator, **options):
    grad = exact_gradient(logits, f)  # [*B, K]
    return grad.unsqueeze(0).expand(num_estimates, *grad.shape).clone()  # [N, *B, K]


def _reparameterised(sample: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    """Build a pathwise estimator from `sample(theta [N, S, *B, K]) -> y [N, S, *B, K]`."""

    def estimator(logits, f, *, tau, num_estimates, samples_per_estimate, generator, **options):
        n, s = num_estimates, samples_per_estimate
        theta = logits.detach().expand(n, *logits.shape).clone().requires_grad_(True)  # [N, *B, K]
        with torch.enable_grad():
            y = sample(theta.unsqueeze(1).expand(n, s, *logits.shape), tau, generator, **options)  # [N, S, *B, K]
            losses = f(y)  # [N, S, *B]
            # Each estimate's loss depends only on its own theta copy, so one backward pass of the
            # sum yields all N gradients of mean_s f.
            (grad,) = torch.autograd.grad(losses.sum() / s, theta)
        return grad  # [N, *B, K]

    return estimator


def _soft_sample(theta, tau, generator):
    return gumbel_softmax(theta, tau, generator=generator)


def _hard_sample(theta, tau, generator):
    return gumbel_softmax(theta, tau, hard=True, generator=generator)


def _gumbel_rao_sample(theta, tau, generator, k: int = 10):
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"gumbel_rao option k must be an integer >= 1, got k={k!r}")
    check_tau(tau)
    index = gumbel_max(theta.detach(), generator=generator)  # [N, S, *B]
    vertex = one_hot(index, theta.shape[-1], theta.dtype)  # [N, S, *B, K]
    g = conditional_gumbel(theta, index, num_samples=k, generator=generator)  # [k, N, S, *B, K]
    surrogate = softmax((theta + g) / tau).mean(dim=0)  # [N, S, *B, K]
    return straight_through(vertex, surrogate)


def _reinforce(logits, f, *, tau, num_estimates, samples_per_estimate, generator, **options):
    n, s = num_estimates, samples_per_estimate
    logits = logits.detach()
    shape = (n, s, *logits.shape)
    noise = gumbel_noise(shape, generator=generator, dtype=logits.dtype, device=logits.device)  # ~Gumbel(0, 1)
    vertex = one_hot(gumbel_max(logits.expand(shape), noise=noise), logits.shape[-1], logits.dtype)  # [N, S, *B, K]
    with torch.no_grad():
        values = f(vertex)  # [N, S, *B]
    if s > 1:
        # Leave-one-out baseline: the mean of the other S - 1 samples keeps the estimate unbiased.
        baseline = (values.sum(dim=1, keepdim=True) - values) / (s - 1)  # [N, S, *B]
        values = values - baseline
    score = vertex - torch.softmax(logits, dim=-1)  # d log p(z) / dlogits, [N, S, *B, K]
    return (values.unsqueeze(-1) * score).mean(dim=1)  # [N, *B, K]


ESTIMATORS: dict[str, Estimator] = {
    "soft": _reparameterised(_soft_sample),
    "hard": _reparameterised(_hard_sample),
    "gumbel_rao": _reparameterised(_gumbel_rao_sample),
    "reinforce": _reinforce,
    "exact": _exact,
}


_OPTIONS: dict[str, set[str]] = {name: set() for name in ESTIMATORS} | {"gumbel_rao": {"k"}}
_USES_TAU = {"soft", "hard", "gumbel_rao"}


def _chunk_size(name: str, logits: Tensor, num_estimates: int, samples_per_estimate: int, options: dict) -> int:
    per_estimate = samples_per_estimate * logits.numel()
    if name == "gumbel_rao":
        k = options.get("k", 10)
        # A bad k must reach the estimator's own check (ValueError naming it), not fail here.
        per_estimate *= k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else 1
    return max(1, min(num_estimates, _CHUNK_ELEMENTS // max(1, per_estimate)))


def estimate_gradients(
    name: str,
    logits: Tensor,
    f: LossFn,
    *,
    tau: float | Tensor,
    num_estimates: int,
    samples_per_estimate: int = 1,
    generator: torch.Generator | None = None,
    **options: object,
) -> Tensor:
    """`num_estimates` independent estimates [N, *B, K] of d/dlogits E[f(onehot z)] by `name`.

    `logits` is [*B, K]; `tau` a float or a tensor broadcastable against [*B, K]. Options:
    `k` for gumbel_rao (conditional samples, default 10).
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(sorted(ESTIMATORS))}")
    for field, value in (("num_estimates", num_estimates), ("samples_per_estimate", samples_per_estimate)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer >= 1, got {field}={value!r}")
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have a last dim of size >= 2, got shape {tuple(logits.shape)}")
    unknown = set(options) - _OPTIONS[name]
    if unknown:
        raise ValueError(f"estimator {name!r} takes no option {sorted(unknown)[0]!r}; its options: {sorted(_OPTIONS[name])}")
    if name in _USES_TAU:
        check_tau(tau)
    estimator = ESTIMATORS[name]
    chunk = _chunk_size(name, logits, num_estimates, samples_per_estimate, options)
    kwargs = dict(tau=tau, samples_per_estimate=samples_per_estimate, generator=generator, **options)
    if chunk >= num_estimates:
        return estimator(logits, f, num_estimates=num_estimates, **kwargs)
    parts = [
        estimator(logits, f, num_estimates=min(chunk, num_estimates - start), **kwargs)
        for start in range(0, num_estimates, chunk)
    ]
    return torch.cat(parts, dim=0)  # [N, *B, K]
