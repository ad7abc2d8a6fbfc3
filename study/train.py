"""One trial: config -> population of seeds -> training loop with evaluations -> metrics, checkpoints.

Nothing here knows Ray. `study.sweep` drives `Trial` from a Tune trainable; `run_local` drives it
from `gumbel-study train`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from study.config import TrialConfig
from study.population import Population, ReplicaSettings

__all__ = [
    "Trial",
    "TrialDiverged",
    "aggregate",
    "load_state",
    "resolve_device",
    "run_local",
    "save_state",
]

STATE_FILE = "state.pt"


class TrialDiverged(RuntimeError):
    """Raised after the evaluation at which a replica's parameters stopped being finite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is visible")
    return torch.device(name)


class Trial:
    """A population of `seeds` replicas of one trial config, evaluated on a fixed cadence."""

    def __init__(self, config: TrialConfig, seeds: int, *, settings: ReplicaSettings = ReplicaSettings(), device: str | None = None):
        self.config = config
        self.seeds = [config.seed + i for i in range(seeds)]
        self.population = Population(config, self.seeds, settings=settings, device=resolve_device(device or config.device))
        self.last_eval = -1  # step of the last evaluation, -1 before the first
        self.diverged: str | None = None  # the reason, once a replica has diverged

    @property
    def step(self) -> int:
        return self.population.step

    @property
    def finished(self) -> bool:
        return self.last_eval >= self.config.steps

    def run(
        self,
        on_eval: Callable[[int, list[dict]], None],
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Train to `config.steps`, evaluating at `config.evaluation_steps`; resumes after a restore.

        `on_eval(step, rows)` gets one metrics dict per seed; it may checkpoint with `state_dict()`.
        """
        if self.diverged:  # restored from the checkpoint written at divergence: retrying cannot help
            raise TrialDiverged(self.diverged)
        for point in self.config.evaluation_steps:
            if point <= self.last_eval:
                continue
            self.population.train(point - self.population.step, on_step)
            rows = self.population.evaluate()
            self.last_eval = point
            diverged = [row["seed"] for row in rows if row["diverged"]]
            if diverged:
                self.diverged = (
                    f"seeds {diverged} diverged (non-finite parameters) by step {point} "
                    f"(lr_g={self.config.lr_g}, lr_d={self.config.lr_d})"
                )
            on_eval(point, rows)
            if self.diverged:
                raise TrialDiverged(self.diverged)

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": self.population.state_dict(),
            "last_eval": self.last_eval,
            "diverged": self.diverged or "",
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config.to_dict():
            changed = sorted(k for k, v in self.config.to_dict().items() if state["config"].get(k) != v)
            raise ValueError(f"checkpoint was written for a different config (differs in {', '.join(changed)})")
        self.population.load_state_dict(state["population"])
        self.last_eval = int(state["last_eval"])
        self.diverged = state.get("diverged") or None


def save_state(trial: Trial, directory: str | Path) -> Path:
    """Write the trial state atomically (write, then rename) so a crash never leaves half a file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(trial.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_state(trial: Trial, directory: str | Path) -> None:
    # weights_only: a checkpoint is data; never unpickle arbitrary objects from disk.
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    trial.load_state_dict(state)


def _finite_values(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def aggregate(rows: list[dict]) -> dict[str, float]:
    """Mean over seeds of every scalar metric (key), its spread (`std/<key>`), and counts."""
    out: dict[str, float] = {}
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    for key in keys:
        values = _finite_values(rows, key)
        out[key] = statistics.fmean(values) if values else float("nan")
        out[f"std/{key}"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds/count"] = len(rows)
    out["seeds/diverged"] = sum(bool(r["diverged"]) for r in rows)
    return out


# ---------------------------------------------------------------------- local runs


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm  # a thin dependency, only for interactive runs

    return tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def run_local(
    config: TrialConfig,
    seeds: int,
    out: str | Path,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one trial without Ray. Writes DIR/metrics.jsonl (a line per seed per evaluation),
    DIR/summary.json (final metrics per seed) and DIR/state.pt (the final state)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"seeds": seeds, **config.to_dict()}, indent=2) + "\n")
    trial = Trial(config, seeds)
    started = time.time()
    final: list[dict] = []
    bar = _progress_bar(config.steps, progress)
    metrics_path = out / "metrics.jsonl"

    def on_step(step: int) -> None:
        bar.update(1)

    def on_eval(step: int, rows: list[dict]) -> None:
        nonlocal final
        final = rows
        with metrics_path.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        agg = aggregate(rows)
        bar.set_postfix(tau=f"{agg['tau']:.3g}", tv=f"{agg['fit/tv']:.3f}", refresh=False)

    metrics_path.write_text("")
    error = None
    try:
        trial.run(on_eval, on_step)
    except TrialDiverged as err:
        error = str(err)
    finally:
        bar.close()
    save_state(trial, out)
    summary = {
        "config": config.to_dict(),
        "steps": trial.step,
        "wall_s": round(time.time() - started, 3),
        "seeds": [_summary_row(row) for row in final],
        "aggregate": aggregate(final) if final else {},
        "error": error,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _summary_row(row: dict) -> dict:
    keep = ("seed", "step", "tau", "fit/tv", "fit/js", "fit/kl", "fit/probs", "loss/d", "loss/g", "sample/vertex_gap", "sample/mean_bias", "diverged")
    return {k: row[k] for k in keep}
