"""Temperature schedules: step -> tau.

- constant:    tau(t) = tau0
- exponential: tau(t) = max(tau_min, tau0 * exp(-rate * t))
- stepwise:    tau(t) = max(tau_min, tau0 * exp(-rate * N * floor(t / N)))   (Jang et al. 2017,
               who used N in {500, 1000}, rate in {1e-5, 1e-4}, tau_min = 0.5)
- linear:      tau(t) = max(tau_min, tau0 - rate * t)
- relgan_exp, relgan_lin, relgan_log, relgan_sigmoid, relgan_quad, relgan_sqrt: RelGAN's
               inverse-temperature policies (Nie et al. 2019), tau(t) = tau0 / beta(t), beta rising
               from 1 to tau0 / tau_min over N = interval steps (vocab.relgan_beta)

The formulas are written once, in study.vocab.schedule_tau. A `Schedule` is built once (by
`make_schedule`, a named factory, or TrialConfig.schedule_for), validated there, then called as
`schedule(step) -> float`, or `schedule.tensor(step, shape, dtype=..., device=...)` for the same
temperature as a tensor in a population's dtype (how a population anneals its replicas in one op).
`tau_tensor` is the formula on tensors of tau0 and rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from study.vocab import RELGAN_SCHEDULES, SCHEDULES, schedule_tau

__all__ = [
    "SCHEDULES",
    "Schedule",
    "constant",
    "exponential",
    "linear",
    "make_schedule",
    "stepwise",
    "tau_tensor",
]


def _finite_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")


def _finite_nonnegative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")


def validate(kind: str, tau0: float, rate: float, tau_min: float, interval: int) -> None:
    """Raise ValueError naming the first bad field of a schedule."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")
    _finite_positive("tau0", tau0)
    if kind == "constant":
        return
    _finite_nonnegative("rate", rate)
    _finite_positive("tau_min", tau_min)
    if tau_min > tau0:
        raise ValueError(f"tau_min must be <= tau0, got tau_min={tau_min!r} > tau0={tau0!r}")
    if kind == "stepwise" and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1):
        raise ValueError(f"interval must be an integer >= 1, got interval={interval!r}")
    if kind in RELGAN_SCHEDULES and (isinstance(interval, bool) or not isinstance(interval, int) or interval < 2):
        raise ValueError(f"interval (RelGAN's N) must be an integer >= 2, got interval={interval!r}")


def tau_tensor(kind: str, step: int, tau0: Tensor, rate: Tensor, tau_min: float, interval: int = 1) -> Tensor:
    """vocab.schedule_tau at `step` for tensors of tau0 and rate (any matching shape), in their dtype."""
    return schedule_tau(kind, float(step), tau0, rate, tau_min, interval, exp=torch.exp, floor=Tensor.clamp_min)


@dataclass(frozen=True)
class Schedule:
    kind: str  # one of SCHEDULES
    tau0: float  # temperature at step 0
    rate: float = 0.0  # decay per step (exponential/stepwise: in the exponent; linear: tau per step)
    tau_min: float = 0.5  # floor; ignored by constant
    interval: int = 1  # stepwise: tau changes every `interval` steps

    def __post_init__(self) -> None:
        validate(self.kind, self.tau0, self.rate, self.tau_min, self.interval)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return float(schedule_tau(self.kind, step, self.tau0, self.rate, self.tau_min, self.interval))

    def tensor(self, step: int, shape: tuple[int, ...] = (), *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        """tau at `step` as a tensor of `shape`, computed in `dtype` (so in float32 for a float32
        population: not the float64 value rounded)."""
        _check_step(step)
        tau0, rate = _filled(self.tau0, self.rate, tuple(shape), dtype, str(device or "cpu"))
        return tau_tensor(self.kind, step, tau0, rate, self.tau_min, self.interval)


@functools.lru_cache(maxsize=64)
def _filled(tau0: float, rate: float, shape: tuple[int, ...], dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor]:
    """tau0 and rate as tensors of `shape`, made once (a population asks for them every step).
    tau_tensor never writes to its inputs, so sharing them is safe."""
    return torch.full(shape, tau0, dtype=dtype, device=device), torch.full(shape, rate, dtype=dtype, device=device)


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got step={step!r}")


def make_schedule(kind: str, tau0: float, rate: float = 0.0, tau_min: float = 0.5, interval: int = 1) -> Schedule:
    return Schedule(kind, tau0, rate, tau_min, interval)


def constant(tau0: float) -> Schedule:
    return Schedule("constant", tau0)


def exponential(tau0: float, rate: float, tau_min: float = 0.5) -> Schedule:
    return Schedule("exponential", tau0, rate, tau_min)


def stepwise(tau0: float, rate: float, interval: int, tau_min: float = 0.5) -> Schedule:
    return Schedule("stepwise", tau0, rate, tau_min, interval)


def linear(tau0: float, rate: float, tau_min: float = 0.5) -> Schedule:
    return Schedule("linear", tau0, rate, tau_min)
