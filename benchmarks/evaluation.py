"""Evaluation cost: one training step and one evaluation at the tradeoff configuration, and the
share of a trial's time that evaluation takes.

    python benchmarks/evaluation.py [--categories 10,100] [--relaxations soft,hard,gumbel_rao,reinforce]
                                    [--against PATH] [--rounds 1] [--evals 1] [--threads N]
                                    [--small] [--json PATH]

The trial is experiments/tradeoff.toml with its grid pinned to one configuration: every grid axis
at its first value (tau0 0.03, anneal_rate 0, target zipf:s=1.2), except `categories` (each of
--categories) and `relaxation` (each of --relaxations). So: 32 seeds packed in one population,
batch 256, discriminator K -> 64 -> 64 -> 1, 20,000 steps, an evaluation every 1000 steps (21 in
all, step 0 included), each probing 4 estimators x 4000 estimates at the current temperature and
the 7 ladder temperatures.

Measured, per K, in one process per checkout:
- T: seconds per training step (median of 3 repeats of ~--step-seconds / 3 each, after 20 warm
  steps), for each relaxation;
- E: seconds per `Population.evaluate()` (the median of --evals calls, after the warm steps;
  an evaluation does not depend on the trained relaxation beyond its sample metrics, so it is
  measured on the population of the first relaxation).
The share of a trial's time spent evaluating is 21 E / (21 E + 20,000 T) (steps and evaluations
as the spec sets them), per relaxation, and over the grid's four relaxations (their mean T).

--against PATH measures another checkout of this project the same way (for example the commit
before a change, checked out with `git worktree add /tmp/base REV`), alternating the two in
--rounds rounds, each measurement a fresh subprocess that imports `study` from its checkout; the
table then shows both and the ratio E_against / E_this. A subprocess uses only the public API
(TrialConfig, Population, train_step, evaluate), so older checkouts work too.

The machine must be quiet for numbers worth keeping (see benchmarks/README.md). Goal (issue 13
item 6): the evaluation share of a K = 10 and of a K = 100 tradeoff trial on CPU under 25%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = ROOT / "experiments" / "tradeoff.toml"
GOAL_SHARE = 0.25  # issue 13 item 6
RELAXATIONS = ("soft", "hard", "gumbel_rao", "reinforce")
WARM_STEPS = 20


def trial_fields(spec_path: Path = SPEC, *, categories: int, relaxation: str) -> tuple[dict, int]:
    """TrialConfig fields of the pinned tradeoff configuration, and its number of seeds."""
    spec = tomllib.loads(spec_path.read_text())
    fields = dict(spec.get("fixed", {}))
    for axis, values in spec.get("grid", {}).items():
        fields[axis] = values[0]
    fields.update(categories=categories, relaxation=relaxation, device="cpu")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return fields, int(spec.get("seeds", 1))


def trial_shape(fields: dict) -> tuple[int, int]:
    """(steps, evaluations) of the trial: evaluations at 0, every eval_every, and the last step."""
    steps, every = int(fields["steps"]), int(fields["eval_every"])
    return steps, len(set(range(0, steps, every)) | {steps})


def share(eval_s: float, step_s: float, steps: int, evaluations: int) -> float:
    """Evaluation's share of a trial that runs `steps` steps and `evaluations` evaluations."""
    return evaluations * eval_s / (evaluations * eval_s + steps * step_s)


def measure_trial_cost(
    fields_by_relaxation: dict[str, dict],
    seeds: int,
    *,
    device: str = "cpu",
    step_seconds: float = 3.0,
    evals: int = 1,
    sync=lambda: None,
) -> dict:
    """T per relaxation and E, in this process (the `study` on sys.path). `sync` waits for a device."""
    from study.config import TrialConfig
    from study.population import Population

    out: dict = {"step_s": {}, "eval_s": []}
    first = None
    for relaxation, fields in fields_by_relaxation.items():
        pop = Population(TrialConfig(**{**fields, "device": device}), list(range(seeds)), device=device)
        pop.train(WARM_STEPS)
        sync()
        start = time.perf_counter()
        pop.train(3)
        sync()
        n = max(3, round(step_seconds / 3 / max((time.perf_counter() - start) / 3, 1e-6)))
        repeats = []
        for _ in range(3):
            start = time.perf_counter()
            pop.train(n)
            sync()
            repeats.append((time.perf_counter() - start) / n)
        out["step_s"][relaxation] = statistics.median(repeats)
        first = first or pop
    for _ in range(evals):
        sync()
        start = time.perf_counter()
        first.evaluate()
        sync()
        out["eval_s"].append(time.perf_counter() - start)
    return out


def _child(args: argparse.Namespace) -> int:
    """Measure in this process, importing `study` from --root; print one JSON line."""
    sys.path.insert(0, str(Path(args.root).resolve()))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    request = json.loads(args.request)
    result = measure_trial_cost(request["fields"], request["seeds"], step_seconds=request["step_seconds"], evals=request["evals"])
    result["study"] = sys.modules["study"].__file__
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))
    return 0


def _measure_in_subprocess(root: Path, request: dict, threads: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(root), "--request", json.dumps(request)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement in {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(*, categories, relaxations, against: Path | None, rounds: int, evals: int, step_seconds: float,
        threads: int | None, spec: Path = SPEC, seeds: int | None = None, verbose: bool = True) -> dict:
    trees = {"this": ROOT} | ({"against": against} if against else {})
    rows = []
    for K in categories:
        fields = {rel: trial_fields(spec, categories=K, relaxation=rel)[0] for rel in relaxations}
        n_seeds = seeds or trial_fields(spec, categories=K, relaxation=relaxations[0])[1]
        steps, evaluations = trial_shape(next(iter(fields.values())))
        request = {"fields": fields, "seeds": n_seeds, "step_seconds": step_seconds, "evals": evals}
        measured: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(rounds):
            for name, root in trees.items():  # alternating, so that the machine's drift hits both
                measured[name].append(_measure_in_subprocess(root, request, threads))
                if verbose:
                    m = measured[name][-1]
                    print(f"  K={K} {name}: eval {statistics.median(m['eval_s']):.3g} s, step "
                          + ", ".join(f"{r} {1e3 * s:.3g} ms" for r, s in m["step_s"].items()), file=sys.stderr, flush=True)
        for name in trees:
            eval_s = statistics.median(e for m in measured[name] for e in m["eval_s"])
            step_s = {rel: statistics.median(m["step_s"][rel] for m in measured[name]) for rel in relaxations}
            mean_step = statistics.fmean(step_s.values())
            row = {"tree": name, "K": K, "seeds": n_seeds, "eval_s": eval_s, "mean_step_ms": 1e3 * mean_step,
                   "share": share(eval_s, mean_step, steps, evaluations), "steps": steps, "evaluations": evaluations,
                   "step_ms": {rel: 1e3 * s for rel, s in step_s.items()},
                   "share_by_relaxation": {rel: share(eval_s, s, steps, evaluations) for rel, s in step_s.items()},
                   "rounds": measured[name]}
            rows.append(row)
        if against:
            this, other = rows[-2], rows[-1]
            this["eval_speedup"] = other["eval_s"] / this["eval_s"]
            this["step_ratio"] = other["mean_step_ms"] / this["mean_step_ms"]
    return {"benchmark": "evaluation", "settings": {"spec": str(spec), "categories": list(categories), "relaxations": list(relaxations),
            "against": str(against) if against else None, "rounds": rounds, "evals": evals, "step_seconds": step_seconds},
            "rows": rows, "goal": f"evaluation share of a tradeoff trial < {GOAL_SHARE:.0%} (CPU)"}


def print_result(result: dict) -> None:
    from benchmarks.common import print_table

    table = []
    for r in result["rows"]:
        steps = ", ".join(f"{rel} {ms:.3g}" for rel, ms in r["step_ms"].items())
        shares = ", ".join(f"{rel} {100 * s:.3g}" for rel, s in r["share_by_relaxation"].items())
        table.append({"tree": r["tree"], "K": r["K"], "eval_s": r["eval_s"], "step_ms": steps, "share_pct": 100 * r["share"],
                      "share_pct_by_relaxation": shares, "eval_speedup": r.get("eval_speedup"), "step_ratio": r.get("step_ratio")})
    s = result["settings"]
    print_table(table, ["tree", "K", "eval_s", "step_ms", "share_pct", "share_pct_by_relaxation", "eval_speedup", "step_ratio"],
                title=f"evaluation cost at the tradeoff configuration ({Path(s['spec']).name}, pinned); this tree vs "
                      f"{s['against'] or '(none)'}; {s['rounds']} round(s)")
    print("share_pct = 21 E / (21 E + 20,000 T) with T the mean step over the relaxations; eval_speedup = E_against / E_this; "
          "step_ratio = T_against / T_this (> 1: this tree steps faster)")
    for r in result["rows"]:
        if r["tree"] == "this":
            met = r["share"] < GOAL_SHARE
            print(f"goal K={r['K']}: evaluation share < {GOAL_SHARE:.0%}; measured {100 * r['share']:.3g}% -> {'met' if met else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--categories", default="10,100", help="comma-separated K values")
    p.add_argument("--relaxations", default=",".join(RELAXATIONS))
    p.add_argument("--against", type=Path, help="another checkout to measure the same way (the baseline)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--evals", type=int, default=1, help="evaluations timed per measurement")
    p.add_argument("--step-seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, help="torch threads in every measurement (default: torch's default)")
    p.add_argument("--small", action="store_true", help="smoke size: K 10, 4 seeds, soft only")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    p.add_argument("--request", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.root = args.child
        return _child(args)
    if __package__ in (None, ""):
        sys.path[:] = [q for q in sys.path if Path(q or ".").resolve() != HERE]
        sys.path.insert(0, str(ROOT))
    from benchmarks.common import finish

    categories = [int(k) for k in args.categories.split(",") if k]
    relaxations = [r for r in args.relaxations.split(",") if r]
    seeds = None
    if args.small:
        categories, relaxations, seeds, args.step_seconds = [10], ["soft"], 4, 0.5
    result = run(categories=categories, relaxations=relaxations, against=args.against, rounds=args.rounds, evals=args.evals,
                 step_seconds=args.step_seconds, threads=args.threads, seeds=seeds)
    return finish(result, args.json, print_result)


if __name__ == "__main__":
    sys.exit(main())
