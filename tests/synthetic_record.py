"""Synthetic experiment directories in the trial-record format (study.record), written with pyarrow.

    write_experiment(root, grid=..., seeds=..., ...) -> Path    a Tune-shaped experiment directory
    write_train_dir(root, ...) -> Path                            a `gumbel-study train` output

Each trial directory holds params.json, record/evals-<step>.parquet, record/probes-<step>.parquet
and record/host-<step>.json with the schemas study.record writes; the experiment holds a minimal
experiment_state-*.json (trial id, status, directory, config, grid values) and run.json. The
numbers are plausible, not trained: soft's variance grows as 1/tau and its bias falls with tau,
REINFORCE's moments are exact (study.evaluation: bias2 = bias2_floor = 0, n = 0, the same at
every tau), and the learned probabilities approach the target's.
Values are computed with numpy for a whole trial at once, so a 1,344-trial x 32-seed x 21-step
directory (the tradeoff grid: ~0.9M eval rows, ~29M probe rows, 56k files) is written in a few
minutes:

    .venv/bin/python tests/synthetic_record.py /tmp/synthetic-tradeoff --tradeoff
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ESTIMATORS = ("soft", "hard", "gumbel_rao", "reinforce")
EVAL_SCALARS = ("tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "sample/vertex_gap", "sample/mean_bias")
STATS = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor")
TRADEOFF_GRID = {
    "tau0": [0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0],
    "anneal_rate": [0.0, 1e-5, 1e-4, 1e-3],
    "relaxation": ["soft", "hard", "gumbel_rao", "reinforce"],
    "target": ["zipf:s=1.2", "bimodal", "sparse", "geometric:p=0.3", "dirichlet:alpha=0.5,seed=3", "uniform"],
    "categories": [10, 100],
}
TRADEOFF_LADDER = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
_SPEC_TEXT = 'name = "synthetic"\nseeds = 2\n\n[grid]\nrelaxation = ["soft", "hard"]\n'


def _target(k: int, target: str) -> np.ndarray:
    """A stand-in for the target's probabilities (the loader never needs the real ones)."""
    q = np.arange(1, k + 1, dtype=float) ** (-1.2 if "zipf" in target else -0.5)
    return q / q.sum()


def _tau(config: dict, steps: np.ndarray) -> np.ndarray:
    tau = config["tau0"] * np.exp(-config["anneal_rate"] * steps)
    return np.maximum(tau, config["tau_min"]) if config["schedule"] != "constant" else np.full(steps.shape, float(config["tau0"]))


def _probe_stats(est: str, tau: np.ndarray, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Plausible probe numbers of one estimator at temperatures `tau` (any shape)."""
    if est == "reinforce":  # computed over the K categories: unbiased, nothing drawn, no tau
        var = np.full(tau.shape, 0.4 * rng.lognormal(0.0, 0.2))
        zero = np.zeros(tau.shape)
        return {"bias2": zero, "variance": var, "mse": var, "cosine": np.ones(tau.shape), "rel_rmse": np.ones(tau.shape), "bias2_floor": zero, "n": zero}
    if est == "soft":
        var, b2 = 1e-3 / tau, 2e-4 * tau**1.5
    else:
        scale = 8e-4 if est == "hard" else 2e-4
        var, b2 = scale / np.sqrt(tau), 1e-4 + 1e-4 * tau
    var = var * rng.lognormal(0.0, 0.2, tau.shape)
    b2 = b2 * rng.lognormal(0.0, 0.2, tau.shape) + var / n
    return {"bias2": b2, "variance": var, "mse": b2 + var, "cosine": np.full(tau.shape, 0.99), "rel_rmse": np.ones(tau.shape), "bias2_floor": var / n, "n": np.full(tau.shape, n)}


def _write(table: pa.Table, path: Path) -> None:
    """As study.record writes: zstd, floats byte-stream-split, the rest dictionary-encoded, no statistics."""
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_fixed_size_list(f.type)]
    others = [f.name for f in table.schema if f.name not in floats]
    pq.write_table(table, path, compression="zstd", use_byte_stream_split=floats, use_dictionary=others, write_statistics=False)


def write_trial(directory: Path, config: dict, *, seeds: int, rng: np.random.Generator, quality: float | None = None, host: str = "node-1", device: str = "cpu") -> None:
    """params.json and the record of one trial: every evaluation step of config (steps, eval_every)."""
    record = directory / "record"
    record.mkdir(parents=True, exist_ok=True)
    (directory / "params.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    host_info = {"host": host, "pid": 1234, "from_step": 0, "device": device}
    host_info.update({"gpu": "NVIDIA H100 80GB HBM3"} if device.startswith("cuda") else {"cpu": "x86_64", "threads": 1})
    (record / "host-000000000.json").write_text(json.dumps(host_info))
    k, n = int(config["categories"]), int(config["probe_estimates"])
    steps = np.arange(0, config["steps"] + 1, config["eval_every"])  # [S]
    if steps[-1] != config["steps"]:
        steps = np.append(steps, config["steps"])
    seed_ids = np.arange(config["seed"], config["seed"] + seeds)  # [R]
    tau = _tau(config, steps)  # [S]
    quality = rng.uniform(0.02, 0.1) if quality is None else quality
    # 1. the generator's distribution per step and seed: uniform -> target, with noise
    q = _target(k, config["target"])
    frac = np.exp(-steps / max(config["steps"] / 3, 1))[:, None, None]  # [S, 1, 1]
    p = q + (1.0 / k - q) * frac + rng.normal(0, 0.01, (len(steps), seeds, k)) * (1 - frac)  # [S, R, K]
    p = np.clip(p, 1e-4, None)
    p /= p.sum(-1, keepdims=True)
    tv = 0.5 * np.abs(p - q).sum(-1) + quality * (1 - frac[..., 0])  # [S, R]
    scalars = {"tau": np.broadcast_to(tau[:, None], tv.shape), "loss/d": np.full(tv.shape, 1.38), "loss/g": np.full(tv.shape, 0.69),
               "fit/tv": tv, "fit/js": tv / 5, "fit/kl": tv / 1.2, "sample/vertex_gap": np.full(tv.shape, 0.2), "sample/mean_bias": np.full(tv.shape, 0.04)}
    # 2. probes: every estimator at the current tau and at each ladder tau
    probe_taus = [("current", None), *(("ladder", float(t)) for t in config["probe_taus"])]
    ests = list(config["probe_estimators"])
    m = len(probe_taus) * len(ests)
    taus = np.empty((len(steps), m, seeds))  # [S, M, R]
    stats = {s: np.empty((len(steps), m, seeds), dtype=np.float32) for s in (*STATS, "n")}
    for j, ((_, ladder_tau), est) in enumerate(itertools.product(probe_taus, ests)):
        t = np.broadcast_to((tau if ladder_tau is None else np.full(len(steps), ladder_tau))[:, None], (len(steps), seeds))
        taus[:, j] = t
        for stat, values in _probe_stats(est, t, rng, n).items():
            stats[stat][:, j] = values
    est_dict = pa.array(ests, pa.string())
    src_dict = pa.array(["current", "ladder"], pa.string())
    est_idx = np.tile(np.repeat(np.arange(len(ests), dtype=np.int32), seeds), len(probe_taus))
    src_idx = np.repeat(np.array([0 if s == "current" else 1 for s, _ in probe_taus], dtype=np.int32), len(ests) * seeds)
    for i, step in enumerate(steps.tolist()):
        evals = {"seed": pa.array(seed_ids, pa.int64()), "step": pa.array(np.full(seeds, step), pa.int64()),
                 "time_s": pa.array(np.full(seeds, 0.5 * (i + 1))), "diverged": pa.array(np.zeros(seeds, dtype=bool))}
        evals.update({key: pa.array(np.ascontiguousarray(scalars[key][i]), pa.float64()) for key in EVAL_SCALARS})
        evals["fit/probs"] = pa.FixedSizeListArray.from_arrays(pa.array(p[i].astype(np.float32).ravel()), k)
        _write(pa.table(evals), record / f"evals-{step:09d}.parquet")
        probes = {"seed": pa.array(np.tile(seed_ids, m), pa.int64()), "step": pa.array(np.full(m * seeds, step), pa.int64()),
                  "estimator": pa.DictionaryArray.from_arrays(est_idx, est_dict), "source": pa.DictionaryArray.from_arrays(src_idx, src_dict),
                  "tau": pa.array(taus[i].ravel(), pa.float64())}
        probes.update({s: pa.array(stats[s][i].ravel(), pa.float32()) for s in STATS})
        probes["n"] = pa.array(stats["n"][i].ravel().astype(np.int32))
        _write(pa.table(probes), record / f"probes-{step:09d}.parquet")


def base_config(**changes: Any) -> dict:
    """A flat trial config with the fields the loader and report use (TrialConfig names)."""
    config = dict(
        target="zipf:s=1.2", categories=5, generator="logits", discriminator="logistic", relaxation="soft", schedule="exponential",
        tau0=1.0, anneal_rate=1e-3, tau_min=0.1, anneal_interval=1000, steps=60, eval_every=20,
        probe_estimators=list(ESTIMATORS), probe_estimates=200, probe_taus=[0.5], seed=0, seeds=2,
    )
    config.update(changes)
    return config


def session(argv: list[str], **changes: Any) -> dict:
    """One run.json session (study.provenance.session_info's fields)."""
    out = {"started": "2026-01-01T00:00:00+00:00", "argv": argv, "spec_path": "experiments/synthetic.toml", "spec_text": _SPEC_TEXT,
           "revision": "0123456789abcdef0123456789abcdef01234567", "python": "3.11.7", "torch": "2.13.0+cpu", "ray": "2.60.0",
           "cuda": None, "host": "head", "resources": {"CPU": 2.0, "GPU": 0.0}}
    out.update(changes)
    return out


def write_experiment(
    root: Path,
    *,
    grid: dict[str, list] | None = None,
    seeds: int = 2,
    state: bool = True,
    seed: int = 0,
    experiment_id: str = "abcde",
    hosts: tuple[str, ...] = ("node-1",),
    devices: tuple[str, ...] = ("cpu",),
    progress: bool = False,
    **fixed: Any,
) -> Path:
    """A Tune-shaped experiment directory with one trial per grid point (product of `grid`).

    `fixed` overrides base_config's fields for every trial. Trial i gets id f"{experiment_id}_{i:05d}",
    host hosts[i % len(hosts)] and device devices[i % len(devices)], and status TERMINATED in
    experiment_state (written when `state`).
    """
    rng = np.random.default_rng(seed)
    grid = grid or {"relaxation": ["soft", "hard"], "tau0": [0.5, 2.0]}
    root.mkdir(parents=True, exist_ok=True)
    axes = list(grid)
    trial_data = []
    started = time.perf_counter()
    combos = list(itertools.product(*grid.values()))
    for i, values in enumerate(combos):
        combo = dict(zip(axes, values))
        config = base_config(seeds=seeds, checkpoint_every=2, cpus=1.0, **fixed) | combo
        trial_id = f"{experiment_id}_{i:05d}"
        tag = ",".join(f"{a}={combo[a]}" for a in axes)
        name = f"trainable_{trial_id}_{i}_{tag}_2026-01-01_00-00-00"
        write_trial(root / name, config, seeds=seeds, rng=rng, host=hosts[i % len(hosts)], device=devices[i % len(devices)])
        trial = {"trial_id": trial_id, "status": "TERMINATED", "relative_logdir": name, "config": config, "evaluated_params": combo}
        runtime = {"start_time": 0.0, "num_failures": 0, "error_filename": None, "last_result": {"step": config["steps"]}}
        trial_data.append([json.dumps(trial), json.dumps(runtime)])
        if progress and (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(combos)} trials ({time.perf_counter() - started:.0f} s)", flush=True)
    if state:
        (root / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {"start_time": 0.0}}))
    (root / "run.json").write_text(json.dumps({"sessions": [session(["gumbel-study", "run", "experiments/synthetic.toml"])]}, indent=2))
    return root


def set_status(root: Path, trial_id: str, status: str, *, error_file: str | None = None, failures: int = 0) -> None:
    """Change a trial's status (and error file, failure count) in experiment_state."""
    path = next(root.glob("experiment_state-*.json"))
    state = json.loads(path.read_text())
    for item in state["trial_data"]:
        trial = json.loads(item[0])
        if trial["trial_id"] == trial_id:
            trial["status"] = status
            item[0] = json.dumps(trial)
            runtime = json.loads(item[1])
            runtime.update(error_filename=error_file, num_failures=failures)
            item[1] = json.dumps(runtime)
    path.write_text(json.dumps(state))


def trial_dir(root: Path, index: int, experiment_id: str = "abcde") -> Path:
    return next(root.glob(f"trainable_{experiment_id}_{index:05d}_*"))


def write_train_dir(root: Path, *, seeds: int = 2, error: str | None = None, seed: int = 0, **changes: Any) -> Path:
    """What `gumbel-study train CONFIG --out ROOT` writes: params.json, record/, run.json, summary.json."""
    config = base_config(seeds=seeds, **changes)
    write_trial(root, config, seeds=seeds, rng=np.random.default_rng(seed), host="laptop")
    (root / "run.json").write_text(json.dumps({"sessions": [session(["gumbel-study", "train", "experiments/synthetic.toml", "--out", str(root)], ray=None, host="laptop")]}))
    summary = {"config": {k: v for k, v in config.items() if k != "seeds"}, "steps": config["steps"], "wall_s": 1.0, "seeds": [], "error": error}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "state.pt").write_bytes(b"")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--tradeoff", action="store_true", help="the tradeoff grid: 1,344 trials x 32 seeds x 21 evaluations, 7 ladder taus")
    parser.add_argument("--trials", type=int, help="only the first N grid points of --tradeoff")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.tradeoff:
        grid = TRADEOFF_GRID
        if args.trials:  # keep the axes, thin the first one
            grid = {**grid, "tau0": grid["tau0"][: max(1, math.ceil(args.trials / (len(list(itertools.product(*grid.values()))) // 7)))]}
        write_experiment(args.root, grid=grid, seeds=32, steps=20000, eval_every=1000, tau_min=0.01, probe_taus=list(TRADEOFF_LADDER),
                         probe_estimates=4000, hosts=("gpu-node-1", "gpu-node-2", "gpu-node-3"), devices=("cuda:0", "cuda:1"), progress=True)
    else:
        write_experiment(args.root)
    print(f"wrote {args.root} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
