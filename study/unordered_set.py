"""The unordered-set estimator with its built-in baseline (Kool, van Hoof and Welling, ICLR 2020).

Per sample: k categories S drawn without replacement by Gumbel-top-k (the k largest of theta + G),
f evaluated at each, and, with p = softmax(theta),

    g = sum_{s in S} grad p(s) R(S, s) [f(s) - b(S, s)],
    b(S, s) = sum_{s' in S} p(s') R^{D\\s}(S, s') f(s')          (the built-in baseline, k >= 2)

R(S, s) = P^{D\\s}(S\\{s}) / P(S) and R^{D\\s}(S, s') = P^{D\\{s,s'}}(S\\{s,s'}) / P^{D\\s}(S\\{s})
(= 1 for s' = s), P(S) the probability of drawing the unordered set S, P^{D\\A} the same with the
categories A removed and the rest renormalised. Unbiased; k = K gives the exact gradient (every R
is 1 and b is E f); k = 1 has no baseline and is REINFORCE (R = 1 / p(s)).

The set probabilities come from one dynamic program over the 2^k subsets of S (exact, no numerical
integration): Q(A) = P^{D\\A}(S\\A) satisfies Q(S) = 1 and
Q(A) = sum_{b in S\\A} p_b / (1 - p(A)) Q(A + b), with 1 - p(A) = p(D\\S) + p(S\\A) summed
without cancellation. Then P(S) = Q({}), P^{D\\s}(S\\{s}) = Q({s}), and so on. k <= 12 (4,096
subsets per sample), or k = K.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from study.estimator_base import Draw, Estimator
from study.gumbel import gumbel_from_exponential, one_hot
from study.vocab import MAX_SET_SIZE

__all__ = ["UnorderedSet", "set_ratios"]


@functools.lru_cache(maxsize=16)
def _subset_tables(k: int) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
    """For subsets as k-bit masks: outside [2^k, k] (1 where a bit is not in the mask), and per
    popcount c = k-1 .. 0 the masks of that popcount [n_c], their successors m | (1 << b) [n_c, k]
    (m itself where b is already in m) and whether b is outside m [n_c, k]."""
    masks = torch.arange(1 << k)
    bits = (masks.unsqueeze(1) >> torch.arange(k)) & 1  # [2^k, k]
    outside = (1 - bits).double()
    levels = []
    for c in range(k - 1, -1, -1):
        level = masks[bits.sum(dim=1) == c]  # [n_c]
        succ = level.unsqueeze(1) | (1 << torch.arange(k))  # [n_c, k]
        levels.append((level, succ, outside[level]))
    return outside, levels


def set_ratios(p_set: Tensor, p_rest: Tensor) -> tuple[Tensor, Tensor]:
    """R(S, s) [..., k] and R^{D\\s}(S, s') [..., k, k] (row s) of the module docstring, from the
    probabilities of the k categories of S [..., k] and the mass outside S [...], in float64."""
    k = p_set.shape[-1]
    p_set, p_rest = p_set.double(), p_rest.double()
    outside, levels = _subset_tables(k)
    tiny = torch.finfo(torch.float64).tiny
    denom = (p_rest.unsqueeze(-1) + p_set @ outside.T).clamp_min(tiny)  # 1 - p(A) for every mask A, [..., 2^k]
    q = torch.zeros(*p_set.shape[:-1], 1 << k, dtype=torch.float64, device=p_set.device)  # [..., 2^k]
    q[..., -1] = 1.0  # Q(S) = 1
    for level, succ, out in levels:
        terms = p_set.unsqueeze(-2) * out * q[..., succ]  # [..., n_c, k]
        q[..., level] = terms.sum(dim=-1) / denom[..., level]
    single = 1 << torch.arange(k)  # masks {s}
    q1 = q[..., single]  # Q({s}), [..., k]
    q2 = q[..., single.unsqueeze(1) | single]  # Q({s, s'}), diagonal Q({s}), [..., k, k]
    r1 = q1 / q[..., :1].clamp_min(tiny)
    r2 = q2 / q1.unsqueeze(-1).clamp_min(tiny)
    return r1, r2


class UnorderedSet(Estimator):
    """Score function over a set of k categories; f at each: points = the k set members."""

    pathwise = False

    def draw(self, logits, noise, shape, *, emit_only=False, **options):
        k = options["k"]
        if k > shape[-1] or (MAX_SET_SIZE < k < shape[-1]):
            raise ValueError(f"unordered_set option k={k}: must be <= {MAX_SET_SIZE} or equal to the number of categories K={shape[-1]}")
        gumbel = gumbel_from_exponential(noise("gumbel", tuple(shape), 0))  # ~Gumbel(0, 1), [G, S, *rest, K]
        top = (logits.expand(shape) + gumbel).topk(k, dim=-1).indices  # Gumbel-top-k, [G, S, *rest, k]
        index = top.movedim(-1, 0)  # [k, G, S, *rest]; member 0 is the argmax: a sample of Cat(p)
        return Draw(gumbel, index)

    def emit(self, logits, draw, tau):
        return one_hot(draw.index[0], logits.shape[-1], logits.dtype)  # the set's first member, [G, S, *rest, K]

    def sample(self, logits, draw, tau):
        return one_hot(draw.index, logits.shape[-1], logits.dtype)  # the k members, [k, G, S, *rest, K]

    def surrogate(self, logits: Tensor, y: Tensor, values: Tensor, grad: Tensor | None, draw: Draw | None = None) -> Tensor:
        """sum_s sg(p_s R_s (f_s - b_s)) log p_s, averaged over the S samples: its gradient is the
        estimate. y [k, G, S, *rest, K] one-hots, values f at them [k, G, S, *rest]."""
        k, K = y.shape[0], y.shape[-1]
        log_p = torch.log_softmax(logits, dim=-1)  # [G, 1|S, *rest, K]
        log_p_set = (log_p * y).sum(dim=-1)  # log p(s), [k, G, S, *rest]
        with torch.no_grad():
            p = log_p.exp().expand(y.shape[1:])  # [G, S, *rest, K]
            members = y.sum(dim=0)  # [G, S, *rest, K]
            p_set = log_p_set.exp().movedim(0, -1)  # [G, S, *rest, k]
            p_rest = (p * (1.0 - members)).sum(dim=-1)  # mass outside S, [G, S, *rest]
            f = values.movedim(0, -1).double()  # [G, S, *rest, k]
            if k == K:  # S is every category: every ratio is 1
                r1, r2 = torch.ones_like(f), torch.ones(*f.shape, k, dtype=f.dtype, device=f.device)
            else:
                r1, r2 = set_ratios(p_set, p_rest)
            baseline = (r2 * (p_set.double() * f).unsqueeze(-2)).sum(dim=-1) if k > 1 else torch.zeros_like(f)  # b(S, s)
            weight = (p_set.double() * r1 * (f - baseline)).to(log_p.dtype).movedim(-1, 0)  # [k, G, S, *rest]
        per_sample = (weight * log_p_set).sum(dim=0)  # [G, S, *rest]
        return per_sample.mean(dim=1).reshape(len(per_sample), -1).sum(dim=1)  # [G]
