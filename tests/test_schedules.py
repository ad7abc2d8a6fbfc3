"""Temperature schedules against independent formulas (math.exp, written out here) and edge cases.

Deterministic tests. Tolerances are in ulps and say why: the study code evaluates the formula of
study.vocab.schedule_tau, which may associate products in another order than the reference
(stepwise), and on tensors with torch's exp kernels, which may differ from libm's math.exp in the
last bit; `Schedule.tensor` in float32 also rounds tau0, rate and every operation to float32.
"""

from __future__ import annotations

import math
import re
import sys

import pytest
import torch

from study.schedules import SCHEDULES, Schedule, constant, exponential, linear, make_schedule, stepwise, tau_tensor

EPS = sys.float_info.epsilon
HUGE_STEPS = [10**9, 10**18]


def reference(kind: str, step: int, tau0: float, rate: float, tau_min: float, interval: int) -> float:
    """The schedule formulas of DESIGN.md, written independently of study.schedules."""
    if kind == "constant":
        return tau0
    if kind == "exponential":
        return max(tau_min, tau0 * math.exp(-rate * step))
    if kind == "stepwise":
        return max(tau_min, tau0 * math.exp(-rate * interval * math.floor(step / interval)))
    if kind == "linear":
        return max(tau_min, tau0 - rate * step)
    raise AssertionError(kind)


# (kind, tau0, rate, tau_min, interval): rates chosen so that the floor is reached mid-range.
CASES = {
    "constant": ("constant", 0.7, 0.0, 0.5, 1),
    "exponential": ("exponential", 5.0, 1e-3, 0.5, 1),
    "stepwise-jang": ("stepwise", 1.0, 1e-4, 0.5, 500),  # Jang et al.'s settings
    "stepwise-fast": ("stepwise", 2.0, 3e-3, 0.2, 100),
    "linear": ("linear", 3.0, 1e-3, 0.2, 1),
}


def steps_for(interval: int) -> list[int]:
    mids = [2, 7, 123, 999, 1000, 1001, 2 * interval + 7, 5 * interval, 2500, 10**4, 123_456]
    return sorted({0, 1, max(interval - 1, 0), interval, interval + 1, *mids})


@pytest.mark.parametrize("case", sorted(CASES))
def test_schedule_matches_independent_formula(case):
    kind, tau0, rate, tau_min, interval = CASES[case]
    schedule = make_schedule(kind, tau0, rate, tau_min, interval)
    for step in steps_for(interval):
        want = reference(kind, step, tau0, rate, tau_min, interval)
        got = schedule(step)
        assert isinstance(got, float)
        # exp(x) from two libraries: each within 1 ulp, so 2 ulp apart; the exponent itself may
        # be rounded differently (rate * N * floor(t/N) vs rate * (N * floor(t/N))), which moves
        # exp(x) by |x| ulp with |x| < 10 before the floor binds: rel 16 eps covers both.
        assert got == pytest.approx(want, rel=16 * EPS, abs=0), step
        if want == tau_min or kind == "constant":
            assert got == want, step  # a clamped (or constant) value is returned exactly
    assert schedule(0) == tau0  # exp(0) == 1 and 0 * rate == 0 exactly


@pytest.mark.parametrize("step", HUGE_STEPS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_huge_steps_reach_the_floor_exactly(case, step):
    kind, tau0, rate, tau_min, interval = CASES[case]
    value = make_schedule(kind, tau0, rate, tau_min, interval)(step)
    assert math.isfinite(value)
    # Exact: exp underflows to 0 (or tau0 - rate * step is hugely negative), then max -> tau_min.
    assert value == (tau0 if kind == "constant" else tau_min)


def test_no_decay_at_rate_zero():
    for kind in ("exponential", "stepwise", "linear"):
        schedule = make_schedule(kind, 2.0, 0.0, 0.5, 10)
        for step in [0, 1, 10**6, 10**18]:
            assert schedule(step) == 2.0  # exp(-0) == 1 and 2 - 0 == 2 exactly


@pytest.mark.parametrize("interval", [1, 7, 500])
def test_stepwise_is_piecewise_constant(interval):
    schedule = stepwise(1.5, 0.05 / interval, interval, tau_min=0.1)  # 10 blocks: 1.5 e^-0.5 > 0.1
    for block in [0, 1, 3, 10]:
        start = block * interval
        values = {schedule(start + j) for j in range(interval)}
        assert len(values) == 1  # bitwise: every step of a block computes the same exponent
        if block and interval > 1:
            assert schedule(start - 1) > schedule(start)  # it does step down at the boundary
    # interval 1 is the exponential schedule (up to exp kernel rounding: 16 eps as above)
    if interval == 1:
        for step in [0, 5, 123, 4567]:
            assert schedule(step) == pytest.approx(exponential(1.5, 0.05, 0.1)(step), rel=16 * EPS)


def test_named_factories_equal_make_schedule():
    assert constant(0.7) == Schedule("constant", 0.7)
    assert exponential(5.0, 1e-3, 0.4) == make_schedule("exponential", 5.0, 1e-3, 0.4)
    assert stepwise(1.0, 1e-4, 500, 0.5) == make_schedule("stepwise", 1.0, 1e-4, 0.5, 500)
    assert linear(3.0, 1e-3, 0.2) == make_schedule("linear", 3.0, 1e-3, 0.2)
    relgan = {f"relgan_{p}" for p in ("exp", "lin", "log", "sigmoid", "quad", "sqrt")}
    assert set(SCHEDULES) == {"constant", "exponential", "stepwise", "linear"} | relgan


@pytest.mark.parametrize("kind", SCHEDULES)
def test_tau_tensor_equals_per_replica_schedules(kind):
    tau0 = torch.tensor([5.0, 2.0, 1.0, 0.6], dtype=torch.float64)
    rate = torch.tensor([1e-3, 0.0, 1e-2, 5e-4], dtype=torch.float64)
    tau_min, interval = 0.5, 50
    for step in [0, 1, interval - 1, interval, 77, 1000, 10**5, 10**9, 10**18]:
        got = tau_tensor(kind, step, tau0, rate, tau_min, interval)
        assert got.shape == (4,) and got.dtype == torch.float64
        want = [Schedule(kind, float(t), float(r), tau_min, interval)(step) for t, r in zip(tau0, rate)]
        # Vectorised and scalar exp kernels may differ in the last bit: 4 ulp relative.
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=4 * EPS, atol=0)
    # Broadcast shapes, e.g. [R, 1] for a population's per-replica temperature.
    got = tau_tensor(kind, 10, tau0.view(4, 1), rate.view(4, 1), tau_min, interval)
    assert got.shape == (4, 1)


BAD = [
    (dict(kind="exponential", tau0=0, rate=1e-3), "tau0=0"),
    (dict(kind="exponential", tau0=float("nan"), rate=1e-3), "tau0=nan"),
    (dict(kind="constant", tau0=-1.0), "tau0=-1.0"),
    (dict(kind="linear", tau0=float("inf"), rate=1e-3), "tau0=inf"),
    (dict(kind="exponential", tau0=1.0, rate=-1), "rate=-1"),
    (dict(kind="linear", tau0=1.0, rate=float("nan")), "rate=nan"),
    (dict(kind="exponential", tau0=1.0, rate=1e-3, tau_min=0), "tau_min=0"),
    (dict(kind="stepwise", tau0=1.0, rate=1e-3, tau_min=-0.5), "tau_min=-0.5"),
    (dict(kind="stepwise", tau0=1.0, rate=1e-3, interval=0), "interval=0"),
    (dict(kind="stepwise", tau0=1.0, rate=1e-3, interval=2.5), "interval=2.5"),
    (dict(kind="stepwise", tau0=1.0, rate=1e-3, interval=True), "interval=True"),
    (dict(kind="exponential", tau0=1.0, rate=1e-3, tau_min=2.0), "tau_min=2.0"),
    (dict(kind="cosine", tau0=1.0), "'cosine'"),
]


@pytest.mark.parametrize("kwargs,shown", BAD, ids=[s for _, s in BAD])
def test_validation_names_field_and_value(kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        make_schedule(**kwargs)
    with pytest.raises(ValueError, match=re.escape(shown)):
        Schedule(**kwargs)


def test_tau_min_above_tau0_names_both():
    with pytest.raises(ValueError) as info:
        exponential(1.0, 1e-3, tau_min=2.0)
    assert "tau_min=2.0" in str(info.value) and "tau0=1.0" in str(info.value)


def test_unknown_kind_lists_known():
    with pytest.raises(ValueError) as info:
        make_schedule("cosine", 1.0)
    for kind in SCHEDULES:
        assert kind in str(info.value)
    with pytest.raises(ValueError, match="'cosine'"):
        tau_tensor("cosine", 0, torch.ones(2), torch.ones(2), 0.5)


@pytest.mark.parametrize("step,shown", [(-1, "step=-1"), (1.5, "step=1.5"), (True, "step=True"), ("3", "step='3'")])
def test_bad_step_is_rejected(step, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        exponential(1.0, 1e-3)(step)


def test_schedule_is_frozen():
    schedule = exponential(1.0, 1e-3)
    with pytest.raises(AttributeError):
        schedule.tau0 = 2.0  # validated once at construction, so it must not change afterwards


@pytest.mark.parametrize("case", sorted(CASES))
def test_tensor_form_is_the_formula_in_the_dtype(case):
    """Schedule.tensor: tau_tensor on tensors of tau0 and rate in the requested dtype (how a
    population anneals: its temperatures in float32 are computed in float32, not rounded from
    float64), the same value in every entry."""
    kind, tau0, rate, tau_min, interval = CASES[case]
    schedule = make_schedule(kind, tau0, rate, tau_min, interval)
    eps32 = torch.finfo(torch.float32).eps
    for step in steps_for(interval):
        t64 = schedule.tensor(step, (3,), dtype=torch.float64)
        t32 = schedule.tensor(step, (3,), dtype=torch.float32)
        assert t64.shape == t32.shape == (3,) and t32.dtype == torch.float32
        assert torch.equal(t32, t32[:1].expand(3))
        full = lambda v: torch.full((3,), v, dtype=torch.float32)  # noqa: E731
        assert torch.equal(t32, tau_tensor(kind, step, full(tau0), full(rate), tau_min, interval))
        # float64 tensor exp vs math.exp, and the association: as in the scalar test, 16 eps.
        assert float(t64[0]) == pytest.approx(schedule(step), rel=16 * EPS, abs=0), step
        # float32: tau0 and rate rounded (eps32 / 2 each), exp's argument |x| < 3 before the floor
        # binds (error |x| eps32 / 2), exp and products rounded: below 8 eps32 tau0 absolute.
        assert abs(float(t32[0]) - schedule(step)) <= 8 * eps32 * tau0, step
    with pytest.raises(ValueError, match="step=-1"):
        schedule.tensor(-1)


# ---------------------------------------------------------------- RelGAN's policies

# Nie et al. 2019 (RelGAN), their Table and code, written out here independently of vocab.relgan_beta:
# beta at step n of N, rising from 1 to beta_max.
RELGAN_REFERENCE = {
    "exp": lambda n, N, b: b ** (n / N),
    "lin": lambda n, N, b: 1 + n * (b - 1) / (N - 1),
    "log": lambda n, N, b: 1 + (b - 1) * math.log(n + 1) / math.log(N),
    "sigmoid": lambda n, N, b: 1 + (b - 1) / (1 + math.exp((N / 2 - n) * 20 / N)),
    "quad": lambda n, N, b: 1 + (b - 1) * n**2 / (N - 1) ** 2,
    "sqrt": lambda n, N, b: 1 + (b - 1) * math.sqrt(n) / math.sqrt(N - 1),
}


@pytest.mark.parametrize("policy", sorted(RELGAN_REFERENCE))
@pytest.mark.parametrize("beta_max", [10.0, 1000.0])
def test_relgan_schedules_follow_the_papers_formulas(policy, beta_max):
    N = 500
    schedule = Schedule(f"relgan_{policy}", 1.0, 0.0, 1.0 / beta_max, N)  # tau0 = 1: the paper's beta
    for n in (0, 1, 7, N // 2, N - 2, N - 1):
        beta = RELGAN_REFERENCE[policy](n, N, beta_max)
        expected = max(1.0 / beta_max, 1.0 / beta)
        # Float64 on both sides; the formulas may associate differently: a few ulps.
        assert schedule(n) == pytest.approx(expected, rel=1e-12), (policy, n)
    assert schedule(0) == pytest.approx(1.0 if policy != "sigmoid" else 1 / RELGAN_REFERENCE["sigmoid"](0, N, beta_max))
    # After N steps beta stays where it is at step N: beta_max (tau at the floor), except for the
    # sigmoid, which is 1/(1 + e^-10) of the way there at N.
    assert schedule(10 * N) == schedule(N)
    if policy != "sigmoid":
        assert schedule(N) == pytest.approx(1.0 / beta_max, rel=1e-12)


@pytest.mark.parametrize("policy", sorted(RELGAN_REFERENCE))
def test_relgan_scales_to_any_start_temperature_and_works_on_tensors(policy):
    tau0, tau_min, N = 2.0, 0.02, 300
    schedule = Schedule(f"relgan_{policy}", tau0, 0.0, tau_min, N)
    base = Schedule(f"relgan_{policy}", 1.0, 0.0, tau_min / tau0, N)
    for n in (0, 13, 150, 299, 1000):
        assert schedule(n) == pytest.approx(tau0 * base(n), rel=1e-12)  # tau0 / beta with beta_max = tau0 / tau_min
        t = schedule.tensor(n, (3,), dtype=torch.float64)
        assert torch.allclose(t, torch.full((3,), schedule(n), dtype=torch.float64), rtol=1e-12, atol=0)


def test_relgan_needs_n_of_at_least_two():
    with pytest.raises(ValueError, match="interval"):
        Schedule("relgan_lin", 1.0, 0.0, 0.1, 1)
