"""Target distributions: named families, explicit probabilities, number streams.

A target string is `name` or `name:key=value,key=value` (white space around the string, the name,
keys and values is ignored; the name is case-insensitive). Categories are k = 0..K-1; every family
is computed in float64 on the CPU and normalised over those K categories, so a tail beyond K is
truncated and the rest renormalised.

Families that need K (`categories` is required):

- uniform:                         p_k = 1 / K
- zipf:s=1.1        (s > 0)        p_k ∝ (k + 1)^-s
- geometric:p=0.3   (0 < p <= 1)   p_k ∝ p (1 - p)^k                        (truncated to K)
- binomial:p=0.5    (0 <= p <= 1)  p_k = C(K-1, k) p^k (1 - p)^(K-1-k)      (Binomial(K-1, p), exact)
- poisson:lam=3     (lam > 0)      p_k ∝ lam^k e^-lam / k!                  (truncated to K)
- bimodal:sep=0.5,width=0.1,weight=0.5
                    (0 <= sep <= 1, width > 0, 0 <= weight <= 1)
                                   two Gaussian bumps over the bin centres x_k = k + 1/2, at
                                   mu_1,2 = K (1 -/+ sep) / 2 (K/4 and 3K/4 by default) with
                                   standard deviation width * K; each bump is normalised over the
                                   K categories, then p = weight * bump_1 + (1 - weight) * bump_2
- sparse:n=min(3,K),ratio=0.5
                    (1 <= n <= K, 0 < ratio <= 1)
                                   mass on the n evenly spaced categories
                                   c_i = floor((2i + 1) K / (2n)), i = 0..n-1, with weights
                                   p_{c_i} ∝ ratio^i (decreasing along i); every other p_k is 0
- dirichlet:alpha=1,seed=0
                    (alpha > 0, integer seed >= 0)
                                   one sample of the symmetric Dirichlet(alpha, ..., alpha), drawn
                                   from a CPU torch.Generator seeded with `seed`: the same
                                   target for the same string on every machine (up to last-bit
                                   rounding of vectorised log / exp)

Targets that bring their own K (`categories` optional; when given it must agree):

- blog                             [0, 0, 0.1, 0.3, 0.6], K = 5: the original post's distribution
                                   (Another Datum, "Neural Networks gone wild! They can sample from
                                   discrete distributions now!", 2018)
- probs:0.1,0.2,0.7                an explicit list: finite, >= 0, summing to 1 within 1e-6, then
                                   renormalised exactly; K = its length
- stream:PATH                      a text file of integers separated by white space or newlines, in
                                   arrival order; PATH is relative to `base_dir` when given, else
                                   to the working directory. probs is the empirical frequency
                                   bincount / L; K = max + 1 (at most MAX_INFERRED_CATEGORIES)
                                   unless `categories` is given.

Parameters are parsed as data (float() / int()), never evaluated. Every problem raises
`TargetError` (a ValueError) whose message names the target string and the problem; stream errors
also name the file, the 1-based line number and the offending token.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "Target",
    "TargetError",
    "parse_target",
    "target_families",
]

_F64 = torch.float64

BLOG_PROBS = (0.0, 0.0, 0.1, 0.3, 0.6)

# Tolerance on the sum of an explicit probability list: loose enough for lists typed by hand with
# a few decimals (0.333,0.333,0.334), tight enough to catch a missing or extra entry.
PROBS_SUM_TOL = 1e-6


class TargetError(ValueError):
    """A target string, its parameters or its stream file is invalid."""


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare by
class Target:
    spec: str  # the string it was parsed from, e.g. "zipf:s=1.2" (surrounding white space stripped)
    probs: Tensor  # [K] float64 on CPU, sums to 1: the reference distribution (empirical for streams)
    stream: Tensor | None = None  # [L] int64, the numbers in arrival order (stream targets only)

    @property
    def categories(self) -> int:
        return int(self.probs.shape[0])


# ---------------------------------------------------------------------------------------------
# Parameters: one schema per family, name -> (kind, default, check, description of the range).


@dataclass(frozen=True)
class _Param:
    kind: type  # float or int
    default: float | int | None  # None: computed from K by the family
    check: Callable[[float], bool]
    allowed: str  # the valid range, for messages


def _float(check: Callable[[float], bool], allowed: str, default: float) -> _Param:
    return _Param(float, default, check, allowed)


_PARAMS: dict[str, dict[str, _Param]] = {
    "uniform": {},
    "zipf": {"s": _float(lambda v: v > 0, "> 0", 1.1)},
    "geometric": {"p": _float(lambda v: 0 < v <= 1, "in (0, 1]", 0.3)},
    "binomial": {"p": _float(lambda v: 0 <= v <= 1, "in [0, 1]", 0.5)},
    "poisson": {"lam": _float(lambda v: v > 0, "> 0", 3.0)},
    "bimodal": {
        "sep": _float(lambda v: 0 <= v <= 1, "in [0, 1]", 0.5),
        "width": _float(lambda v: v > 0, "> 0", 0.1),
        "weight": _float(lambda v: 0 <= v <= 1, "in [0, 1]", 0.5),
    },
    "sparse": {
        "n": _Param(int, None, lambda v: v >= 1, "an integer in [1, K]"),
        "ratio": _float(lambda v: 0 < v <= 1, "in (0, 1]", 0.5),
    },
    "dirichlet": {
        "alpha": _float(lambda v: v > 0, "> 0", 1.0),
        "seed": _Param(int, 0, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)"),
    },
    "blog": {},
}

_OWN_K = ("blog", "probs", "stream")  # targets whose K comes from the target itself
_FAMILIES = [*_PARAMS, "probs", "stream"]


def target_families() -> list[str]:
    """Names of the target families, in documentation order."""
    return list(_FAMILIES)


def _parse_params(spec: str, name: str, rest: str) -> dict[str, float | int]:
    schema = _PARAMS[name]
    allowed = ", ".join(schema) if schema else "none"
    values: dict[str, float | int] = {}
    if not rest.strip():
        return values
    for item in rest.split(","):
        key, eq, raw = (part.strip() for part in item.partition("="))
        if not item.strip():
            raise TargetError(f"target {spec!r}: empty parameter (stray comma); expected key=value")
        if key not in schema:
            raise TargetError(f"target {spec!r}: unknown parameter {key!r} for {name}; allowed: {allowed}")
        if not eq or not raw:
            raise TargetError(f"target {spec!r}: parameter {key!r} has no value; expected {key}=VALUE")
        if key in values:
            raise TargetError(f"target {spec!r}: parameter {key!r} given twice")
        param = schema[key]
        try:
            value = param.kind(raw)  # float(raw) / int(raw): data only
        except ValueError:
            raise TargetError(
                f"target {spec!r}: parameter {key}={raw!r} is not {'an integer' if param.kind is int else 'a number'}"
            ) from None
        if param.kind is float and not math.isfinite(value):
            raise TargetError(f"target {spec!r}: parameter {key}={raw!r} must be finite and {param.allowed}")
        if not param.check(value):
            raise TargetError(f"target {spec!r}: parameter {key}={raw!r} must be {param.allowed}")
        values[key] = value
    return values


def _check_categories(spec: str, categories: object) -> int | None:
    if categories is None:
        return None
    try:
        if isinstance(categories, bool):
            raise TypeError
        k = operator.index(categories)
    except TypeError:
        raise TargetError(f"target {spec!r}: categories must be an integer >= 2, got {categories!r}") from None
    if k < 2:
        raise TargetError(f"target {spec!r}: categories must be >= 2, got categories={k}")
    return k


# ---------------------------------------------------------------------------------------------
# Families: K and validated parameters -> probs [K] float64.


def _uniform(k: int) -> Tensor:
    return torch.full((k,), 1.0 / k, dtype=_F64)  # [K]


def _zipf(k: int, s: float) -> Tensor:
    logits = -s * torch.arange(1, k + 1, dtype=_F64).log()  # [K] log (k+1)^-s
    return torch.softmax(logits, dim=0)


def _geometric(k: int, p: float) -> Tensor:
    w = torch.pow(torch.tensor(1.0 - p, dtype=_F64), torch.arange(k, dtype=_F64))  # [K] (1-p)^k; 0^0 = 1
    return w / w.sum()  # the common factor p cancels; sum >= 1 (the k = 0 term)


def _binomial(k: int, p: float) -> Tensor:
    n = k - 1
    if p in (0.0, 1.0):  # a point mass; log space would give 0 * log 0
        probs = torch.zeros(k, dtype=_F64)
        probs[0 if p == 0.0 else n] = 1.0
        return probs
    i = torch.arange(k, dtype=_F64)  # [K]
    log_choose = math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)  # [K] log C(n, i)
    logits = log_choose + i * math.log(p) + (n - i) * math.log1p(-p)  # [K] log pmf
    return torch.softmax(logits, dim=0)  # exact pmf up to rounding; softmax removes the rounding in its sum


def _poisson(k: int, lam: float) -> Tensor:
    i = torch.arange(k, dtype=_F64)  # [K]
    logits = i * math.log(lam) - torch.lgamma(i + 1)  # [K] log pmf + lam; softmax truncates and renormalises
    return torch.softmax(logits, dim=0)


def _bimodal(k: int, sep: float, width: float, weight: float) -> Tensor:
    x = torch.arange(k, dtype=_F64) + 0.5  # [K] bin centres
    sigma = width * k

    def bump(mu: float) -> Tensor:
        return torch.softmax(-0.5 * ((x - mu) / sigma) ** 2, dim=0)  # [K] Gaussian, normalised over K

    return weight * bump(k * (1 - sep) / 2) + (1 - weight) * bump(k * (1 + sep) / 2)


def _sparse(k: int, n: int, ratio: float) -> Tensor:
    where = [((2 * i + 1) * k) // (2 * n) for i in range(n)]  # distinct since the spacing k / n >= 1
    w = torch.pow(torch.tensor(ratio, dtype=_F64), torch.arange(n, dtype=_F64))  # [n] ratio^i
    probs = torch.zeros(k, dtype=_F64)
    probs[where] = w / w.sum()
    return probs


def _sample_log_gamma(alpha: float, n: int, generator: torch.Generator) -> Tensor:
    """log of n independent Gamma(alpha, 1) draws, [n] float64 (Marsaglia & Tsang 2000).

    For alpha < 1 it draws Gamma(alpha + 1) and multiplies by U^(1/alpha) (their boosting step), in
    log space so that tiny alpha does not underflow to zero.
    """
    a = alpha if alpha >= 1 else alpha + 1
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=_F64)
    pending = torch.arange(n)
    while pending.numel():  # each round accepts > 95% of what is pending
        m = pending.numel()
        x = torch.randn(m, generator=generator, dtype=_F64)  # ~N(0, 1)
        u = 1.0 - torch.rand(m, generator=generator, dtype=_F64)  # ~U(0, 1], so log u is finite
        v = (1.0 + c * x) ** 3
        log_v = v.clamp_min(torch.finfo(_F64).tiny).log()  # only used where v > 0
        accept = (v > 0) & (u.log() < 0.5 * x * x + d - d * v + d * log_v)
        out[pending[accept]] = math.log(d) + log_v[accept]  # log(d v) ~ log Gamma(a)
        pending = pending[~accept]
    if alpha < 1:
        u = 1.0 - torch.rand(n, generator=generator, dtype=_F64)  # ~U(0, 1]
        out = out + u.log() / alpha  # log(Gamma(a) U^(1/alpha)) ~ log Gamma(alpha)
    return out


def _dirichlet(k: int, alpha: float, seed: int) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.softmax(_sample_log_gamma(alpha, k, g), dim=0)  # [K] G_k / sum G ~ Dirichlet(alpha)


_FAMILY_FNS: dict[str, Callable[..., Tensor]] = {
    "uniform": _uniform,
    "zipf": _zipf,
    "geometric": _geometric,
    "binomial": _binomial,
    "poisson": _poisson,
    "bimodal": _bimodal,
    "sparse": _sparse,
    "dirichlet": _dirichlet,
}


# ---------------------------------------------------------------------------------------------
# Explicit lists and streams.


def _explicit(spec: str, rest: str, k: int | None) -> Tensor:
    if not rest.strip():
        raise TargetError(f"target {spec!r}: probs needs a list, e.g. probs:0.1,0.2,0.7")
    values = []
    for i, raw in enumerate(tok.strip() for tok in rest.split(",")):
        try:
            v = float(raw)
        except ValueError:
            raise TargetError(f"target {spec!r}: probability #{i} {raw!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise TargetError(f"target {spec!r}: probability #{i} {raw!r} must be finite and >= 0")
        values.append(v)
    probs = torch.tensor(values, dtype=_F64)  # [K]
    if len(values) < 2:
        raise TargetError(f"target {spec!r}: probs needs at least 2 categories, got {len(values)}")
    if k is not None and len(values) != k:
        raise TargetError(f"target {spec!r}: {len(values)} probabilities but categories={k}")
    total = float(probs.sum())
    if abs(total - 1.0) > PROBS_SUM_TOL:
        raise TargetError(f"target {spec!r}: probabilities sum to {total!r}, not 1 (tolerance {PROBS_SUM_TOL})")
    return probs / total


# When K is inferred as max + 1, a stray huge number would size every [K] tensor after it (and
# overflow int64 past 2**63); beyond this the caller must say what K is.
MAX_INFERRED_CATEGORIES = 1_000_000

_INT_TOKEN = re.compile(r"[+-]?[0-9]+")  # ASCII only: int() would also take "1_000" and other digit scripts


def _stream(spec: str, rest: str, k: int | None, base_dir: str | Path | None) -> tuple[Tensor, Tensor]:
    raw = rest.strip()
    if not raw:
        raise TargetError(f"target {spec!r}: stream needs a file path, e.g. stream:numbers.txt")
    path = Path(raw).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    try:
        text = path.read_text(encoding="utf-8")  # universal newlines: \r\n and \r count as \n
    except FileNotFoundError:
        raise TargetError(f"target {spec!r}: stream file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(f"target {spec!r}: stream file {str(path)!r} is unreadable: {e}") from None
    numbers: list[int] = []
    limit = k if k is not None else MAX_INFERRED_CATEGORIES
    for lineno, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        digits = "".join(tokens)
        if digits.isascii() and digits.isdigit():  # fast path: a line of plain non-negative integers
            values = list(map(int, tokens))
            if max(values) < limit:
                numbers.extend(values)
                continue
        for tok in tokens:  # slow path: find the first bad token on this line
            where = f"target {spec!r}: {path}:{lineno}: token {tok!r}"
            if not _INT_TOKEN.fullmatch(tok):
                raise TargetError(f"{where} is not an integer")
            v = int(tok)
            if v < 0:
                raise TargetError(f"{where} is negative")
            if k is not None and v >= k:
                raise TargetError(f"{where} is out of range: categories={k}, so numbers must be in 0..{k - 1}")
            if v >= limit:
                raise TargetError(f"{where} is too large to infer K = max + 1 from (limit {limit}); pass categories")
            numbers.append(v)
    if not numbers:
        raise TargetError(f"target {spec!r}: stream file {str(path)!r} is empty (no numbers)")
    stream = torch.tensor(numbers, dtype=torch.int64)  # [L]
    if k is None:
        k = int(stream.max()) + 1
        if k < 2:
            raise TargetError(
                f"target {spec!r}: stream file {str(path)!r} holds only 0s, so K = max + 1 = {k} < 2; "
                "pass categories to fix K"
            )
    probs = torch.bincount(stream, minlength=k).to(_F64) / stream.numel()  # [K] empirical frequency
    return probs, stream


# ---------------------------------------------------------------------------------------------


def parse_target(spec: str, categories: int | None = None, *, base_dir: str | Path | None = None) -> Target:
    """Parse a target string (see the module docstring) into a `Target` with K categories.

    `categories` is K: required by the named families, optional for blog / probs / stream (which
    bring their own K and must agree with it when it is given). `base_dir` anchors a relative
    stream path. Raises TargetError.
    """
    if not isinstance(spec, str):
        raise TargetError(f"target must be a string, got {spec!r}")
    text = spec.strip()
    if not text:
        raise TargetError(f"target {spec!r} is empty; known families: {', '.join(_FAMILIES)}")
    head, _, rest = text.partition(":")
    name = head.strip().lower()
    if name not in _FAMILIES:
        raise TargetError(f"target {text!r}: unknown family {head.strip()!r}; known: {', '.join(_FAMILIES)}")
    k = _check_categories(text, categories)

    if name == "stream":
        probs, stream = _stream(text, rest, k, base_dir)
        return Target(text, probs, stream)
    if name == "probs":
        return Target(text, _explicit(text, rest, k))

    params = _parse_params(text, name, rest)
    if name == "blog":
        if k is not None and k != len(BLOG_PROBS):
            raise TargetError(f"target {text!r}: blog has K = {len(BLOG_PROBS)} categories, got categories={k}")
        return Target(text, torch.tensor(BLOG_PROBS, dtype=_F64))
    if k is None:
        raise TargetError(f"target {text!r}: family {name} needs categories (K), got categories=None")
    for key, param in _PARAMS[name].items():
        params.setdefault(key, param.default)
    if name == "sparse":
        if params["n"] is None:
            params["n"] = min(3, k)
        elif params["n"] > k:
            raise TargetError(f"target {text!r}: parameter n={params['n']} must be <= categories={k}")
    return Target(text, _FAMILY_FNS[name](k, **params))
