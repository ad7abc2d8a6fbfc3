"""What one evaluation of a population measures: the contract between training and its readers.

`Population.evaluate()` returns an `Evaluation`; `study.record` writes it as the trial record
(per-seed rows, probe rows) and `study.train.lean_metrics` reduces it to the few means that Tune
receives. Tensors stay on the population's device until a reader moves them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from study.vocab import probe_key

__all__ = ["Evaluation", "ProbeResult"]


@dataclass
class ProbeResult:
    """One probed estimator at one temperature per replica."""

    estimator: str
    source: str  # "current": at each replica's own tau; "ladder": at a fixed tau
    tau: Tensor  # [R], the temperature probed
    stats: dict[str, Tensor]  # vocab.PROBE_STATS -> [R]


@dataclass
class Evaluation:
    """Every metric of DESIGN.md "Metrics" for the R replicas of a population at one step."""

    step: int
    seeds: list[int]  # seed of each replica, in replica order
    metrics: dict[str, Tensor]  # vocab.EVAL_KEYS -> [R]
    probs: Tensor  # [R, K], the generator's distribution
    diverged: Tensor  # [R] bool: a parameter stopped being finite
    probes: list[ProbeResult]

    def rows(self, *, probes: bool = False) -> list[dict]:
        """One plain dict per seed, in seed order: the scalar metrics, `fit/probs`, `diverged` and,
        with `probes`, every probe statistic under its metric key (`grad/soft/bias2`, ...)."""
        cpu = {k: v.detach().cpu().tolist() for k, v in self.metrics.items()}
        if probes:
            for probe in self.probes:
                tau = None if probe.source == "current" else float(probe.tau[0])
                for stat, value in probe.stats.items():
                    cpu[probe_key(probe.estimator, stat, tau)] = value.detach().cpu().tolist()
        probs = self.probs.detach().cpu().tolist()
        diverged = self.diverged.cpu().tolist()
        out = []
        for r in sorted(range(len(self.seeds)), key=self.seeds.__getitem__):
            row = {"seed": self.seeds[r], "step": self.step, **{k: v[r] for k, v in cpu.items()}}
            row["fit/probs"] = probs[r]
            row["diverged"] = bool(diverged[r])
            out.append(row)
        return out
