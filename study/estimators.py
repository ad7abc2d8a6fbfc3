"""Gradient estimators of d/dlogits E_{z ~ Cat(softmax(logits))}[f(onehot(z))], each defined once.

`ESTIMATORS` maps the names of study.vocab.ESTIMATORS_INFO (labels, options and their defaults,
whether tau matters) to their definitions. Training (study.population) and the probes
(study.evaluation, and `estimate_gradients` for any f) run these same definitions; they differ
only in where the random numbers come from (a population's pre-drawn per-replica blocks, or a
fresh generator) and in how f is evaluated (the population's hand-written discriminator, or
autograd through f).

The public signature, shapes: K categories, B = any batch dims, N estimates, S samples per estimate:

    ESTIMATORS[name](logits [*B, K], f, *, tau, num_estimates N, samples_per_estimate S,
                     generator, noise=None, **options) -> estimates [N, *B, K]
    estimate_gradients(name, logits, f, *, tau, num_estimates, samples_per_estimate=1,
                       generator=None, noise=None, **options) -> [N, *B, K]   (validated, chunked)

`f` maps (relaxed) one-hot vectors [..., *B, K] to per-sample losses [..., *B]; the leading dims
are sample dims. An estimate is the estimator's gradient of the mean of f over its S samples: the
mean of S single-sample estimates for the pathwise estimators, and for REINFORCE the leave-one-out
baseline over those S samples. A population's training step is one such estimate per replica with
S = batch_size (free logits).

How an estimator is defined. Samples are laid out [G, S, *rest, K]: G independent groups (the N
estimates of a probe, or the R replicas of a population), S samples per group, any further dims;
logits are [G, 1 | S, *rest, K] (one logit vector per group, or one per sample, as an MLP
generator gives). Three steps, which training and the probes both run:
1. `draw(logits, noise, shape)` -> Draw: the randomness, none of which depends on tau: the Gumbels
   G, the category argmax(logits + G) of one-hot estimators, Gumbel-Rao's k Gumbels given that
   category. `noise(name, shape, group_dim)` supplies i.i.d. Exp(1) numbers of `shape`, whose
   dim `group_dim` indexes the G groups, in the order and shapes of `noise_segments`.
2. `sample(logits, draw, tau)` -> y [G, S, *rest, K]: the point where f is evaluated, carrying the
   estimator's gradient w.r.t. the logits (pathwise), or the one-hot with none (score function).
   `emit` is its value without a gradient: what a population's D step is shown.
3. `surrogate(logits, y, values, grad)` -> [G]: a function of the logits whose gradient is the
   estimate, from f's values at the samples [G, S, *rest] and, for pathwise estimators, the
   gradient w.r.t. y [G, S, *rest, K] of each group's loss mean_s f(y_s).

Estimators:
- `soft`: reparameterised Gumbel-softmax, y = softmax((logits + G) / tau) (Jang et al. 2017;
  Maddison et al. 2017). Biased for tau > 0; f is evaluated at relaxed points.
- `hard`: straight-through Gumbel-softmax (Jang et al. 2017): f at the one-hot of
  argmax(logits + G), the gradient of the soft sample.
- `gumbel_rao`: Rao-Blackwellised straight-through (Paulus et al. 2021): the soft gradient
  averaged over `k` Gumbels conditioned on the sampled category. k=1 is `hard` in distribution.
- `reinforce`: score function (Williams 1992): mean_s (f_s - b_s) grad log p(z_s), b_s the mean
  of the other S - 1 losses (Kool et al. 2019; no baseline when S = 1). Unbiased;
  `reinforce_moments` gives its mean and variance in closed form.
- `exact`: enumeration over the K categories; zero variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from study.gumbel import check_tau, conditional_gumbel, gumbel_from_exponential, one_hot, softmax, straight_through
from study.vocab import ESTIMATORS_INFO

__all__ = [
    "ESTIMATORS",
    "Draw",
    "Estimator",
    "LossFn",
    "NoiseSource",
    "estimate_gradients",
    "estimator_options",
    "exact_gradient",
    "fresh_noise",
    "reinforce_moments",
]

LossFn = Callable[[Tensor], Tensor]
NoiseSource = Callable[[str, tuple[int, ...], int], Tensor]  # (name, shape, group_dim) -> i.i.d. Exp(1) of shape

# Elements of the largest intermediate tensor per chunk of estimate_gradients (256 MiB in float64).
_CHUNK_ELEMENTS = 1 << 25


def fresh_noise(generator: torch.Generator | None, dtype: torch.dtype, device: torch.device | str | None) -> NoiseSource:
    """A noise source that draws fresh Exp(1) numbers from `generator`, as -log U with U uniform
    (the transform of a population's random blocks; uniform_ and log beat exponential_ on CPU),
    contiguous in the shape asked for."""

    def noise(name: str, shape: tuple[int, ...], group_dim: int = 0) -> Tensor:
        u = torch.empty(shape, dtype=dtype, device=device).uniform_(generator=generator)  # ~U[0, 1)
        return u.clamp_min_(torch.finfo(dtype).tiny).log_().neg_()  # ~Exp(1)

    return noise


def estimator_options(name: str, options: dict) -> dict:
    """`options` checked against ESTIMATORS_INFO[name].options and completed with its defaults.
    Every option there is a count (an integer >= 1)."""
    known = ESTIMATORS_INFO[name].options
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"estimator {name!r} takes no option {sorted(unknown)[0]!r}; its options: {sorted(known)}")
    resolved = {**known, **options}
    for key, value in resolved.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} option {key} must be an integer >= 1, got {key}={value!r}")
    return resolved


@dataclass(frozen=True)
class Draw:
    """The randomness of a layout of samples [G, S, *rest, K]; none of it depends on tau."""

    gumbel: Tensor  # G ~ Gumbel(0, 1), [G, S, *rest, K]
    index: Tensor | None = None  # argmax(logits + G), [G, S, *rest]: the categorical sample (one-hot estimators)
    conditional: Tensor | None = None  # Gumbel-Rao: k Gumbels given the index, [k, G, S, *rest, K]


class Estimator:
    """One gradient estimator: its draws, its sample, its gradient rule (see the module docstring),
    and, called with the public signature, N Monte Carlo estimates for any f."""

    one_hot = True  # its samples' values are one-hots: f is only ever evaluated at the K unit vectors
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
        return one_hot(draw.index, draw.gumbel.shape[-1], draw.gumbel.dtype)

    def sample(self, logits: Tensor, draw: Draw, tau: float | Tensor) -> Tensor:
        raise NotImplementedError

    def surrogate(self, logits: Tensor, y: Tensor, values: Tensor, grad: Tensor | None) -> Tensor:
        """Pathwise: sum(y * dloss/dy) per group, whose gradient w.r.t. the logits is the loss's
        (dloss/dy held fixed: it is f's gradient at the sample's value)."""
        return (y * grad).sum(dim=tuple(range(1, y.ndim)))  # [G]

    def __call__(self, logits: Tensor, f: LossFn, *, tau: float | Tensor, num_estimates: int, samples_per_estimate: int,
                 generator: torch.Generator | None, noise: NoiseSource | None = None, **options: int) -> Tensor:
        """N independent estimates [N, *B, K]: every estimate gets its own copy of the logits, so the
        gradient of the summed surrogates w.r.t. that copy is that estimate (one batched pass)."""
        options = estimator_options(self.name, options)
        if self.info.uses_tau:
            check_tau(tau)
        n, s = num_estimates, samples_per_estimate
        theta = logits.detach().expand(n, *logits.shape).clone().requires_grad_(True)  # [N, *B, K]
        lead = theta.unsqueeze(1)  # [N, 1, *B, K]
        shape = (n, s, *logits.shape)
        noise = noise or fresh_noise(generator, logits.dtype, logits.device)
        with torch.enable_grad():
            draw = self.draw(lead.detach(), noise, shape, **options)
            y = self.sample(lead, draw, tau)  # [N, S, *B, K]
            values, grad = self._f_and_grad(f, y, s)  # [N, S, *B], [N, S, *B, K]
            (estimates,) = torch.autograd.grad(self.surrogate(lead, y, values, grad).sum(), theta)
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


class _Soft(Estimator):
    one_hot = False

    def emit(self, logits, draw, tau):
        return softmax((logits.expand(draw.gumbel.shape) + draw.gumbel) / tau)  # [G, S, *rest, K]

    sample = emit  # the relaxed sample is its own value and carries its own gradient


class _Hard(Estimator):
    def sample(self, logits, draw, tau):
        lg = logits.expand(draw.gumbel.shape)  # [G, S, *rest, K]
        vertex = one_hot(draw.index, lg.shape[-1], lg.dtype)  # the exact categorical sample
        return straight_through(vertex, softmax((lg + draw.gumbel) / tau))  # value: vertex; gradient: the soft sample's


class _GumbelRao(_Hard):
    def noise_segments(self, shape, *, emit_only=False, **options):
        extra = [] if emit_only else [("conditional", (options["k"], *shape))]
        return super().noise_segments(shape) + extra

    def draw(self, logits, noise, shape, *, emit_only=False, **options):
        base = super().draw(logits, noise, shape)
        if emit_only:
            return base
        k = options["k"]
        exponentials = noise("conditional", (k, *shape), 1)  # ~Exp(1), [k, G, S, *rest, K]
        conditional = conditional_gumbel(logits.expand(shape), base.index, num_samples=k, exponentials=exponentials)
        return Draw(base.gumbel, base.index, conditional)  # conditional: [k, G, S, *rest, K]

    def sample(self, logits, draw, tau):
        lg = logits.expand(draw.gumbel.shape)  # [G, S, *rest, K]
        vertex = one_hot(draw.index, lg.shape[-1], lg.dtype)
        k = draw.conditional.shape[0]
        # The mean over the k copies as sum / k: the same value as mean(0), and its backward divides
        # the small [G, S, *rest, K] gradient by k instead of its k-fold expansion.
        relaxed = softmax((lg + draw.conditional) / tau).sum(dim=0) / k  # E[soft sample | category], [G, S, *rest, K]
        return straight_through(vertex, relaxed)


class _Reinforce(Estimator):
    pathwise = False

    def sample(self, logits, draw, tau):
        return self.emit(logits, draw, tau)  # the one-hot; the gradient comes from the score

    def surrogate(self, logits, y, values, grad):
        """mean_s (f_s - b_s) log p(z_s), b_s the leave-one-out mean of the other S - 1 losses."""
        s = values.shape[1]
        if s > 1:
            baseline = (values.sum(dim=1, keepdim=True) - values) / (s - 1)  # [G, S, *rest]
            values = values - baseline
        log_p = (torch.log_softmax(logits, dim=-1) * y).sum(dim=-1)  # log p(z), [G, S, *rest]
        return (values * log_p).mean(dim=1).reshape(len(values), -1).sum(dim=1)  # [G]


class _Exact(Estimator):
    one_hot = pathwise = False

    def __call__(self, logits, f, *, tau, num_estimates, samples_per_estimate, generator, noise=None, **options):
        estimator_options(self.name, options)
        grad = exact_gradient(logits, f)  # [*B, K]
        return grad.unsqueeze(0).expand(num_estimates, *grad.shape).clone()  # [N, *B, K]

    def noise_segments(self, shape, *, emit_only=False, **options):
        return []  # a reference computed by enumeration: no samples, no draws

    def draw(self, logits, noise, shape, **options):
        raise TypeError("exact is a reference computed by enumeration: it draws no samples")


_DEFINITIONS: dict[str, Estimator] = {
    "soft": _Soft("soft"),
    "hard": _Hard("hard"),
    "gumbel_rao": _GumbelRao("gumbel_rao"),
    "reinforce": _Reinforce("reinforce"),
    "exact": _Exact("exact"),
}
assert tuple(_DEFINITIONS) == tuple(ESTIMATORS_INFO), "one definition per name of study.vocab.ESTIMATORS_INFO"
ESTIMATORS: dict[str, Estimator] = dict(_DEFINITIONS)


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
        values = f(vertices).movedim(0, -1)  # [*B, K]
        p = torch.softmax(logits, dim=-1)  # [*B, K]
        mean = (p * values).sum(dim=-1, keepdim=True)  # [*B, 1]
        return p * (values - mean)  # [*B, K]


def _chunk_size(name: str, logits: Tensor, num_estimates: int, samples_per_estimate: int, options: dict) -> int:
    """Estimates per chunk so that the largest tensor of a chunk (the largest draw; for `exact`,
    its copies of the gradient) stays within _CHUNK_ELEMENTS."""
    shape = (samples_per_estimate, *logits.shape)
    segments = _DEFINITIONS[name].noise_segments(shape, **options)
    per_estimate = max([math.prod(shape)] + [math.prod(seg) for _, seg in segments])
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
    noise: NoiseSource | None = None,
    **options: int,
) -> Tensor:
    """`num_estimates` independent estimates [N, *B, K] of d/dlogits E[f(onehot z)] by `name`, each
    from `samples_per_estimate` samples.

    `logits` is [*B, K]; `tau` a float or a tensor broadcastable against [*B, K]; options as in
    study.vocab.ESTIMATORS_INFO (gumbel_rao: `k` conditional samples, default 10). `noise`
    supplies the Exp(1) numbers instead of `generator` (then the call is not chunked). Large
    calls are split into chunks of estimates, each with fresh draws.
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(sorted(ESTIMATORS))}")
    for field, value in (("num_estimates", num_estimates), ("samples_per_estimate", samples_per_estimate)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer >= 1, got {field}={value!r}")
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"logits must have a last dim of size >= 2, got shape {tuple(logits.shape)}")
    resolved = estimator_options(name, options)
    if ESTIMATORS_INFO[name].uses_tau:
        check_tau(tau)
    estimator = ESTIMATORS[name]
    kwargs = dict(tau=tau, samples_per_estimate=samples_per_estimate, generator=generator, **options)
    if noise is not None:
        return estimator(logits, f, num_estimates=num_estimates, noise=noise, **kwargs)
    chunk = _chunk_size(name, logits, num_estimates, samples_per_estimate, resolved)
    if chunk >= num_estimates:
        return estimator(logits, f, num_estimates=num_estimates, **kwargs)
    parts = [
        estimator(logits, f, num_estimates=min(chunk, num_estimates - start), **kwargs)
        for start in range(0, num_estimates, chunk)
    ]
    return torch.cat(parts, dim=0)  # [N, *B, K]


# ---------------------------------------------------------------------- REINFORCE in closed form


def _score_second_moment(p: Tensor, a: Tensor) -> Tensor:
    """sum_j p_j a_j (delta_jk - p_k)^2 for each k: E[a_z (e_z - p)_k^2] with z ~ p. [..., K]."""
    return p.square() * (p * a).sum(dim=-1, keepdim=True) + p * a * (1.0 - 2.0 * p)


def reinforce_moments(probs: Tensor, values: Tensor, samples: int, *, baseline_probs: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean [..., K] and covariance trace [...] of a REINFORCE estimate, exactly, from the category
    probabilities p = probs [..., K] and the losses at the vertices F = values [..., K] (f(e_k)).
    Computed in float64 and returned in probs' dtype. With c = p (F - sum p F) the exact gradient
    (and the estimate's mean: REINFORCE is unbiased):

    - `baseline_probs` None: the estimate of `reinforce` with S = samples, z_1..z_S i.i.d. ~ p,
      g = (1/S) sum_s (F_s - b_s)(e_{z_s} - p), b_s the mean of the other S - 1 losses. For S >= 2
      it equals the unbiased sample covariance of F and the one-hot e_z over the S samples, so per
      coordinate (X = F, Y = [z = k], the variance of a sample covariance of i.i.d. pairs):
          Var g_k = mu22_k / S - (S - 2) c_k^2 / (S (S - 1)) + var(F) p_k (1 - p_k) / (S (S - 1)),
      mu22_k = E[(F - EF)^2 (Y - p_k)^2]. For S = 1 (no baseline): Var g_k = E[F_z^2 (e_z - p)_k^2] - c_k^2.
    - `baseline_probs` = q [..., K]: one sample z ~ p whose baseline b is the mean of S - 1 losses
      of samples drawn independently from q (an MLP generator: every sample of the batch has its
      own logits, and the others' categories are i.i.d. from the generator's marginal q); the
      estimate at these logits is g = (F_z - b)(e_z - p). With b independent of z,
          Var g_k = E[((F_z - Eb)^2 + Var b)(e_z - p)_k^2] - c_k^2,
      Eb = sum q F, Var b = var_q(F) / (S - 1) (b = 0 when S = 1).
    """
    dtype = probs.dtype
    p, F = probs.double(), values.double().expand_as(probs)
    mean_f = (p * F).sum(dim=-1, keepdim=True)  # [..., 1]
    c = p * (F - mean_f)  # the exact gradient, [..., K]
    if samples == 1:  # no baseline, whichever the probabilities of the others
        variance = _score_second_moment(p, F.square()) - c.square()  # [..., K]
    elif baseline_probs is not None:
        q = baseline_probs.double()
        baseline_mean = (q * F).sum(dim=-1, keepdim=True)  # Eb, [..., 1]
        baseline_var = (q * (F - baseline_mean).square()).sum(dim=-1, keepdim=True) / (samples - 1)  # Var b, [..., 1]
        variance = _score_second_moment(p, (F - baseline_mean).square() + baseline_var) - c.square()  # [..., K]
    else:
        s = samples
        d2 = (F - mean_f).square()  # [..., K]
        var_f = (p * d2).sum(dim=-1, keepdim=True)  # [..., 1]
        mu22 = _score_second_moment(p, d2)  # [..., K]
        variance = mu22 / s - (s - 2) * c.square() / (s * (s - 1)) + var_f * p * (1.0 - p) / (s * (s - 1))
    return c.to(dtype), variance.clamp_min(0.0).sum(dim=-1).to(dtype)
