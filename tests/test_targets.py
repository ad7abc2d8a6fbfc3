"""Tests for study.targets: every family, explicit lists, streams, and the error messages.

Tolerances: a float64 sum of at most 1000 terms each <= 1 is within K * eps ~ 2.2e-13 of its exact
value, so "sums to 1" is checked at 1e-12; closed-form moments (binomial, poisson) at 1e-9, which
leaves room for the lgamma rounding in the log-space pmf.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from study.targets import Target, TargetError, _sample_log_gamma, parse_target, target_families

KS = (2, 10, 1000)
SUM_TOL = 1e-12
NAMED = ("uniform", "zipf", "geometric", "binomial", "poisson", "bimodal", "sparse", "dirichlet")
# every named family once with defaults and once with each parameter set explicitly
NAMED_SPECS = (
    *NAMED,
    "zipf:s=2.5",
    "geometric:p=0.9",
    "geometric:p=1",
    "binomial:p=0.25",
    "binomial:p=0",
    "binomial:p=1",
    "poisson:lam=40",
    "bimodal:sep=0.8,width=0.02,weight=0.3",
    "sparse:n=2,ratio=1",
    "sparse:n=1",
    "dirichlet:alpha=0.5,seed=3",
    "dirichlet:alpha=0.01,seed=1",
    "dirichlet:alpha=100,seed=2",
)


def mean(probs: torch.Tensor) -> float:
    return float((torch.arange(len(probs), dtype=torch.float64) * probs).sum())


def assert_distribution(t: Target, k: int) -> None:
    assert isinstance(t, Target)
    assert t.probs.shape == (k,) and t.categories == k
    assert t.probs.dtype == torch.float64 and t.probs.device.type == "cpu"
    assert torch.isfinite(t.probs).all() and (t.probs >= 0).all()
    assert abs(float(t.probs.sum()) - 1.0) < SUM_TOL


# --- every family at K in {2, 10, 1000} --------------------------------------------------------


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("spec", NAMED_SPECS)
def test_named_family_is_a_distribution(spec: str, k: int) -> None:
    t = parse_target(spec, k)
    assert_distribution(t, k)
    assert t.stream is None
    assert t.spec == spec


@pytest.mark.parametrize("k", KS)
def test_blog_probs_and_stream_at_every_k(k: int, tmp_path: Path) -> None:
    probs = torch.rand(k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    probs /= probs.sum()
    spec = "probs:" + ",".join(repr(float(p)) for p in probs)
    assert_distribution(parse_target(spec), k)
    assert_distribution(parse_target(spec, k), k)

    (tmp_path / "s.txt").write_text(" ".join(str(i) for i in range(k)))
    assert_distribution(parse_target("stream:s.txt", base_dir=tmp_path), k)
    assert_distribution(parse_target("stream:s.txt", k, base_dir=tmp_path), k)
    if k == 5:
        assert_distribution(parse_target("blog", k), k)


def test_families_list() -> None:
    assert target_families() == [*NAMED, "blog", "probs", "stream"]
    target_families().append("x")  # a copy: callers cannot change the registry
    assert "x" not in target_families()


# --- formulas and parameter effects -------------------------------------------------------------


def test_uniform() -> None:
    assert torch.equal(parse_target("uniform", 4).probs, torch.full((4,), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("k", KS)
def test_zipf_formula_and_exponent(k: int) -> None:
    w = torch.tensor([(i + 1) ** -1.1 for i in range(k)], dtype=torch.float64)
    torch.testing.assert_close(parse_target("zipf", k).probs, w / w.sum(), rtol=1e-12, atol=0)
    p0 = [float(parse_target(f"zipf:s={s}", k).probs[0]) for s in (0.5, 1.1, 2.0, 4.0)]
    assert p0 == sorted(p0) and p0[0] < p0[-1]  # larger s: more mass on category 0
    assert (parse_target("zipf", k).probs.diff() < 0).all()  # strictly decreasing


@pytest.mark.parametrize("k", KS)
def test_geometric_formula_and_p(k: int) -> None:
    w = torch.tensor([0.3 * 0.7**i for i in range(k)], dtype=torch.float64)
    torch.testing.assert_close(parse_target("geometric", k).probs, w / w.sum(), rtol=1e-12, atol=1e-300)
    p0 = [float(parse_target(f"geometric:p={p}", k).probs[0]) for p in (0.05, 0.3, 0.6, 0.99)]
    assert p0 == sorted(p0) and p0[0] < p0[-1]  # larger p: more mass on category 0
    one_hot = torch.zeros(k, dtype=torch.float64)
    one_hot[0] = 1
    assert torch.equal(parse_target("geometric:p=1", k).probs, one_hot)


def test_geometric_untruncated_mean() -> None:
    # K = 1000 with p = 0.3: the truncated tail is 0.7^1000 ~ 1e-155, so the mean is (1-p)/p
    assert abs(mean(parse_target("geometric:p=0.3", 1000).probs) - 0.7 / 0.3) < 1e-9


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("p", (0.0, 0.1, 0.4, 0.5, 0.93, 1.0))
def test_binomial_moments(k: int, p: float) -> None:
    probs = parse_target(f"binomial:p={p}", k).probs
    n = k - 1
    m = mean(probs)
    var = float(((torch.arange(k, dtype=torch.float64) - m) ** 2 * probs).sum())
    assert abs(m - n * p) < 1e-9  # Binomial(K-1, p) is never truncated
    assert abs(var - n * p * (1 - p)) < 1e-9 * max(1, n)


def test_binomial_exact_pmf() -> None:
    expect = torch.tensor([math.comb(9, i) * 0.4**i * 0.6 ** (9 - i) for i in range(10)], dtype=torch.float64)
    torch.testing.assert_close(parse_target("binomial:p=0.4", 10).probs, expect, rtol=1e-12, atol=0)


@pytest.mark.parametrize("lam", (0.5, 3.0, 50.0))
def test_poisson_large_k_mean(lam: float) -> None:
    # K = 1000 >> lam: the truncated tail is below 1e-300, so mean and variance are lam
    probs = parse_target(f"poisson:lam={lam}", 1000).probs
    m = mean(probs)
    var = float(((torch.arange(1000, dtype=torch.float64) - m) ** 2 * probs).sum())
    assert abs(m - lam) < 1e-9 and abs(var - lam) < 1e-9


def test_poisson_truncation_renormalises() -> None:
    w = torch.tensor([3.0**i * math.exp(-3.0) / math.factorial(i) for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(parse_target("poisson", 4).probs, w / w.sum(), rtol=1e-12, atol=0)
    assert parse_target("poisson:lam=0.5", 10).probs.argmax() == 0
    assert parse_target("poisson:lam=7.5", 100).probs.argmax() == 7


@pytest.mark.parametrize("k", (10, 1000))
def test_bimodal_shape(k: int) -> None:
    probs = parse_target("bimodal", k).probs
    torch.testing.assert_close(probs, probs.flip(0), rtol=1e-12, atol=0)  # weight 0.5: symmetric about K/2
    half = k // 2
    # modes at K/4 and 3K/4: the largest bin's centre (k + 1/2) is within half a bin of each
    assert abs(int(probs[:half].argmax()) + 0.5 - k / 4) <= 0.5
    assert abs(int(probs[half:].argmax()) + half + 0.5 - 3 * k / 4) <= 0.5
    assert probs[half] < probs[: half].max() / 2  # a dip between the bumps


def test_bimodal_parameters() -> None:
    k = 1000
    left = parse_target("bimodal:weight=0.8,width=0.05", k).probs
    # each bump (sigma = 50) is 5 sigma from the middle: it leaks Phi(-5) ~ 3e-7 of its mass across
    assert abs(float(left[: k // 2].sum()) - 0.8) < 1e-6
    wide = parse_target("bimodal:sep=0.8", k).probs
    assert abs(int(wide[: k // 2].argmax()) - 100) <= 1  # K (1 - 0.8) / 2
    narrow = parse_target("bimodal:width=0.01", k).probs
    assert narrow.max() > parse_target("bimodal", k).probs.max() * 5
    one = parse_target("bimodal:sep=0", k).probs  # both bumps at K/2: one Gaussian
    torch.testing.assert_close(one, parse_target("bimodal:sep=0,weight=0.1", k).probs, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("k", KS)
def test_sparse_support_and_weights(k: int) -> None:
    probs = parse_target("sparse", k).probs
    n = min(3, k)
    nonzero = probs.nonzero().flatten().tolist()
    assert len(nonzero) == n
    assert nonzero == [((2 * i + 1) * k) // (2 * n) for i in range(n)]  # evenly spaced
    assert (probs[nonzero].diff() < 0).all()  # decreasing weights
    rest = torch.ones(k, dtype=torch.bool)
    rest[nonzero] = False
    assert (probs[rest] == 0).all()  # exactly zero elsewhere
    w = torch.tensor([0.5**i for i in range(n)], dtype=torch.float64)
    torch.testing.assert_close(probs[nonzero], w / w.sum(), rtol=1e-15, atol=0)


def test_sparse_parameters() -> None:
    assert parse_target("sparse:n=3", 10).probs.nonzero().flatten().tolist() == [1, 5, 8]
    equal = parse_target("sparse:n=4,ratio=1", 1000).probs
    assert equal.nonzero().flatten().tolist() == [125, 375, 625, 875]
    assert (equal[equal > 0] == 0.25).all()
    assert torch.equal(parse_target("sparse:n=1", 7).probs, torch.tensor([0, 0, 0, 1, 0, 0, 0.0], dtype=torch.float64))
    assert (parse_target("sparse:n=10", 10).probs > 0).all()  # n = K: every category


def test_dirichlet_seeding() -> None:
    a = parse_target("dirichlet:alpha=0.5,seed=3", 10).probs
    assert torch.equal(a, parse_target(" dirichlet : seed = 3 , alpha = 0.5 ", 10).probs)  # same seed, same probs
    assert not torch.allclose(a, parse_target("dirichlet:alpha=0.5,seed=4", 10).probs)
    assert not torch.allclose(parse_target("dirichlet", 10).probs, parse_target("dirichlet:seed=1", 10).probs)
    assert torch.equal(parse_target("dirichlet", 10).probs, parse_target("dirichlet:seed=0,alpha=1", 10).probs)


def test_dirichlet_golden_values() -> None:
    # the same string gives the same target on every machine and torch version; if this fails the
    # generator stream changed and old experiments' dirichlet targets are no longer reproducible
    probs = parse_target("dirichlet:alpha=0.5,seed=3", 5).probs
    expect = torch.tensor(
        [0.15843279234209262, 0.17745488229573533, 0.2328097024618531, 0.00023693854985212289, 0.43106568435046694],
        dtype=torch.float64,
    )
    # 1e-12, not exact: vectorised log / exp may round the last bit differently on other CPUs
    torch.testing.assert_close(probs, expect, rtol=1e-12, atol=0)


def test_dirichlet_concentration() -> None:
    k = 1000
    flat = parse_target("dirichlet:alpha=1000", k).probs  # std of each p_k ~ 1/(K sqrt(alpha)) ~ 3% of 1/K
    assert (flat - 1 / k).abs().max() < 0.2 / k
    spiky = parse_target("dirichlet:alpha=0.01", k).probs  # most mass on a handful of categories
    assert float(spiky.topk(20).values.sum()) > 0.9


@pytest.mark.parametrize("alpha", (0.05, 0.3, 1.0, 4.0))
def test_gamma_sampler_matches_gamma_distribution(alpha: float) -> None:
    # N = 20000 draws, fixed generator. E[log G] = digamma(alpha), Var[log G] = trigamma(alpha):
    # a z-test at 4.42 sigma (two-sided level 1e-5); and a Kolmogorov-Smirnov test against the
    # Gamma(alpha) CDF, the regularised lower incomplete gamma, at 1.95 / sqrt(N) (level 0.001).
    n = 20000
    log_g = _sample_log_gamma(alpha, n, torch.Generator().manual_seed(12345))
    assert log_g.shape == (n,) and torch.isfinite(log_g).all()
    a = torch.tensor(alpha, dtype=torch.float64)
    z = (log_g.mean() - torch.digamma(a)) / (torch.polygamma(1, a) / n).sqrt()
    assert abs(float(z)) < 4.42
    x = log_g.exp().sort().values
    cdf = torch.special.gammainc(a, x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max()
    assert float(d) < 1.95 / math.sqrt(n)


# --- blog and explicit lists --------------------------------------------------------------------


def test_blog_exact() -> None:
    expect = torch.tensor([0, 0, 0.1, 0.3, 0.6], dtype=torch.float64)
    for t in (parse_target("blog"), parse_target(" blog ", 5)):
        assert torch.equal(t.probs, expect) and t.categories == 5 and t.stream is None
    with pytest.raises(TargetError, match=r"categories=10"):
        parse_target("blog", 10)


def test_probs_parsing() -> None:
    t = parse_target(" probs: 0.1 , 0.2,0.7 ")
    assert t.spec == "probs: 0.1 , 0.2,0.7"
    torch.testing.assert_close(t.probs, torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64), rtol=1e-15, atol=0)
    assert parse_target("probs:0.1,0.2,0.7", 3).categories == 3
    assert torch.equal(parse_target("probs:1,0").probs, torch.tensor([1.0, 0.0], dtype=torch.float64))
    # within 1e-6 of 1: accepted, then renormalised
    third = parse_target("probs:0.3333333,0.3333333,0.3333333").probs
    assert abs(float(third.sum()) - 1) < 1e-15
    torch.testing.assert_close(third, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=1e-15, atol=0)
    with pytest.raises(TargetError, match=r"3 probabilities but categories=4"):
        parse_target("probs:0.1,0.2,0.7", 4)


# --- streams ------------------------------------------------------------------------------------


def test_stream_order_and_frequency(tmp_path: Path) -> None:
    (tmp_path / "numbers.txt").write_text("3 1\t1\n\n  0 4 \r\n1\n\t\t2   1\n")
    t = parse_target("stream:numbers.txt", base_dir=tmp_path)
    assert t.stream is not None and t.stream.dtype == torch.int64
    assert t.stream.tolist() == [3, 1, 1, 0, 4, 1, 2, 1]  # arrival order
    assert t.categories == 5  # max + 1
    assert torch.equal(t.probs, torch.tensor([1, 4, 1, 1, 1], dtype=torch.float64) / 8)

    wide = parse_target("stream:numbers.txt", 8, base_dir=str(tmp_path))  # K given: zeros for unseen
    assert torch.equal(wide.probs, torch.tensor([1, 4, 1, 1, 1, 0, 0, 0], dtype=torch.float64) / 8)
    assert torch.equal(wide.stream, t.stream)


def test_stream_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "data"
    sub.mkdir()
    (sub / "s.txt").write_text("0\n1\n1\n")
    assert parse_target(f"stream:{sub / 's.txt'}", base_dir="/nonexistent").stream.tolist() == [0, 1, 1]  # absolute
    assert parse_target("stream: data/s.txt ", base_dir=tmp_path).categories == 2
    monkeypatch.chdir(sub)
    assert parse_target("stream:s.txt").stream.tolist() == [0, 1, 1]  # relative to cwd


@pytest.mark.parametrize(
    ("content", "categories", "line", "token", "problem"),
    [
        ("0 1\n2 3\n4 -1 5\n", None, 3, "-1", "negative"),
        ("1 2\n2.5\n", None, 2, "2.5", "not an integer"),
        ("\n\n\n0 abc 1\n", None, 4, "abc", "not an integer"),
        ("1,2\n", None, 1, "1,2", "not an integer"),
        ("1 0x1\n", None, 1, "0x1", "not an integer"),
        ("1_000 1\n", None, 1, "1_000", "not an integer"),
        ("0 1\n1 2\n0 5 1\n", 5, 3, "5", "out of range"),
        ("0 1\r\n1 7\r\n", 5, 2, "7", "out of range"),
        ("0 1\n\n1 1000000\n", None, 3, "1000000", "too large"),
        ("0 1\n99999999999999999999999\n", None, 2, "99999999999999999999999", "too large"),
    ],
)
def test_stream_bad_token(
    tmp_path: Path, content: str, categories: int | None, line: int, token: str, problem: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content.encode())
    with pytest.raises(TargetError) as info:
        parse_target("stream:bad.txt", categories, base_dir=tmp_path)
    msg = str(info.value)
    assert f"{path}:{line}:" in msg
    assert repr(token) in msg and problem in msg


@pytest.mark.parametrize(
    ("content", "problem"),
    [("", "empty"), (" \n\t\n  \n", "empty"), ("0 0\n0\n", "only 0s")],
)
def test_stream_without_enough_numbers(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "s.txt").write_text(content)
    with pytest.raises(TargetError, match=problem) as info:
        parse_target("stream:s.txt", base_dir=tmp_path)
    assert str(tmp_path / "s.txt") in str(info.value)


def test_stream_only_zeros_with_categories(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("0 0\n0\n")
    t = parse_target("stream:s.txt", 3, base_dir=tmp_path)
    assert torch.equal(t.probs, torch.tensor([1.0, 0, 0], dtype=torch.float64))


def test_stream_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="does not exist") as info:
        parse_target("stream:nope.txt", base_dir=tmp_path)
    assert str(tmp_path / "nope.txt") in str(info.value)
    (tmp_path / "dir").mkdir()
    with pytest.raises(TargetError, match="unreadable") as info:
        parse_target("stream:dir", base_dir=tmp_path)
    assert str(tmp_path / "dir") in str(info.value)
    (tmp_path / "bin.txt").write_bytes(b"1 2 \xff\xfe\n")
    with pytest.raises(TargetError, match="unreadable") as info:
        parse_target("stream:bin.txt", base_dir=tmp_path)
    assert str(tmp_path / "bin.txt") in str(info.value)


# --- bad target strings -------------------------------------------------------------------------

BAD = [
    # (spec, categories, text the message must contain)
    ("", 10, "empty"),
    ("   ", 10, "empty"),
    ("zipff", 10, "'zipff'"),
    ("normal:mu=1", 10, "'normal'"),
    ("s=1.2", 10, "'s=1.2'"),
    ("zipf:t=1", 10, "'t'"),
    ("zipf:s=1,s=2", 10, "given twice"),
    ("zipf:s=0", 10, "s='0'"),
    ("zipf:s=-1", 10, "s='-1'"),
    ("zipf:s=abc", 10, "s='abc'"),
    ("zipf:s=nan", 10, "s='nan'"),
    ("zipf:s=inf", 10, "s='inf'"),
    ("zipf:s=__import__('os')", 10, "__import__"),
    ("zipf:s", 10, "'s'"),
    ("zipf:s=", 10, "'s'"),
    ("zipf:s=1,,", 10, "stray comma"),
    ("uniform:s=1", 10, "'s'"),
    ("geometric:p=0", 10, "p='0'"),
    ("geometric:p=1.5", 10, "p='1.5'"),
    ("binomial:p=-0.1", 10, "p='-0.1'"),
    ("binomial:p=1.01", 10, "p='1.01'"),
    ("binomial:n=3", 10, "'n'"),
    ("poisson:lam=0", 10, "lam='0'"),
    ("poisson:lambda=3", 10, "'lambda'"),
    ("bimodal:sep=1.5", 10, "sep='1.5'"),
    ("bimodal:width=0", 10, "width='0'"),
    ("bimodal:weight=2", 10, "weight='2'"),
    ("sparse:n=0", 10, "n='0'"),
    ("sparse:n=11", 10, "n=11"),
    ("sparse:n=2.5", 10, "n='2.5'"),
    ("sparse:ratio=0", 10, "ratio='0'"),
    ("dirichlet:alpha=0", 10, "alpha='0'"),
    ("dirichlet:alpha=-1", 10, "alpha='-1'"),
    ("dirichlet:seed=1.5", 10, "seed='1.5'"),
    ("dirichlet:seed=-1", 10, "seed='-1'"),
    ("dirichlet:seed=x", 10, "seed='x'"),
    ("blog:x=1", None, "'x'"),
    ("blog", 4, "categories=4"),
    ("probs:", None, "probs needs a list"),
    ("probs:0.5", None, "at least 2"),
    ("probs:0.5,0.6", None, "sum to"),
    ("probs:0.5,0.4", None, "sum to"),
    ("probs:0.5,abc", None, "'abc'"),
    ("probs:1.5,-0.5", None, "'-0.5'"),
    ("probs:nan,1", None, "'nan'"),
    ("probs:0.5,0.5,", None, "''"),
    ("stream:", None, "needs a file path"),
    ("zipf", None, "categories"),
    ("dirichlet:alpha=0.5", None, "categories"),
    ("uniform", 1, "categories=1"),
    ("uniform", 0, "categories=0"),
    ("zipf", -3, "categories=-3"),
    ("probs:0.5,0.5", 1, "categories=1"),
    ("uniform", 2.5, "2.5"),
    ("uniform", True, "True"),
    ("uniform", "10", "'10'"),
]


@pytest.mark.parametrize(("spec", "categories", "needle"), BAD)
def test_bad_target_strings(spec: str, categories: object, needle: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(spec, categories)  # type: ignore[arg-type]
    msg = str(info.value)
    assert needle in msg
    assert isinstance(info.value, ValueError)
    if spec.strip():
        assert repr(spec.strip()) in msg  # every message names the target


def test_unknown_family_lists_known() -> None:
    with pytest.raises(TargetError) as info:
        parse_target("gauss", 10)
    assert all(name in str(info.value) for name in target_families())


def test_unknown_parameter_lists_allowed() -> None:
    with pytest.raises(TargetError, match=r"allowed: sep, width, weight"):
        parse_target("bimodal:mu=3", 10)
    with pytest.raises(TargetError, match=r"allowed: none"):
        parse_target("uniform:p=1", 10)


def test_not_a_string() -> None:
    with pytest.raises(TargetError, match="string"):
        parse_target(None, 10)  # type: ignore[arg-type]


def test_whitespace_and_case_tolerated() -> None:
    a = parse_target("zipf:s=1.2", 10).probs
    for spec in ("  zipf:s=1.2\n", "zipf : s = 1.2", "\tZipf:s=1.2 "):
        assert torch.equal(parse_target(spec, 10).probs, a)
    assert torch.equal(parse_target("uniform:", 3).probs, parse_target("uniform", 3).probs)


def test_target_is_frozen() -> None:
    t = parse_target("uniform", 3)
    with pytest.raises(AttributeError):
        t.spec = "zipf"  # type: ignore[misc]
