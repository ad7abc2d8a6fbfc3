"""gumbel-study: train | check | run | report.

    gumbel-study train CONFIG.toml [--out DIR] [--seeds N] [--steps N] [--set KEY=VALUE ...]
    gumbel-study check SPEC [--set KEY=VALUE ...]
    gumbel-study run SPEC [--storage PATH|URI] [--address ADDR] [--resume] [--max-concurrent N]
                          [--name NAME] [--num-cpus N] [--dashboard] [--set KEY=VALUE ...]
    gumbel-study report RUN [RUN ...] [--out DIR]     (registered by analysis, see _add_plugin_commands)

Bad input exits with code 2 and one line naming the key and the value; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from pathlib import Path

from study import preflight
from study.config import PBT_MUTABLE, ConfigError, StudySpec, load_spec, parse_overrides

EXIT_BAD_INPUT = 2
COMMANDS_GROUP = "gumbel_study.commands"  # entry points that add subcommands (analysis adds `report`)


def _fail(message: str) -> int:
    print(f"gumbel-study: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load(args: argparse.Namespace, extra: dict | None = None) -> StudySpec:
    overrides = parse_overrides(args.set or [])
    overrides.update(extra or {})
    return load_spec(args.spec, overrides)


def _format_grid(spec: StudySpec) -> str:
    search, tune = spec.search, spec.tune
    combos = spec.num_trials // search.samples
    if search.algorithm == "optuna":
        how = f" (optuna: {search.samples} samples)"
    elif search.algorithm == "random":
        how = f" ({combos} grid combination{'s' if combos > 1 else ''} x {search.samples} random samples)"
    else:
        how = ""
    bound = "at most " if search.asha or {"steps", "g_steps"} & set(search.space) else ""
    lines = [f"study {spec.name!r} from {spec.source}"]
    lines.append(f"  trials:        {spec.num_trials}{how}")
    lines.append(f"  seeds/trial:   {spec.seeds} (packed as replicas)")
    lines.append(f"  replicas:      {spec.num_trials * spec.seeds}")
    lines.append(f"  replica-steps: {bound}{spec.replica_steps():,} (discriminator + generator steps x seeds)")
    lines.append(f"  per trial:     {spec.resources.cpus:g} CPU, {spec.resources.gpus:g} GPU")
    if spec.grid:
        lines.append("  grid:")
        for axis, values in spec.grid.items():
            lines.append(f"    {axis:<14} {', '.join(map(str, values))}")
    if search.space:
        sampler = "TPE" if search.algorithm == "optuna" else "Tune's random sampler"
        goal = f", {tune.mode} {tune.metric}" if search.algorithm == "optuna" else ""
        lines.append(f"  search:        {search.algorithm} ({sampler}, seed {search.seed}), {search.samples} samples{' per grid combination' if search.algorithm == 'random' else ''}{goal}")
        for name, dist in search.space.items():
            lines.append(f"    {name:<14} {dist.describe()}")
    if search.asha:
        a = search.asha
        rungs = ", ".join(f"{r:g}" for r in a.rungs())
        lines.append(f"  scheduler:     asha on step, {tune.mode} {tune.metric}: grace {a.grace_steps}, max {a.max_steps}, "
                     f"reduction factor {a.reduction_factor:g}, {a.brackets} bracket{'s' if a.brackets > 1 else ''}")
        lines.append(f"                 rungs at step {rungs} (judged at the first evaluation at or after each)")
    if search.pbt:
        p = search.pbt
        lines.append(f"  scheduler:     pbt on step, {tune.mode} {tune.metric}: every {p.interval} steps the bottom {p.quantile:g} "
                     f"continue from the top {p.quantile:g}'s checkpoints, resample probability {p.resample_probability:g}"
                     f"{', synchronous' if p.synch else ', asynchronous'}")
        for name, dist in p.mutations.items():
            field = f" (field {PBT_MUTABLE[name]})" if PBT_MUTABLE[name] != name else ""
            lines.append(f"    {name:<14} {dist.describe()}{field}")
    if tune.loggers:
        where = {
            "mlflow": f"mlflow ({tune.mlflow_uri or 'MLFLOW_TRACKING_URI, else sqlite:///STORAGE/' + spec.name + '/mlflow.db'}, experiment {spec.name!r})",
            "wandb": f"wandb (project {spec.name!r}, mode {os.environ.get('WANDB_MODE') or 'online'} from WANDB_MODE)",
            "aim": f"aim (repo STORAGE/{spec.name}, experiment {spec.name!r})",
        }
        lines.append("  trackers:      " + "; ".join(where[name] for name in tune.loggers) + " (lean metrics; params = trial config)")
    fixed = spec.fixed.to_dict()
    shown = {k: v for k, v in fixed.items() if k not in spec.grid and k not in search.space}
    lines.append("  fixed: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    spec = _load(args)
    print(_format_grid(spec))
    print("valid")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    extra = {}
    if args.steps is not None:
        extra["steps"] = args.steps
    if args.seeds is not None:
        extra["seeds"] = args.seeds
    spec = _load(args, extra)
    config = spec.single_trial()
    out = Path(args.out) if args.out else Path("runs") / f"{spec.name}-train"
    from study.provenance import session_info
    from study.train import run_local

    print(f"training {spec.name!r}: {spec.seeds} seeds x {config.steps} steps -> {out}", file=sys.stderr)
    session = session_info(spec.source)
    summary = run_local(config, spec.seeds, out, session=session, progress=not args.no_progress and sys.stderr.isatty() or args.progress)
    for row in summary["seeds"]:
        print(f"seed {row['seed']}: tv={row['fit/tv']:.4f} js={row['fit/js']:.4f} kl={row['fit/kl']:.4f} probs={[round(p, 3) for p in row['fit/probs']]}")
    tvs = sorted(row["fit/tv"] for row in summary["seeds"])
    if tvs:
        print(f"final tv: median {tvs[len(tvs) // 2] if len(tvs) % 2 else 0.5 * (tvs[len(tvs) // 2 - 1] + tvs[len(tvs) // 2]):.4f}, max {tvs[-1]:.4f} over {len(tvs)} seeds")
    print(f"wrote the trial record to {out} ({summary['wall_s']:.1f} s); report: gumbel-study report {out}")
    if summary["error"]:
        print(f"gumbel-study: trial failed: {summary['error']}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    extra = {}
    if args.name:
        extra["name"] = args.name
    if args.max_concurrent is not None:
        extra["tune.max_concurrent"] = args.max_concurrent
    spec = _load(args, extra)
    preflight.check_run(args.storage, args.address)  # unreachable storage or cluster: exit 2 before Ray starts
    from study import sweep

    return sweep.run_study(spec, storage=args.storage, address=args.address, resume=args.resume, num_cpus=args.num_cpus, dashboard=args.dashboard)


def _add_plugin_commands(sub) -> None:
    """Subcommands that other packages register under the entry-point group COMMANDS_GROUP, as
    `name = "module:add_command"` with `add_command(subparsers)`. `report` comes from analysis this
    way: the library never imports its reader, and the reader plugs into the command line."""
    for entry in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            add_command = entry.load()
        except ImportError as err:  # a broken plugin must not take train/run/check down with it
            _add_unavailable(sub, entry.name, f"{entry.value} cannot be imported ({err})")
            continue
        add_command(sub)


def _add_unavailable(sub, name: str, reason: str) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {reason})")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: _fail(f"the {name} command is unavailable: {reason}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gumbel-study", description="Study the Gumbel-max and Gumbel-softmax tricks.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_set(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable); pins a grid axis")

    p = sub.add_parser("train", help="run one trial locally, without Ray")
    p.add_argument("spec", metavar="CONFIG.toml")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/NAME-train)")
    p.add_argument("--seeds", type=int, help="number of seeds (replicas)")
    p.add_argument("--steps", type=int, help="discriminator steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    add_set(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("check", help="validate a study spec and print the expanded grid (no Ray)")
    p.add_argument("spec", metavar="SPEC")
    add_set(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="run a study with Ray Tune (embedded, or a cluster with --address)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--storage", default="runs", metavar="PATH|URI", help="results root: a path or s3:// gs:// URI (default runs)")
    p.add_argument("--address", metavar="ADDR", help="join this Ray cluster (default: RAY_ADDRESS, else embedded Ray)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="at most N trials at once")
    p.add_argument("--name", metavar="NAME", help="experiment name (default: the spec's name)")
    p.add_argument("--num-cpus", type=int, metavar="N", help="embedded Ray only: CPUs it may use (default: all)")
    p.add_argument("--dashboard", action="store_true", help="embedded Ray only: serve the Ray dashboard on 127.0.0.1:8265 (extra `dashboard`)")
    add_set(p)
    p.set_defaults(func=cmd_run)

    _add_plugin_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("gumbel-study: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `gumbel-study check SPEC | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
