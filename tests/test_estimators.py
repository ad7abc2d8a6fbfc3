"""Statistical tests of study.estimators and study.probes.

Every random test uses a fixed torch.Generator, so its outcome is deterministic; each assertion
states its level (the chance that a correct implementation fails it for a random seed) or, for
deterministic comparisons, why its floating-point tolerance is what it is. Mean comparisons are
z-tests at 4 standard errors (two-sided level 6.3e-5 per coordinate), so even across the few
hundred coordinates tested here the family-wise level stays around 1%-or-less, and the sample
sizes make them sensitive to biases of a few percent of the gradient.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import study.estimators as estimators_module
from study.estimators import ESTIMATORS, estimate_gradients, exact_gradient
from study.estimators import fresh_noise
from study.gumbel import gumbel_from_exponential, gumbel_softmax
from study.probes import STAT_NAMES, gradient_stats
from study.vocab import ESTIMATORS_INFO

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
Z = 4.0  # z-test threshold: two-sided normal level 6.3e-5


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Loss functions. Each maps (relaxed) one-hots [..., K] to losses [...]; the leading dims are
# sample dims, so they work for every estimator and for exact_gradient's [K, K] vertices.


def linear(c: torch.Tensor):
    return lambda y: (y * c).sum(-1)


def quadratic(a: torch.Tensor, c: torch.Tensor):
    return lambda y: torch.einsum("...i,ij,...j->...", y, a, y) + (y * c).sum(-1)


def rand(*shape: int, seed: int) -> torch.Tensor:
    """Fixed problem data (weights, logits), drawn apart from the estimators' generators."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


LOGIT_CASES = {
    "K2": [0.0, 1.0],
    "K4": [1.0, 0.0, -0.5, 0.3],
    "K5-skewed": [3.0, -2.0, 0.0, 0.0, 1.0],
    "K10": (torch.linspace(-1.5, 1.5, 10) ** 3 / 2).tolist(),
}


def case_logits(case: str) -> torch.Tensor:
    return torch.tensor(LOGIT_CASES[case], dtype=F64)


def make_f(kind: str, k: int):
    c = rand(k, seed=100 + k)
    if kind == "linear":
        return linear(c)
    a = rand(k, k, seed=200 + k)
    return quadratic(a + a.T, c)


def z_scores(estimates: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(mean - target) / SE per coordinate, SE from the estimates' own spread."""
    n = estimates.shape[0]
    se = estimates.std(0) / math.sqrt(n)
    diff = estimates.mean(0) - target
    # A coordinate with zero spread must match exactly (guards 0/0).
    return torch.where(se > 0, diff / se.clamp_min(1e-300), torch.where(diff == 0, 0.0, math.inf))


def two_sample_mean_z(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    return (a.mean(0) - b.mean(0)) / se


def var_and_se(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate sample variance and its standard error sqrt((m4 - var^2) / n)."""
    n = x.shape[0]
    centred = x - x.mean(0)
    var = centred.square().sum(0) / (n - 1)
    m4 = centred.pow(4).mean(0)
    return var, ((m4 - var.square()).clamp_min(0) / n).sqrt()


def trace_var_and_se(x: torch.Tensor) -> tuple[float, float]:
    """Trace of the covariance and its standard error (the spread of ||g - mean||^2 / sqrt(n))."""
    sq = (x - x.mean(0)).square().sum(-1)  # [N]
    n = x.shape[0]
    return float(sq.sum() / (n - 1)), float(sq.std() / math.sqrt(n))


# ---------------------------------------------------------------------------------------------
# exact_gradient: deterministic, against closed forms and autograd


@pytest.mark.parametrize("case", sorted(LOGIT_CASES))
def test_exact_gradient_linear_closed_form(case):
    logits = case_logits(case)
    c = rand(logits.numel(), seed=1)
    p = torch.softmax(logits, -1)
    expected = p * (c - (p * c).sum())
    # Same quantities summed in possibly different order: a few ulp of the O(1) entries.
    torch.testing.assert_close(exact_gradient(logits, linear(c)), expected, rtol=0, atol=8 * EPS64)
    # float32 follows the dtype and agrees to float32 rounding (8 eps32 of O(1) entries).
    got32 = exact_gradient(logits.float(), linear(c.float()))
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, expected.float(), rtol=0, atol=8 * torch.finfo(torch.float32).eps)


def autograd_exact(logits: torch.Tensor, f) -> torch.Tensor:
    """d/dlogits sum_k softmax_k f(e_k), by autograd (independent of exact_gradient's formula)."""
    theta = logits.clone().requires_grad_(True)
    k = logits.shape[-1]
    values = torch.stack([f(torch.eye(k, dtype=F64)[j].expand_as(logits)) for j in range(k)], -1)  # [*B, K]
    (grad,) = torch.autograd.grad((torch.softmax(theta, -1) * values).sum(), theta)
    return grad


@pytest.mark.parametrize("case", sorted(LOGIT_CASES))
def test_exact_gradient_matches_autograd(case):
    logits = case_logits(case)
    k = logits.numel()
    c = rand(k, seed=2)
    f = lambda y: torch.sin(3 * (y * c).sum(-1)) + make_f("quadratic", k)(y)  # noqa: E731
    # Two exact computations in float64 that differ only in rounding: 1e-12 absolute is
    # ~1e4 ulp of the O(1) entries, far below any real error (which would be O(p)).
    torch.testing.assert_close(exact_gradient(logits, f), autograd_exact(logits, f), rtol=0, atol=1e-12)


def test_exact_gradient_batched_rows():
    r, k = 3, 5
    logits = rand(r, k, seed=3)
    w, v = rand(r, k, seed=4), rand(r, k, seed=5)
    f = lambda y: (y * w).sum(-1) + (y * v).sum(-1).square()  # noqa: E731  per-row weights
    got = exact_gradient(logits, f)
    assert got.shape == (r, k)
    for i in range(r):
        fi = lambda y, i=i: (y * w[i]).sum(-1) + (y * v[i]).sum(-1).square()  # noqa: E731
        torch.testing.assert_close(got[i], exact_gradient(logits[i], fi), rtol=0, atol=8 * EPS64)
    torch.testing.assert_close(got, autograd_exact(logits, f), rtol=0, atol=1e-12)  # as above


def test_exact_estimator_is_exact_gradient_repeated():
    logits = case_logits("K4")
    f = make_f("quadratic", 4)
    est = estimate_gradients("exact", logits, f, tau=1.0, num_estimates=5, generator=seeded(0))
    assert est.shape == (5, 4)
    assert torch.equal(est, exact_gradient(logits, f).expand(5, 4))  # bitwise: the same tensor
    assert float(gradient_stats(est, exact_gradient(logits, f))["mse"]) == 0.0


# ---------------------------------------------------------------------------------------------
# reinforce: unbiased, leave-one-out baseline


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("kind", ["linear", "quadratic"])
@pytest.mark.parametrize("case", sorted(LOGIT_CASES))
def test_reinforce_agrees_with_exact(case, kind, samples):
    logits = case_logits(case)
    f = make_f(kind, logits.numel())
    n = 20_000
    est = estimate_gradients("reinforce", logits, f, tau=1.0, num_estimates=n, samples_per_estimate=samples, generator=seeded(10))
    assert est.shape == (n, logits.numel())
    # Unbiased: every coordinate's mean within 4 SE of exact (level 6.3e-5 each; 336 coordinates
    # over this parameterisation -> family level ~2%, but deterministic with the fixed seed).
    assert float(z_scores(est, exact_gradient(logits, f)).abs().max()) < Z


def test_reinforce_leave_one_out_baseline():
    logits = case_logits("K4")
    c = rand(4, seed=11)
    f = linear(c)
    f_offset = lambda y: f(y) + 100.0  # noqa: E731  shifts every loss; the gradient is unchanged
    exact = exact_gradient(logits, f)
    torch.testing.assert_close(exact_gradient(logits, f_offset), exact, rtol=0, atol=1e-12)
    n = 20_000
    one = estimate_gradients("reinforce", logits, f_offset, tau=1.0, num_estimates=n, samples_per_estimate=1, generator=seeded(12))
    four = estimate_gradients("reinforce", logits, f_offset, tau=1.0, num_estimates=n, samples_per_estimate=4, generator=seeded(13))
    # Both unbiased: 4 SE per coordinate (level 6.3e-5 each).
    assert float(z_scores(one, exact).abs().max()) < Z
    assert float(z_scores(four, exact).abs().max()) < Z
    var_one, se_one = trace_var_and_se(one)
    var_four, se_four = trace_var_and_se(four)
    # Averaging 4 samples alone would divide the variance by 4; the baseline also removes the
    # offset's contribution (~100^2 * Var(score)), so S=4 must beat S=1 / 4 by a factor 10. Both
    # traces are known to a few % (their SEs), so the margin is >> 4 SE.
    assert var_four < var_one / 40
    assert var_one / 40 - var_four > Z * (se_one / 40 + se_four)
    # With the baseline the offset cancels exactly up to rounding: same seed, same estimates.
    # Tolerance: losses ~100 carry rounding ~100 * eps ~ 2e-14, times O(1) scores: 1e-12.
    plain = estimate_gradients("reinforce", logits, f, tau=1.0, num_estimates=100, samples_per_estimate=4, generator=seeded(14))
    shifted = estimate_gradients("reinforce", logits, f_offset, tau=1.0, num_estimates=100, samples_per_estimate=4, generator=seeded(14))
    torch.testing.assert_close(shifted, plain, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# gumbel_rao (Paulus et al. 2021)


def test_gumbel_rao_k1_matches_hard_in_distribution():
    logits = case_logits("K4")
    f = make_f("quadratic", 4)
    n, tau = 20_000, 0.5
    hard = estimate_gradients("hard", logits, f, tau=tau, num_estimates=n, generator=seeded(20))
    rao1 = estimate_gradients("gumbel_rao", logits, f, tau=tau, num_estimates=n, generator=seeded(21), k=1)
    # Independent seeds, so two-sample tests apply. Means: 4 SE of the difference per coordinate
    # (level 6.3e-5 each).
    assert float(two_sample_mean_z(hard, rao1).abs().max()) < Z
    # Per-coordinate variances: 4 SE of the difference, SE(var) = sqrt((m4 - var^2) / n) from
    # each sample's fourth moment (level ~6.3e-5 each, normal approximation at n = 20,000).
    vh, sh = var_and_se(hard)
    vr, sr = var_and_se(rao1)
    assert bool(((vh - vr).abs() < Z * (sh.square() + sr.square()).sqrt()).all())


def test_gumbel_rao_many_samples_reduce_variance_at_low_tau():
    logits = case_logits("K4")
    f = make_f("quadratic", 4)
    n, tau = 4000, 0.1
    hard = estimate_gradients("hard", logits, f, tau=tau, num_estimates=n, generator=seeded(22))
    rao = estimate_gradients("gumbel_rao", logits, f, tau=tau, num_estimates=n, generator=seeded(23), k=100)
    # Same expectation (Gumbel-Rao is E[hard | sampled index]): 4 SE per coordinate.
    assert float(two_sample_mean_z(hard, rao).abs().max()) < Z
    # Lower variance, by a margin: at least halved, and the gap exceeds 4 SE of the two traces
    # (each SE = spread of ||g - mean||^2 / sqrt(n)); observed reduction is ~10x.
    var_h, se_h = trace_var_and_se(hard)
    var_r, se_r = trace_var_and_se(rao)
    assert var_r < var_h / 2
    assert var_h - var_r > Z * (se_h + se_r)


def test_gumbel_rao_rejects_bad_k():
    logits = case_logits("K4")
    for k in (0, -1, 2.5, True, None, "3"):
        with pytest.raises(ValueError, match=re.escape(f"k={k!r}")):
            estimate_gradients("gumbel_rao", logits, make_f("linear", 4), tau=1.0, num_estimates=2, generator=seeded(0), k=k)


# ---------------------------------------------------------------------------------------------
# soft: the bias / variance tradeoff in tau


def test_soft_bias_falls_and_variance_rises_as_tau_falls():
    logits = case_logits("K4")
    f = make_f("linear", 4)
    exact = exact_gradient(logits, f)
    n = 200_000
    taus = [5.0, 2.0, 1.0, 0.5, 0.2]
    bias2, bias2_se, var, var_se = [], [], [], []
    for i, tau in enumerate(taus):
        est = estimate_gradients("soft", logits, f, tau=tau, num_estimates=n, generator=seeded(30 + i))
        stats = gradient_stats(est, exact)
        b, floor = float(stats["bias2"]), float(stats["bias2_floor"])
        # bias2 = ||b + e||^2 with e ~ N(0, Sigma / n): Var = 4 b'Sigma b / n + 2 tr(Sigma^2) / n^2
        # <= 4 * bias2 * floor + 2 * floor^2 (lambda_max <= trace), an upper bound on its SE.
        bias2.append(b)
        bias2_se.append(math.sqrt(4 * b * floor + 2 * floor**2))
        v, se = trace_var_and_se(est)
        torch.testing.assert_close(torch.tensor(v, dtype=F64), stats["variance"], rtol=1e-10, atol=0)  # same statistic
        var.append(v)
        var_se.append(se)
        if tau > taus[-1]:
            # The bias each fall starts from is resolvable: far above the noise floor variance / n
            # (observed 100x to 1e8x), so the fall is a fall of the bias, not of the noise. The
            # last bias2 (~5e-5 at tau = 0.2, bias ~ tau^2 while the floor grows like 1/tau) sits
            # only a few floors up, so it is only ever the smaller side of a comparison.
            assert b > 30 * floor, tau
    for i in range(len(taus) - 1):
        # Consecutive differences exceed 4 (bound on) SE of each side: level < 6.3e-5 each.
        assert bias2[i] - bias2[i + 1] > Z * (bias2_se[i] + bias2_se[i + 1]), taus[i + 1]
        assert var[i + 1] - var[i] > Z * (var_se[i] + var_se[i + 1]), taus[i + 1]


# ---------------------------------------------------------------------------------------------
# One batched pass equals a loop of single backward passes


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("name", ["soft", "hard"])
def test_batched_estimates_equal_a_loop_of_backward_passes(name, samples):
    logits = case_logits("K5-skewed")
    k, n, tau, seed = 5, 12, 0.7, 40
    f = make_f("quadratic", k)
    calls = []

    def counted(y):
        calls.append(y.shape)
        return f(y)

    batched = estimate_gradients(name, logits, counted, tau=tau, num_estimates=n, samples_per_estimate=samples, generator=seeded(seed))
    assert batched.shape == (n, k)
    assert len(calls) == 1 and calls[0] == (n, samples, k)  # one batched call of f, no loop
    # The batched call draws its Exp(1) numbers [N, S, K] from the generator; replay them.
    noise = gumbel_from_exponential(fresh_noise(seeded(seed), F64, None)("gumbel", (n, samples, k)))
    for i in range(n):
        theta = logits.clone().requires_grad_(True)
        losses = [f(gumbel_softmax(theta, tau, hard=name == "hard", noise=noise[i, s])) for s in range(samples)]
        (grad,) = torch.autograd.grad(sum(losses) / samples, theta)
        # Same float64 arithmetic, batched vs one at a time (summation order may differ): 1e-12
        # absolute is ~1e4 ulp of these O(1)-O(10) gradients and far below any real error.
        torch.testing.assert_close(batched[i], grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["soft", "hard"])
def test_batch_dims_equal_per_row_calls(name):
    r, k, n, seed = 3, 4, 6, 41
    logits = rand(r, k, seed=42)
    w, v = rand(r, k, seed=43), rand(r, k, seed=44)
    f = lambda y: (y * w).sum(-1) + (y * v).sum(-1).square()  # noqa: E731  per-row weights
    tau = torch.tensor([[0.3], [1.0], [2.0]], dtype=F64)  # [R, 1], one temperature per row
    batched = estimate_gradients(name, logits, f, tau=tau, num_estimates=n, generator=seeded(seed))
    assert batched.shape == (n, r, k)
    noise = gumbel_from_exponential(fresh_noise(seeded(seed), F64, None)("gumbel", (n, 1, r, k)))
    for i in range(n):
        for j in range(r):
            theta = logits[j].clone().requires_grad_(True)
            y = gumbel_softmax(theta, float(tau[j]), hard=name == "hard", noise=noise[i, 0, j])
            loss = (y * w[j]).sum(-1) + (y * v[j]).sum(-1).square()
            (grad,) = torch.autograd.grad(loss, theta)
            torch.testing.assert_close(batched[i, j], grad, rtol=0, atol=1e-12)  # as above


def test_batch_dims_for_the_other_estimators():
    r, k, n = 3, 4, 10_000
    logits = rand(r, k, seed=45)
    w, v = rand(r, k, seed=46), rand(r, k, seed=47)
    f = lambda y: (y * w).sum(-1) + (y * v).sum(-1).square()  # noqa: E731
    tau = torch.tensor([[0.3], [1.0], [2.0]], dtype=F64)
    exact = exact_gradient(logits, f)  # [R, K]
    assert torch.equal(estimate_gradients("exact", logits, f, tau=tau, num_estimates=3), exact.expand(3, r, k))
    rf = estimate_gradients("reinforce", logits, f, tau=tau, num_estimates=n, samples_per_estimate=2, generator=seeded(48))
    assert rf.shape == (n, r, k)
    assert float(z_scores(rf, exact).abs().max()) < Z  # unbiased per row: 4 SE, level 6.3e-5 each
    # gumbel_rao has hard's expectation row by row (each row with its own tau): 4 SE per coordinate.
    rao = estimate_gradients("gumbel_rao", logits, f, tau=tau, num_estimates=n, generator=seeded(49), k=5)
    hard = estimate_gradients("hard", logits, f, tau=tau, num_estimates=n, generator=seeded(50))
    assert rao.shape == (n, r, k)
    assert float(two_sample_mean_z(rao, hard).abs().max()) < Z


# ---------------------------------------------------------------------------------------------
# Chunking


# Estimators whose estimate is a function of finitely many categories (no continuous noise).
FINITELY_VALUED = {"reinforce", "unordered_set"} | {n for n, i in ESTIMATORS_INFO.items() if i.exact_moments}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_chunking_keeps_shapes_and_statistics(name, monkeypatch):
    r, k, n, samples, chunk = 2, 4, 2000, 2, 97
    logits = rand(r, k, seed=60)
    w = rand(r, k, seed=61)
    f = lambda y: (y * w).sum(-1).square()  # noqa: E731
    options = {"gumbel_rao": {"k": 3}, "unordered_set": {"k": 2}}.get(name, {})  # unordered_set at k = K: exact, no variance
    unchunked = estimate_gradients(name, logits, f, tau=0.7, num_estimates=n, samples_per_estimate=samples, generator=seeded(62), **options)

    per_estimate = samples * logits.numel() * (options["k"] if name == "gumbel_rao" else 1)  # its widest draw
    monkeypatch.setattr(estimators_module, "_CHUNK_ELEMENTS", chunk * per_estimate)  # 21 chunks
    calls = []
    inner = ESTIMATORS[name]

    def counting(*args, **kwargs):
        calls.append(kwargs["num_estimates"])
        return inner(*args, **kwargs)

    monkeypatch.setitem(ESTIMATORS, name, counting)
    chunked = estimate_gradients(name, logits, f, tau=0.7, num_estimates=n, samples_per_estimate=samples, generator=seeded(63), **options)
    assert chunked.shape == (n, r, k)
    assert calls == [chunk] * (n // chunk) + [n % chunk]  # really chunked, last one the remainder
    if name == "exact":
        assert torch.equal(chunked, unchunked)
        return
    if name not in FINITELY_VALUED:  # these take finitely many values; the others are continuous
        # Every chunk draws fresh noise: no estimate repeats (a chunk replaying the generator
        # state would duplicate whole blocks).
        assert torch.unique(chunked.flatten(1), dim=0).shape[0] == n
    # Same distribution as unchunked: means within 4 SE of the difference (level 6.3e-5 each),
    # trace variances within 4 SE of their difference.
    assert float(two_sample_mean_z(chunked, unchunked).abs().max()) < Z
    for j in range(r):
        va, sa = trace_var_and_se(chunked[:, j])
        vb, sb = trace_var_and_se(unchunked[:, j])
        assert abs(va - vb) < Z * math.hypot(sa, sb)
    if name == "reinforce":
        assert float(z_scores(chunked, exact_gradient(logits, f)).abs().max()) < Z


# ---------------------------------------------------------------------------------------------
# Argument validation


def test_unknown_estimator_lists_known_names():
    with pytest.raises(ValueError) as info:
        estimate_gradients("straight_through", case_logits("K4"), make_f("linear", 4), tau=1.0, num_estimates=2)
    message = str(info.value)
    assert "'straight_through'" in message
    for name in ("soft", "hard", "gumbel_rao", "reinforce", "exact"):
        assert name in ESTIMATORS and name in message


@pytest.mark.parametrize("name", ["soft", "hard", "reinforce", "exact"])
def test_unknown_option_is_named(name):
    with pytest.raises(ValueError, match="'k'"):
        estimate_gradients(name, case_logits("K4"), make_f("linear", 4), tau=1.0, num_estimates=2, k=3)
    with pytest.raises(ValueError, match="'temperature'"):
        estimate_gradients(name, case_logits("K4"), make_f("linear", 4), tau=1.0, num_estimates=2, temperature=3)


@pytest.mark.parametrize(
    "field,value", [("num_estimates", 0), ("num_estimates", -3), ("num_estimates", 2.0), ("samples_per_estimate", 0), ("samples_per_estimate", True)]
)
def test_bad_counts_raise(field, value):
    kwargs = {"num_estimates": 4, "samples_per_estimate": 1, field: value}
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}")):
        estimate_gradients("soft", case_logits("K4"), make_f("linear", 4), tau=1.0, **kwargs)


@pytest.mark.parametrize("name", ["soft", "hard", "gumbel_rao"])
@pytest.mark.parametrize("tau,shown", [(0.0, "tau=0.0"), (float("nan"), "tau=nan"), (torch.tensor([[1.0], [-1.0]]), "tau=-1.0")])
def test_estimators_validate_tau(name, tau, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        estimate_gradients(name, rand(2, 4, seed=0), lambda y: y.sum(-1), tau=tau, num_estimates=2)


def test_logits_need_two_categories():
    with pytest.raises(ValueError, match="last dim"):
        estimate_gradients("soft", torch.zeros(3, 1), lambda y: y.sum(-1), tau=1.0, num_estimates=2)


# ---------------------------------------------------------------------------------------------
# gradient_stats on hand-made estimates


def test_gradient_stats_hand_computed():
    estimates = torch.tensor([[1.0, 2.0], [3.0, 4.0], [2.0, 0.0]], dtype=F64)  # N = 3, K = 2
    exact = torch.tensor([1.0, 0.0], dtype=F64)
    # mean = [2, 2]; bias2 = (2-1)^2 + (2-0)^2 = 5
    # unbiased variances: column 0 (1, 3, 2) -> 2/2 = 1; column 1 (2, 4, 0) -> 8/2 = 4; trace 5
    # mse = 10; cosine = (2*1 + 2*0) / (sqrt(8) * 1) = 1/sqrt(2); rel_rmse = sqrt(10) / 1;
    # bias2_floor = 5 / 3.
    expected = {"bias2": 5.0, "variance": 5.0, "mse": 10.0, "cosine": 1 / math.sqrt(2), "rel_rmse": math.sqrt(10), "bias2_floor": 5 / 3}
    stats = gradient_stats(estimates, exact)
    assert set(stats) == set(STAT_NAMES)
    for key, value in expected.items():
        # Small integers and one sqrt in float64: 4 ulp relative.
        assert float(stats[key]) == pytest.approx(value, rel=4 * EPS64, abs=0), key


def test_gradient_stats_cosine_sign_and_scale():
    estimates = torch.tensor([[-2.0, 0.0], [-4.0, 0.0]], dtype=F64)
    stats = gradient_stats(estimates, torch.tensor([1.0, 0.0], dtype=F64))
    assert float(stats["cosine"]) == -1.0  # exactly antiparallel, exact in float
    assert float(stats["bias2"]) == 16.0 and float(stats["variance"]) == 2.0


def test_gradient_stats_nan_when_undefined():
    estimates = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    stats = gradient_stats(estimates, torch.zeros(2, dtype=F64))
    assert math.isnan(float(stats["cosine"])) and math.isnan(float(stats["rel_rmse"]))
    assert float(stats["bias2"]) == 13.0 and float(stats["variance"]) == 4.0  # still measured
    zero_mean = gradient_stats(torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=F64), torch.ones(2, dtype=F64))
    assert math.isnan(float(zero_mean["cosine"]))
    assert not math.isnan(float(zero_mean["rel_rmse"]))


def test_gradient_stats_batched():
    estimates = rand(7, 3, 4, seed=70)  # [N, B, K]
    exact = rand(3, 4, seed=71)
    stats = gradient_stats(estimates, exact)
    for key in STAT_NAMES:
        assert stats[key].shape == (3,)
        for b in range(3):
            # The same reductions on a slice: equal up to reduction order, 4 ulp relative.
            one = gradient_stats(estimates[:, b], exact[b])[key]
            torch.testing.assert_close(stats[key][b], one, rtol=4 * EPS64, atol=0)
    # Against a direct formula on one slice: covariance trace via torch.cov (unbiased).
    b = 1
    torch.testing.assert_close(stats["variance"][b], torch.cov(estimates[:, b].T).trace(), rtol=1e-12, atol=0)
    mean = estimates[:, b].mean(0)
    torch.testing.assert_close(stats["cosine"][b], torch.nn.functional.cosine_similarity(mean, exact[b], dim=0), rtol=1e-12, atol=0)


def test_gradient_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        gradient_stats(torch.zeros(1, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="do not match"):
        gradient_stats(torch.zeros(4, 3), torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# One registry, keyed by the shared vocabulary


def test_registry_is_keyed_by_the_vocabulary():
    from study.estimators import estimator_options
    from study.vocab import ESTIMATORS_INFO

    assert list(ESTIMATORS) == list(ESTIMATORS_INFO)
    for name, info in ESTIMATORS_INFO.items():
        assert ESTIMATORS[name].info is info
        assert estimator_options(name, {}) == info.options  # defaults come from the vocabulary
    assert estimator_options("gumbel_rao", {"k": 3}) == {"k": 3, "grad_noise": False}


def test_noise_source_replays_the_generator():
    """Supplying the Exp(1) numbers (as a population does from its blocks) gives exactly what the
    generator would have drawn: the noise is the only randomness of an estimate."""
    logits = case_logits("K4")
    f = make_f("quadratic", 4)
    for name, options in (("soft", {}), ("hard", {}), ("gumbel_rao", {"k": 3}), ("reinforce", {})):
        drawn = estimate_gradients(name, logits, f, tau=0.6, num_estimates=7, samples_per_estimate=3, generator=seeded(80), **options)
        replay = fresh_noise(seeded(80), F64, None)
        replayed = estimate_gradients(name, logits, f, tau=0.6, num_estimates=7, samples_per_estimate=3, noise=replay, **options)
        assert torch.equal(drawn, replayed), name


# ---------------------------------------------------------------------------------------------
# REINFORCE in closed form


@pytest.mark.parametrize("samples", [1, 2, 8])
@pytest.mark.parametrize("case", ["K4", "K5-skewed"])
def test_reinforce_moments_match_monte_carlo(case, samples):
    """reinforce_moments against 40,000 estimates of estimate_gradients("reinforce", S): the mean
    is the exact gradient (z-test per coordinate at 4 SE, level 6.3e-5 each) and the closed-form
    trace variance is within 4 SE of the sampled one (SE = spread of ||g - mean||^2 / sqrt(n))."""
    from study.estimators import reinforce_moments

    logits = case_logits(case)
    k = logits.numel()
    f = make_f("quadratic", k)
    values = f(torch.eye(k, dtype=F64))  # f at the K vertices, [K]
    mean, variance = reinforce_moments(torch.softmax(logits, -1), values, samples)
    exact = exact_gradient(logits, f)
    torch.testing.assert_close(mean, exact, rtol=0, atol=1e-13)  # the same sums in float64
    n = 40_000
    est = estimate_gradients("reinforce", logits, f, tau=1.0, num_estimates=n, samples_per_estimate=samples, generator=seeded(90 + samples))
    assert float(z_scores(est, exact).abs().max()) < Z
    sampled, se = trace_var_and_se(est)
    assert abs(sampled - float(variance)) < Z * se, (sampled, float(variance), se)


@pytest.mark.parametrize("batch", [2, 8])
def test_reinforce_moments_with_an_independent_baseline(batch):
    """The MLP generator's case: one sample z ~ p at this point, a baseline averaging batch - 1
    losses of samples drawn from the marginal q. Against a direct simulation of that estimate
    (200,000 draws): mean within 4 SE per coordinate, trace variance within 4 SE."""
    from study.estimators import reinforce_moments

    p = torch.softmax(case_logits("K4"), -1)
    q = torch.softmax(torch.tensor([0.5, 0.5, -1.0, 2.0], dtype=F64), -1)
    F = torch.tensor([0.3, 1.2, -0.7, 2.0], dtype=F64)
    n, gen = 200_000, seeded(95)
    z = torch.multinomial(p, n, replacement=True, generator=gen)  # [n]
    others = torch.multinomial(q, n * (batch - 1), replacement=True, generator=gen).view(n, batch - 1)
    g = (F[z] - F[others].mean(1)).unsqueeze(1) * (torch.nn.functional.one_hot(z, 4).to(F64) - p)  # [n, K]
    mean, variance = reinforce_moments(p, F, batch, baseline_probs=q)
    assert float(z_scores(g, mean).abs().max()) < Z
    sampled, se = trace_var_and_se(g)
    assert abs(sampled - float(variance)) < Z * se, (sampled, float(variance), se)


# ---------------------------------------------------------------------------------------------
# Streaming moments (the probes' chunks) against the direct statistics


def test_sampled_stats_equal_gradient_stats_of_grouped_estimates():
    """Moments over chunks of single-sample estimates give gradient_stats' numbers, and with S
    samples per estimate the variance is divided by S while bias2_floor stays trace / N (the mean
    is over N single draws). Deterministic: the same sums in float64 in another order, 1e-12."""
    from study.probes import Moments, sampled_stats

    estimates = rand(1000, 3, 5, seed=96) * 0.1 + rand(3, 5, seed=97)  # [N, B, K]: a mean far from 0
    exact = rand(3, 5, seed=98)
    moments = Moments()
    for chunk in estimates.split([1, 299, 400, 300]):
        moments.add(chunk)
    direct = gradient_stats(estimates, exact)
    for samples in (1, 8):
        stats = sampled_stats(moments, exact, samples)
        torch.testing.assert_close(stats["variance"], direct["variance"] / samples, rtol=1e-12, atol=0)
        torch.testing.assert_close(stats["bias2_floor"], direct["bias2_floor"], rtol=1e-12, atol=0)
        for key in ("bias2", "cosine"):
            torch.testing.assert_close(stats[key], direct[key], rtol=1e-12, atol=0)
