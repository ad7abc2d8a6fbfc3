"""Typed trial configuration and study specs: loading, validation, `--set` overrides, grid expansion.

A study spec is TOML, parsed as data only (`tomllib`; no eval, no pickle):

    name = "quick"            # experiment name (directory under the storage path)
    seeds = 8                 # replicas packed into every trial
    [fixed]                   # TrialConfig fields every trial shares
    categories = 10
    [grid]                    # TrialConfig fields, each a list; the Cartesian product gives the trials
    tau0 = [0.5, 1.0]
    [resources]               # per trial
    cpus = 1
    gpus = 0.0
    [tune]                    # how Ray Tune runs the study
    checkpoint_every = 2      # evaluations between checkpoints
    max_failures = 2          # retries of a trial from its last checkpoint
    max_concurrent = 0        # 0: as many as resources allow
    loggers = []              # trackers: "mlflow", "wandb", "aim" (extras of the same names)
    [search]                  # optional: how trials are chosen (default: the grid)
    algorithm = "optuna"      # "grid" (default), "random", "optuna"
    num_samples = 16          # trials drawn (random: per grid point)
    seed = 0                  # the sampler's seed
    scheduler = "asha"        # "fifo" (default: every trial runs to the end), "asha" or "pbt"
    [search.space]            # TrialConfig fields, each one distribution
    tau0 = {loguniform = [0.01, 10.0]}
    [search.asha]             # early stopping, in discriminator steps (Tune's time_attr = "step")
    grace_steps = 200
    [search.pbt]              # scheduler = "pbt": Population Based Training of the mutable keys
    interval = 400            # steps between perturbations (a multiple of eval_every)
    mutations = {tau = {loguniform = [0.05, 5.0]}, lr_g = {choice = [1e-3, 3e-3]}}

A spec with no grid is a trial config: `gumbel-study train` runs it. Every error is a ConfigError
that names the key and the value.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.schedules import Schedule
from study.targets import TargetError, parse_target
from study.vocab import DEFAULT_PROBES, ESTIMATORS_INFO, MAX_SET_SIZE, RELAXATIONS, RELGAN_SCHEDULES, SCHEDULES, option_problem, probe_key

__all__ = [
    "AshaSpec",
    "ConfigError",
    "Distribution",
    "PBT_MUTABLE",
    "PbtSpec",
    "ResourceSpec",
    "SearchSpec",
    "StudySpec",
    "TrialConfig",
    "TuneSpec",
    "apply_overrides",
    "load_spec",
    "parse_overrides",
]

PROBEABLE = tuple(name for name in ESTIMATORS_INFO if name != "exact")  # exact is the reference
GENERATORS = ("logits", "mlp")
DISCRIMINATORS = ("logistic", "mlp")
LOGIT_INITS = ("ones", "zeros", "normal")
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
SEARCH_ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
# What PBT may perturb, each the TrialConfig field it sets: a checkpoint loads into a trial whose
# config differs from its own in these fields only. `tau` is the temperature a trial continues from
# after it exploits another's checkpoint: its tau0, the start of the schedule's new segment
# (study.population's tau anchor).
PBT_MUTABLE = {"tau": "tau0", "anneal_rate": "anneal_rate", "lr_g": "lr_g", "lr_d": "lr_d"}
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
LOGGERS = ("mlflow", "wandb", "aim")
# The Python package each optional feature needs, and the extra that installs it.
PACKAGES = {"optuna": ("optuna", "search"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"), "aim": ("aim", "aim")}
# What every trial reports to Tune (study.train.lean_metrics), so what a searcher or scheduler may
# optimise; plus grad/<relaxation>/{LEAN_PROBE_STATS} when the relaxation is probed.
LEAN_KEYS = ("step", "tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "sample/vertex_gap", "sample/mean_bias",
             "std/fit/tv", "seeds/count", "seeds/diverged")
LEAN_PROBE_STATS = ("bias2", "variance", "mse")


class ConfigError(ValueError):
    """A bad configuration value. `str()` is one line naming the key and the value."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value!r}: {reason}")


@dataclass(frozen=True)
class TrialConfig:
    """One trial: a target, a GAN, a relaxation and its temperature schedule, trained for each seed."""

    # --- data
    target: str = "blog"  # target spec string (see study.targets)
    categories: int = 5  # K, the number of categories
    # --- generator
    generator: str = "logits"  # "logits" (free logits, the original toy) or "mlp" (noise -> logits)
    logit_init: str = "ones"  # free-logits init: "ones" (the toy), "zeros", "normal"
    gen_noise_dim: int = 8  # mlp generator: noise dimension
    gen_hidden: int = 32  # mlp generator: hidden width
    # --- discriminator
    discriminator: str = "logistic"  # "logistic" (the toy) or "mlp"
    disc_width: int = 64  # mlp discriminator: hidden width
    disc_depth: int = 2  # mlp discriminator: hidden layers
    # --- relaxation and temperature
    relaxation: str = "soft"  # training estimator: any trainable name of study.vocab.ESTIMATORS_INFO
    # Estimator options, as <estimator>_<option> (study.vocab.ESTIMATORS_INFO[...].options):
    gumbel_rao_k: int = 10  # conditional samples for gumbel_rao
    gumbel_rao_grad_noise: bool = False  # differentiate through the conditional Gumbels (Paulus et al. eq. 10)
    gst_gap: float | str = 1.0  # gapped ST's gap: a number (GST-1.0) or "p" (GST-p)
    rebar_eta: float = 1.0  # REBAR's control-variate scale (its start value when REBAR trains)
    relax_eta: float = 1.0  # RELAX's scale of the REBAR part of its control variate
    relax_hidden: int = 16  # RELAX's learned network: hidden width
    unordered_set_k: int = 4  # categories drawn without replacement per sample
    schedule: str = "constant"  # constant, exponential, stepwise, linear, relgan_{exp,lin,log,sigmoid,quad,sqrt}
    tau0: float = 1.0  # starting temperature
    anneal_rate: float = 0.0  # schedule rate (per discriminator step)
    tau_min: float = 0.1  # temperature floor of annealing schedules
    anneal_interval: int = 1000  # stepwise: steps between updates (Jang et al.: 500 or 1000); relgan_*: N
    # --- optimisation
    steps: int = 2000  # discriminator steps
    g_steps: int = 1  # generator steps per discriminator step
    batch_size: int = 64  # samples per step, real and fake
    lr_g: float = 1e-3  # Adam learning rate, generator
    lr_d: float = 1e-3  # Adam learning rate, discriminator
    label_smoothing: float = 0.0  # real one-hots become (1 - eps) e_k + eps / K
    # --- evaluation
    eval_every: int = 200  # discriminator steps between evaluations (and one at the end)
    probe_estimators: tuple[str, ...] = DEFAULT_PROBES  # probed at each evaluation
    probe_estimates: int = 1000  # independent estimates per probe (batched)
    probe_points: int = 4  # mlp generator: noise draws at which logits are probed
    probe_taus: tuple[float, ...] = ()  # optional ladder of temperatures probed besides the current one
    eval_samples: int = 2000  # samples for sample/* metrics (and the mlp generator's probabilities)
    # --- run
    seed: int = 0  # first seed; replicas use seed, seed + 1, ...
    dtype: str = "float32"  # float32 or float64
    device: str = "auto"  # auto (the GPU Ray gives the trial, else CPU), cpu, cuda

    def schedule_for(self, tau0: float | None = None, rate: float | None = None) -> Schedule:
        return Schedule(
            self.schedule,
            self.tau0 if tau0 is None else tau0,
            self.anneal_rate if rate is None else rate,
            self.tau_min,
            self.anneal_interval,
        )

    @property
    def evaluation_steps(self) -> list[int]:
        """Steps at which the trial evaluates: 0, every eval_every, and the last step."""
        points = list(range(0, self.steps, self.eval_every)) + [self.steps]
        return sorted(set(points))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class ResourceSpec:
    cpus: float = 1.0  # CPUs per trial; torch uses this many threads
    gpus: float = 0.0  # fraction of a GPU per trial, 0 to 1


@dataclass(frozen=True)
class TuneSpec:
    checkpoint_every: int = 2  # evaluations between checkpoints (and always at the end)
    max_failures: int = 2  # retries of a failed trial, from its last checkpoint
    max_concurrent: int = 0  # concurrent trials; 0: as many as resources allow
    metric: str = "fit/tv"  # what "best" means in summaries, and what search and ASHA optimise
    mode: str = "min"
    loggers: tuple[str, ...] = ()  # trackers fed with the lean reports: mlflow, wandb, aim
    mlflow_uri: str = ""  # MLflow tracking URI; "": $MLFLOW_TRACKING_URI, else sqlite in the experiment dir


@dataclass(frozen=True)
class Distribution:
    """One searched trial field: `kind` and its `values` (low and high, or the choices)."""

    kind: str  # loguniform, uniform (float fields), int (int fields, both bounds included), choice
    values: tuple[Any, ...]

    @property
    def bounds(self) -> tuple[Any, ...]:
        """The values a sample can take at the extremes: both bounds, or every choice."""
        return self.values

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice " + ", ".join(map(str, self.values))
        low, high = self.values
        return f"{self.kind} [{low:g}, {high:g}]" + (" (both included)" if self.kind == "int" else "")


@dataclass(frozen=True)
class AshaSpec:
    """ASHA (Li et al. 2020) on Tune's `step` result: discriminator steps, like `steps`."""

    grace_steps: int = 0  # steps every trial runs before it can be stopped; 0: eval_every
    max_steps: int = 0  # steps after which ASHA stops every trial; 0: the longest trial's steps
    reduction_factor: float = 3.0  # keep 1 / reduction_factor of the trials at each rung
    brackets: int = 1  # Hyperband brackets; 1 is plain ASHA

    def rungs(self, bracket: int = 0) -> list[float]:
        """Milestones of one bracket, lowest first, as Tune's `_Bracket` computes them:
        grace * rf^(k + bracket) for k = 0, 1, ... while <= max_steps."""
        count = int(math.log(self.max_steps / self.grace_steps) / math.log(self.reduction_factor) - bracket + 1)
        return sorted(self.grace_steps * self.reduction_factor ** (k + bracket) for k in range(max(count, 0)))


@dataclass(frozen=True)
class PbtSpec:
    """Population Based Training (Jaderberg et al. 2017) on Tune's `step` result: every `interval`
    steps, a trial in the bottom `quantile` (by [tune] metric) continues from the checkpoint of one
    in the top quantile, with that trial's config perturbed in the mutable keys (PBT_MUTABLE)."""

    interval: int = 0  # discriminator steps between perturbations, a multiple of eval_every; 0: eval_every
    quantile: float = 0.25  # fraction of the population that exploits (bottom) and is cloned (top)
    resample_probability: float = 0.25  # a mutated value is redrawn with this chance, else scaled by 0.8 or 1.2
    synch: bool = False  # true: every trial waits at each perturbation step for all (Tune pauses and restarts each: slow)
    mutations: dict[str, Distribution] = field(default_factory=dict)  # mutable key (PBT_MUTABLE) -> distribution

    @property
    def fields(self) -> dict[str, Distribution]:
        """The mutations by TrialConfig field (`tau` is tau0)."""
        return {PBT_MUTABLE[name]: dist for name, dist in self.mutations.items()}


@dataclass(frozen=True)
class SearchSpec:
    """How trials are chosen: the grid (default), random sampling, or Optuna; and a scheduler."""

    algorithm: str = "grid"  # grid, random (Tune's variant generator), optuna (TPE)
    num_samples: int = 0  # trials drawn (random: per grid point); 0: not given (grid: 1)
    seed: int = 0  # the sampler's seed
    space: dict[str, Distribution] = field(default_factory=dict)  # TrialConfig field -> distribution
    scheduler: str = "fifo"  # fifo (every trial to the end), asha (early stopping) or pbt
    asha: AshaSpec | None = None  # with scheduler = "asha", its settings (defaults resolved)
    pbt: PbtSpec | None = None  # with scheduler = "pbt", its settings (defaults resolved)

    @property
    def samples(self) -> int:
        return self.num_samples or 1


@dataclass(frozen=True)
class StudySpec:
    name: str
    seeds: int  # replicas per trial
    fixed: TrialConfig  # shared values (grid axes hold their first value here)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    resources: ResourceSpec = ResourceSpec()
    tune: TuneSpec = TuneSpec()
    source: str = ""  # the file it came from
    search: SearchSpec = SearchSpec()

    @property
    def trials(self) -> list[TrialConfig]:
        """The expanded grid, in a stable order (the last axis varies fastest). With a search space,
        its fields hold their [fixed] values here: the sampled trials exist once Tune draws them."""
        axes = list(self.grid)
        return [dataclasses.replace(self.fixed, **dict(zip(axes, values))) for values in itertools.product(*self.grid.values())]

    @property
    def num_trials(self) -> int:
        grid = math.prod(len(v) for v in self.grid.values()) if self.grid else 1
        return grid * self.search.samples

    def replica_steps(self) -> int:
        """Replica-steps of the study; with searched steps or g_steps, or ASHA, an upper bound."""
        space = self.search.space
        top = {name: max(space[name].bounds) for name in ("steps", "g_steps") if name in space}
        total = sum(top.get("steps", t.steps) * (1 + top.get("g_steps", t.g_steps)) for t in self.trials)
        return total * self.search.samples * self.seeds

    def single_trial(self) -> TrialConfig:
        """The trial config of a spec whose grid axes are all pinned; ConfigError names the others."""
        if self.search.space:
            searched = list(self.search.space)
            raise ConfigError(
                "search.space", searched, "train runs one trial: pin each searched field with --set " + " ".join(f"{k}=..." for k in searched)
            )
        unpinned = [k for k, v in self.grid.items() if len(v) > 1]
        if unpinned:
            raise ConfigError(
                "grid", unpinned, "train runs one trial: pin each grid axis with --set " + " ".join(f"{k}=..." for k in unpinned)
            )
        return self.trials[0]


# ---------------------------------------------------------------- typing and coercion

_TRIAL_TYPES = typing.get_type_hints(TrialConfig)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Convert a TOML value to the declared type, or raise ConfigError naming the key."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # the first member type that takes the value
        for member in typing.get_args(kind):
            try:
                return _coerce(key, value, member)
            except ConfigError:
                continue
        raise ConfigError(key, value, "expected " + " or ".join(m.__name__ for m in typing.get_args(kind)))
    if origin is tuple:
        (item,) = {a for a in typing.get_args(kind) if a is not Ellipsis}
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"expected a list of {item.__name__}")
        return tuple(_coerce(key, v, item) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, "expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(key, value, "expected an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "expected a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(key, value, "expected a string")
        return value
    raise TypeError(f"unsupported config type {kind} for {key}")


def _coerce_dataclass(cls: type, table: Any, section: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(section, table, "expected a table")
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{section}.{key}", value, f"unknown key; known: {', '.join(hints)}")
        out[key] = _coerce(f"{section}.{key}", value, hints[key])
    return out


# ---------------------------------------------------------------- validation


def _check(cond: bool, key: str, value: Any, reason: str) -> None:
    if not cond:
        raise ConfigError(key, value, reason)


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _check_options(cfg: TrialConfig, name: str) -> None:
    """The config fields <name>_<option> of estimator `name` (study.vocab.option_problem)."""
    for option in ESTIMATORS_INFO[name].options:
        key = f"{name}_{option}"
        problem = option_problem(name, option, getattr(cfg, key))
        _check(problem is None, key, getattr(cfg, key), problem or "")


def validate_trial(cfg: TrialConfig, *, base_dir: Path | None = None) -> None:
    """Range checks of every field; ConfigError names the first bad one."""
    def positive_int(name: str, minimum: int = 1) -> None:
        v = getattr(cfg, name)
        _check(v >= minimum, name, v, f"must be >= {minimum}")

    def choice(name: str, options: tuple[str, ...]) -> None:
        v = getattr(cfg, name)
        _check(v in options, name, v, f"must be one of {', '.join(options)}")

    def positive_float(name: str, allow_zero: bool = False) -> None:
        v = getattr(cfg, name)
        ok = _finite(v) and (v >= 0 if allow_zero else v > 0)
        _check(ok, name, v, "must be a finite number " + (">= 0" if allow_zero else "> 0"))

    positive_int("categories", 2)
    choice("generator", GENERATORS)
    choice("logit_init", LOGIT_INITS)
    positive_int("gen_noise_dim")
    positive_int("gen_hidden")
    choice("discriminator", DISCRIMINATORS)
    positive_int("disc_width")
    positive_int("disc_depth")
    choice("relaxation", RELAXATIONS)
    for name in ESTIMATORS_INFO:
        _check_options(cfg, name)
    if "unordered_set" in (cfg.relaxation, *cfg.probe_estimators):
        k, big_k = cfg.unordered_set_k, cfg.categories
        _check(k <= big_k and (k <= MAX_SET_SIZE or k == big_k), "unordered_set_k", k,
               f"must be <= categories={big_k} and <= {MAX_SET_SIZE} (or equal to categories)")
    choice("schedule", SCHEDULES)
    positive_float("tau0")
    positive_float("anneal_rate", allow_zero=True)
    positive_float("tau_min")
    positive_int("anneal_interval")
    positive_int("steps")
    positive_int("g_steps")
    positive_int("batch_size", 2 if cfg.relaxation == "reinforce" else 1)
    positive_float("lr_g")
    positive_float("lr_d")
    _check(_finite(cfg.label_smoothing) and 0 <= cfg.label_smoothing < 1, "label_smoothing", cfg.label_smoothing, "must be in [0, 1)")
    positive_int("eval_every")
    for name in cfg.probe_estimators:
        _check(name in PROBEABLE, "probe_estimators", name, f"unknown estimator; known: {', '.join(PROBEABLE)}")
    positive_int("probe_estimates", 2)
    positive_int("probe_points")
    for tau in cfg.probe_taus:
        _check(_finite(tau) and tau > 0, "probe_taus", tau, "each must be a finite number > 0")
    positive_int("eval_samples", 2)
    positive_int("seed", 0)
    choice("dtype", DTYPES)
    choice("device", DEVICES)
    if cfg.schedule != "constant":
        _check(cfg.tau_min <= cfg.tau0, "tau_min", cfg.tau_min, f"must be <= tau0={cfg.tau0!r} for an annealing schedule")
    if cfg.schedule in RELGAN_SCHEDULES:
        _check(cfg.anneal_interval >= 2, "anneal_interval", cfg.anneal_interval, f"is RelGAN's N for {cfg.schedule}: must be >= 2")
    _check_target(cfg.target, cfg.categories, base_dir, "target")


@functools.lru_cache(maxsize=256)
def _check_target(target: str, categories: int, base_dir: Path | None, key: str) -> None:
    try:
        parse_target(target, categories, base_dir=base_dir)
    except TargetError as err:
        reason = str(err)
        prefix = f"target {target.strip()!r}: "
        raise ConfigError(key, target, reason[len(prefix):] if reason.startswith(prefix) else reason) from None


def _validate_spec(spec: StudySpec, base_dir: Path | None) -> None:
    _check(isinstance(spec.name, str) and spec.name.strip() != "" and "/" not in spec.name, "name", spec.name, "must be a non-empty name without '/'")
    _check(spec.seeds >= 1, "seeds", spec.seeds, "must be >= 1")
    r = spec.resources
    _check(_finite(r.cpus) and r.cpus > 0, "resources.cpus", r.cpus, "must be > 0")
    _check(_finite(r.gpus) and 0 <= r.gpus <= 1, "resources.gpus", r.gpus, "must be a fraction in [0, 1]")
    t = spec.tune
    _check(t.checkpoint_every >= 1, "tune.checkpoint_every", t.checkpoint_every, "must be >= 1")
    _check(t.max_failures >= 0, "tune.max_failures", t.max_failures, "must be >= 0")
    _check(t.max_concurrent >= 0, "tune.max_concurrent", t.max_concurrent, "must be >= 0")
    _check(t.mode in ("min", "max"), "tune.mode", t.mode, "must be min or max")
    for axis, values in spec.grid.items():
        _check(len(values) >= 1, f"grid.{axis}", list(values), "must list at least one value")
        _check(len(set(map(repr, values))) == len(values), f"grid.{axis}", list(values), "lists a value twice")
    for trial in spec.trials if not spec.search.space else ():  # with a space: _validate_space
        validate_trial(trial, base_dir=base_dir)  # every combination: e.g. a target may not fit every K
    _check(t.metric.strip() != "", "tune.metric", t.metric, "must name a reported metric")
    for logger in t.loggers:
        _check(logger in LOGGERS, "tune.loggers", logger, f"unknown tracker; known: {', '.join(LOGGERS)}")
    _check(len(set(t.loggers)) == len(t.loggers), "tune.loggers", list(t.loggers), "names a tracker twice")
    _check(not t.mlflow_uri or "mlflow" in t.loggers, "tune.mlflow_uri", t.mlflow_uri, "is set but tune.loggers has no \"mlflow\"")
    _validate_search(spec, base_dir)
    _check_packages(spec)


# ---------------------------------------------------------------- search: Optuna, random, ASHA

_SEARCH_KEYS = ("algorithm", "num_samples", "seed", "scheduler", "space", "asha", "pbt")
_DISTRIBUTION_HELP = "{loguniform = [low, high]}, {uniform = [low, high]}, {int = [low, high]} or {choice = [a, b, ...]}"
_KIND_NAMES = {int: "integers", float: "numbers", str: "strings"}
MAX_SPACE_CORNERS = 50_000  # trials (grid x bounds x choices) that check validates for a search space


def _distribution(name: str, raw: Any) -> Distribution:
    """One `[search.space]` entry: `name = {kind = [...]}`, values typed as the field."""
    key = f"search.space.{name}"
    if name not in _TRIAL_TYPES:
        raise ConfigError(key, raw, f"unknown key; known trial fields: {', '.join(_TRIAL_TYPES)}")
    kind = _TRIAL_TYPES[name]
    if typing.get_origin(kind) is tuple:
        raise ConfigError(key, raw, "a list field cannot be searched; make it a [grid] axis or set it in [fixed]")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(key, raw, f"expected one distribution: {_DISTRIBUTION_HELP}")
    ((dist, values),) = raw.items()
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{key}.{dist}", values, f"unknown distribution; known: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(values, list):
        raise ConfigError(f"{key}.{dist}", values, "expected a list" + ("" if dist == "choice" else " [low, high]"))
    if dist == "choice":
        _check(len(values) >= 1, f"{key}.choice", values, "must list at least one value")
        typed = tuple(_coerce(f"{key}.choice", v, kind) for v in values)
        _check(len(set(map(repr, typed))) == len(typed), f"{key}.choice", values, "lists a value twice")
        return Distribution(dist, typed)
    _check(len(values) == 2, f"{key}.{dist}", values, "expected [low, high]")
    if dist == "int":
        _check(kind is int, f"{key}.int", values, f"{name} takes {_KIND_NAMES[kind]}: use uniform, loguniform or choice" if kind is float else f"{name} takes {_KIND_NAMES[kind]}: use choice")
    else:
        _check(kind is float, f"{key}.{dist}", values, f"{name} takes {_KIND_NAMES[kind]}: use " + ("int or choice" if kind is int else "choice"))
    low, high = (_coerce(f"{key}.{dist}", v, kind) for v in values)
    _check(_finite(low) and _finite(high), f"{key}.{dist}", values, "bounds must be finite")
    _check(low < high, f"{key}.{dist}", values, "low must be < high")
    _check(dist != "loguniform" or low > 0, f"{key}.loguniform", values, "bounds must be > 0")
    return Distribution(dist, (low, high))


def _search_from_table(table: Any, fixed_values: dict[str, Any], grid: dict[str, Any]) -> SearchSpec:
    if not isinstance(table, dict):
        raise ConfigError("search", table, "expected a table")
    for key, value in table.items():
        if key not in _SEARCH_KEYS:
            raise ConfigError(f"search.{key}", value, f"unknown key; known: {', '.join(_SEARCH_KEYS)}")
    algorithm = _coerce("search.algorithm", table.get("algorithm", "grid"), str)
    _check(algorithm in SEARCH_ALGORITHMS, "search.algorithm", algorithm, f"must be one of {', '.join(SEARCH_ALGORITHMS)}")
    num_samples = _coerce("search.num_samples", table.get("num_samples", 0), int)
    _check(num_samples >= 1 or "num_samples" not in table, "search.num_samples", num_samples, "must be >= 1")
    seed = _coerce("search.seed", table.get("seed", 0), int)
    _check(seed >= 0, "search.seed", seed, "must be >= 0")
    scheduler = _coerce("search.scheduler", table.get("scheduler", "fifo"), str)
    _check(scheduler in SCHEDULERS, "search.scheduler", scheduler, f"must be one of {', '.join(SCHEDULERS)}")
    space_table = table.get("space", {})
    if not isinstance(space_table, dict):
        raise ConfigError("search.space", space_table, "expected a table: field = " + _DISTRIBUTION_HELP)
    space = {name: _distribution(name, raw) for name, raw in space_table.items()}
    for name in space:
        if name in fixed_values:
            raise ConfigError(f"search.space.{name}", space_table[name], "is also set in [fixed]; set it in one place")
        if name in grid:
            raise ConfigError(f"search.space.{name}", space_table[name], "is also a [grid] axis; set it in one place")
    asha_table = table.get("asha")
    if asha_table is not None and scheduler != "asha":
        raise ConfigError("search.asha", asha_table, f"is for scheduler = \"asha\" (search.scheduler is {scheduler!r})")
    asha = AshaSpec(**_coerce_dataclass(AshaSpec, asha_table or {}, "search.asha")) if scheduler == "asha" else None
    pbt = _pbt_from_table(table.get("pbt"), scheduler)
    if algorithm == "grid":
        _check(not space, "search.space", list(space), "needs algorithm = \"optuna\" or \"random\" (the grid takes [grid] axes only)")
        _check(num_samples <= 1, "search.num_samples", num_samples,
               "the grid runs each combination once (a trial's seeds are its repeats); use algorithm = \"random\" or \"optuna\"")
    else:
        _check(num_samples >= 1, "search.num_samples", "missing", f"required with algorithm = {algorithm!r}: how many trials to draw")
        _check(bool(space), "search.space", {}, f"algorithm = {algorithm!r} needs at least one field to sample: field = {_DISTRIBUTION_HELP}")
    if algorithm == "optuna" and grid:
        raise ConfigError(
            "search.algorithm", algorithm,
            f"Optuna cannot search a [grid] ({', '.join(grid)}): Tune's OptunaSearch takes no grid_search; "
            "move the axes into [search.space] as {choice = [...]}, or use algorithm = \"random\" (grid x samples)",
        )
    return SearchSpec(algorithm=algorithm, num_samples=num_samples, seed=seed, space=space, scheduler=scheduler, asha=asha, pbt=pbt)


def _pbt_from_table(table: Any, scheduler: str) -> PbtSpec | None:
    """`[search.pbt]`: its settings, and `mutations` as distributions keyed by mutable name."""
    if table is not None and scheduler != "pbt":
        raise ConfigError("search.pbt", table, f"is for scheduler = \"pbt\" (search.scheduler is {scheduler!r})")
    if scheduler != "pbt":
        return None
    table = {} if table is None else table
    if not isinstance(table, dict):
        raise ConfigError("search.pbt", table, "expected a table")
    settings = {k: v for k, v in table.items() if k != "mutations"}
    pbt = PbtSpec(**_coerce_dataclass(PbtSpec, settings, "search.pbt"))
    raw = table.get("mutations", {})
    if not isinstance(raw, dict):
        raise ConfigError("search.pbt.mutations", raw, "expected a table: key = " + _DISTRIBUTION_HELP)
    _check(bool(raw), "search.pbt.mutations", raw, f"PBT needs at least one mutable key ({', '.join(PBT_MUTABLE)}) = {_DISTRIBUTION_HELP}")
    return dataclasses.replace(pbt, mutations={name: _mutation(name, dist) for name, dist in raw.items()})


def _mutation(name: str, raw: Any) -> Distribution:
    """One `[search.pbt.mutations]` entry, checked as a [search.space] entry of its field."""
    key = f"search.pbt.mutations.{name}"
    _check(name in PBT_MUTABLE, key, raw, f"is not mutable: PBT perturbs only {', '.join(PBT_MUTABLE)} "
           "(a checkpoint loads only into a trial whose config differs from it in those)")
    try:
        return _distribution(PBT_MUTABLE[name], raw)
    except ConfigError as err:
        raise ConfigError(err.key.replace(f"search.space.{PBT_MUTABLE[name]}", key, 1), err.value, err.reason) from None


def _extreme(spec: StudySpec, name: str, pick: Any) -> Any:
    """The smallest (pick=min) or largest value a trial field takes over the grid and the space."""
    values = [getattr(t, name) for t in spec.trials]
    if name in spec.search.space:
        values = list(spec.search.space[name].bounds)
    return pick(values)


def _resolve_asha(spec: StudySpec) -> StudySpec:
    """Fill ASHA's defaults from the trials: grace = the first evaluation, max = the longest trial."""
    asha = spec.search.asha
    if asha is None:
        return spec
    longest = _extreme(spec, "steps", max)
    grace = asha.grace_steps or min(_extreme(spec, "eval_every", min), longest)
    resolved = dataclasses.replace(asha, grace_steps=grace, max_steps=asha.max_steps or longest)
    return dataclasses.replace(spec, search=dataclasses.replace(spec.search, asha=resolved))


def _resolve_pbt(spec: StudySpec) -> StudySpec:
    """PBT's default interval: every evaluation (the longest eval_every of the trials)."""
    pbt = spec.search.pbt
    if pbt is None or pbt.interval:
        return spec
    resolved = dataclasses.replace(pbt, interval=_extreme(spec, "eval_every", max))
    return dataclasses.replace(spec, search=dataclasses.replace(spec.search, pbt=resolved))


def _validate_pbt(spec: StudySpec, base_dir: Path | None) -> None:
    """Perturbations at evaluations (where trials report and checkpoint), a population to select
    from, and every value a mutation can give (its bounds: perturbed values are clipped to them)
    valid in every trial."""
    p = spec.search.pbt
    _check(p.interval >= 1, "search.pbt.interval", p.interval, "must be >= 1")
    every = sorted({t.eval_every for t in spec.trials} | set(spec.search.space["eval_every"].bounds if "eval_every" in spec.search.space else ()))
    for e in every:
        _check(p.interval % e == 0, "search.pbt.interval", p.interval, f"must be a multiple of eval_every={e}: trials report, and checkpoint, at evaluations")
    shortest = _extreme(spec, "steps", min)
    _check(p.interval < shortest, "search.pbt.interval", p.interval, f"must be < steps={shortest}: no trial would ever be perturbed")
    _check(_finite(p.quantile) and 0 < p.quantile <= 0.5, "search.pbt.quantile", p.quantile, "must be in (0, 0.5]")
    _check(_finite(p.resample_probability) and 0 <= p.resample_probability <= 1, "search.pbt.resample_probability", p.resample_probability, "must be in [0, 1]")
    _check(spec.num_trials >= 2, "search.scheduler", "pbt", "needs a population of at least 2 trials ([grid] combinations x search.num_samples)")
    for trial in spec.trials:
        for name, dist in p.mutations.items():
            for value in dist.bounds:
                try:
                    validate_trial(dataclasses.replace(trial, **{PBT_MUTABLE[name]: value}), base_dir=base_dir)
                except ConfigError as err:
                    raise ConfigError(f"search.pbt.mutations.{name}", value, f"{err.key}={err.value!r}: {err.reason}") from None


def _lean_keys(spec: StudySpec) -> list[str]:
    """The Tune keys every trial reports (study.train.lean_metrics): the trained estimator's probe
    keys only when every trial trains, and probes, one and the same estimator."""
    keys = list(LEAN_KEYS)
    space = spec.search.space
    relaxations = set(space["relaxation"].bounds) if "relaxation" in space else {t.relaxation for t in spec.trials}
    if len(relaxations) == 1:
        (relaxation,) = relaxations
        if all(relaxation in t.probe_estimators for t in spec.trials):
            keys += [probe_key(relaxation, stat) for stat in LEAN_PROBE_STATS]
    return keys


def _validate_search(spec: StudySpec, base_dir: Path | None) -> None:
    search = spec.search
    if search.asha is not None:
        a = search.asha
        longest = _extreme(spec, "steps", max)
        _check(a.max_steps >= 1, "search.asha.max_steps", a.max_steps, "must be >= 1")
        _check(a.max_steps <= longest, "search.asha.max_steps", a.max_steps, f"is beyond the longest trial (steps={longest}): its rungs would never be reached")
        _check(a.grace_steps >= 1, "search.asha.grace_steps", a.grace_steps, "must be >= 1")
        _check(a.grace_steps < a.max_steps, "search.asha.grace_steps", a.grace_steps, f"must be < max_steps={a.max_steps}")
        _check(_finite(a.reduction_factor) and a.reduction_factor > 1, "search.asha.reduction_factor", a.reduction_factor, "must be a finite number > 1")
        _check(a.brackets >= 1, "search.asha.brackets", a.brackets, "must be >= 1")
        _check(bool(a.rungs(a.brackets - 1)), "search.asha.brackets", a.brackets, f"too many for grace_steps={a.grace_steps}, max_steps={a.max_steps}: the last bracket has no rung")
    if search.pbt is not None:
        _validate_pbt(spec, base_dir)
    if search.algorithm == "optuna" or search.asha is not None or search.pbt is not None:
        users = " and ".join(n for n, used in (("Optuna", search.algorithm == "optuna"), ("ASHA", search.asha is not None), ("PBT", search.pbt is not None)) if used)
        keys = _lean_keys(spec)
        _check(spec.tune.metric in keys, "tune.metric", spec.tune.metric, f"{users} need a metric every trial reports: one of {', '.join(keys)}")
    if search.space:
        _validate_space(spec, base_dir)


def _validate_space(spec: StudySpec, base_dir: Path | None) -> None:
    """Every trial a search can draw is valid: each grid trial at every corner of the space (both
    bounds of each range, every choice). The checks are intervals and monotone comparisons (for
    example tau_min <= tau0), so the corners decide them for every point between."""
    space = spec.search.space
    names = list(space)
    corners = math.prod(len(d.bounds) for d in space.values()) * len(spec.trials)
    _check(corners <= MAX_SPACE_CORNERS, "search.space", names, f"{corners:,} corner trials to validate, more than {MAX_SPACE_CORNERS:,}: search fewer fields or choices")
    grid_corners = [dict(zip(names, values)) for values in itertools.product(*(d.bounds for d in space.values()))]
    for trial in spec.trials:
        failures = []
        for corner in grid_corners:
            try:
                validate_trial(dataclasses.replace(trial, **corner), base_dir=base_dir)
            except ConfigError as err:
                if err.key in space:  # a searched field's own value
                    raise ConfigError(f"search.space.{err.key}", err.value, err.reason) from None
                failures.append((corner, err))
        if failures and len(failures) == len(grid_corners):
            raise failures[0][1]  # wrong wherever the search goes: a [fixed] or [grid] value
        if failures:  # a fixed or grid field that does not fit part of the space: name the searched
            corner, err = failures[0]  # field whose other bound or choice would fit
            name = next((n for n in names if any(_valid(dataclasses.replace(trial, **{**corner, n: v}), base_dir) for v in space[n].bounds)), names[0])
            raise ConfigError(f"search.space.{name}", corner[name], f"{err.key}={err.value!r}: {err.reason}")


def _valid(cfg: TrialConfig, base_dir: Path | None) -> bool:
    try:
        validate_trial(cfg, base_dir=base_dir)
    except ConfigError:
        return False
    return True


def _check_packages(spec: StudySpec) -> None:
    """An optional feature whose package is missing: one line naming the extra that installs it."""
    wanted = [("search.algorithm", "optuna")] if spec.search.algorithm == "optuna" else []
    wanted += [("tune.loggers", name) for name in spec.tune.loggers]
    for key, feature in wanted:
        module, extra = PACKAGES[feature]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(key, feature, f"needs the {module} package, which is not installed: pip install 'gumbel-study[{extra}]'")


# ---------------------------------------------------------------- loading


_TOP_KEYS = {"name", "seeds", "fixed", "grid", "resources", "tune", "search"}


def spec_from_dict(data: dict[str, Any], *, source: str = "", base_dir: Path | None = None) -> StudySpec:
    """Build and validate a StudySpec from parsed TOML."""
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(key, data[key], f"unknown key; known: {', '.join(sorted(_TOP_KEYS))}")
    name = data.get("name", Path(source).stem if source else "study")
    _check(isinstance(name, str), "name", name, "expected a string")
    seeds = _coerce("seeds", data.get("seeds", 1), int)
    fixed_values = _coerce_dataclass(TrialConfig, data.get("fixed", {}), "fixed")
    grid_table = data.get("grid", {})
    if not isinstance(grid_table, dict):
        raise ConfigError("grid", grid_table, "expected a table of lists")
    grid: dict[str, tuple[Any, ...]] = {}
    for axis, values in grid_table.items():
        if axis not in _TRIAL_TYPES:
            raise ConfigError(f"grid.{axis}", values, f"unknown key; known: {', '.join(_TRIAL_TYPES)}")
        if axis in fixed_values:
            raise ConfigError(f"grid.{axis}", values, "is also set in [fixed]; set it in one place")
        if not isinstance(values, list):
            raise ConfigError(f"grid.{axis}", values, "expected a list of values")
        grid[axis] = tuple(_coerce(f"grid.{axis}", v, _TRIAL_TYPES[axis]) for v in values)
    resources = ResourceSpec(**_coerce_dataclass(ResourceSpec, data.get("resources", {}), "resources"))
    tune = TuneSpec(**_coerce_dataclass(TuneSpec, data.get("tune", {}), "tune"))
    search = _search_from_table(data.get("search", {}), fixed_values, grid)
    first = {axis: values[0] for axis, values in grid.items() if values}
    fixed = TrialConfig(**fixed_values, **first)
    spec = StudySpec(name=name, seeds=seeds, fixed=fixed, grid=grid, resources=resources, tune=tune, source=source, search=search)
    spec = _resolve_pbt(_resolve_asha(spec))
    _validate_spec(spec, base_dir)
    return spec


def _absolute_stream(target: Any, base_dir: Path) -> Any:
    """A stream path is relative to where it was written (the spec's folder, or the shell's for
    `--set`); make it absolute so that trials find it from any working directory."""
    if isinstance(target, str) and target.strip().startswith("stream:"):
        path = Path(target.strip()[len("stream:") :].strip()).expanduser()
        return "stream:" + str(path if path.is_absolute() else (base_dir / path).resolve())
    return target


def _absolute_streams(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if isinstance(data.get("fixed"), dict) and "target" in data["fixed"]:
        data["fixed"]["target"] = _absolute_stream(data["fixed"]["target"], base_dir)
    if isinstance(data.get("grid"), dict) and isinstance(data["grid"].get("target"), list):
        data["grid"]["target"] = [_absolute_stream(t, base_dir) for t in data["grid"]["target"]]
    search = data.get("search")
    if isinstance(search, dict) and isinstance(search.get("space"), dict):
        target = search["space"].get("target")
        if isinstance(target, dict) and isinstance(target.get("choice"), list):
            space = dict(search["space"], target={**target, "choice": [_absolute_stream(t, base_dir) for t in target["choice"]]})
            data["search"] = dict(search, space=space)
    return data


def _override_streams(key: str, value: Any) -> Any:
    """A `--set` stream path is relative to the shell's directory (`target`, `fixed.target`,
    `grid.target`, a list for a grid axis, `search.space.target={choice = [...]}`)."""
    if _override_setting(key) != "target":
        return value
    if isinstance(value, dict) and isinstance(value.get("choice"), list):
        return {**value, "choice": [_absolute_stream(v, Path.cwd()) for v in value["choice"]]}
    if isinstance(value, list):
        return [_absolute_stream(v, Path.cwd()) for v in value]
    return _absolute_stream(value, Path.cwd())


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read a TOML spec, apply `--set` overrides, validate. Raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("spec", str(path), "no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError("spec", str(path), f"cannot read: {err.__class__.__name__}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("spec", str(path), f"TOML syntax error: {err}") from None
    data = _absolute_streams(data, path.parent.resolve())
    overrides = {k: _override_streams(k, v) for k, v in (overrides or {}).items()}
    data = apply_overrides(data, overrides)
    return spec_from_dict(data, source=str(path))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> dict, in command-line order. VALUE is read as a TOML value when it is
    one, else as a string. Keys that name the same setting (`tau0`, `fixed.tau0`, `grid.tau0`; see
    `apply_overrides`) are one key: a later item replaces every earlier one, so the last wins."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", item, "expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        setting = _override_setting(key)
        for earlier in [k for k in out if _override_setting(k) == setting]:
            del out[earlier]
        out[key] = value
    return out


def _override_setting(key: str) -> str:
    """The setting an override key names: the trial field X for `X`, `fixed.X`, `grid.X` and
    `search.space.X`; the key itself otherwise (`seeds`, `name`, `resources.X`, `tune.X`,
    `search.X`, `search.asha.X`, or an unknown key)."""
    section, dot, sub = key.partition(".")
    if dot and section in ("fixed", "grid") and sub in _TRIAL_TYPES:
        return sub
    if key.startswith(_SPACE_PREFIX) and key[len(_SPACE_PREFIX) :] in _TRIAL_TYPES:
        return key[len(_SPACE_PREFIX) :]
    return key


_SPACE_PREFIX = "search.space."


def _table(data: dict[str, Any], section: str) -> dict[str, Any]:
    table = data.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(section, table, "expected a table")
    return table


def _unsearch(data: dict[str, Any], name: str) -> None:
    """X pinned or made a grid axis leaves [search.space] (the copy apply_overrides made)."""
    search = data.get("search")
    if isinstance(search, dict) and isinstance(search.get("space"), dict):
        search["space"].pop(name, None)


def _search_override(data: dict[str, Any], key: str, sub: str, value: Any) -> None:
    """`search.X`, `search.asha.X`, `search.pbt.X`, `search.pbt.mutations.X`, `search.space.X`
    (X then leaves [fixed] and [grid])."""
    search = _table(data, "search")
    table, dot, name = sub.partition(".")
    if not dot and table in _SEARCH_KEYS and table not in ("space", "asha", "pbt"):
        search[table] = value
        if table == "scheduler":  # a scheduler and its table are one setting: drop the others' tables
            for other in ("asha", "pbt"):
                if other != value:
                    search.pop(other, None)
    elif dot and table == "asha":
        _table(search, "asha")[name] = value
    elif dot and table == "pbt" and name.startswith("mutations."):
        pbt = _table(search, "pbt")
        pbt["mutations"] = dict(_table(pbt, "mutations"))  # a copy: `data` shares the spec's table
        pbt["mutations"][name[len("mutations."):]] = value
    elif dot and table == "pbt":
        _table(search, "pbt")[name] = value
    elif dot and table == "space" and name in _TRIAL_TYPES:
        _table(search, "space")[name] = value
        for section in ("fixed", "grid"):
            if isinstance(data.get(section), dict):
                data[section].pop(name, None)
    elif dot and table == "space":
        raise ConfigError(key, value, f"unknown trial field; known: {', '.join(_TRIAL_TYPES)}")
    else:
        raise ConfigError(key, value, "unknown key; use search.algorithm, search.num_samples, search.seed, search.scheduler, search.asha.X, search.pbt.X, "
                          "search.pbt.mutations.X or search.space.X (X a trial field)")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply `--set` values to parsed TOML (a copy; `data` is not changed).

    Keys and what they set:

    - `X`, `fixed.X` (X a TrialConfig field): pin X to the value. X leaves [grid] if it was an
      axis there; the value is X's value (a list only for a list field such as probe_taus).
    - `grid.X` with a list: make X a grid axis with those values (X leaves [fixed]).
      `grid.X` with anything else: pin X, exactly as `X`.
    - `search.space.X` with a distribution (`{loguniform = [0.1, 10]}`): search X (it leaves
      [fixed] and [grid]).
    - `seeds`, `name`: the top level. `resources.X`, `tune.X`, `search.X` (algorithm,
      num_samples, seed, scheduler), `search.asha.X`, `search.pbt.X`, `search.pbt.mutations.X`: those tables.
    - anything else: ConfigError naming the key.

    `X`, `fixed.X`, `grid.X` and `search.space.X` are one setting: an override replaces everything
    the spec says about X (a pinned X leaves [search.space] too), so it also settles a spec that
    has X both in [grid] and in [fixed]. Every other key
    is its own setting. Each override writes its setting only, so overrides of distinct settings
    give the same result in any order; of two overrides of one setting the later one (in dict
    order, which `parse_overrides` keeps as command-line order) wins. The grid's axis order, which
    orders the trials, does not depend on the overrides' order either: the spec's axes keep their
    places, new axes follow in TrialConfig field order.

    Trial-field values are type-checked here, so an error names the key as it was given; ranges
    are checked when the spec is built.
    """
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if isinstance(data.get("search"), dict):  # nested tables: copy them too
        data["search"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data["search"].items()}
    spec_axes = list(data["grid"]) if isinstance(data.get("grid"), dict) else []
    for key, value in overrides.items():
        section, dot, sub = key.partition(".")
        if not dot and key in ("seeds", "name"):
            data[key] = value
            continue
        if dot and section in ("resources", "tune"):
            _table(data, section)[sub] = value
            continue
        if dot and section == "search":
            _search_override(data, key, sub, value)
            continue
        if not dot and key in _TRIAL_TYPES:
            name, axis = key, False
        elif dot and section in ("fixed", "grid"):
            if sub not in _TRIAL_TYPES:
                raise ConfigError(key, value, f"unknown key; known trial fields: {', '.join(_TRIAL_TYPES)}")
            name, axis = sub, section == "grid" and isinstance(value, list)
        elif dot:
            raise ConfigError(key, value, "unknown key; use a trial field, fixed.X, grid.X, seeds, name, resources.X or tune.X")
        else:
            raise ConfigError(key, value, f"unknown key; known trial fields: {', '.join(_TRIAL_TYPES)}")
        kind = _TRIAL_TYPES[name]
        if axis:
            _table(data, "grid")[name] = [_coerce(key, v, kind) for v in value]
            if isinstance(data.get("fixed"), dict):
                data["fixed"].pop(name, None)
        else:
            _table(data, "fixed")[name] = _coerce(key, value, kind)
            if isinstance(data.get("grid"), dict):
                data["grid"].pop(name, None)
        _unsearch(data, name)
    if isinstance(data.get("grid"), dict):
        grid = data["grid"]
        order = [a for a in spec_axes if a in grid] + [a for a in _TRIAL_TYPES if a in grid and a not in spec_axes]
        data["grid"] = {a: grid[a] for a in order}
    return data
