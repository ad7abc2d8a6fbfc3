"""Probes: N single-sample gradient estimates in ONE batched call vs a Python loop of N backward passes.

    python benchmarks/probes.py [--num-estimates 1000] [--categories 10] [--tau 0.5]
                                [--estimators soft,hard,gumbel_rao] [--threads N] [--device cpu]
                                [--small] [--json PATH]

Batched: `study.estimators.estimate_gradients(name, logits, f, tau=tau, num_estimates=N)`, which
copies the logits N times and gets all N gradients from one forward and one backward pass.
Loop (what one would write without it): N times, fresh leaf logits, one sample
(`study.gumbel.gumbel_softmax(logits, tau)`, `hard=True` for `hard`; for `gumbel_rao` the same
conditional-Gumbel straight-through sample the estimator uses, k conditional draws), loss = f(y),
`torch.autograd.grad(loss, logits)`.

f is nonlinear in the sample: a fixed random MLP K -> 32 -> 1 with tanh plus a quadratic term, so
no estimator is trivially exact. Ratio = loop time / batched time (both medians of several
repeats, same threads). Goal: >= 100x. A z-test on the two sets of estimates checks that the loop
and the batched call estimate the same thing (max over K coordinates of |mean difference| / its
standard error; below 4 is agreement at about the 99.9% level for K <= 100 coordinates).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/probes.py`: benchmarks/ would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import autonumber, finish, measure, print_table
from study.estimators import estimate_gradients
from study.gumbel import conditional_gumbel, gumbel_max, gumbel_softmax, one_hot, straight_through

GOAL_RATIO = 100.0
ESTIMATORS = ("soft", "hard", "gumbel_rao")


class FixedMLP:
    """f(y) = w2 . tanh(W1 y + b1) + 0.5 (c . y)^2: [..., K] -> [...]; weights fixed by a seed."""

    def __init__(self, k: int, hidden: int = 32, *, device: torch.device | str = "cpu", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w1 = (torch.randn(k, hidden, generator=g) / math.sqrt(k)).to(device)  # ~N(0, 1/K), [K, H]
        self.b1 = (0.1 * torch.randn(hidden, generator=g)).to(device)  # [H]
        self.w2 = (torch.randn(hidden, generator=g) / math.sqrt(hidden)).to(device)  # [H]
        self.c = torch.randn(k, generator=g).to(device)  # [K]

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(y @ self.w1 + self.b1)  # [..., H]
        return h @ self.w2 + 0.5 * (y @ self.c) ** 2  # [...]


def loop_estimates(name: str, logits: torch.Tensor, f, *, tau: float, n: int, k_rao: int = 10) -> torch.Tensor:
    """n estimates, one forward and backward pass each: [n, K]."""
    out = []
    for _ in range(n):
        theta = logits.detach().clone().requires_grad_(True)  # a fresh leaf, [K]
        if name == "soft":
            y = gumbel_softmax(theta, tau)
        elif name == "hard":
            y = gumbel_softmax(theta, tau, hard=True)
        elif name == "gumbel_rao":
            index = gumbel_max(theta.detach())  # [] the sampled category
            vertex = one_hot(index, theta.shape[-1], theta.dtype)  # [K]
            g = conditional_gumbel(theta, index, num_samples=k_rao)  # ~Gumbel | argmax, [k, K]
            y = straight_through(vertex, torch.softmax((theta + g) / tau, dim=-1).mean(dim=0))  # [K]
        else:
            raise ValueError(f"no loop version of estimator {name!r}")
        loss = f(y)  # []
        (grad,) = torch.autograd.grad(loss, theta)
        out.append(grad)
    return torch.stack(out)  # [n, K]


def agreement_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """max_k |mean(a) - mean(b)| / its standard error, for estimates a [Na, K], b [Nb, K]."""
    se = torch.sqrt(a.var(dim=0) / a.shape[0] + b.var(dim=0) / b.shape[0]).clamp_min(torch.finfo(a.dtype).tiny)
    return float(((a.mean(dim=0) - b.mean(dim=0)).abs() / se).max())


def run(
    *,
    estimators=ESTIMATORS,
    num_estimates: int = 1000,
    categories: int = 10,
    tau: float = 0.5,
    k_rao: int = 10,
    repeats: int = 5,
    loop_repeats: int = 3,
    device: str = "cpu",
    verbose: bool = True,
) -> dict:
    torch.manual_seed(0)
    device = torch.device(device)
    K, N = categories, num_estimates
    logits = torch.randn(K, generator=torch.Generator().manual_seed(1)).to(device)  # [K]
    f = FixedMLP(K, device=device)
    rows = []
    for name in estimators:
        options = {"k": k_rao} if name == "gumbel_rao" else {}
        batched_fn = lambda: estimate_gradients(name, logits, f, tau=tau, num_estimates=N, **options)  # noqa: E731
        loop_fn = lambda: loop_estimates(name, logits, f, tau=tau, n=N, k_rao=k_rao)  # noqa: E731
        number = autonumber(batched_fn, 0.25, device=device)
        batched = measure(batched_fn, number=number, repeats=repeats, warmup=1, device=device)
        loop = measure(loop_fn, number=1, repeats=loop_repeats, warmup=0, device=device)
        z = agreement_z(batched_fn().double(), loop_fn().double())
        row = {
            "estimator": name,
            "K": K,
            "N": N,
            "batched_ms": batched.median * 1e3,
            "loop_ms": loop.median * 1e3,
            "ratio": loop.median / batched.median,
            "goal": GOAL_RATIO,
            "met": loop.median / batched.median >= GOAL_RATIO,
            "agree_z": z,
            "batched_timing": batched.to_dict(),
            "loop_timing": loop.to_dict(),
        }
        rows.append(row)
        if verbose:
            print(f"  {name}: batched {row['batched_ms']:.3g} ms, loop {row['loop_ms']:.4g} ms, ratio {row['ratio']:.3g}x", file=sys.stderr, flush=True)
    return {
        "benchmark": "probes",
        "settings": {"num_estimates": N, "categories": K, "tau": tau, "gumbel_rao_k": k_rao, "device": str(device), "threads": torch.get_num_threads()},
        "rows": rows,
        "goal": f"loop / batched >= {GOAL_RATIO:g}x for every estimator",
    }


def print_result(result: dict) -> None:
    s = result["settings"]
    print_table(
        result["rows"],
        ["estimator", "K", "N", "batched_ms", "loop_ms", "ratio", "goal", "met", "agree_z"],
        title=f"probes: {s['num_estimates']} single-sample estimates, batched call vs Python loop "
        f"(K={s['categories']}, tau={s['tau']}, {s['device']}, {s['threads']} threads)",
    )
    print(f"goal: loop time / batched time >= {GOAL_RATIO:g}x (ratio column); agree_z < 4: both estimate the same gradient")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-estimates", type=int, default=1000)
    p.add_argument("--categories", type=int, default=10)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--estimators", default=",".join(ESTIMATORS), help="comma-separated: soft,hard,gumbel_rao")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    p.add_argument("--small", action="store_true", help="smoke size: fewer repeats")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(
        estimators=[e for e in args.estimators.split(",") if e],
        num_estimates=args.num_estimates,
        categories=args.categories,
        tau=args.tau,
        repeats=2 if args.small else 5,
        loop_repeats=1 if args.small else 3,
        device=args.device,
    )
    return finish(result, args.json, print_result)


if __name__ == "__main__":
    sys.exit(main())
