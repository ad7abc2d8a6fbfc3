"""The estimators after 2021 (and tempered ST): tested from their papers' definitions.

st, gst, reinmax, zgr: formulas at a fixed category against an independent closed-form
computation, and their exact moments (a sum over the K categories) against Monte Carlo.
rebar, relax, unordered_set: unbiased, within stated standard errors of the exact gradient;
unordered_set at k = K is the exact gradient and at k = 1 is REINFORCE. Gumbel-Rao's option to
differentiate through its conditional Gumbels.

Levels as in test_estimators: mean comparisons are z-tests at 4 standard errors (two-sided level
6.3e-5 per coordinate); trace variances within 4 of their standard errors. Every generator is
seeded, so each outcome is deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch

from study.estimators import ESTIMATORS, estimate_gradients, exact_gradient, exact_moments
from study.unordered_set import set_ratios
from study.vocab import ESTIMATORS_INFO
from test_estimators import F64, Z, case_logits, make_f, rand, seeded, trace_var_and_se, z_scores

CATEGORY_ONLY = [("st", {}), ("gst", {}), ("gst", {"gap": "p"}), ("reinmax", {}), ("zgr", {})]
IDS = ["st", "gst-1.0", "gst-p", "reinmax", "zgr"]


def jvp_softmax(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """J(q) g with J(q) = diag(q) - q q^T, written out."""
    return q * g - q * (q @ g)


def paper_formula(name: str, options: dict, theta: torch.Tensor, d: int, g: torch.Tensor, tau: float) -> torch.Tensor:
    """Each estimator's gradient at sampled category d, straight from its paper (1-d tensors)."""
    k = theta.numel()
    e = torch.zeros(k, dtype=F64)
    e[d] = 1.0
    p = torch.softmax(theta, -1)
    if name == "st":  # Bengio et al. 2013: the gradient of softmax(theta / tau)
        return jvp_softmax(torch.softmax(theta / tau, -1), g) / tau
    if name == "gst":  # Fan et al. 2022, the authors' gst_mover
        gap = options.get("gap", 1.0)
        if gap == "p":
            pd = p[d] * (1 - 1e-5)
            gap = float(-math.log(1 - pd) / pd)
        top = theta.max()
        moved = theta + (top - theta) * e - torch.clamp(theta - top + gap, min=0) * (1 - e)
        return jvp_softmax(torch.softmax(moved / tau, -1), g) / tau
    if name == "reinmax":  # Liu et al. 2023, Algorithm 2
        pi = 0.5 * (torch.softmax(theta / tau, -1) + e)
        return 2 * jvp_softmax(pi, g) - 0.5 * jvp_softmax(p, g)
    if name == "zgr":  # Shekhovtsov 2023: 1/2 (J(p) g + ((D - p) . g)(D - p))
        return 0.5 * (jvp_softmax(p, g) + ((e - p) @ g) * (e - p))
    raise KeyError(name)


@pytest.mark.parametrize("name,options", CATEGORY_ONLY, ids=IDS)
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_category_estimators_follow_their_papers(name, options, tau):
    """At each category d, with f linear (g = c at every vertex), the estimate equals the paper's
    formula. Exact enumeration makes every category appear: its K per-category estimates are the
    rows whose p-weighted mean exact_moments returns, so checking the mean against the
    p-weighted formula and the variance against its spread checks every row. float64, a few
    ulp of O(1) terms: 1e-12."""
    theta = case_logits("K5-skewed")
    c = rand(5, seed=7)
    mean, variance = exact_moments(name, theta, lambda y: (y * c).sum(-1), tau=tau, **options)
    rows = torch.stack([paper_formula(name, options, theta, d, c, tau) for d in range(5)])  # [K(d), K]
    p = torch.softmax(theta, -1).unsqueeze(-1)
    want_mean = (p * rows).sum(0)
    want_var = (p * (rows - want_mean).square()).sum()
    torch.testing.assert_close(mean, want_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(variance, want_var, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,options", CATEGORY_ONLY, ids=IDS)
@pytest.mark.parametrize("case,samples", [("K4", 1), ("K5-skewed", 1), ("K5-skewed", 8)])
def test_exact_moments_equal_monte_carlo(name, options, case, samples):
    """exact_moments (K passes, no noise) against 40,000 Monte Carlo estimates of
    estimate_gradients: means within 4 SE (level 6.3e-5 per coordinate), trace variance within 4
    of its SE. f quadratic, so the gradient differs from vertex to vertex."""
    theta = case_logits(case).expand(2, -1) * torch.tensor([[1.0], [0.5]], dtype=F64)  # two batch rows
    f = make_f("quadratic", theta.shape[-1])
    mean, variance = exact_moments(name, theta, f, tau=0.7, samples_per_estimate=samples, **options)
    mc = estimate_gradients(name, theta, f, tau=0.7, num_estimates=40_000, samples_per_estimate=samples, generator=seeded(11), **options)
    assert float(z_scores(mc, mean).abs().max()) < Z
    for row in range(2):
        v, se = trace_var_and_se(mc[:, row])
        assert abs(v - float(variance[row])) < Z * se


def test_reinmax_and_zgr_are_exact_for_quadratic_f():
    """Second-order accuracy: ReinMax at tau = 1 (Liu et al. 2023) and ZGR (Shekhovtsov 2023) have
    mean equal to the exact gradient when f is quadratic; tempered ST does not, and for a cubic f
    neither is exact. Exact moments, no noise: 1e-12 (float64 round-off)."""
    theta = case_logits("K5-skewed")
    f = make_f("quadratic", 5)
    exact = exact_gradient(theta, f)
    for name in ("reinmax", "zgr"):
        mean, _ = exact_moments(name, theta, f, tau=1.0)
        torch.testing.assert_close(mean, exact, rtol=0, atol=1e-12)
    st, _ = exact_moments("st", theta, f, tau=1.0)
    assert float((st - exact).norm()) > 0.1 * float(exact.norm())
    w = rand(5, seed=3)
    cubic = lambda y: (y * w).sum(-1) ** 3  # noqa: E731
    zgr, _ = exact_moments("zgr", theta, cubic)
    assert float((zgr - exact_gradient(theta, cubic)).norm()) > 0.1 * float(exact_gradient(theta, cubic).norm())


@pytest.mark.parametrize("name,options", [("rebar", {}), ("rebar", {"eta": 0.0}), ("rebar", {"eta": 2.5}), ("relax", {}),
                                          ("unordered_set", {"k": 2}), ("unordered_set", {"k": 3}), ("unordered_set", {"k": 1})])
@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_unbiased_estimators(name, options, tau):
    """REBAR for every eta (eta = 0 is REINFORCE), RELAX with an untrained network, the
    unordered-set estimator for every k: 40,000 estimates within 4 SE of the exact gradient
    (level 6.3e-5 per coordinate; 10 coordinates per case)."""
    theta = torch.stack([case_logits("K5-skewed"), case_logits("K5-skewed").flip(-1) * 0.3])
    f = make_f("quadratic", 5)
    est = estimate_gradients(name, theta, f, tau=tau, num_estimates=40_000, generator=seeded(21), **options)
    assert float(z_scores(est, exact_gradient(theta, f)).abs().max()) < Z


def test_relax_is_unbiased_with_a_trained_network():
    """RELAX stays unbiased whatever its network: a population's control (random weights, eta,
    lambda per replica) passed as `control`, 40,000 estimates within 4 SE (level 6.3e-5 each)."""
    from study.rebar import ControlVariate

    theta = torch.stack([case_logits("K4"), case_logits("K4") * -0.7])
    control = ControlVariate(2, 4, eta=0.8, tau0=0.5, hidden=6, dtype=F64, device="cpu")
    with torch.no_grad():
        for p in control.net:
            p.copy_(rand(*p.shape, seed=p.numel()))
        control.eta.copy_(torch.tensor([0.5, 1.7], dtype=F64))
    f = make_f("quadratic", 4)
    est = estimate_gradients("relax", theta, f, tau=torch.tensor([[0.5], [2.0]], dtype=F64), num_estimates=40_000,
                             generator=seeded(31), control=control.detached())
    assert float(z_scores(est, exact_gradient(theta, f)).abs().max()) < Z


def test_unordered_set_with_every_category_is_exact():
    """k = K: the set is every category, each ratio is 1 and the baseline is E f, so every
    estimate is the exact gradient (float64 round-off: 1e-12)."""
    theta = case_logits("K5-skewed")
    f = make_f("quadratic", 5)
    est = estimate_gradients("unordered_set", theta, f, tau=1.0, num_estimates=50, generator=seeded(3), k=5)
    torch.testing.assert_close(est, exact_gradient(theta, f).expand(50, -1), rtol=0, atol=1e-12)


def test_unordered_set_with_one_category_is_reinforce():
    """k = 1 has no baseline (Kool et al. 2020) and is single-sample REINFORCE: its trace variance
    equals REINFORCE's closed form (exact_moments) within 4 SE of 40,000 estimates."""
    theta = case_logits("K4")
    f = make_f("quadratic", 4)
    est = estimate_gradients("unordered_set", theta, f, tau=1.0, num_estimates=40_000, generator=seeded(5), k=1)
    _, variance = exact_moments("reinforce", theta, f)
    v, se = trace_var_and_se(est)
    assert abs(v - float(variance)) < Z * se


def _set_probability_by_permutations(p: list[float], members: list[int]) -> float:
    """P(S) by summing the ordered draws without replacement over every ordering of S."""
    import itertools

    total = 0.0
    for order in itertools.permutations(members):
        prob, left = 1.0, 1.0
        for m in order:
            prob *= p[m] / left
            left -= p[m]
        total += prob
    return total


def test_set_ratios_match_enumeration_over_orderings():
    """The dynamic program's R(S, s) = P^{D\\s}(S\\s) / P(S) and R^{D\\s}(S, s') against sums over
    every ordering of S (Kool et al. 2020, eq. for the unordered-set probability). 1e-12."""
    p = torch.softmax(rand(7, seed=9), -1).tolist()
    members = [0, 3, 5, 6]
    r1, r2 = set_ratios(torch.tensor([p[m] for m in members], dtype=F64), torch.tensor(1 - sum(p[m] for m in members), dtype=F64))
    p_s = _set_probability_by_permutations(p, members)
    for i, s in enumerate(members):
        rest = [m for m in members if m != s]
        q = [x / (1 - p[s]) if j != s else 0.0 for j, x in enumerate(p)]  # D without s, renormalised
        p_without = _set_probability_by_permutations(q, rest)
        assert float(r1[i]) == pytest.approx(p_without / p_s, rel=1e-12)
        for j, s2 in enumerate(members):
            if s2 == s:
                assert float(r2[i, j]) == pytest.approx(1.0, rel=1e-12)
                continue
            q2 = [x / (1 - p[s] - p[s2]) if m not in (s, s2) else 0.0 for m, x in enumerate(p)]
            p_without2 = _set_probability_by_permutations(q2, [m for m in rest if m != s2])
            assert float(r2[i, j]) == pytest.approx(p_without2 / p_without, rel=1e-12)


def test_gumbel_rao_through_the_conditional_gumbels():
    """grad_noise=True keeps the conditional Gumbels a function of the logits (Paulus et al. 2021,
    eq. 10): the same samples, a different gradient. At fixed noise the two options give equal
    values (the forward pass is the one-hot) and differ in the estimate; each is deterministic
    given the noise."""
    theta = case_logits("K4")
    f = make_f("quadratic", 4)
    detached = estimate_gradients("gumbel_rao", theta, f, tau=0.5, num_estimates=200, generator=seeded(41), k=5)
    through = estimate_gradients("gumbel_rao", theta, f, tau=0.5, num_estimates=200, generator=seeded(41), k=5, grad_noise=True)
    assert float((detached - through).abs().max()) > 1e-3
    again = estimate_gradients("gumbel_rao", theta, f, tau=0.5, num_estimates=200, generator=seeded(41), k=5, grad_noise=True)
    assert torch.equal(through, again)


def test_every_estimator_declares_its_cost():
    """f evaluations and backward passes per sample, resolved against options and K."""
    costs = {name: info.cost({}, categories=10) for name, info in ESTIMATORS_INFO.items()}
    assert costs["soft"] == (1, 1) and costs["reinforce"] == (1, 0) and costs["rebar"] == (3, 2)
    assert costs["unordered_set"] == (4, 0) and ESTIMATORS_INFO["unordered_set"].cost({"k": 7}) == (7, 0)
    assert costs["exact"] == (10, 0)
    assert set(ESTIMATORS) == set(ESTIMATORS_INFO)


def test_reinmax_at_temperature_one_is_zgr():
    """At tau = 1, 2 J((p + D)/2) - J(p)/2 = J(p)/2 + (D - p)(D - p)^T/2 for a one-hot D (diag(D) =
    D D^T), which is ZGR: the two estimators coincide, estimate by estimate, for any f. Same noise,
    float64: 1e-12."""
    theta = torch.stack([case_logits("K5-skewed"), case_logits("K5-skewed") * -0.4])
    w = rand(5, seed=13)
    f = lambda y: torch.sin(y @ w) + (y * w).sum(-1) ** 3  # noqa: E731  (neither linear nor quadratic)
    reinmax = estimate_gradients("reinmax", theta, f, tau=1.0, num_estimates=300, generator=seeded(51))
    zgr = estimate_gradients("zgr", theta, f, tau=1.0, num_estimates=300, generator=seeded(51))
    torch.testing.assert_close(reinmax, zgr, rtol=0, atol=1e-12)
