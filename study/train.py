"""One trial: config -> population of seeds -> training loop with evaluations -> metrics, checkpoints.

Nothing here knows Ray. `study.sweep` drives `Trial` from a Tune trainable; `run_local` drives it
from `gumbel-study train`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from study.config import PBT_MUTABLE, TrialConfig
from study.evaluation import Evaluation
from study.population import Population
from study.provenance import append_session
from study.record import write_evaluation, write_host, write_params
from study.vocab import EVAL_KEYS, probe_key

__all__ = [
    "Trial",
    "TrialDiverged",
    "lean_metrics",
    "load_state",
    "resolve_device",
    "run_local",
    "save_state",
]

STATE_FILE = "state.pt"
LEAN_PROBE_STATS = ("bias2", "variance", "mse")  # of the trained estimator, for dashboards


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

    def __init__(self, config: TrialConfig, seeds: int, *, device: str | None = None):
        self.config = config
        self.seeds = [config.seed + i for i in range(seeds)]
        self.population = Population(config, self.seeds, device=resolve_device(device or config.device))
        self.last_eval = -1  # step of the last evaluation, -1 before the first
        self.diverged: str | None = None  # the reason, once a replica has diverged
        self.time_s = 0.0  # seconds spent training and evaluating, over every session

    @property
    def step(self) -> int:
        return self.population.step

    @property
    def finished(self) -> bool:
        return self.last_eval >= self.config.steps

    def run(
        self,
        on_eval: Callable[[Evaluation], None],
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Train to `config.steps`, evaluating at `config.evaluation_steps`; resumes after a restore.

        `on_eval(evaluation)` sees every evaluation; it may checkpoint with `state_dict()`.
        """
        if self.diverged:  # restored from the checkpoint written at divergence: retrying cannot help
            raise TrialDiverged(self.diverged)
        for point in self.config.evaluation_steps:
            if point <= self.last_eval:
                continue
            started = time.perf_counter()
            self.population.train(point - self.population.step, on_step)
            evaluation = self.population.evaluate()
            self.time_s += time.perf_counter() - started
            self.last_eval = point
            diverged = [seed for seed, bad in zip(evaluation.seeds, evaluation.diverged.tolist()) if bad]
            if diverged:
                self.diverged = (
                    f"seeds {sorted(diverged)} diverged (non-finite parameters) by step {point} "
                    f"(lr_g={self.config.lr_g}, lr_d={self.config.lr_d})"
                )
            on_eval(evaluation)
            if self.diverged:
                raise TrialDiverged(self.diverged)

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": self.population.state_dict(),
            "last_eval": self.last_eval,
            "diverged": self.diverged or "",
            "time_s": self.time_s,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of this config, or of one that differs from it in PBT's
        mutable fields only (config.PBT_MUTABLE: tau0, anneal_rate, lr_g, lr_d): a trial that
        exploits another's checkpoint. Its learning rates are its own, and its temperature
        continues from its own tau0 at the checkpoint's step (a new tau anchor); a changed rate
        alone continues from the checkpoint's temperature. Any other difference is a ValueError
        naming the first differing field."""
        ours, theirs = self.config.to_dict(), state["config"]
        changed = [k for k, v in ours.items() if theirs.get(k) != v]
        fixed = [k for k in changed if k not in PBT_MUTABLE.values()]
        if fixed:
            raise ValueError(f"checkpoint was written for a different config: {fixed[0]}={theirs.get(fixed[0])!r}, "
                             f"this trial has {fixed[0]}={ours[fixed[0]]!r} (differs in {', '.join(sorted(fixed))}; "
                             f"only {', '.join(PBT_MUTABLE.values())} may differ)")
        population = self.population
        population.load_state_dict(state["population"])
        if "tau0" in changed:
            population.set_tau_anchor(population.step, self.config.tau0)
        elif "anneal_rate" in changed:  # the checkpoint's temperature, annealed at the new rate from here
            anchor_step, anchor_tau = state["population"].get("tau_anchor", (0, theirs["tau0"]))
            before = dataclasses.replace(self.config, **{k: theirs[k] for k in changed}).schedule_for(tau0=anchor_tau)
            population.set_tau_anchor(population.step, before(population.step - anchor_step))
        self.last_eval = int(state["last_eval"])
        self.diverged = state.get("diverged") or None
        self.time_s = float(state.get("time_s", 0.0))


def save_state(trial: Trial, directory: str | Path) -> Path:
    """Write the trial state atomically (write, then rename) so a crash never leaves half a file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(trial.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_state(trial: Trial, directory: str | Path) -> dict[str, Any]:
    """Restore `trial` from DIRECTORY/state.pt; return the config the checkpoint was written for."""
    # weights_only: a checkpoint is data; never unpickle arbitrary objects from disk.
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    trial.load_state_dict(state)
    return state["config"]


def _finite_mean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.double().mean()) if finite.numel() else float("nan")


def lean_metrics(evaluation: Evaluation, relaxation: str) -> dict[str, float]:
    """What Tune receives (DESIGN.md "Metrics"): means over seeds of the scalar metrics, the spread
    of fit/tv, seed counts, and the trained estimator's probe at the current tau. About 20 keys,
    whatever the number of seeds, estimators or ladder temperatures; the rest is in the record."""
    out = {"step": evaluation.step}
    for key in EVAL_KEYS:
        out[key] = _finite_mean(evaluation.metrics[key])
    tv = evaluation.metrics["fit/tv"]
    out["std/fit/tv"] = float(tv.double().std()) if tv.numel() > 1 else 0.0
    out["seeds/count"] = len(evaluation.seeds)
    out["seeds/diverged"] = int(evaluation.diverged.sum())
    for probe in evaluation.probes:
        if probe.source == "current" and probe.estimator == relaxation:
            for stat in LEAN_PROBE_STATS:
                out[probe_key(relaxation, stat)] = _finite_mean(probe.stats[stat])
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
    session: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one trial without Ray, writing the same trial record as a Tune trial (study.record):
    OUT/params.json, OUT/record/, plus OUT/run.json (provenance, when `session` is given),
    OUT/summary.json (final metrics per seed) and OUT/state.pt (the final state)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if session is not None:
        append_session(out, session)
    write_params(out, {**config.to_dict(), "seeds": seeds})
    trial = Trial(config, seeds)
    write_host(out, trial.step, trial.population.device)
    final: list[dict] = []
    bar = _progress_bar(config.steps, progress)

    def on_step(step: int) -> None:
        bar.update(1)

    def on_eval(evaluation: Evaluation) -> None:
        nonlocal final
        write_evaluation(out, evaluation, trial.time_s)
        final = evaluation.rows()
        lean = lean_metrics(evaluation, config.relaxation)
        bar.set_postfix(tau=f"{lean['tau']:.3g}", tv=f"{lean['fit/tv']:.3f}", refresh=False)

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
        "wall_s": round(trial.time_s, 3),
        "seeds": [_summary_row(row) for row in final],
        "error": error,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _summary_row(row: dict) -> dict:
    return {k: row[k] for k in ("seed", "step", *EVAL_KEYS, "fit/probs", "diverged")}
