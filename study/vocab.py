"""The project's shared vocabulary, defined once: estimators, metric keys, grid axes, schedules.

Torch-free and pandas-free, so that config (validation), study (training, probes, the trial
record) and analysis (tables, figures) all import the same names. Adding an estimator is one
`EstimatorInfo` entry here plus its implementation in `study.estimators`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ESTIMATORS_INFO",
    "DEFAULT_PROBES",
    "ESTIMATOR_NAMES",
    "EVAL_KEYS",
    "FIT_KEYS",
    "GROUP_COLUMNS",
    "LOSS_KEYS",
    "MAX_SET_SIZE",
    "PROBE_STATS",
    "RELAXATIONS",
    "SAMPLE_KEYS",
    "RELGAN_SCHEDULES",
    "SCHEDULES",
    "STAT_NAMES",
    "EstimatorInfo",
    "MetricKey",
    "estimator_label",
    "parse_metric_key",
    "probe_key",
    "relgan_beta",
    "option_problem",
    "resolve_options",
    "schedule_tau",
]


@dataclass(frozen=True)
class EstimatorInfo:
    """What the rest of the project needs to know about one gradient estimator."""

    name: str  # registry key, spec value, metric-key component
    label: str  # legend text
    paper: str  # the reference it implements
    formula: str  # one line, for the README table and docstrings
    biased: bool  # biased for every tau > 0 (False: unbiased)
    uses_tau: bool  # its estimate depends on the temperature
    trains: bool = True  # usable as a training relaxation (`exact` is a probe reference only)
    options: dict[str, Any] = field(default_factory=dict)  # option -> default (its type is the option's type)
    # Cost per sample of an estimate, in passes through f: an int, or the name of an option ("k") or
    # "K" (the number of categories) when it depends on them.
    f_evals: int | str = 1  # evaluations of f
    backward_passes: int | str = 1  # backward passes through f (0: score function only)
    exact_moments: bool = False  # its estimate depends only on the sampled category: moments by enumeration
    marker: str = "o"  # matplotlib marker, stable across figures

    def cost(self, options: dict[str, Any] | None = None, categories: int | None = None) -> tuple[int, int]:
        """(f evaluations, backward passes) per sample of an estimate under `options`."""
        options = {**self.options, **(options or {})}

        def resolve(value: int | str) -> int:
            if isinstance(value, int):
                return value
            if value == "K":
                if categories is None:
                    raise ValueError(f"the cost of {self.name} depends on the number of categories K")
                return int(categories)
            return int(options[value])

        return resolve(self.f_evals), resolve(self.backward_passes)

    def total_cost(self, options: dict[str, Any] | None = None, categories: int | None = None) -> int:
        """Passes through f per sample (a backward pass counted as one): the unit of equal-cost MSE."""
        return sum(self.cost(options, categories))


_CATEGORY_ONLY = dict(exact_moments=True)  # estimators whose estimate is a function of the sampled category

_INFOS = (
    EstimatorInfo(
        "soft", "soft (Gumbel-softmax)", "Jang et al. 2017; Maddison et al. 2017",
        "∇θ f(softmax((θ + G)/τ))", biased=True, uses_tau=True, marker="o",
    ),
    EstimatorInfo(
        "hard", "hard (straight-through)", "Jang et al. 2017",
        "f at D = onehot(argmax(θ + G)), gradient through softmax((θ + G)/τ)", biased=True, uses_tau=True, marker="s",
    ),
    EstimatorInfo(
        "gumbel_rao", "Gumbel-Rao", "Paulus et al. 2021",
        "straight-through averaged over k Gumbels conditioned on D", biased=True, uses_tau=True,
        options={"k": 10, "grad_noise": False}, marker="D",
    ),
    EstimatorInfo(
        "reinforce", "REINFORCE", "Williams 1992; leave-one-out baseline: Kool et al. 2019",
        "(f(D) - b) ∇θ log p(D), b the mean of the other samples", biased=False, uses_tau=False,
        backward_passes=0, marker="^",
    ),
    EstimatorInfo(
        "st", "tempered ST", "Bengio et al. 2013; slope-annealed: Paulus et al. 2021",
        "(1/τ) J(softmax(θ/τ)) g, D ~ Cat(p), no Gumbel noise", biased=True, uses_tau=True, marker="v", **_CATEGORY_ONLY,
    ),
    EstimatorInfo(
        "gst", "gapped ST", "Fan et al. 2022",
        "(1/τ) J(softmax((θ + m(D))/τ)) g, m moves θ_D to the max and the others ≥ gap below", biased=True,
        uses_tau=True, options={"gap": 1.0}, marker="P", **_CATEGORY_ONLY,
    ),
    EstimatorInfo(
        "reinmax", "ReinMax", "Liu et al. 2023",
        "2 J(π) g − ½ J(p) g, π = ½(softmax(θ/τ) + D)", biased=True, uses_tau=True, marker="X", **_CATEGORY_ONLY,
    ),
    EstimatorInfo(
        "zgr", "ZGR", "Shekhovtsov 2023",
        "½ [J(p) g + ((D − p)·g)(D − p)]", biased=True, uses_tau=False, marker="<", **_CATEGORY_ONLY,
    ),
    EstimatorInfo(
        "rebar", "REBAR", "Tucker et al. 2017",
        "[f(D) − η f(σ_λ(z̃))] ∇θ log p(D) + η ∇θ f(σ_λ(z)) − η ∇θ f(σ_λ(z̃)), z̃ ~ z | D reparameterised",
        biased=False, uses_tau=True, options={"eta": 1.0}, f_evals=3, backward_passes=2, marker=">",
    ),
    EstimatorInfo(
        "relax", "RELAX", "Grathwohl et al. 2018",
        "REBAR with control variate c(z) = η f(σ_λ(z)) + r_ρ(z), r_ρ a small learned network", biased=False,
        uses_tau=True, options={"eta": 1.0, "hidden": 16}, f_evals=3, backward_passes=2, marker="p",
    ),
    EstimatorInfo(
        "unordered_set", "unordered set", "Kool et al. 2020",
        "Σ_{s∈S} ∇p(s) R(S, s) [f(s) − b(S, s)], S = Gumbel-top-k without replacement", biased=False,
        uses_tau=False, options={"k": 4}, f_evals="k", backward_passes=0, marker="h",
    ),
    EstimatorInfo(
        "exact", "exact", "enumeration over the K categories",
        "Σ_k ∇θ p_k f(e_k)", biased=False, uses_tau=False, trains=False, f_evals="K", backward_passes=0, marker="*",
    ),
)

ESTIMATORS_INFO: dict[str, EstimatorInfo] = {info.name: info for info in _INFOS}
ESTIMATOR_NAMES: tuple[str, ...] = tuple(ESTIMATORS_INFO)  # display order
RELAXATIONS: tuple[str, ...] = tuple(name for name, info in ESTIMATORS_INFO.items() if info.trains)
MAX_SET_SIZE = 12  # unordered_set's k, unless k = K: its dynamic program holds 2^k subset probabilities per sample
# What a trial probes unless its spec says otherwise: the four classic estimators (every relaxation
# costs a probe per temperature per evaluation; specs list the others, as quick.toml does).
DEFAULT_PROBES: tuple[str, ...] = ("soft", "hard", "gumbel_rao", "reinforce")


def resolve_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` of estimator `name` checked and completed with its defaults; ValueError names the
    first bad option. An option's default fixes its type: a count (int >= 1), a flag (bool), a
    finite real (float); gst's `gap` is a number > 0 or "p" (GST-p: gap = -log(1 - p_D) / p_D)."""
    known = ESTIMATORS_INFO[name].options
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"estimator {name!r} takes no option {unknown[0]!r}; its options: {sorted(known)}")
    resolved = {**known, **options}
    for key, value in resolved.items():
        problem = option_problem(name, key, value)
        if problem:
            raise ValueError(f"{name} option {key} {problem}, got {key}={value!r}")
    return resolved


def option_problem(name: str, key: str, value: Any) -> str | None:
    """What is wrong with `value` for option `key` of estimator `name` ("must be ..."), or None."""
    default = ESTIMATORS_INFO[name].options[key]
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1"
    elif name == "gst" and key == "gap":
        ok, want = value == "p" or (_is_real(value) and math.isfinite(value) and value > 0), 'a number > 0 or "p"'
    else:
        ok, want = _is_real(value) and math.isfinite(value), "a finite number"
    return None if ok else f"must be {want}"


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def estimator_label(name: str) -> str:
    info = ESTIMATORS_INFO.get(name)
    return info.label if info else name


# ---------------------------------------------------------------------- metric keys

FIT_KEYS = ("fit/tv", "fit/js", "fit/kl")
LOSS_KEYS = ("loss/d", "loss/g")
SAMPLE_KEYS = ("sample/vertex_gap", "sample/mean_bias")
EVAL_KEYS = ("tau", *LOSS_KEYS, *FIT_KEYS, *SAMPLE_KEYS)  # the scalar metrics of one seed
STAT_NAMES = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor")  # see study.probes
PROBE_STATS = (*STAT_NAMES, "n")  # a probe's statistics plus its number of estimates

_PROBE_KEY = re.compile(r"^(?:grad|ladder/(?P<tau>[^/]+))/(?P<est>[^/]+)/(?P<stat>[^/]+)$")


@dataclass(frozen=True)
class MetricKey:
    """A parsed `grad/<est>/<stat>` (source "current") or `ladder/<tau>/<est>/<stat>` key."""

    source: str  # "current": at the trial's own tau; "ladder": at a fixed tau
    estimator: str
    stat: str
    tau: float | None  # the ladder's tau; None for "current"


def probe_key(estimator: str, stat: str, tau: float | None = None) -> str:
    """The metric key of a probe statistic: at the current tau (tau None) or a ladder tau."""
    return f"grad/{estimator}/{stat}" if tau is None else f"ladder/{tau:g}/{estimator}/{stat}"


def parse_metric_key(key: str) -> MetricKey | None:
    """The probe a key names, or None when it is no probe key."""
    match = _PROBE_KEY.match(key)
    if not match or match.group("stat") not in PROBE_STATS:
        return None
    tau = match.group("tau")
    try:
        ladder_tau = None if tau is None else float(tau)
    except ValueError:
        return None
    return MetricKey("current" if tau is None else "ladder", match.group("est"), match.group("stat"), ladder_tau)


# ---------------------------------------------------------------------- grid axes

# Trial fields that identify a configuration in tables: copied onto every evals / probes row.
GROUP_COLUMNS = ("target", "categories", "relaxation", "schedule", "tau0", "anneal_rate", "tau_min", "anneal_interval", "steps")


# ---------------------------------------------------------------------- schedules

# RelGAN's inverse-temperature policies (Nie et al. 2019): beta = 1/tau rises from 1 to beta_max
# over N steps. Here tau0 plays beta = 1 and tau_min beta_max: tau = tau0 / beta with
# beta_max = tau0 / tau_min (tau0 = 1 gives the paper's schedules), and N = anneal_interval.
RELGAN_POLICIES = ("exp", "lin", "log", "sigmoid", "quad", "sqrt")
RELGAN_SCHEDULES = tuple(f"relgan_{policy}" for policy in RELGAN_POLICIES)
SCHEDULES = ("constant", "exponential", "stepwise", "linear", *RELGAN_SCHEDULES)


def relgan_beta(policy: str, n: Any, big_n: int, beta_max: Any, *, exp: Callable = math.exp, log: Callable = math.log) -> Any:
    """RelGAN's beta at step n (Nie et al. 2019, Table/code), capped at beta_max after N steps.

    exp: beta_max^(n/N)                      lin:  1 + n (beta_max - 1)/(N - 1)
    log: 1 + (beta_max - 1) ln(n + 1)/ln N   sigmoid: 1 + (beta_max - 1)/(1 + e^((N/2 - n) 20/N))
    quad: 1 + (beta_max - 1) n^2/(N - 1)^2   sqrt: 1 + (beta_max - 1) sqrt(n)/sqrt(N - 1)
    The last five as in the authors' code. `exp` and `log` act on step expressions (floats or arrays).
    schedule_tau holds beta at its value at n = N after N steps (and tau0 / beta >= tau_min): beta_max
    for every policy but sigmoid, which ends 1/(1 + e^-10) of the way, as the authors' does.
    """
    if policy == "exp":
        return beta_max ** (n / big_n)
    rise = {
        "lin": lambda: n / (big_n - 1),
        "log": lambda: log(n + 1) / math.log(big_n),
        "sigmoid": lambda: 1 / (1 + exp((big_n / 2 - n) * 20 / big_n)),
        "quad": lambda: n**2 / (big_n - 1) ** 2,
        "sqrt": lambda: n**0.5 / (big_n - 1) ** 0.5,
    }
    if policy not in rise:
        raise ValueError(f"unknown RelGAN policy {policy!r}; known: {', '.join(RELGAN_POLICIES)}")
    return 1 + (beta_max - 1) * rise[policy]()


def schedule_tau(
    kind: str,
    step: Any,
    tau0: Any,
    rate: Any,
    tau_min: float,
    interval: int = 1,
    *,
    exp: Callable[[Any], Any] = math.exp,
    floor: Callable[[Any, float], Any] = max,
    log: Callable[[Any], Any] = math.log,
) -> Any:
    """The temperature of schedule `kind` at `step`; the one place the formulas are written.

    - constant:    tau0
    - exponential: max(tau_min, tau0 * exp(-rate * t))
    - stepwise:    max(tau_min, tau0 * exp(-rate * N * floor(t / N)))  (Jang et al. 2017, N = interval)
    - linear:      max(tau_min, tau0 - rate * t)
    - relgan_<policy>: max(tau_min, tau0 / beta(t)), beta from `relgan_beta` with
                   beta_max = tau0 / tau_min and N = interval (rate is not used)

    Works on floats (the defaults), tensors (`exp=torch.exp`, `floor=Tensor.clamp_min`) and arrays
    (`exp=np.exp`, `floor=np.maximum`, `log=np.log`): `step` may be a number or an array of
    steps; tau0 and rate may be tensors when step is a number.
    """
    if kind in RELGAN_SCHEDULES:
        scalar = isinstance(step, (int, float))  # a tensor tau0 with a number step: math on the step
        beta = relgan_beta(
            kind.removeprefix("relgan_"), min(step, interval) if scalar else step, interval, tau0 / tau_min,
            exp=math.exp if scalar else exp, log=math.log if scalar else log,
        )
        return floor(tau0 / beta, tau_min)
    if kind == "constant":
        return tau0 * 1.0
    if kind == "exponential":
        tau = tau0 * exp(-rate * step)
    elif kind == "stepwise":
        tau = tau0 * exp(-rate * (interval * (step // interval)))
    elif kind == "linear":
        tau = tau0 - rate * step
    else:
        raise ValueError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")
    return floor(tau, tau_min)
