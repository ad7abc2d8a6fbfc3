"""Population: replica-steps/s of study.population.Population vs a plain single-replica PyTorch loop.

    python benchmarks/population.py [--replicas 1,8,64,256] [--categories 10,100] [--batch 256]
                                    [--cell-seconds 2] [--threads N] [--small] [--json PATH]

One replica-step = one outer step of one replica: a discriminator update plus `g_steps` generator
updates. The population trains R replicas at once (`Population(cfg, seeds=range(R)).train(n)`),
with cfg = TrialConfig(discriminator="mlp", disc_width=64, disc_depth=2, batch_size=256,
categories=K, relaxation="soft", g_steps=1, target="uniform"): R * n replica-steps.

The baseline (`PlainGAN`) is what one writes with torch.nn for one replica: an nn.Sequential of
nn.Linear K -> 64 -> 64 -> 1 with LeakyReLU(0.2), free logits as an nn.Parameter,
F.gumbel_softmax, one torch.optim.Adam each, zero_grad / backward / step, the same
non-saturating losses (D: softplus(-D(real)) + softplus(D(fake)); G: softplus(-D(fake))), real
samples from torch.multinomial. R seeds are R sequential runs of it, so its replica-steps/s is its
steps/s. Ratio = population replica-steps/s / plain replica-steps/s.

Measured in rounds (`interleaved_cells`): for each K, one round times a repeat of the plain loop,
of every population and of the sgemm peak, back to back; --rounds rounds (default 5). A ratio
and a share are formed within each round and reported as the median over rounds, so that the
machine's drift (tens of percent within minutes on a shared VM) does not land between the two
sides of a ratio. Each side's step count makes one repeat last about --cell-seconds / (rounds + 1).
Both sides use the same torch threads (torch's default unless --threads).

Share of matmul peak. FLOPs counted per replica-step, the matmuls only (Adam, the softmax and the
sampling are not counted). With widths w_0 = K, w_1..w_L (hidden), w_{L+1} = 1, one forward pass
of one sample costs F = 2 * sum_i w_i * w_{i+1} FLOPs; F_1 = 2 K w_1 is the first layer's part.
- nominal, the GAN step as written (forward + backward counted as 3 F, the usual convention):
      nominal = 3 F * (2 B  [D step: real + fake]  +  g_steps * B  [G step: fake])
  Achieved GFLOP/s = nominal x replica-steps/s; `peak_pct` = that / peak. This is a model-FLOPs
  utilisation: work the population avoids counts as done.
- executed, what the population's matmuls actually run: the D step needs no input gradient of
  its first layer and a G step no weight gradients of D; and when K < B the D step feeds the
  real half (one-hots, B samples of at most K values) as the K unit vectors weighted by their
  counts (population.discriminator_inputs), so it runs on d_rows = K + B rows instead of 2 B:
      executed = d_rows (3 F - F_1) + g_steps * B * 2 F
  `executed_pct` = executed x replica-steps/s / peak: the hardware's share.
Rows with d_rows = 2B are the same population with distinct_rows=False (--full-batch), so the
effect of the row reduction and the efficiency of the full-size matmuls are measured in the same run.
Peak = the round's float32 2048^3 sgemm rate with torch's threads (the best of 3 bursts of ~0.1 s).
Goals (R = 64, K = 10): >= 5x the plain loop and >= 50% of peak (issue 7; issue 3: 4x and 40%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/population.py`: benchmarks/ would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import autonumber, finish, measure, print_table
from study.config import TrialConfig
from study.population import Population

GOAL_RATIO = 5.0  # issue 7 (issue 3: 4x)
GOAL_SHARE = 0.5  # issue 7 (issue 3: 40%)
GOAL_RATIO_ISSUE3, GOAL_SHARE_ISSUE3 = 4.0, 0.4
GOAL_CELL = (64, 10)  # (R, K) the goals are stated for
WIDTH, DEPTH, BATCH = 64, 2, 256


def bench_config(categories: int, *, batch: int = BATCH, width: int = WIDTH, depth: int = DEPTH, relaxation: str = "soft") -> TrialConfig:
    return TrialConfig(
        discriminator="mlp", disc_width=width, disc_depth=depth, batch_size=batch,
        categories=categories, relaxation=relaxation, g_steps=1, target="uniform",
    )


# ---------------------------------------------------------------------- the plain baseline


class PlainGAN:
    """One replica of the toy GAN, written the ordinary torch.nn way (see the module docstring)."""

    def __init__(
        self,
        probs: torch.Tensor,
        *,
        width: int = WIDTH,
        depth: int = DEPTH,
        batch: int = BATCH,
        tau: float = 1.0,
        hard: bool = False,
        lr_g: float = 1e-3,
        lr_d: float = 1e-3,
        g_steps: int = 1,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        torch.manual_seed(seed)
        self.probs = probs.to(device=device, dtype=torch.float32)  # target distribution, [K]
        self.K, self.B, self.tau, self.hard, self.g_steps = probs.numel(), batch, tau, hard, g_steps
        layers: list[nn.Module] = []
        fan_in = self.K
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.LeakyReLU(0.2)]
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        self.disc = nn.Sequential(*layers).to(device)
        self.logits = nn.Parameter(torch.ones(self.K, device=device))  # the generator: free logits
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr_d)
        self.opt_g = torch.optim.Adam([self.logits], lr=lr_g)

    def _fake(self) -> torch.Tensor:
        return F.gumbel_softmax(self.logits.expand(self.B, self.K), tau=self.tau, hard=self.hard)  # [B, K]

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One outer step: a discriminator update, then g_steps generator updates. Returns the losses."""
        real = F.one_hot(torch.multinomial(self.probs, self.B, replacement=True), self.K).float()  # [B, K]
        with torch.no_grad():
            fake = self._fake()
        d_loss = (F.softplus(-self.disc(real)) + F.softplus(self.disc(fake))).mean()
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        for _ in range(self.g_steps):
            g_loss = F.softplus(-self.disc(self._fake())).mean()
            self.opt_g.zero_grad()
            g_loss.backward()  # also fills D's .grad; the next D step's zero_grad clears it
            self.opt_g.step()
        return d_loss.detach(), g_loss.detach()

    def train(self, n: int) -> None:
        for _ in range(n):
            self.step()

    @torch.no_grad()
    def tv(self) -> float:
        """Total variation between the target and the generator's distribution."""
        return float(0.5 * (torch.softmax(self.logits, dim=-1) - self.probs).abs().sum())


# ---------------------------------------------------------------------- FLOPs


def flops_per_replica_step(
    categories: int, *, width: int = WIDTH, depth: int = DEPTH, batch: int = BATCH, g_steps: int = 1, distinct_rows: bool = True,
) -> dict[str, float]:
    """Matmul FLOPs of one replica-step (see the module docstring): nominal (the GAN step's 3x
    forward on 2B + g_steps B samples) and executed (what the population's matmuls run: the
    backward passes it needs, on the rows it feeds)."""
    widths = [categories] + [width] * depth + [1]
    macs = [a * b for a, b in zip(widths[:-1], widths[1:])]  # multiply-adds per sample, per layer
    fwd = 2.0 * sum(macs)  # forward FLOPs per sample
    first = 2.0 * macs[0]  # the first layer's share, whose input gradient the D step never needs
    nominal = 3.0 * fwd * (2 * batch + g_steps * batch)
    # The D step feeds the real half (one-hots) as K weighted rows when K < B (population.discriminator_inputs);
    # the benchmark's fakes are soft, so their B rows stay.
    d_rows = (min(categories, batch) if distinct_rows else batch) + batch
    d_executed = d_rows * (fwd + fwd + (fwd - first))  # forward + weight grads + input grads of layers 2..
    g_executed = g_steps * batch * (fwd + fwd)  # forward + input grads (no weight grads for D)
    return {"nominal": nominal, "executed": d_executed + g_executed, "forward_per_sample": fwd, "d_rows": d_rows}


# ---------------------------------------------------------------------- cells


def population_cell(R: int, K: int, *, cell_s: float, repeats: int = 3, batch: int = BATCH, device: str = "cpu", max_steps: int = 100_000) -> dict:
    """Replica-steps/s of a population of R replicas (its construction is not timed)."""
    pop = Population(bench_config(K, batch=batch), seeds=list(range(R)), device=device)
    n = autonumber(pop.train_step, cell_s / (repeats + 1), device=device, minimum=5, maximum=max_steps)
    timing = measure(lambda: pop.train(n), number=1, repeats=repeats, warmup=0, device=device)
    return {"R": R, "K": K, "steps": n, "rate": R * n / timing.median, "timing": timing.to_dict()}


def plain_cell(K: int, *, cell_s: float, repeats: int = 3, batch: int = BATCH, device: str = "cpu", max_steps: int = 100_000) -> dict:
    """Steps/s of one PlainGAN replica = the replica-steps/s of R sequential runs."""
    gan = PlainGAN(torch.full((K,), 1.0 / K), batch=batch, device=device)
    n = autonumber(gan.step, cell_s / (repeats + 1), device=device, minimum=5, maximum=max_steps)
    timing = measure(lambda: gan.train(n), number=1, repeats=repeats, warmup=0, device=device)
    return {"K": K, "steps": n, "rate": n / timing.median, "timing": timing.to_dict()}


def interleaved_cells(
    K: int,
    replicas,
    *,
    cell_s: float,
    rounds: int,
    batch: int = BATCH,
    device: str = "cpu",
    peak_n: int = 2048,
    full_batch=(),
) -> tuple[dict, dict[tuple[int, bool], dict], list[float]]:
    """The plain loop, every population of this K and the sgemm peak, measured in alternation.

    This machine's speed drifts by tens of percent within minutes (the plain loop read 405 to 632
    steps/s in runs an hour apart). Each round times one repeat of every side back to back, so a
    ratio or a share is formed from numbers of the same round; the reported value is the median
    over rounds. Populations are keyed (R, distinct_rows); the R in `full_batch` are also measured
    with distinct_rows=False (all 2B rows through the D step). Returns (plain, populations,
    per-round peak GFLOP/s).
    """
    gan = PlainGAN(torch.full((K,), 1.0 / K), batch=batch, device=device)
    keys = [(R, True) for R in replicas] + [(R, False) for R in full_batch if K < batch]
    pops = {
        (R, distinct): Population(bench_config(K, batch=batch), seeds=list(range(R)), device=device, distinct_rows=distinct)
        for R, distinct in keys
    }
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(peak_n, peak_n, generator=gen, device=device) for _ in range(2))  # ~N(0, 1), [n, n]
    out = torch.empty(peak_n, peak_n, device=device)
    sgemm = lambda: torch.mm(a, b, out=out)  # noqa: E731
    share = cell_s / (rounds + 1)  # one repeat of one side
    n_plain = autonumber(gan.step, share, device=device, minimum=5)
    n_pop = {key: autonumber(pop.train_step, share, device=device, minimum=5) for key, pop in pops.items()}
    n_peak = autonumber(sgemm, 0.25, device=device, minimum=3)

    def seconds(fn, n: int) -> float:  # per call, one repeat
        return measure(fn, number=n, repeats=1, warmup=0, device=device).per_call[0]

    plain_s, pop_s, peak_gflops = [], {key: [] for key in pops}, []
    for _ in range(rounds):
        plain_s.append(seconds(gan.step, n_plain))
        for key, pop in pops.items():
            pop_s[key].append(seconds(pop.train_step, n_pop[key]))
        best = measure(sgemm, number=max(1, n_peak // 3), repeats=3, warmup=0, device=device).best  # the round's peak: its best burst
        peak_gflops.append(2.0 * peak_n**3 / best / 1e9)
    plain = {"K": K, "steps": n_plain, "per_step_s": plain_s, "rate": 1.0 / statistics.median(plain_s)}
    populations = {
        (R, distinct): {"R": R, "K": K, "distinct_rows": distinct, "steps": n_pop[R, distinct], "per_step_s": pop_s[R, distinct],
                        "rate": R / statistics.median(pop_s[R, distinct])}
        for R, distinct in pops
    }
    return plain, populations, peak_gflops


def run(
    *,
    replicas=(1, 8, 64, 256),
    categories=(10, 100),
    batch: int = BATCH,
    cell_s: float = 2.0,
    rounds: int = 5,
    device: str = "cpu",
    peak_n: int = 2048,
    full_batch=(GOAL_CELL[0],),
    verbose: bool = True,
) -> dict:
    def log(msg: str) -> None:
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    rows, peaks = [], []
    for K in categories:
        plain, populations, peak_gflops = interleaved_cells(
            K, replicas, cell_s=cell_s, rounds=rounds, batch=batch, device=device, peak_n=peak_n,
            full_batch=[R for R in full_batch if R in replicas],
        )
        peaks += peak_gflops
        log(f"  plain K={K}: {plain['rate']:.4g} steps/s; matmul peak {statistics.median(peak_gflops):.4g} GFLOP/s in these rounds")
        for (R, distinct), cell in populations.items():
            flops = flops_per_replica_step(K, batch=batch, distinct_rows=distinct)
            # Per round: this round's population rate against this round's plain rate and peak.
            rates = [R / t for t in cell["per_step_s"]]
            ratio = statistics.median(r * p for r, p in zip(rates, plain["per_step_s"]))
            shares = [flops["nominal"] * r / 1e9 / peak for r, peak in zip(rates, peak_gflops)]
            executed = [flops["executed"] * r / 1e9 / peak for r, peak in zip(rates, peak_gflops)]
            row = {
                "R": R,
                "K": K,
                "d_rows": "K+B" if distinct and K < batch else "2B",
                "steps": cell["steps"],
                "pop_rs_per_s": cell["rate"],
                "plain_rs_per_s": plain["rate"],
                "ratio": ratio,
                "gflops": flops["nominal"] * cell["rate"] / 1e9,
                "peak_share": statistics.median(shares),
                "peak_share_range": [min(shares), max(shares)],
                "executed_gflops": flops["executed"] * cell["rate"] / 1e9,
                "executed_share": statistics.median(executed),
                "flops_per_replica_step": flops,
                "per_step_s": cell["per_step_s"],
                "plain_per_step_s": plain["per_step_s"],
                "plain_steps": plain["steps"],
                "peak_gflops_rounds": peak_gflops,
            }
            rows.append(row)
            log(f"  population R={R} K={K} D rows {row['d_rows']}: {cell['rate']:.4g} replica-steps/s, {row['ratio']:.3g}x plain, "
                f"{100 * row['peak_share']:.3g}% of peak (rounds: {100 * min(shares):.3g}-{100 * max(shares):.3g}%), "
                f"executed {100 * row['executed_share']:.3g}%")
    peak = {"gflops": statistics.median(peaks), "range": [min(peaks), max(peaks)], "n": peak_n, "device": device,
            "threads": torch.get_num_threads() if device == "cpu" else None}
    goals = []
    goal_row = next((r for r in rows if (r["R"], r["K"]) == GOAL_CELL), None)
    if goal_row is not None:
        cell = f"R={GOAL_CELL[0]}, K={GOAL_CELL[1]}"
        goals = [
            {"goal": f"{cell}: population / plain (issue 7)", "value": goal_row["ratio"], "target": GOAL_RATIO, "unit": "x", "met": goal_row["ratio"] >= GOAL_RATIO},
            {"goal": f"{cell}: population / plain (issue 3)", "value": goal_row["ratio"], "target": GOAL_RATIO_ISSUE3, "unit": "x", "met": goal_row["ratio"] >= GOAL_RATIO_ISSUE3},
            {"goal": f"{cell}: share of matmul peak, nominal FLOPs (issue 7)", "value": goal_row["peak_share"], "target": GOAL_SHARE, "unit": "", "met": goal_row["peak_share"] >= GOAL_SHARE},
            {"goal": f"{cell}: share of matmul peak, nominal FLOPs (issue 3)", "value": goal_row["peak_share"], "target": GOAL_SHARE_ISSUE3, "unit": "", "met": goal_row["peak_share"] >= GOAL_SHARE_ISSUE3},
        ]
    return {
        "benchmark": "population",
        "settings": {"batch": batch, "disc": f"K->{WIDTH}x{DEPTH}->1", "cell_seconds": cell_s, "rounds": rounds, "device": device, "threads": torch.get_num_threads()},
        "peak": peak,
        "rows": rows,
        "goals": goals,
    }


def print_result(result: dict) -> None:
    s, peak = result["settings"], result["peak"]
    print_table(
        [dict(r, peak_pct=100 * r["peak_share"], executed_pct=100 * r["executed_share"]) for r in result["rows"]],
        ["R", "K", "d_rows", "steps", "pop_rs_per_s", "plain_rs_per_s", "ratio", "gflops", "peak_pct", "executed_pct"],
        title=f"population: replica-steps/s, batch {s['batch']}, discriminator {s['disc']}, {s['device']}, {s['threads']} threads; "
        f"matmul peak {peak['gflops']:.4g} GFLOP/s (median of the rounds; {peak['range'][0]:.4g}-{peak['range'][1]:.4g})",
    )
    print("ratio = population replica-steps/s / plain single-replica loop steps/s; gflops = nominal matmul FLOPs (3x forward on 2B + B samples) x rate;\n"
          "peak_pct = gflops / peak; executed_pct = the FLOPs the population's matmuls run (d_rows: K+B = one-hot real half fed as K weighted rows) x rate / peak")
    for g in result["goals"]:
        value = f"{100 * g['value']:.3g}%" if g["unit"] == "" else f"{g['value']:.3g}x"
        target = f"{100 * g['target']:.3g}%" if g["unit"] == "" else f"{g['target']:.3g}x"
        print(f"goal {g['goal']}: >= {target}; measured {value} -> {'met' if g['met'] else 'NOT met'}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=_ints, default=[1, 8, 64, 256], help="comma-separated R values")
    p.add_argument("--categories", type=_ints, default=[10, 100], help="comma-separated K values")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--cell-seconds", type=float, default=2.0, help="about how long each (R, K) cell runs")
    p.add_argument("--rounds", type=int, default=5, help="rounds of interleaved measurements per K")
    p.add_argument("--threads", type=int, help="torch threads for both sides (default: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--peak-n", type=int, default=2048, help="sgemm size for the matmul peak")
    p.add_argument("--full-batch", type=_ints, default=[GOAL_CELL[0]], help="R values also measured with all 2B rows through the D step (distinct_rows=False)")
    p.add_argument("--small", action="store_true", help="smoke size: R 1,8,64, K 10, short cells")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small:
        args.replicas, args.categories, args.cell_seconds, args.peak_n = [1, 8, 64], [10], 0.4, 1024
    result = run(
        replicas=args.replicas, categories=args.categories, batch=args.batch,
        cell_s=args.cell_seconds, rounds=args.rounds, device=args.device, peak_n=args.peak_n, full_batch=args.full_batch,
    )
    return finish(result, args.json, print_result)


if __name__ == "__main__":
    sys.exit(main())
