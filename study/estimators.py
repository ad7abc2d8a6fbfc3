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

import torch
from torch import Tensor

from study.estimator_base import Draw, Estimator, LossFn, NoiseSource, estimator_options, fresh_noise
from study.gumbel import check_tau, conditional_gumbel, one_hot, softmax, straight_through
from study.rebar import Rebar
from study.straight_through import ZGR, GappedST, ReinMax, TemperedST
from study.unordered_set import UnorderedSet
from study.vocab import ESTIMATORS_INFO

__all__ = [
    "ESTIMATORS",
    "Draw",
    "Estimator",
    "LossFn",
    "NoiseSource",
    "category_moments",
    "estimate_gradients",
    "estimator_options",
    "exact_gradient",
    "exact_moments",
    "fresh_noise",
    "reinforce_moments",
]

# Elements of the largest intermediate tensor per chunk of estimate_gradients (256 MiB in float64).
_CHUNK_ELEMENTS = 1 << 25


class _Soft(Estimator):
    one_hot = emits_one_hot = False

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
        if options.get("grad_noise", False):  # the Gumbels are recomputed from the live logits in `sample`
            return Draw(base.gumbel, base.index, extra={"exponentials": exponentials})
        conditional = conditional_gumbel(logits.expand(shape), base.index, num_samples=k, exponentials=exponentials)
        return Draw(base.gumbel, base.index, conditional)  # conditional: [k, G, S, *rest, K]

    def sample(self, logits, draw, tau):
        lg = logits.expand(draw.gumbel.shape)  # [G, S, *rest, K]
        vertex = one_hot(draw.index, lg.shape[-1], lg.dtype)
        if draw.conditional is None:  # grad_noise: differentiate through the conditional Gumbels too
            exponentials = draw.extra["exponentials"]
            conditional = conditional_gumbel(lg, draw.index, num_samples=len(exponentials), exponentials=exponentials, differentiable=True)
        else:
            conditional = draw.conditional
        k = conditional.shape[0]
        # The mean over the k copies as sum / k: the same value as mean(0), and its backward divides
        # the small [G, S, *rest, K] gradient by k instead of its k-fold expansion.
        relaxed = softmax((lg + conditional) / tau).sum(dim=0) / k  # E[soft sample | category], [G, S, *rest, K]
        return straight_through(vertex, relaxed)


class _Reinforce(Estimator):
    pathwise = False

    def sample(self, logits, draw, tau):
        return self.emit(logits, draw, tau)  # the one-hot; the gradient comes from the score

    def surrogate(self, logits, y, values, grad, draw=None):
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
    "st": TemperedST("st"),
    "gst": GappedST("gst"),
    "reinmax": ReinMax("reinmax"),
    "zgr": ZGR("zgr"),
    "rebar": Rebar("rebar", learned=False),
    "relax": Rebar("relax", learned=True),
    "unordered_set": UnorderedSet("unordered_set"),
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
    control=None,
    **options,
) -> Tensor:
    """`num_estimates` independent estimates [N, *B, K] of d/dlogits E[f(onehot z)] by `name`, each
    from `samples_per_estimate` samples.

    `logits` is [*B, K]; `tau` a float or a tensor broadcastable against [*B, K]; options as in
    study.vocab.ESTIMATORS_INFO (gumbel_rao: `k` conditional samples, default 10). `noise`
    supplies the Exp(1) numbers instead of `generator` (then the call is not chunked). `control`:
    for rebar / relax, a population's adapted parameters (study.rebar.ControlVariate, per replica
    of a leading batch dim) in place of the `eta` option and the untrained network. Large calls are
    split into chunks of estimates, each with fresh draws.
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
    if control is not None:
        if not isinstance(estimator, Rebar):
            raise ValueError(f"control is for rebar and relax, not {name!r}")
        kwargs["control"] = control
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


# ---------------------------------------------------------------------- exact moments by enumeration


def category_moments(name: str, logits: Tensor, vertex_grads: Tensor, *, tau, samples: int = 1, **options) -> tuple[Tensor, Tensor]:
    """Mean [*B, K] and covariance trace [*B] of the `samples`-sample estimate of an estimator whose
    estimate depends only on the sampled category (ESTIMATORS_INFO[name].exact_moments), exactly:
    the estimate e_c for every category c (its own sample and surrogate, with f's gradient at the
    vertex c, vertex_grads [K(c), *B, K] broadcastable), then mean = sum_c p_c e_c and
    variance = sum_c p_c ||e_c - mean||^2 / samples. K backward passes, no Monte Carlo noise."""
    estimator = ESTIMATORS[name]
    if not estimator.info.exact_moments:
        raise ValueError(f"{name} depends on more than the sampled category: its moments are not an enumeration")
    options = estimator_options(name, options)
    k = logits.shape[-1]
    batch = logits.shape[:-1]
    theta = logits.detach().expand(k, *logits.shape).clone().requires_grad_(True)  # [K(c), *B, K]
    index = torch.arange(k, device=logits.device).view(k, 1, *([1] * len(batch))).expand(k, 1, *batch)  # [K(c), 1, *B]
    draw = Draw(None, index, extra=options)
    with torch.enable_grad():
        lead = theta.unsqueeze(1)  # [K(c), 1, *B, K]
        y = estimator.sample(lead, draw, tau)  # [K(c), 1, *B, K]
        grad = vertex_grads.unsqueeze(1).expand(y.shape)  # f's gradient at e_c, [K(c), 1, *B, K]
        values = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)  # unused: these estimators are pathwise
        (per_category,) = torch.autograd.grad(estimator.surrogate(lead, y, values, grad, draw).sum(), theta)  # [K(c), *B, K]
    p = torch.softmax(logits.detach().double(), dim=-1).movedim(-1, 0).unsqueeze(-1)  # [K(c), *B, 1]
    per_category = per_category.double()
    mean = (p * per_category).sum(dim=0)  # [*B, K]
    variance = (p * (per_category - mean).square()).sum(dim=0).sum(dim=-1) / samples  # [*B]
    return mean.to(logits.dtype), variance.to(logits.dtype)


def exact_moments(name: str, logits: Tensor, f: LossFn, *, tau=1.0, samples_per_estimate: int = 1, **options) -> tuple[Tensor, Tensor]:
    """Mean [*B, K] and covariance trace [*B] of `name`'s estimate of d/dlogits E[f], by enumeration
    of the K categories: the estimators whose estimate depends only on the sampled category (st,
    gst, reinmax, zgr; `category_moments`) and REINFORCE (`reinforce_moments`)."""
    k = logits.shape[-1]
    batch = logits.shape[:-1]
    eye = torch.eye(k, dtype=logits.dtype, device=logits.device)
    vertices = eye.view(k, *([1] * len(batch)), k).expand(k, *batch, k).clone().requires_grad_(True)  # [K(c), *B, K]
    with torch.enable_grad():
        values = f(vertices)  # [K(c), *B]
        (grads,) = torch.autograd.grad(values.sum(), vertices)  # [K(c), *B, K]
    if name == "reinforce":
        return reinforce_moments(torch.softmax(logits.detach(), dim=-1), values.detach().movedim(0, -1), samples_per_estimate)
    if ESTIMATORS_INFO[name].uses_tau:
        check_tau(tau)
    return category_moments(name, logits, grads, tau=tau, samples=samples_per_estimate, **options)


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
