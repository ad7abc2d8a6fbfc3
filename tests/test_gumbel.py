"""Statistical tests of study.gumbel: Gumbel noise, Gumbel-max, Gumbel-softmax, conditional Gumbels.

Every random test uses a fixed torch.Generator, so its outcome is deterministic; the level stated
next to each assertion is the probability that a *correct* implementation would fail it for a
randomly chosen seed, i.e. how surprising a failure is. Levels are 0.001 or smaller (z-tests at
4 standard errors: two-sided p = 6.3e-5 per coordinate), so a failure means a bug, not bad luck,
while the sample sizes keep the tests' power against the bugs that matter close to 1.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from study.gumbel import check_tau, conditional_gumbel, gumbel_max, gumbel_noise, gumbel_softmax, one_hot

EULER_GAMMA = 0.5772156649015329  # mean of the standard Gumbel
GUMBEL_VAR = math.pi**2 / 6  # its variance
GUMBEL_EXCESS_KURTOSIS = 12 / 5  # so E[(G - mean)^4] = (3 + 12/5) * var^2

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def seeded(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def chi2_sf(stat: float, df: int) -> float:
    """P(chi2_df > stat) = Q(df/2, stat/2), the regularised upper incomplete gamma function."""
    a = torch.tensor(df / 2, dtype=torch.float64)
    x = torch.tensor(stat / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(a, x))


def chi2_gof_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square goodness-of-fit p-value of observed `counts` against `probs`."""
    counts = counts.to(torch.float64)
    expected = counts.sum() * probs.to(torch.float64)
    stat = float(((counts - expected) ** 2 / expected).sum())
    return chi2_sf(stat, counts.numel() - 1)


def ks_pvalue(samples: torch.Tensor, cdf) -> float:
    """One-sample Kolmogorov-Smirnov p-value (asymptotic Kolmogorov distribution, Stephens'
    small-sample correction); accurate to well under 1% of the level for n >= 100."""
    x = samples.to(torch.float64).flatten().sort().values
    n = x.numel()
    u = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = float(torch.maximum(i / n - u, u - (i - 1) / n).max())
    t = d * (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n))
    return min(1.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * t * t) for k in range(1, 101)))


def gumbel_cdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-torch.exp(-x))


# ---------------------------------------------------------------------------------------------
# The helpers themselves: a p-value routine that is silently wrong would make every test vacuous.


def test_chi2_sf_matches_tables():
    # Textbook critical values (to the 4 decimals printed in tables), hence abs=1e-4.
    assert chi2_sf(3.8415, 1) == pytest.approx(0.05, abs=1e-4)
    assert chi2_sf(10.828, 1) == pytest.approx(0.001, abs=1e-5)
    assert chi2_sf(16.919, 9) == pytest.approx(0.05, abs=1e-4)
    assert chi2_sf(85.351, 49) == pytest.approx(0.001, abs=1e-4)


def test_ks_pvalue_accepts_truth_and_rejects_shift():
    g = seeded(0)
    x = gumbel_noise((20_000,), generator=g, dtype=torch.float64)
    # Level 0.001 for the true distribution; a shift by 0.1 (8% of a standard deviation) at
    # n = 20,000 has KS power ~1, so p < 1e-6 shows the helper can reject.
    assert ks_pvalue(x, gumbel_cdf) > 0.001
    assert ks_pvalue(x + 0.1, gumbel_cdf) < 1e-6


# ---------------------------------------------------------------------------------------------
# gumbel_noise


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gumbel_noise_always_finite_on_a_huge_sample(dtype):
    # 2^24 float32 draws (2^20 otherwise) reach deep into both tails (E ~ 1e-8 and E ~ 17);
    # whether exponential_ can return an exact 0 depends on the backend, so the underflow itself
    # is forced in the next test. No tolerance: every value must be finite.
    n = 1 << 24 if dtype == torch.float32 else 1 << 20
    g = gumbel_noise((n,), generator=seeded(1), dtype=dtype)
    assert g.dtype == dtype
    assert bool(torch.isfinite(g).all())


def test_gumbel_noise_finite_even_when_exponential_underflows(monkeypatch):
    # Force the worst case the clamp exists for: Exp(1) draws that are exactly 0. The result must
    # be -log(finfo.tiny), finite (exact comparison: the clamp makes it a fixed number).
    monkeypatch.setattr(torch.Tensor, "exponential_", lambda self, *a, **k: self.zero_())
    for dtype in (torch.float32, torch.float64):
        g = gumbel_noise((4, 3), dtype=dtype)
        assert bool(torch.isfinite(g).all())
        assert torch.equal(g, torch.full((4, 3), -math.log(torch.finfo(dtype).tiny), dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_noise_mean_and_variance(dtype):
    n = 1_000_000
    g = gumbel_noise((n,), generator=seeded(2), dtype=dtype).to(torch.float64)
    # Standard errors from the Gumbel's own moments: SE(mean) = sqrt(var / n) = 0.0013;
    # SE(sample var) = var * sqrt((kurtosis - 1) / n) with kurtosis 3 + 12/5, = 0.0035.
    # 4 SE two-sided: level 6.3e-5 each.
    se_mean = math.sqrt(GUMBEL_VAR / n)
    se_var = GUMBEL_VAR * math.sqrt((2 + GUMBEL_EXCESS_KURTOSIS) / n)
    assert abs(float(g.mean()) - EULER_GAMMA) < 4 * se_mean
    assert abs(float(g.var()) - GUMBEL_VAR) < 4 * se_var


def test_gumbel_noise_distribution_ks():
    # The whole CDF, not only two moments: KS at level 0.001 against exp(-exp(-x)).
    g = gumbel_noise((50_000,), generator=seeded(3), dtype=torch.float64)
    assert ks_pvalue(g, gumbel_cdf) > 0.001


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow(dtype, device):
    g = gumbel_noise((3, 4), generator=seeded(0, device), dtype=dtype, device=device)
    assert g.dtype == dtype and g.device.type == device and g.shape == (3, 4)
    logits = torch.randn(5, 4, generator=seeded(1, device), dtype=dtype, device=device)
    y = gumbel_softmax(logits, 0.5, generator=seeded(2, device))
    assert y.dtype == dtype and y.device.type == device and y.shape == (5, 4)
    h = gumbel_softmax(logits, 0.5, hard=True, generator=seeded(2, device))
    assert h.dtype == dtype and h.device.type == device
    z = gumbel_max(logits, generator=seeded(2, device))
    assert z.dtype == torch.long and z.device.type == device and z.shape == (5,)
    c = conditional_gumbel(logits, z, num_samples=3, generator=seeded(3, device))
    assert c.dtype == dtype and c.device.type == device and c.shape == (3, 5, 4)


def test_same_seed_same_output_different_seed_different_output():
    # Bitwise equality: the same generator state must replay the same stream.
    a = gumbel_noise((1000,), generator=seeded(7))
    b = gumbel_noise((1000,), generator=seeded(7))
    c = gumbel_noise((1000,), generator=seeded(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    logits = torch.randn(100, 6, generator=seeded(0))
    for fn in (
        lambda g: gumbel_max(logits, generator=g),
        lambda g: gumbel_softmax(logits, 0.3, generator=g),
        lambda g: gumbel_softmax(logits, 0.3, hard=True, generator=g),
        lambda g: conditional_gumbel(logits, torch.zeros(100, dtype=torch.long), num_samples=2, generator=g),
    ):
        assert torch.equal(fn(seeded(11)), fn(seeded(11)))


def test_generator_draw_equals_explicit_noise():
    # gumbel_softmax(generator=g) must be exactly gumbel_softmax(noise=gumbel_noise(.., g)): the
    # batched-vs-loop estimator tests rely on this (bitwise, same ops on the same numbers).
    logits = torch.randn(50, 7, generator=seeded(0), dtype=torch.float64)
    noise = gumbel_noise(logits.shape, generator=seeded(5), dtype=torch.float64)
    assert torch.equal(gumbel_softmax(logits, 0.7, generator=seeded(5)), gumbel_softmax(logits, 0.7, noise=noise))
    assert torch.equal(gumbel_max(logits, generator=seeded(5)), (logits + noise).argmax(-1))


# ---------------------------------------------------------------------------------------------
# Gumbel-max is an exact categorical sample


LOGIT_CASES = {
    "K2": [0.0, 1.5],
    "K5-blog": [1.0, 1.0, 1.0, 1.0, 1.0],
    "K5-skewed": [-2.0, 0.0, 1.0, 3.0, 0.5],
    "K50": torch.linspace(-2.0, 2.0, 50).tolist(),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(LOGIT_CASES))
def test_gumbel_max_frequencies_match_softmax(case, dtype):
    logits = torch.tensor(LOGIT_CASES[case], dtype=dtype)
    n = 200_000
    z = gumbel_max(logits.expand(n, -1), generator=seeded(10))
    counts = torch.bincount(z, minlength=logits.numel())
    probs = torch.softmax(logits.to(torch.float64), -1)
    # Pearson chi-square is valid here: the smallest expected count is n * 0.0015 = 300 >> 5.
    # Level 0.001. Power: at n = 200k a 2% relative error in any probability >= 0.05 gives
    # p < 1e-6 (see test_chi2_gof_has_power), so passing is evidence, not just absence of a test.
    assert float(n * probs.min()) > 5
    assert chi2_gof_pvalue(counts, probs) > 0.001


def test_chi2_gof_has_power():
    # The same test on samples from slightly wrong logits (scaled by 1.05) must reject hard.
    logits = torch.tensor(LOGIT_CASES["K5-skewed"], dtype=torch.float64)
    z = gumbel_max((1.05 * logits).expand(200_000, -1), generator=seeded(10))
    assert chi2_gof_pvalue(torch.bincount(z, minlength=5), torch.softmax(logits, -1)) < 1e-6


# ---------------------------------------------------------------------------------------------
# Gumbel-softmax limits

LIMIT_LOGITS = torch.tensor([1.0, 0.0, -0.5, 0.3], dtype=torch.float64)


def mean_and_se(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return y.mean(0), y.std(0) / math.sqrt(y.shape[0])


@pytest.mark.parametrize("tau", [0.01, 0.05])
def test_soft_mean_tends_to_softmax_as_tau_to_zero(tau):
    n = 100_000
    y = gumbel_softmax(LIMIT_LOGITS.expand(n, -1), tau, generator=seeded(20))
    mean, se = mean_and_se(y)
    # E[y] - softmax(logits) = O(tau^2) (the smoothing of the argmax step is antisymmetric to
    # first order), <= 1e-3 * SE here, so the deviation is pure sampling noise: 4 SE per
    # coordinate, level 6.3e-5 each.
    assert bool(((mean - torch.softmax(LIMIT_LOGITS, -1)).abs() < 4 * se).all())


def test_soft_mean_differs_from_softmax_at_tau_one():
    # The limit above is a limit: at tau = 1 the same test must fail by a wide margin (>= 10 SE),
    # otherwise the tau -> 0 test could not tell a relaxation from the exact categorical.
    n = 100_000
    y = gumbel_softmax(LIMIT_LOGITS.expand(n, -1), 1.0, generator=seeded(20))
    mean, se = mean_and_se(y)
    assert float(((mean - torch.softmax(LIMIT_LOGITS, -1)).abs() / se).max()) > 10


@pytest.mark.parametrize("tau", [1e3, 1e4])
def test_soft_mean_tends_to_uniform_as_tau_to_infinity(tau):
    n = 100_000
    k = LIMIT_LOGITS.numel()
    y = gumbel_softmax(LIMIT_LOGITS.expand(n, -1), tau, generator=seeded(21))
    mean, se = mean_and_se(y)
    # First-order expansion: E[y_k] = 1/K + (logit_k - mean logit) / (K tau) + O(1/tau^2).
    # Scaled by tau the deviation from uniform must match (logit_k - mean) / K within 4 SE (of
    # the scaled mean; level 6.3e-5 each); the O(1/tau) remainder is < 0.1 SE at tau >= 1e3.
    # Float64 so that y - 1/K (~1e-4) is not lost to rounding.
    first_order = (LIMIT_LOGITS - LIMIT_LOGITS.mean()) / k
    assert bool(((tau * (mean - 1 / k) - first_order).abs() < 4 * tau * se).all())
    # And so the mean itself is uniform to O(1/tau).
    assert float((mean - 1 / k).abs().max()) < 1 / tau


# ---------------------------------------------------------------------------------------------
# hard = straight-through


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [1e-3, 0.5, 1e3])
def test_hard_forward_is_exactly_one_hot(tau, dtype):
    logits = torch.randn(2000, 6, generator=seeded(30), dtype=dtype)
    noise = gumbel_noise(logits.shape, generator=seeded(31), dtype=dtype)
    y = gumbel_softmax(logits, tau, hard=True, noise=noise)
    # Exact: y_hard - y_soft + y_soft must round back to exactly 0 or 1 (y_soft in [0, 1], so
    # 1 - s + s and 0 - s + s are exact in floating point), and it is the Gumbel-max sample.
    assert bool(((y == 0) | (y == 1)).all())
    assert torch.equal(y.sum(-1), torch.ones(2000, dtype=dtype))
    assert torch.equal(y.argmax(-1), gumbel_max(logits, noise=noise))


@pytest.mark.parametrize("tau", [0.1, 1.0, torch.tensor([[0.2], [2.0], [0.7]], dtype=torch.float64)])
def test_hard_gradient_equals_soft_gradient_for_same_noise(tau):
    logits = torch.randn(3, 5, generator=seeded(32), dtype=torch.float64)
    noise = gumbel_noise(logits.shape, generator=seeded(33), dtype=torch.float64)
    upstream = torch.randn(3, 5, generator=seeded(34), dtype=torch.float64)
    grads = []
    for hard in (False, True):
        theta = logits.clone().requires_grad_(True)
        y = gumbel_softmax(theta, tau, hard=hard, noise=noise)
        (grad,) = torch.autograd.grad(y, theta, grad_outputs=upstream)
        grads.append(grad)
    # Bitwise: the hard backward pass runs through exactly the same soft graph.
    assert torch.equal(grads[0], grads[1])
    assert float(grads[0].abs().max()) > 0


# ---------------------------------------------------------------------------------------------
# tau validation and broadcasting

NAN, INF = float("nan"), float("inf")
BAD_TAUS = [
    (0.0, "tau=0.0"),
    (0, "tau=0"),
    (-1.0, "tau=-1.0"),
    (NAN, "tau=nan"),
    (INF, "tau=inf"),
    (-INF, "tau=-inf"),
    ("abc", "tau='abc'"),
    (torch.tensor(-2.0), "tau=-2.0"),
    (torch.tensor([1.0, 0.0]), "tau=0.0"),
    (torch.tensor([[0.5], [NAN]]), "tau=nan"),
    (torch.tensor([[0.5], [INF]]), "tau=inf"),
]


@pytest.mark.parametrize("tau,shown", BAD_TAUS, ids=[s for _, s in BAD_TAUS])
def test_bad_tau_raises_value_error_naming_the_value(tau, shown):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=re.escape(shown)):
        check_tau(tau)
    for hard in (False, True):
        with pytest.raises(ValueError) as info:
            gumbel_softmax(logits, tau, hard=hard, generator=seeded(0))
        assert shown in str(info.value)


def test_tau_tensor_broadcasts_per_row():
    logits = torch.randn(4, 6, generator=seeded(40), dtype=torch.float64)
    tau = torch.tensor([[0.1], [0.5], [1.0], [3.0]], dtype=torch.float64)  # [R, 1] against [R, K]
    noise = gumbel_noise(logits.shape, generator=seeded(41), dtype=torch.float64)
    y = gumbel_softmax(logits, tau, noise=noise)
    assert y.shape == (4, 6)
    for r in range(4):
        # Same formula per row with a float tau; tensor vs Python-scalar division may differ in
        # the last bit, so 4 * eps(float64) relative, ~1e-15.
        expected = gumbel_softmax(logits[r], float(tau[r]), noise=noise[r])
        torch.testing.assert_close(y[r], expected, rtol=4 * torch.finfo(torch.float64).eps, atol=1e-300)
    # A per-category tau [K] also broadcasts (no error, right shape, rows sum to 1 within eps).
    y = gumbel_softmax(logits, torch.linspace(0.5, 2.0, 6, dtype=torch.float64), noise=noise)
    torch.testing.assert_close(y.sum(-1), torch.ones(4, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# conditional_gumbel (Paulus et al. 2021)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conditional_gumbel_argmax_is_the_index(dtype):
    logits = torch.tensor(
        [[0.0, 1.0, 2.0, -1.0], [10.0, -10.0, 0.0, 0.0], [-5.0, -5.0, -5.0, 20.0], [0.0, 0.0, 0.0, 0.0]],
        dtype=dtype,
    )
    for index in ([0, 1, 2, 3], [3, 1, 0, 2], [1, 1, 1, 1]):  # incl. improbable winners (p ~ 1e-9)
        index = torch.tensor(index)
        g = conditional_gumbel(logits, index, num_samples=5000, generator=seeded(50))
        assert g.shape == (5000, 4, 4)
        assert bool(torch.isfinite(g).all())
        # Deterministic: every one of the 20,000 conditional draws must have argmax == index.
        assert torch.equal((logits + g).argmax(-1), index.expand(5000, 4))


def test_conditional_gumbel_carries_no_gradient():
    logits = torch.randn(3, 4, requires_grad=True)
    g = conditional_gumbel(logits, torch.tensor([0, 1, 2]), num_samples=2, generator=seeded(0))
    assert not g.requires_grad


def test_conditional_gumbel_marginal_is_standard_gumbel():
    # index ~ softmax(logits) (drawn with independent noise), then G | index: the pair is a draw
    # of (argmax(logits + G), G), so G must be i.i.d. standard Gumbel in every coordinate.
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5, -3.0], dtype=torch.float64)
    n, k = 40_000, logits.numel()
    index = gumbel_max(logits.expand(n, -1), generator=seeded(60))  # [n]
    g = conditional_gumbel(logits.expand(n, -1), index, num_samples=1, generator=seeded(61))[0]  # [n, K]
    # Per coordinate: mean and variance within 4 SE (level 6.3e-5 each, 2K = 10 tests -> family
    # level < 1e-3); SEs from the Gumbel's moments as in test_gumbel_noise_mean_and_variance.
    se_mean = math.sqrt(GUMBEL_VAR / n)
    se_var = GUMBEL_VAR * math.sqrt((2 + GUMBEL_EXCESS_KURTOSIS) / n)
    assert bool(((g.mean(0) - EULER_GAMMA).abs() < 4 * se_mean).all())
    assert bool(((g.var(0) - GUMBEL_VAR).abs() < 4 * se_var).all())
    # Whole CDF per coordinate: KS with Bonferroni, family level 0.001 -> 0.001 / K each.
    for j in range(k):
        assert ks_pvalue(g[:, j], gumbel_cdf) > 0.001 / k, j
    # Independence: pairwise correlations ~ N(0, 1/n): 4 SE = 4 / sqrt(n) = 0.02 (level 6.3e-5 each).
    corr = torch.corrcoef(g.T)
    off = corr[~torch.eye(k, dtype=torch.bool)]
    assert float(off.abs().max()) < 4 / math.sqrt(n)
    # And the argmax of logits + G is still the drawn index.
    assert torch.equal((logits + g).argmax(-1), index)


def test_conditional_winner_is_gumbel_at_log_partition():
    # Given argmax = i (any i), the winning perturbed logit is max_j (logits_j + G_j) ~
    # Gumbel(logsumexp(logits), 1): mean logZ + gamma, variance pi^2/6, within 4 SE (level
    # 6.3e-5 each). Conditioning on an improbable i must not shift it.
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5, -3.0], dtype=torch.float64)
    log_z = float(torch.logsumexp(logits, -1))
    n = 40_000
    se_mean = math.sqrt(GUMBEL_VAR / n)
    se_var = GUMBEL_VAR * math.sqrt((2 + GUMBEL_EXCESS_KURTOSIS) / n)
    for i in range(logits.numel()):
        g = conditional_gumbel(logits, torch.tensor(i), num_samples=n, generator=seeded(70 + i))  # [n, K]
        top = (logits + g)[:, i]
        assert abs(float(top.mean()) - (log_z + EULER_GAMMA)) < 4 * se_mean, i
        assert abs(float(top.var()) - GUMBEL_VAR) < 4 * se_var, i


def test_one_hot():
    y = one_hot(torch.tensor([[2, 0], [1, 1]]), 3, torch.float64)
    assert torch.equal(y, torch.tensor([[[0, 0, 1], [1, 0, 0]], [[0, 1, 0], [0, 1, 0]]], dtype=torch.float64))
