"""The plain Ray Tune baseline of benchmarks/study_run.py (run by it in a subprocess).

    python benchmarks/_plain_tune.py --plan PLAN.json --storage DIR [--num-cpus 2]

One Tune trial per (configuration, seed): the plain single-replica PyTorch loop of
benchmarks/population.py (`PlainGAN`) for `steps` steps, a `ray.tune.report` at the same
evaluation points as the study (step 0, every `eval_every`, the last step). Default Tune settings
(reuse_actors and everything else), one CPU per trial, no checkpoints, no probes: what one writes
without packing seeds. PLAN.json: {"configs": [{"tau0", "relaxation", "target"}, ...],
"seeds", "steps", "eval_every", "fixed": {categories, disc_width, disc_depth, batch_size, lr_g,
lr_d, g_steps}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # `python benchmarks/_plain_tune.py`: benchmarks/ would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(ROOT))

import ray
from ray.tune import RunConfig, TuneConfig, Tuner, grid_search, report

from benchmarks._tune_errors import failed_trials


def plain_trainable(config: dict) -> None:
    """One configuration, one seed: PlainGAN trained for `steps`, reporting at the evaluation points."""
    from benchmarks.population import PlainGAN  # imported in the worker (PYTHONPATH has the repo root)
    from study.targets import parse_target

    fixed, cfg = config["fixed"], config["cfg"]
    K = fixed["categories"]
    gan = PlainGAN(
        parse_target(cfg["target"], K).probs,
        width=fixed["disc_width"], depth=fixed["disc_depth"], batch=fixed["batch_size"],
        tau=cfg["tau0"], hard=cfg["relaxation"] == "hard", lr_g=fixed["lr_g"], lr_d=fixed["lr_d"],
        g_steps=fixed["g_steps"], seed=config["seed"],
    )
    steps, every = config["steps"], config["eval_every"]
    points = sorted(set(range(0, steps, every)) | {steps})
    done, d_loss, g_loss = 0, float("nan"), float("nan")
    for point in points:
        for _ in range(point - done):
            d, g = gan.step()
            d_loss, g_loss = float(d), float(g)
        done = point
        report({"step": done, "loss/d": d_loss, "loss/g": g_loss, "fit/tv": gan.tv()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plan", required=True, help="JSON plan written by benchmarks/study_run.py")
    p.add_argument("--storage", required=True, help="Tune storage directory")
    p.add_argument("--num-cpus", type=int, default=2)
    args = p.parse_args(argv)
    plan = json.loads(Path(args.plan).read_text())
    # Workers inherit the environment of the Ray processes this driver starts: let them import
    # `benchmarks` and `study` from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    started = time.perf_counter()
    ray.init(num_cpus=args.num_cpus)
    tuner = Tuner(
        plain_trainable,
        param_space={
            "cfg": grid_search(plan["configs"]),
            "seed": grid_search(list(range(plan["seeds"]))),
            "fixed": plan["fixed"],
            "steps": plan["steps"],
            "eval_every": plan["eval_every"],
        },
        tune_config=TuneConfig(metric="fit/tv", mode="min"),
        run_config=RunConfig(name="plain", storage_path=str(Path(args.storage).resolve()), verbose=0),
    )
    results = tuner.fit()
    errors = [r for r in results if r.error is not None]
    print(f"plain tune: {len(results) - len(errors)} of {len(results)} trials completed in {time.perf_counter() - started:.1f} s")
    failed_trials(results)
    ray.shutdown()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
