"""Study: wall time of `gumbel-study run` vs a plain Ray Tune baseline, and peak memory.

    python benchmarks/study_run.py [--num-cpus 2] [--small] [--pss] [--json PATH]
    python benchmarks/study_run.py --quick-study [--num-cpus 2] [--keep DIR] [--json PATH]

Default: a grid of 16 configurations (tau0 in {0.5, 1, 2, 4} x relaxation in {soft, hard} x
target in {uniform, zipf:s=1.2}), 8 seeds, 500 steps, K = 10, discriminator K -> 64 -> 64 -> 1,
batch 256 (the population benchmark's model), evaluations every 100 steps with small probes
(soft and hard, 200 estimates), 1 CPU per trial.

- ours: a temporary spec TOML run as `python -m study.cli run SPEC --storage TMP --num-cpus N`
  (embedded Ray): 16 trials, each packing its 8 seeds as replicas, with probes and checkpoints.
- baseline: benchmarks/_plain_tune.py, `ray.init(num_cpus=N)` and one default-settings Tune trial
  per (configuration, seed) = 128 trials, each the plain single-replica loop of
  benchmarks/population.py for 500 steps, `ray.tune.report` at the same evaluation points.

Both run as subprocesses and are timed end to end (interpreter start, Ray start, all trials,
shutdown). Ratio = baseline wall time / ours; goal >= 10x.

Memory: while each runs, every 0.2 s, the RSS of the subprocess and all its descendants (plus any
process in its session, which catches Ray processes that left the tree) is summed; the peak of that
sum is reported. RSS counts shared pages (libtorch, the Ray object store) once per process, so the
sum overstates the real footprint; --pss also samples the proportional set size (once a second,
from /proc/PID/smaps_rollup), which shares those pages out. psutil is used when installed, else
/proc (Linux).

--quick-study: instead of the comparison, run `gumbel-study run experiments/quick.toml` (the main
job; minutes on a 2-core machine) and report its wall time and peak summed RSS; goal <= 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/study_run.py`: this very file would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine_info, print_table, proc_bytes, tree_members, write_json

GOAL_RATIO = 10.0
GOAL_QUICK_RSS_GB = 3.0
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

GRID = {"tau0": [0.5, 1.0, 2.0, 4.0], "relaxation": ["soft", "hard"], "target": ["uniform", "zipf:s=1.2"]}
SMALL_GRID = {"tau0": [0.5, 1.0], "relaxation": ["soft", "hard"], "target": ["uniform"]}
FIXED = {  # TrialConfig fields shared by every trial (and mirrored by the baseline)
    "categories": 10,
    "discriminator": "mlp",
    "disc_width": 64,
    "disc_depth": 2,
    "batch_size": 256,
    "g_steps": 1,
    "lr_g": 1e-3,
    "lr_d": 1e-3,
    "schedule": "constant",
}
PROBES = {"probe_estimators": ["soft", "hard"], "probe_estimates": 200, "eval_samples": 500}


# ---------------------------------------------------------------------- memory of a process tree


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session, rss bytes) from /proc/PID/stat."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rfind(b")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        table[int(name)] = (int(fields[1]), int(fields[3]), int(fields[21]) * PAGE)  # rss: field 24 of stat
    return table


def _psutil_table() -> dict[int, tuple[int, int, int]]:
    import psutil

    table = {}
    for proc in psutil.process_iter(["pid", "ppid", "memory_info"]):
        info = proc.info
        if info.get("memory_info") is None:
            continue
        try:
            sid = os.getsid(info["pid"])
        except OSError:
            sid = -1
        table[info["pid"]] = (info["ppid"], sid, info["memory_info"].rss)
    return table


def _pss(pid: int) -> int:
    return proc_bytes(pid, "smaps_rollup", "Pss")


class TreeMemory:
    """Samples the summed RSS of a process, its descendants and its session, in a thread."""

    def __init__(self, pid: int, *, interval: float = 0.2, pss: bool = False):
        self.pid, self.interval, self.pss = pid, interval, pss
        try:
            import psutil  # noqa: F401

            self._table = _psutil_table
            self.source = "psutil"
        except ImportError:
            self._table = _proc_table
            self.source = "/proc"
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def members(self, table: dict[int, tuple[int, int, int]]) -> set[int]:
        return tree_members({pid: row[0] for pid, row in table.items()}, {pid: row[1] for pid, row in table.items()}, self.pid)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            table = self._table()
            members = self.members(table)
            if members:
                self.peak_rss = max(self.peak_rss, sum(table[p][2] for p in members))
                self.peak_processes = max(self.peak_processes, len(members))
                if self.pss and tick % max(1, round(1.0 / self.interval)) == 0:
                    self.peak_pss = max(self.peak_pss, sum(_pss(p) for p in members))
                self.samples += 1
            tick += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def to_dict(self) -> dict:
        out = {"peak_rss_gb": self.peak_rss / 1e9, "peak_processes": self.peak_processes, "samples": self.samples, "source": self.source}
        if self.pss:
            out["peak_pss_gb"] = self.peak_pss / 1e9
        return out


# ---------------------------------------------------------------------- running and timing


def timed_run(cmd: list[str], *, log: Path, pss: bool = False, env: dict | None = None) -> dict:
    """Run cmd in its own session from the repository root; wall time, peak memory, exit code."""
    env = dict(os.environ if env is None else env)
    env.pop("RAY_ADDRESS", None)  # always an embedded Ray, never a cluster someone else started
    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with TreeMemory(proc.pid, pss=pss) as memory:
            rc = proc.wait()
        wall = time.perf_counter() - started
    # Ray stops its processes when the driver exits; wait (a little) until the session is empty, so
    # that stragglers do not load the next measurement, and report any that stay.
    leftover: set[int] = set()
    for _ in range(50):
        leftover = memory.members(memory._table()) - {proc.pid}
        if not leftover:
            break
        time.sleep(0.2)
    result = {"cmd": " ".join(cmd), "wall_s": wall, "rc": rc, "memory": memory.to_dict(), "leftover_processes": sorted(leftover)}
    if leftover:
        print(f"warning: {len(leftover)} processes of the run still alive 10 s after it exited: {sorted(leftover)}", file=sys.stderr)
    if rc != 0:
        tail = log.read_text().splitlines()[-25:]
        print(f"command failed (rc {rc}): {result['cmd']}\n" + "\n".join("  | " + line for line in tail), file=sys.stderr)
    return result


def spec_toml(name: str, grid: dict, *, seeds: int, steps: int, eval_every: int, cpus: int) -> str:
    def value(v):
        return json.dumps(v)  # TOML and JSON agree on strings, numbers and flat lists

    lines = [f'name = "{name}"', f"seeds = {seeds}", "", "[fixed]"]
    lines += [f"{k} = {value(v)}" for k, v in {**FIXED, **PROBES, "steps": steps, "eval_every": eval_every}.items()]
    lines += ["", "[grid]"] + [f"{k} = {value(v)}" for k, v in grid.items()]
    lines += ["", "[resources]", f"cpus = {cpus}", ""]
    return "\n".join(lines)


def baseline_plan(grid: dict, *, seeds: int, steps: int, eval_every: int) -> dict:
    import itertools

    axes = list(grid)
    defaults = {"tau0": 1.0, "relaxation": "soft", "target": "uniform"}
    configs = [{**defaults, **dict(zip(axes, combo))} for combo in itertools.product(*grid.values())]
    fixed = {k: FIXED[k] for k in ("categories", "disc_width", "disc_depth", "batch_size", "g_steps", "lr_g", "lr_d")}
    return {"configs": configs, "seeds": seeds, "steps": steps, "eval_every": eval_every, "fixed": fixed}


def run_comparison(*, small: bool, num_cpus: int, pss: bool, python: str, keep: Path | None = None) -> dict:
    grid = SMALL_GRID if small else GRID
    seeds, steps, eval_every = (2, 50, 25) if small else (8, 500, 100)
    n_configs = len(baseline_plan(grid, seeds=1, steps=1, eval_every=1)["configs"])
    with tempfile.TemporaryDirectory(prefix="gumbel-bench-") as tmp:
        tmp = keep or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        spec = tmp / "bench.toml"
        spec.write_text(spec_toml("bench", grid, seeds=seeds, steps=steps, eval_every=eval_every, cpus=1))
        plan = tmp / "plan.json"
        plan.write_text(json.dumps(baseline_plan(grid, seeds=seeds, steps=steps, eval_every=eval_every), indent=2))
        print(f"  ours: {n_configs} trials x {seeds} seeds x {steps} steps ...", file=sys.stderr, flush=True)
        ours = timed_run([python, "-m", "study.cli", "run", str(spec), "--storage", str(tmp / "ours"), "--num-cpus", str(num_cpus)], log=tmp / "ours.log", pss=pss)
        print(f"    {ours['wall_s']:.1f} s, peak RSS {ours['memory']['peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
        print(f"  baseline: {n_configs * seeds} plain Tune trials x {steps} steps ...", file=sys.stderr, flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        base = timed_run(
            [python, str(ROOT / "benchmarks" / "_plain_tune.py"), "--plan", str(plan), "--storage", str(tmp / "plain"), "--num-cpus", str(num_cpus)],
            log=tmp / "plain.log", pss=pss, env=env,
        )
        print(f"    {base['wall_s']:.1f} s, peak RSS {base['memory']['peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
    ok = ours["rc"] == 0 and base["rc"] == 0
    ratio = base["wall_s"] / ours["wall_s"] if ok else float("nan")
    return {
        "benchmark": "study",
        "settings": {"configs": n_configs, "seeds": seeds, "steps": steps, "eval_every": eval_every, "num_cpus": num_cpus, "fixed": FIXED, "probes": PROBES, "grid": grid},
        "ours": ours,
        "baseline": base,
        "ratio": ratio,
        "goals": [{"goal": "plain Tune wall time / gumbel-study run wall time", "value": ratio, "target": GOAL_RATIO, "unit": "x", "met": ratio >= GOAL_RATIO}],
    }


def run_quick(*, num_cpus: int, pss: bool, python: str, spec: str = "experiments/quick.toml", keep: Path | None = None) -> dict:
    """`gumbel-study run SPEC`, timed; its storage in a temporary directory, or `keep` (kept, for
    `gumbel-study report KEEP/quick`)."""
    with tempfile.TemporaryDirectory(prefix="gumbel-bench-quick-") as tmp:
        storage = keep if keep is not None else Path(tmp) / "runs"
        print(f"  gumbel-study run {spec} --storage {storage} (minutes) ...", file=sys.stderr, flush=True)
        quick = timed_run([python, "-m", "study.cli", "run", spec, "--storage", str(storage), "--num-cpus", str(num_cpus)], log=Path(tmp) / "quick.log", pss=pss)
    gb = quick["memory"]["peak_rss_gb"] if quick["rc"] == 0 else float("nan")
    return {
        "benchmark": "quick_study",
        "settings": {"spec": spec, "num_cpus": num_cpus},
        "quick": quick,
        "goals": [{"goal": "quick study peak RSS (summed over its processes)", "value": gb, "target": GOAL_QUICK_RSS_GB, "unit": " GB", "met": gb <= GOAL_QUICK_RSS_GB, "lower_is_better": True}],
    }


def print_result(result: dict) -> None:
    def row(label: str, run: dict) -> dict:
        m = run["memory"]
        return {"run": label, "wall_s": run["wall_s"], "peak_rss_gb": m["peak_rss_gb"], "peak_pss_gb": m.get("peak_pss_gb"), "processes": m["peak_processes"], "ok": run["rc"] == 0}

    if result["benchmark"] == "study":
        s = result["settings"]
        print_table(
            [row("gumbel-study run", result["ours"]), row("plain Ray Tune", result["baseline"])],
            title=f"study: {s['configs']} configurations x {s['seeds']} seeds x {s['steps']} steps, {s['num_cpus']} CPUs "
            f"(ours: {s['configs']} trials packing seeds; baseline: {s['configs'] * s['seeds']} trials)",
        )
        print(f"embedded study peak RSS (summed over processes): {result['ours']['memory']['peak_rss_gb']:.2f} GB "
              f"(the {GOAL_QUICK_RSS_GB:g} GB goal is for experiments/quick.toml: run with --quick-study)")
    else:
        print_table([row(f"gumbel-study run {result['settings']['spec']}", result["quick"])], title="quick study: wall time and peak memory")
    for g in result["goals"]:
        op = "<=" if g.get("lower_is_better") else ">="
        print(f"goal {g['goal']}: {op} {g['target']:g}{g['unit']}; measured {g['value']:.3g}{g['unit']} -> {'met' if g['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray, both sides (default 2)")
    p.add_argument("--small", action="store_true", help="smoke size: 4 configurations x 2 seeds x 50 steps")
    p.add_argument("--quick-study", action="store_true", help="measure `gumbel-study run experiments/quick.toml` instead (minutes)")
    p.add_argument("--pss", action="store_true", help="also sample the summed PSS, once a second")
    p.add_argument("--keep", metavar="DIR", help="keep the specs, logs and experiment directories here")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.quick_study:
        result = run_quick(num_cpus=args.num_cpus, pss=args.pss, python=sys.executable, keep=Path(args.keep) if args.keep else None)
    else:
        result = run_comparison(small=args.small, num_cpus=args.num_cpus, pss=args.pss, python=sys.executable, keep=Path(args.keep) if args.keep else None)
    result["machine"] = machine_info()
    print_result(result)
    write_json(args.json, result)
    ok = result.get("ours", result.get("quick", {})).get("rc", 1) == 0 and result.get("baseline", {}).get("rc", 0) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
