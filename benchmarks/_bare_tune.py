"""The bare-Tune floor of benchmarks/scale.py (run by it in a subprocess).

    python benchmarks/_bare_tune.py --storage DIR [--trials 64] [--reports 21] [--keys 15]
                                    [--checkpoint-every 5] [--checkpoint-bytes 0]
                                    [--config PARAMS.json] [--num-cpus 2]

A trivial function trainable that does no work: it reports `--reports` times, each report
`--keys` scalar keys (`step` and k1, k2, ...), and checkpoints exactly when `study.sweep`'s
trainable does (every `--checkpoint-every` reports and at the last one), each checkpoint one file
of `--checkpoint-bytes` bytes written to a temporary directory, as `study.sweep` writes its
state. The Tuner is set up as `study.sweep._tuner` sets up ours: 1 CPU per trial (no GPU),
`reuse_actors=True`, every checkpoint kept, artifacts synced on checkpoint, a metric and mode,
verbose 0, no dashboard. `--config` (a trial's params.json) gives every trial a config of the
same keys and values as ours, so Tune stores and copies as much config per result; the trials
differ in one extra key, `bare_trial`.

It prints one line before `Tuner.fit()` and one after ("finished in ..."), which the parent
timestamps (the same markers it reads from `gumbel-study run`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # `python benchmarks/_bare_tune.py`: import `benchmarks` from the checkout
    sys.path.insert(0, str(ROOT))

import ray
from ray import tune
from ray.tune import Checkpoint, CheckpointConfig, RunConfig, SyncConfig, TuneConfig, Tuner

from benchmarks._tune_errors import failed_trials


def make_trainable(reports: int, keys: int, every: int, checkpoint_bytes: int):
    names = ["step"] + [f"k{i}" for i in range(1, keys)]

    def bare_trainable(config: dict) -> None:
        payload = os.urandom(checkpoint_bytes) if checkpoint_bytes else b""
        for i in range(reports):
            metrics = {name: (i if name == "step" else 0.5 + 1e-3 * i + 1e-6 * j) for j, name in enumerate(names)}
            if (i + 1) % every == 0 or i == reports - 1:
                with tempfile.TemporaryDirectory(prefix="bare-ckpt-") as directory:
                    Path(directory, "state.pt").write_bytes(payload)
                    tune.report(metrics, checkpoint=Checkpoint.from_directory(directory))
            else:
                tune.report(metrics)

    return bare_trainable


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storage", required=True, help="Tune storage directory")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--reports", type=int, default=21, help="reports per trial")
    p.add_argument("--keys", type=int, default=15, help="scalar keys per report (at least 1)")
    p.add_argument("--checkpoint-every", type=int, default=5, help="reports between checkpoints (and the last)")
    p.add_argument("--checkpoint-bytes", type=int, default=0, help="size of the one file each checkpoint holds")
    p.add_argument("--config", metavar="PARAMS.json", help="a trial's params.json: every trial gets this config")
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args(argv)
    if args.keys < 1 or args.reports < 1 or args.trials < 1 or args.checkpoint_every < 1:
        p.error("--keys, --reports, --trials and --checkpoint-every must be >= 1")
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    config = {k: v for k, v in config.items() if k != "bare_trial"}
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # as study.sweep
    started = time.time()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    trainable = make_trainable(args.reports, args.keys, args.checkpoint_every, args.checkpoint_bytes)
    tuner = Tuner(
        tune.with_resources(trainable, {"cpu": 1, "gpu": 0}),
        param_space={**config, "bare_trial": tune.grid_search(list(range(args.trials)))},
        tune_config=TuneConfig(metric="k1" if args.keys > 1 else "step", mode="min", reuse_actors=True),
        run_config=RunConfig(
            name="bare",
            storage_path=str(Path(args.storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            sync_config=SyncConfig(sync_artifacts=True, sync_artifacts_on_checkpoint=True),
            verbose=0,
        ),
    )
    print(f"bare-tune: {args.trials} trials x {args.reports} reports x {args.keys} keys", file=sys.stderr, flush=True)
    results = tuner.fit()
    errors = [r for r in results if r.error is not None]
    print(f"finished in {time.time() - started:.1f} s: {len(results) - len(errors)} of {len(results)} trials completed", flush=True)
    failed_trials(results)
    ray.shutdown()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
