"""What one evaluation of a population measures, and how: the contract between training and its readers.

`Population.evaluate()` returns an `Evaluation` (built by `evaluate_population`); `study.record`
writes it as the trial record (per-seed rows, probe rows) and `study.train.lean_metrics` reduces
it to the few means that Tune receives. Tensors stay on the population's device until a reader
moves them.

What a probe measures (statistics as study.probes defines them). The probe under an estimator's
name measures the definition in study.estimators that trains under that name, as one training
step uses it, against the exact gradient of E[f] w.r.t. the generator's logits, with f(y) =
softplus(-D(y)) (a sample's G loss under the current discriminator):
- The point: free logits [R, K]; for the MLP generator the logits at `probe_points` noise draws
  [R, P, K], each probed on its own and the statistics averaged over the P points.
- Samples per estimate S: with free logits a training step's generator gradient is the estimator
  applied to its batch's mean loss, so S = batch_size. With the MLP generator each sample has its
  own logits, so the training estimate at one point has S = 1 (REINFORCE's baseline still averages
  the batch's other B - 1 losses).
- soft, hard, gumbel_rao: N = probe_estimates single-sample estimates from fresh draws. An S-sample
  estimate is the mean of S i.i.d. single-sample ones, so it has their mean and their covariance / S:
  variance = trace / S, bias2 from the mean of the N draws, bias2_floor = trace / N (the noise in
  that mean), n = N (study.probes.sampled_stats). f enters through the discriminator code training
  uses (study.discriminator); one-hot samples see f only at the K vertices, so D and its input
  gradient are computed there once per evaluation and gathered. The draws (Gumbels, categories,
  conditional Gumbels) do not depend on tau: one set serves the current and every ladder temperature.
- reinforce: the estimate is the sample covariance of f and the one-hot over its samples; its mean
  (the exact gradient) and variance are exact sums over the K categories
  (study.estimators.reinforce_moments). So bias2 = bias2_floor = 0, n = 0 (nothing drawn), and the
  same numbers at every temperature (the score function does not depend on tau).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from study.discriminator import CHUNK_BYTES, disc_logits, losses_at_samples, vertex_losses
from study.estimators import ESTIMATORS, category_moments, estimator_options, exact_gradient, fresh_noise, reinforce_moments
from study.gumbel import one_hot
from study.probes import Moments, probe_stats, sampled_stats
from study.vocab import ESTIMATORS_INFO, probe_key

__all__ = [
    "Evaluation",
    "ProbePoint",
    "ProbeResult",
    "config_options",
    "evaluate_population",
    "fit_metrics",
    "generator_probabilities",
    "probe_metrics",
    "probe_point",
    "reinforce_stats",
    "sample_metrics",
    "sampled_moments",
]

# Widest tensor of one chunk of probe estimates: as a training step's discriminator chunk, so that
# a chunk's samples go through D in one pass and its tensors stay in cache between passes.
PROBE_CHUNK_BYTES = CHUNK_BYTES


@dataclass
class ProbeResult:
    """One probed estimator at one temperature per replica."""

    estimator: str
    source: str  # "current": at each replica's own tau; "ladder": at a fixed tau
    tau: Tensor  # [R], the temperature probed
    stats: dict[str, Tensor]  # vocab.PROBE_STATS -> [R]


@dataclass
class Evaluation:
    """Every metric of DESIGN.md "Metrics" for the R replicas of a population at one step."""

    step: int
    seeds: list[int]  # seed of each replica, in replica order
    metrics: dict[str, Tensor]  # vocab.EVAL_KEYS -> [R]
    probs: Tensor  # [R, K], the generator's distribution
    diverged: Tensor  # [R] bool: a parameter stopped being finite
    probes: list[ProbeResult]

    def rows(self, *, probes: bool = False) -> list[dict]:
        """One plain dict per seed, in seed order: the scalar metrics, `fit/probs`, `diverged` and,
        with `probes`, every probe statistic under its metric key (`grad/soft/bias2`, ...)."""
        cpu = {k: v.detach().cpu().tolist() for k, v in self.metrics.items()}
        if probes:
            for probe in self.probes:
                tau = None if probe.source == "current" else float(probe.tau[0])
                for stat, value in probe.stats.items():
                    cpu[probe_key(probe.estimator, stat, tau)] = value.detach().cpu().tolist()
        probs = self.probs.detach().cpu().tolist()
        diverged = self.diverged.cpu().tolist()
        out = []
        for r in sorted(range(len(self.seeds)), key=self.seeds.__getitem__):
            row = {"seed": self.seeds[r], "step": self.step, **{k: v[r] for k, v in cpu.items()}}
            row["fit/probs"] = probs[r]
            row["diverged"] = bool(diverged[r])
            out.append(row)
        return out


# ---------------------------------------------------------------------- measuring a population


def config_options(config, name: str) -> dict:
    """The options of estimator `name` as a trial config sets them: option `o` is the config field
    `<name>_<o>` (gumbel_rao's k is `gumbel_rao_k`), else its default."""
    options = {opt: getattr(config, f"{name}_{opt}", default) for opt, default in ESTIMATORS_INFO[name].options.items()}
    return estimator_options(name, options)


def probe_options(pop, name: str) -> dict:
    """The options a probe of `name` runs with: the config's, and for the trial's own REBAR / RELAX
    its current adapted eta (and network), detached."""
    options = config_options(pop.config, name)
    if pop.control is not None and name == pop.config.relaxation:
        options["control"] = pop.control.detached()
    return options


def evaluate_population(pop) -> Evaluation:
    """Every metric of DESIGN.md "Metrics" for every replica of `pop` (a study.population.Population):
    loss averages since the last evaluation, fit, sample metrics, probes, divergence."""
    with torch.no_grad():
        tau = pop.tau()  # [R]
        p = generator_probabilities(pop)  # [R, K]
        counts = pop.loss_counts.clamp_min(1)
        metrics: dict[str, Tensor] = {"tau": tau, "loss/d": pop.loss_sums[0] / counts[0], "loss/g": pop.loss_sums[1] / counts[1]}
        metrics.update(fit_metrics(p, pop.target_probs))
        metrics.update(sample_metrics(pop, tau))
        probes = probe_metrics(pop, tau, p)
        finite = pop.finite_replicas()  # [R]
    return Evaluation(step=pop.step, seeds=list(pop.seeds), metrics=metrics, probs=p, diverged=~finite, probes=probes)


def fit_metrics(p: Tensor, q: Tensor) -> dict[str, Tensor]:
    """Total variation, Jensen-Shannon (nats) and KL(q || p) between target q and model p, [R, K] -> [R]."""

    def kl(a: Tensor, b: Tensor) -> Tensor:
        terms = torch.where(a > 0, a * (torch.log(a) - torch.log(b)), torch.zeros_like(a))
        return terms.sum(dim=-1)

    m = 0.5 * (p + q)
    return {
        "fit/tv": 0.5 * (p - q).abs().sum(dim=-1),
        "fit/js": 0.5 * kl(q, m) + 0.5 * kl(p, m),
        "fit/kl": kl(q, p),
    }


def _eval_noise(pop, n: int) -> Tensor:
    shape = (pop.R, n, pop.config.gen_noise_dim)
    return torch.randn(shape, generator=pop.eval_rng, dtype=pop.dtype, device=pop.device)  # ~N(0, 1), [R, n, Z]


def generator_probabilities(pop) -> Tensor:
    """The generator's distribution p [R, K]: exact for free logits, Monte Carlo over
    `eval_samples` noise draws for the MLP."""
    if pop.config.generator == "logits":
        return torch.softmax(pop.gen_params[0].detach(), dim=-1)
    logits = pop.generator_logits(_eval_noise(pop, pop.config.eval_samples))  # [R, S, K]
    return torch.softmax(logits, dim=-1).mean(dim=1)


def sample_metrics(pop, tau: Tensor) -> dict[str, Tensor]:
    """Of `eval_samples` samples emitted as the relaxation emits them (its estimator's `emit`):
    vertex_gap = E[1 - max_k y_k]; mean_bias = ||E[y] - p||_1 with E[onehot(argmax)] = p as a
    control variate (same noise), which removes most of the Monte Carlo noise. A relaxation that
    emits one-hots (all but soft) has both exactly 0: nothing is drawn (2,000 samples x K per
    replica were half of a K = 100 tradeoff trial's evaluation)."""
    R, S, K = pop.R, pop.config.eval_samples, pop.K
    if pop.estimator.emits_one_hot:  # its samples are the one-hots of argmax(logits + G): both are 0 exactly
        zero = torch.zeros(R, dtype=pop.dtype, device=pop.device)
        return {"sample/vertex_gap": zero, "sample/mean_bias": zero.clone()}
    if pop.config.generator == "logits":
        logits = pop.gen_params[0].detach().unsqueeze(1).expand(-1, S, K)  # [R, S, K]
    else:
        logits = pop.generator_logits(_eval_noise(pop, S))  # [R, S, K]
    noise = fresh_noise(pop.eval_rng, pop.dtype, pop.device)
    draw = pop.estimator.draw(logits, noise, (R, S, K), emit_only=True, **pop.estimator_options)
    emitted = pop.estimator.emit(logits, draw, tau.view(-1, 1, 1))  # [R, S, K]
    vertex = one_hot((logits + draw.gumbel).argmax(dim=-1), K, pop.dtype)  # [R, S, K]
    return {
        "sample/vertex_gap": (1.0 - emitted.max(dim=-1).values).mean(dim=1),
        "sample/mean_bias": (emitted - vertex).mean(dim=1).abs().sum(dim=-1),
    }


# ---------------------------------------------------------------------- probes


@dataclass
class ProbePoint:
    """Where every estimator is probed: the generator's logits, and f(y) = softplus(-D(y)) there."""

    logits: Tensor  # [R, *P, K]: free logits [R, K], or the MLP's logits at P noise draws [R, P, K]
    exact: Tensor  # the exact gradient of E[f] w.r.t. the logits, [R, *P, K]
    vertex_values: Tensor  # f at the K unit vectors, [R, K]
    vertex_grads: Tensor  # df/dy there, [R, K, K] (row k: at e_k)
    params: list[Tensor]  # the discriminator's parameters, detached
    samples: int  # S: samples per estimate of a training step at one point (see the module docstring)
    batch: int  # B: the training batch, over which REINFORCE's baseline is taken


def probe_point(pop) -> ProbePoint:
    cfg = pop.config
    params = [p.detach() for p in pop.disc_params]
    if cfg.generator == "logits":
        logits, replica_dim, samples = pop.gen_params[0].detach(), -2, cfg.batch_size  # [R, K]
    else:
        logits, replica_dim, samples = pop.generator_logits(_eval_noise(pop, cfg.probe_points)).detach(), -3, 1  # [R, P, K]
    f = lambda y: F.softplus(-disc_logits(y, params, replica_dim))  # [..., R, (P,) K] -> [..., R, (P,)]  # noqa: E731
    vertex_values, vertex_grads = vertex_losses(params, inputs=True)  # [R, K], [R, K, K]
    return ProbePoint(logits, exact_gradient(logits, f), vertex_values, vertex_grads, params, samples, cfg.batch_size)


def probe_metrics(pop, tau: Tensor, marginal: Tensor) -> list[ProbeResult]:
    """Each of `probe_estimators` at the current temperature and at every ladder temperature,
    against the exact gradient of E[G loss] w.r.t. the logits (see the module docstring)."""
    cfg = pop.config
    point = probe_point(pop)
    temperatures = [("current", tau)] + [("ladder", torch.full_like(tau, t)) for t in cfg.probe_taus]
    # A temperature probed twice (the current one on the ladder) is measured once.
    distinct: list[Tensor] = []
    slot = []  # temperature i is distinct[slot[i]]
    for _, t in temperatures:
        same = [j for j, d in enumerate(distinct) if torch.equal(d, t)]
        slot.append(same[0] if same else len(distinct))
        if not same:
            distinct.append(t)
    stats = {}
    for name in cfg.probe_estimators:
        estimator, options = ESTIMATORS[name], probe_options(pop, name)
        if name == "reinforce":  # the score function does not depend on tau: one closed form for every temperature
            per_temperature = [_per_replica(reinforce_stats(point, marginal), 0)] * len(distinct)
        elif estimator.info.exact_moments:  # a function of the category: a sum over the K categories, n = 0
            per_temperature = [_per_replica(category_stats(point, name, t, options), 0) for t in distinct]
        else:
            moments = sampled_moments(pop, point, estimator, options, distinct)
            per_temperature = [_per_replica(sampled_stats(m, point.exact, point.samples), cfg.probe_estimates) for m in moments]
        stats[name] = per_temperature
    return [ProbeResult(name, source, t, stats[name][slot[i]]) for i, (source, t) in enumerate(temperatures) for name in cfg.probe_estimators]


def _per_replica(stats: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    """[R] per statistic (the mean over the MLP's probe points), plus n, the estimates drawn."""
    out = {stat: v if v.ndim == 1 else v.nanmean(dim=1) for stat, v in stats.items()}
    out["n"] = torch.full_like(out["bias2"], float(n))
    return out


def probe_chunk(point: ProbePoint, estimator, options: dict) -> int:
    """Estimates per chunk, so that the widest tensor of a chunk (draws, samples, D's
    activations) stays within PROBE_CHUNK_BYTES: in cache between a chunk's passes."""
    R, rest, K = point.logits.shape[0], point.logits.shape[1:-1], point.logits.shape[-1]
    widest = max(math.prod(shape) for _, shape in estimator.noise_segments((1, *rest, K), **options))
    if not estimator.one_hot:  # f runs through D on every sample
        widest = max(widest, math.prod(rest) * max(p.shape[-1] for p in point.params))
    return max(1, PROBE_CHUNK_BYTES // (R * widest * point.logits.dtype.itemsize))


def sampled_moments(pop, point: ProbePoint, estimator, options: dict, taus: list[Tensor]) -> list[Moments]:
    """Moments of `probe_estimates` single-sample estimates by `estimator` at each temperature of
    `taus` (each [R]), from fresh draws shared by the temperatures, chunk by chunk. Training's
    layout with G = R n groups of one sample: replica r's estimates are rows r n .. r n + n - 1."""
    R, rest, K = point.logits.shape[0], point.logits.shape[1:-1], point.logits.shape[-1]
    total, chunk = pop.config.probe_estimates, probe_chunk(point, estimator, options)
    noise = fresh_noise(pop.eval_rng, pop.dtype, pop.device)
    moments = [Moments() for _ in taus]
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        theta = point.logits.unsqueeze(1).expand(R, n, *rest, K).reshape(R * n, *rest, K).clone().requires_grad_(True)  # [R n, *P, K]
        shape = (R * n, 1, *rest, K)
        draw = estimator.draw(theta.detach().unsqueeze(1), noise, shape, **options)
        for tau, acc in zip(taus, moments):
            with torch.enable_grad():
                lead = theta.unsqueeze(1)  # [R n, 1, *P, K]
                y = estimator.sample(lead, draw, _tau_for_rows(tau, n, len(shape)))  # [*points, R n, 1, *P, K]
                values, grad = _f_at_samples(point, estimator, y, draw.index)
                (estimates,) = torch.autograd.grad(estimator.surrogate(lead, y, values, grad, draw).sum(), theta)
            acc.add(estimates.view(R, n, *rest, K), dim=1)  # [R, n, *P, K]
    return moments


def _tau_for_rows(tau: Tensor, n: int, ndim: int) -> Tensor:
    """tau [R] for samples [R n, 1, .., K]: a 0-d tensor when every replica has the same one (the
    trial's schedule is shared), since dividing by a scalar is faster than by a broadcast tensor."""
    if bool((tau == tau[0]).all()):
        return tau[0]
    return tau.repeat_interleave(n).view(-1, *([1] * (ndim - 1)))  # [R n, 1, .., 1]


def _f_at_samples(point: ProbePoint, estimator, y: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """f's values [*points, R n, 1, *P] and gradient [*points, R n, 1, *P, K] at single-sample draws
    y [*points, R n, 1, *P, K], through the discriminator as training computes them (at the K
    vertices, gathered, for one-hot samples)."""
    points = y.ndim - point.logits.ndim - 1
    vertices = (point.vertex_values, point.vertex_grads if estimator.pathwise else None) if estimator.one_hot else None
    return losses_at_samples(y, index, point.params, points=points, samples=1, inputs=estimator.pathwise, vertices=vertices)


def category_stats(point: ProbePoint, name: str, tau: Tensor, options: dict) -> dict[str, Tensor]:
    """An estimator whose estimate depends only on the sampled category, at temperatures tau [R]:
    its mean and variance as sums over the K categories (estimators.category_moments), so
    bias2_floor = 0; variance / S for the S samples of a training step."""
    R, rest, K = point.logits.shape[0], point.logits.shape[1:-1], point.logits.shape[-1]
    grads = point.vertex_grads.movedim(1, 0).reshape(K, R, *([1] * len(rest)), K)  # f's gradient at e_c, [K(c), R, 1.., K]
    tau_rows = tau[0] if bool((tau == tau[0]).all()) else tau.view(R, *([1] * len(rest)), 1)
    mean, variance = category_moments(name, point.logits, grads, tau=tau_rows, samples=point.samples, **options)
    return probe_stats(mean, variance, torch.zeros_like(variance), point.exact)


def reinforce_stats(point: ProbePoint, marginal: Tensor) -> dict[str, Tensor]:
    """REINFORCE as a training step uses it, in closed form (estimators.reinforce_moments): with
    free logits the B-sample leave-one-out estimate; with the MLP generator the one-sample estimate
    at each point whose baseline averages B - 1 losses of samples from the generator's marginal.
    Unbiased, so its mean is the exact gradient: bias2 = bias2_floor = 0."""
    R, rest, K = point.logits.shape[0], point.logits.shape[1:-1], point.logits.shape[-1]
    probs = torch.softmax(point.logits, dim=-1)  # [R, *P, K]
    values = point.vertex_values.view(R, *([1] * len(rest)), K)  # [R, 1.., K]
    baseline_probs = None if not rest else marginal.view(R, *([1] * len(rest)), K)
    _, variance = reinforce_moments(probs, values, point.batch, baseline_probs=baseline_probs)  # [R, *P]
    return probe_stats(point.exact, variance, torch.zeros_like(variance), point.exact)
