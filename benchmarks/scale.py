"""Scale: every trial of the tradeoff grid at its real shape, with training and probes cut.

    python benchmarks/scale.py                     # the full grid: 1,344 trials x 32 seeds (make bench-scale)
    python benchmarks/scale.py --trials 336        # a quarter of the grid; full-grid figures extrapolated
    python benchmarks/scale.py --trials 48 --no-profile --floor-trials 16   # a development run

Runs `gumbel-study run experiments/tradeoff.toml --storage TMP --num-cpus 2 --set steps=20
--set eval_every=1 --set probe_estimates=2 --set resources.gpus=0` as a user would (a
subprocess, embedded Ray): every trial keeps the spec's shape (32 seeds, both K, the whole
temperature ladder, every probed estimator, eval_samples, checkpoint_every) and makes 21
evaluations (steps 0..20); only the training steps and the probe estimates are cut.
resources.gpus is the spec's 0.25 on a machine with a CUDA device and 0 otherwise (Ray would
never schedule a trial that asks for a GPU on a CPU-only machine). Then `gumbel-study report` on
the experiment. From that one run it prints, against the goals of issue 13 item 5:

- experiment state per trial: bytes of the latest experiment_state-*.json / trials (<= 50 KB)
- stored per trial without checkpoints: bytes of each trial directory outside its checkpoint_*
  directories, mean (and max) over trials (<= 1 MB)
- the driver's peak RSS: VmHWM of the `gumbel-study run` process (<= 1.5 GB); Ray's other
  processes are shown beside it (their summed RSS peak), not counted in it
- Tune's overhead per report, and the bare-Tune floor measured in the same run
  (benchmarks/_bare_tune.py: a trainable that does no work, reports as many scalar keys as ours
  and checkpoints as often, same Tuner settings) (<= 2x the floor). The definition, the same for
  both: overhead per report = (fit wall time x concurrent trial slots - the seconds the trials
  spend training and evaluating) / reports, where fit wall time runs from the line the driver
  prints before `Tuner.fit()` to the line it prints after, slots = min(num_cpus / CPUs per
  trial, trials), and the training-and-evaluation seconds are the record's `time_s` (0 for the
  floor). Split into the part inside the trial's worker (Tune's `time_total_s` - `time_s`: record
  writes, checkpoint saves and their persisting, artifact sync) and the rest (the driver's round
  trip between results, trial start and actor reuse).
- the whole grid's wall time (interpreter to exit) (<= 30 minutes)
- the report's wall time and peak RSS (VmHWM of the process, and summed over its process tree)
  on the experiment (<= 2 minutes and 4 GB)

With --trials N < 1,344 it runs a subset of the grid that keeps both K, every relaxation and
every target wherever it can (tau0 and anneal_rate are thinned first, spread over their ranges),
and every figure that depends on the number of trials is also extrapolated to the full grid,
labelled as such: wall time in proportion to trials (plus the run's start-up), the driver's RSS
along its growth per finished trial (a least-squares line over the second half of the run), the
report's time and memory in proportion to trials. Per-trial figures need no extrapolation.

--profile (default on): one trial per (relaxation, K) in this process, one torch thread as a
trial has, no Ray: where a trial's seconds go (construction, training, evaluation's sample
metrics and probes, record writes, checkpoint saves).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/scale.py`: benchmarks/ would shadow `study`
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HERE, ROOT, fmt, machine_info, print_table, proc_bytes, tree_members, write_json

SPEC = "experiments/tradeoff.toml"
FULL_TRIALS = 1344  # the tradeoff grid; checked against the spec
KEEP_ORDER = ("categories", "relaxation", "target", "tau0", "anneal_rate")  # axes kept whole first
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

GOALS = {  # issue 13 item 5, on 2 cores
    "state_kb": 50.0,  # experiment state per trial, KB (1 KB = 1,000 bytes)
    "stored_mb": 1.0,  # stored per trial without checkpoints, MB (10^6 bytes)
    "driver_gb": 1.5,  # driver peak RSS, GB (10^9 bytes)
    "overhead_x": 2.0,  # Tune overhead per report / the bare-Tune floor's
    "grid_min": 30.0,  # the whole grid, minutes
    "report_s": 120.0,  # the report on 1,344 trials x 32 seeds, seconds
    "report_gb": 4.0,  # its peak RSS, GB
}

# Keys Tune adds to every result row (ray.tune.result); the rest are the keys the trainable sent.
TUNE_AUTO_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "config",
    "time_since_restore", "iterations_since_restore", "experiment_tag", "should_checkpoint",
})


# ---------------------------------------------------------------------- the grid and its subsets


def spread(values: list, m: int) -> list:
    """m of the values, spread over their range (both ends when m >= 2; the middle when m == 1)."""
    n = len(values)
    if m >= n:
        return list(values)
    if m == 1:
        return [values[(n - 1) // 2]]
    return [values[round(i * (n - 1) / (m - 1))] for i in range(m)]


def subset_counts(sizes: dict[str, int], trials: int, keep: tuple[str, ...] = KEEP_ORDER) -> dict[str, int]:
    """How many values of each axis, product == trials, keeping the axes of `keep` whole in that
    order of priority (the axes not in `keep` are thinned before any of them). ValueError when no
    choice gives exactly `trials`, naming the feasible counts nearest to it."""
    axes = list(sizes)
    rank = {a: (keep.index(a) if a in keep else -1) for a in axes}
    best, best_key = None, None
    feasible = set()
    for counts in itertools.product(*(range(1, sizes[a] + 1) for a in axes)):
        n = math.prod(counts)
        feasible.add(n)
        if n != trials:
            continue
        # prefer whole axes in priority order, then more values on the higher-priority axes
        key = tuple(counts[axes.index(a)] / sizes[a] for a in sorted(axes, key=lambda a: (rank[a] < 0, rank[a])))
        if best_key is None or key > best_key:
            best, best_key = dict(zip(axes, counts)), key
    if best is None:
        nearest = sorted(feasible, key=lambda n: (abs(n - trials), n))[:6]
        raise ValueError(f"no subset of the grid has exactly {trials} trials; nearest: {', '.join(map(str, sorted(nearest)))}")
    return best


def toml_value(value: Any) -> str:
    return json.dumps(value)  # TOML reads JSON's numbers, strings and flat lists alike


def plan_overrides(spec_path: str, *, trials: int | None, steps: int, eval_every: int, probe_estimates: int, gpus: float | None) -> dict:
    """The `--set` overrides of the benchmark run and what they make of the spec (no Ray)."""
    from study.config import load_spec, parse_overrides

    spec = load_spec(ROOT / spec_path)
    grid = {axis: list(values) for axis, values in spec.grid.items()}
    full = spec.num_trials
    sets = [f"steps={steps}", f"eval_every={eval_every}", f"probe_estimates={probe_estimates}"]
    if gpus is not None:
        sets.append(f"resources.gpus={toml_value(gpus)}")
    counts = {axis: len(v) for axis, v in grid.items()}
    if trials is not None and trials != full:
        counts = subset_counts({a: len(v) for a, v in grid.items()}, trials)
        for axis, m in counts.items():
            if m < len(grid[axis]):
                sets.append(f"grid.{axis}={toml_value(spread(grid[axis], m))}")
    overrides = parse_overrides(sets)
    run_spec = load_spec(ROOT / spec_path, overrides)
    cfg = run_spec.fixed
    return {
        "spec": spec_path,
        "sets": sets,
        "full_trials": full,
        "trials": run_spec.num_trials,
        "axis_counts": counts,
        "grid": {a: list(v) for a, v in run_spec.grid.items()},
        "seeds": run_spec.seeds,
        "evaluations": len(cfg.evaluation_steps),
        "checkpoint_every": run_spec.tune.checkpoint_every,
        "cpus_per_trial": run_spec.resources.cpus,
        "gpus_per_trial": run_spec.resources.gpus,
        "spec_gpus_per_trial": spec.resources.gpus,
        "name": run_spec.name,
        "probe_estimators": list(cfg.probe_estimators),
        "probe_taus": list(cfg.probe_taus),
        "eval_samples": cfg.eval_samples,
        "steps": cfg.steps,
        "eval_every": cfg.eval_every,
        "probe_estimates": cfg.probe_estimates,
    }


# ---------------------------------------------------------------------- watching a process tree


def _proc_stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, session, command name, rss bytes) of a live process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
    fields = raw[raw.rfind(b")") + 2 :].split()  # state ppid pgrp session ... rss is field 24 of stat
    return int(fields[1]), int(fields[3]), name, int(fields[21]) * PAGE


def peak_rss(pid: int) -> int:
    """VmHWM of a live process (its peak resident set so far), bytes; 0 when it is gone."""
    return proc_bytes(pid, "status", "VmHWM")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (its own threads, not its children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # utime and stime are fields 14 and 15 of stat
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(root: int) -> dict[int, tuple[str, int]]:
    """{pid: (command name, rss)} of root, every live process below it and every process of its
    session (Ray's processes that left the tree): only what this benchmark started."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    found = tree_members({pid: row[0] for pid, row in table.items()}, {pid: row[1] for pid, row in table.items()}, root)
    return {pid: (table[pid][2], table[pid][3]) for pid in found}


def _kind(name: str) -> str:
    """A process's role from its command name (Ray names its workers ray::<task or actor>)."""
    if name.startswith("ray::"):
        return "ray workers"
    return {"gcs_server": "gcs_server", "raylet": "raylet"}.get(name, "other")


class Watch:
    """Runs a command in its own session; timestamps its output lines; samples its memory.

    Every `interval` s: the root process's RSS and VmHWM, the summed RSS of its tree by role, and
    how many trials have finished (lines matching `done_pattern`).
    """

    def __init__(self, cmd: list[str], *, log: Path, env: dict | None = None, interval: float = 0.5,
                 done_pattern: str = r"^\s+done\s", echo_pattern: str | None = None, echo_every_s: float = 60.0):
        self.cmd, self.log, self.interval = cmd, log, interval
        self.env = dict(os.environ if env is None else env)
        self.env.pop("RAY_ADDRESS", None)  # always an embedded Ray, never a cluster someone else started
        self.env["PYTHONUNBUFFERED"] = "1"  # lines arrive when printed, so their timestamps mean something
        self.done_re = re.compile(done_pattern)
        self.echo_re = re.compile(echo_pattern) if echo_pattern else None
        self.echo_every_s = echo_every_s
        self.lines: list[tuple[float, str]] = []
        self.done = 0
        self.samples: list[dict] = []  # t, done, root_rss
        self.root_hwm = 0
        self.tree_peak = 0
        self.tree_peak_by_kind: dict[str, int] = {}
        self.peak_processes = 0

    def run(self) -> dict:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, start_new_session=True)
        self.pid = proc.pid
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(stop,), daemon=True)
        sampler.start()
        last_echo = 0.0
        with self.log.open("w") as out:
            for line in proc.stdout:
                t = time.perf_counter() - self.started
                self.lines.append((t, line.rstrip("\n")))
                out.write(f"{t:9.2f} {line}")
                if self.done_re.search(line):
                    self.done += 1
                if self.echo_re and self.echo_re.search(line) and t - last_echo >= self.echo_every_s:
                    last_echo = t
                    print(f"    {line.strip()}", file=sys.stderr, flush=True)
        rc = proc.wait()
        wall = time.perf_counter() - self.started
        stop.set()
        sampler.join()
        leftover = set()
        for _ in range(50):  # Ray stops its processes when the driver exits; wait for stragglers
            leftover = set(process_tree(self.pid)) - {self.pid}
            if not leftover:
                break
            time.sleep(0.2)
        if leftover:
            print(f"warning: {len(leftover)} processes of the run still alive 10 s after it exited", file=sys.stderr)
        if rc != 0:
            tail = [line for _, line in self.lines[-25:]]
            print(f"command failed (rc {rc}): {' '.join(self.cmd)}\n" + "\n".join("  | " + x for x in tail), file=sys.stderr)
        return {"cmd": " ".join(self.cmd), "rc": rc, "wall_s": wall, "log": str(self.log)}

    def _sample(self, stop: threading.Event) -> None:
        while not stop.is_set():
            tree = process_tree(self.pid)
            if self.pid in tree:
                hwm = peak_rss(self.pid)
                self.root_hwm = max(self.root_hwm, hwm)
                self.samples.append({"t": time.perf_counter() - self.started, "done": self.done, "rss": tree[self.pid][1],
                                     "hwm": hwm, "cpu": cpu_seconds(self.pid)})
            if tree:
                by_kind: dict[str, int] = {}
                for pid, (name, rss) in tree.items():
                    kind = "root" if pid == self.pid else _kind(name)
                    by_kind[kind] = by_kind.get(kind, 0) + rss
                total = sum(by_kind.values())
                if total > self.tree_peak:
                    self.tree_peak, self.tree_peak_by_kind = total, by_kind
                self.peak_processes = max(self.peak_processes, len(tree))
            stop.wait(self.interval)

    def line_time(self, pattern: str, *, last: bool = False) -> float | None:
        regex = re.compile(pattern)
        hits = [t for t, line in self.lines if regex.search(line)]
        return (hits[-1] if last else hits[0]) if hits else None

    def fit_window(self, start_pattern: str, end_pattern: str = r"^finished in ") -> tuple[float, float] | None:
        start, end = self.line_time(start_pattern), self.line_time(end_pattern, last=True)
        return (start, end) if start is not None and end is not None and end > start else None

    def memory(self) -> dict:
        return {
            "root_peak_rss_gb": self.root_hwm / 1e9,
            "tree_peak_rss_gb": self.tree_peak / 1e9,
            "tree_peak_by_kind_gb": {k: v / 1e9 for k, v in sorted(self.tree_peak_by_kind.items())},
            "peak_processes": self.peak_processes,
            "samples": len(self.samples),
        }


def rss_growth(samples: list[dict], trials: int) -> dict | None:
    """Least-squares line of the root's RSS against finished trials, over the run's second half
    (after start-up and the first trials' imports): bytes per trial."""
    pts = [(s["done"], s["rss"]) for s in samples if s["done"] >= trials / 2]
    if len({d for d, _ in pts}) < 3:
        return None
    mx = statistics.fmean(d for d, _ in pts)
    my = statistics.fmean(r for _, r in pts)
    sxx = sum((d - mx) ** 2 for d, _ in pts)
    slope = sum((d - mx) * (r - my) for d, r in pts) / sxx
    return {"bytes_per_trial": slope, "from_trials": min(d for d, _ in pts), "points": len(pts)}


def driver_cpu(samples: list[dict], trials: int) -> dict | None:
    """The driver's CPU seconds per finished trial over the first and the second half of the trials
    (a rise means per-result work that grows with the trials created so far)."""
    pts = [(s["done"], s["cpu"]) for s in samples if s.get("cpu") is not None]
    if not pts or trials < 4:
        return None

    def cpu_at(n: int) -> tuple[int, float] | None:
        hits = [(d, c) for d, c in pts if d >= n]
        return hits[0] if hits else None

    a, b, c = cpu_at(0), cpu_at(trials // 2), pts[-1]
    if a is None or b is None or b[0] <= a[0] or c[0] <= b[0]:
        return None
    return {"total_s": c[1], "first_half_s_per_trial": (b[1] - a[1]) / (b[0] - a[0]),
            "second_half_s_per_trial": (c[1] - b[1]) / (c[0] - b[0]), "split_at_trial": b[0]}


def cpu_in_window(samples: list[dict], window: tuple[float, float] | None) -> float | None:
    """The root's CPU seconds between two moments of its run (the samples nearest inside them)."""
    if not window:
        return None
    inside = [s for s in samples if window[0] <= s["t"] <= window[1] and s.get("cpu") is not None]
    return inside[-1]["cpu"] - inside[0]["cpu"] if len(inside) >= 2 else None


def ray_staging(pid: int) -> dict:
    """Ray's session directory of a driver (`session_<time>_<driver pid>` under the temp dir's ray/)
    and the bytes of its artifacts/, where Tune stages each trial's directory before syncing it to
    the storage path (with a local storage path, a second copy of every trial's files)."""
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    sessions = sorted(root.glob(f"session_*_{pid}")) if root.is_dir() else []
    artifacts = [s / "artifacts" for s in sessions if (s / "artifacts").is_dir()]
    return {"sessions": [str(s) for s in sessions], "artifacts_bytes": sum(dir_bytes(a) for a in artifacts)}


def remove_staging(staging: dict) -> None:
    """Remove the artifacts/ of this benchmark's own (finished) Ray sessions: Ray leaves them."""
    for session in staging.get("sessions", []):
        shutil.rmtree(Path(session) / "artifacts", ignore_errors=True)


# ---------------------------------------------------------------------- reading an experiment directory


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def latest_state_file(experiment: Path) -> Path | None:
    files = sorted(experiment.glob("experiment_state-*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    return files[-1] if files else None


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").exists())


def _file_kind(rel: Path) -> str:
    top = rel.parts[0]
    if top.startswith("checkpoint_"):
        return "checkpoints"
    if top == "record":
        return "record (parquet, host json)"
    if top in ("result.json", "progress.csv"):
        return top
    if top.startswith("events.out.tfevents"):
        return "tensorboard events"
    if top.startswith("params."):
        return "params.json/.pkl"
    return "other"


def trial_storage(trial: Path) -> dict:
    """Bytes of a trial directory by kind; `stored` is everything outside checkpoint_* dirs."""
    kinds: dict[str, int] = {}
    for root, _dirs, files in os.walk(trial):
        for name in files:
            path = Path(root, name)
            try:
                size = path.lstat().st_size
            except OSError:
                continue
            kind = _file_kind(path.relative_to(trial))
            kinds[kind] = kinds.get(kind, 0) + size
    total = sum(kinds.values())
    return {"total": total, "stored": total - kinds.get("checkpoints", 0), "kinds": kinds}


def result_rows(trial: Path) -> list[dict]:
    path = trial / "result.json"
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def record_time_s(trial: Path) -> float | None:
    """The record's `time_s` at the last evaluation: seconds the trial spent training and evaluating."""
    files = sorted((trial / "record").glob("evals-*.parquet"))
    if not files:
        return None
    import pyarrow.parquet as pq

    column = pq.read_table(files[-1], columns=["time_s"]).column("time_s")
    return float(column[0].as_py()) if len(column) else None


def reported_keys(row: dict) -> list[str]:
    """The keys the trainable sent in one result row (Tune's own keys left out)."""
    return sorted(k for k in row if k not in TUNE_AUTO_KEYS)


def analyze_experiment(experiment: Path, *, with_record: bool = True) -> dict:
    """Per-trial storage, experiment state, reports and time accounting of a Tune experiment."""
    trials = trial_dirs(experiment)
    state = latest_state_file(experiment)
    storages = [trial_storage(t) for t in trials]
    rows_per_trial, keys, time_total, time_s, checkpoints, state_pt = [], None, [], [], [], []
    for t in trials:
        rows = result_rows(t)
        rows_per_trial.append(len(rows))
        if rows:
            keys = keys or reported_keys(rows[0])
            time_total.append(float(rows[-1].get("time_total_s", 0.0)))
        ckpts = sorted(t.glob("checkpoint_*"))
        checkpoints.append(len(ckpts))
        if ckpts:
            state_pt.append(dir_bytes(ckpts[-1]))
        if with_record:
            s = record_time_s(t)
            if s is not None:
                time_s.append(s)
    n = len(trials)
    kinds: dict[str, float] = {}
    for s in storages:
        for k, v in s["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v / max(n, 1)
    stored = [s["stored"] for s in storages]
    by_k: dict[str, list[int]] = {}
    for t, s in zip(trials, storages):
        try:
            k = json.loads((t / "params.json").read_text()).get("categories")
        except (OSError, ValueError):
            k = None
        by_k.setdefault(str(k), []).append(s["stored"])
    return {
        "path": str(experiment),
        "trials": n,
        "state_file": state.name if state else None,
        "state_bytes": state.stat().st_size if state else 0,
        "state_bytes_per_trial": (state.stat().st_size / n) if state and n else float("nan"),
        "stored_bytes_per_trial_mean": statistics.fmean(stored) if stored else float("nan"),
        "stored_bytes_per_trial_max": max(stored) if stored else float("nan"),
        "stored_bytes_per_trial_by_K": {k: statistics.fmean(v) for k, v in sorted(by_k.items())},
        "total_bytes_per_trial_mean": statistics.fmean(s["total"] for s in storages) if storages else float("nan"),
        "bytes_per_trial_by_kind": dict(sorted(kinds.items())),
        "experiment_bytes": dir_bytes(experiment),
        "reports": sum(rows_per_trial),
        "reports_per_trial": sorted(set(rows_per_trial)),
        "reported_keys": keys or [],
        "time_total_s": sum(time_total),
        "time_s": sum(time_s) if with_record else 0.0,
        "trials_with_time_s": len(time_s),
        "checkpoints_per_trial": sorted(set(checkpoints)),
        "checkpoint_bytes_mean": statistics.fmean(state_pt) if state_pt else 0.0,
    }


def overhead(fit_s: float, slots: int, compute_s: float, time_total_s: float, reports: int, driver_cpu_s: float | None = None) -> dict:
    """Tune's overhead per report (see the module docstring), and its split; with the driver's CPU
    seconds during the fit, also the driver's CPU per report (its own work, whatever it waited for)."""
    slot_s = fit_s * slots
    return {
        "driver_cpu_per_report_s": driver_cpu_s / reports if driver_cpu_s is not None and reports else None,
        "fit_s": fit_s,
        "slots": slots,
        "slot_s": slot_s,
        "compute_s": compute_s,
        "reports": reports,
        "per_report_s": (slot_s - compute_s) / reports if reports else float("nan"),
        "in_worker_per_report_s": (time_total_s - compute_s) / reports if reports else float("nan"),
        "between_results_per_report_s": (slot_s - time_total_s) / reports if reports else float("nan"),
    }


# ---------------------------------------------------------------------- the runs


def run_ours(plan: dict, storage: Path, *, num_cpus: int, python: str, logs: Path) -> dict:
    cmd = [python, "-m", "study.cli", "run", plan["spec"], "--storage", str(storage), "--num-cpus", str(num_cpus)]
    for s in plan["sets"]:
        cmd += ["--set", s]
    print(f"  ours: {plan['trials']} trials x {plan['seeds']} seeds, {plan['evaluations']} evaluations each ...", file=sys.stderr, flush=True)
    watch = Watch(cmd, log=logs / "ours.log", echo_pattern=r"^\[\s*\d+ s\] trials:")
    result = watch.run()
    window = watch.fit_window(r"^gumbel-study: \d+ trials x ")
    result["fit_window_s"] = window
    result["memory"] = watch.memory()
    result["rss_growth"] = rss_growth(watch.samples, plan["trials"])
    result["driver_cpu"] = driver_cpu(watch.samples, plan["trials"])
    result["driver_cpu_in_fit_s"] = cpu_in_window(watch.samples, window)
    result["staging"] = ray_staging(watch.pid)
    result["finished_trials_seen"] = watch.done
    result["driver_rss_series"] = [(round(s["t"], 1), s["done"], s["rss"]) for s in watch.samples[:: max(1, len(watch.samples) // 400)]]
    print(f"    {result['wall_s']:.0f} s, driver peak RSS {result['memory']['root_peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
    return result


def run_floor(*, trials: int, reports: int, keys: int, every: int, checkpoint_bytes: int, config: Path | None,
              storage: Path, num_cpus: int, python: str, logs: Path) -> dict:
    cmd = [python, str(HERE / "_bare_tune.py"), "--storage", str(storage), "--trials", str(trials), "--reports", str(reports),
           "--keys", str(keys), "--checkpoint-every", str(every), "--checkpoint-bytes", str(checkpoint_bytes), "--num-cpus", str(num_cpus)]
    if config is not None:
        cmd += ["--config", str(config)]
    print(f"  bare-Tune floor: {trials} trials x {reports} reports x {keys} keys ...", file=sys.stderr, flush=True)
    watch = Watch(cmd, log=logs / "floor.log", done_pattern=r"^$^")
    result = watch.run()
    result["fit_window_s"] = watch.fit_window(r"^bare-tune: \d+ trials x ")
    result["memory"] = watch.memory()
    result["driver_cpu_in_fit_s"] = cpu_in_window(watch.samples, result["fit_window_s"])
    result["staging"] = ray_staging(watch.pid)
    print(f"    {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def run_report(experiment: Path, out: Path, *, python: str, logs: Path) -> dict:
    cmd = [python, "-m", "study.cli", "report", str(experiment), "--out", str(out)]
    print("  gumbel-study report ...", file=sys.stderr, flush=True)
    watch = Watch(cmd, log=logs / "report.log", done_pattern=r"^$^", interval=0.1)
    result = watch.run()
    result["memory"] = watch.memory()
    result["out_bytes"] = dir_bytes(out) if out.exists() else 0
    print(f"    {result['wall_s']:.1f} s, peak RSS {result['memory']['root_peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
    return result


# ---------------------------------------------------------------------- the trainable's profile


PHASES = ("construct", "train", "sample metrics", "probes", "evaluate (rest)", "record write", "lean metrics", "checkpoint save")


def _evaluation_hooks(pop, times: dict) -> list[tuple[Any, str, Any]]:
    """Wrap the evaluation's parts with timers, wherever this checkout keeps them: module functions
    of study.evaluation (sample_metrics, probe_metrics) or Population methods (_sample_metrics,
    _probe_metrics). Returns (owner, name, original) to restore; parts not found stay in
    "evaluate (rest)"."""
    import importlib

    def timed(fn, label):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label] += time.perf_counter() - t0
        return wrapper

    hooks = []
    try:
        evaluation = importlib.import_module("study.evaluation")
    except ImportError:
        evaluation = None
    for owner, name, label in ((evaluation, "sample_metrics", "sample metrics"), (evaluation, "probe_metrics", "probes"),
                               (pop, "_sample_metrics", "sample metrics"), (pop, "_probe_metrics", "probes")):
        if owner is not None and callable(getattr(owner, name, None)):
            original = getattr(owner, name)
            setattr(owner, name, timed(original, label))
            hooks.append((owner, name, original))
    return hooks


def profile_trials(plan: dict, *, relaxations: list[str] | None = None, seeds: int | None = None) -> list[dict]:
    """One trial per (relaxation, K) in this process (one torch thread, no Ray), with the same
    cut settings as the benchmark run: seconds per phase of the trainable. An untimed trial runs
    first, so that imports and first-call costs (a cold process: seconds) count in none of them."""
    import torch

    from study.config import load_spec, parse_overrides
    from study.record import write_evaluation
    from study.train import Trial, lean_metrics, save_state

    torch.set_num_threads(max(1, int(plan["cpus_per_trial"])))
    grid = plan["grid"]
    pins = {a: spread(list(v), 1)[0] for a, v in grid.items() if a not in ("relaxation", "categories")}
    cases = [(r, K) for r in (relaxations or grid.get("relaxation", ["soft"])) for K in grid.get("categories", [None])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gumbel-scale-profile-") as tmp:
        for index, (relaxation, K) in enumerate([cases[0], *cases]):
            warmup = index == 0
            sets = list(plan["sets"]) + [f"{a}={toml_value(v)}" for a, v in pins.items()] + [f"relaxation={toml_value(relaxation)}"]
            if K is not None:
                sets.append(f"categories={K}")
            spec = load_spec(ROOT / plan["spec"], parse_overrides(sets))
            cfg = spec.single_trial()
            times = dict.fromkeys(PHASES, 0.0)
            directory = Path(tmp) / f"{index}-{relaxation}-{K}"
            started = time.perf_counter()
            trial = Trial(cfg, seeds or spec.seeds)
            times["construct"] = time.perf_counter() - started
            pop = trial.population
            evaluate, train = pop.evaluate, pop.train
            eval_total = {"s": 0.0}

            def timed_evaluate(evaluate=evaluate, eval_total=eval_total):
                t0 = time.perf_counter()
                try:
                    return evaluate()
                finally:
                    eval_total["s"] += time.perf_counter() - t0

            def timed_train(*args, train=train, times=times, **kwargs):
                t0 = time.perf_counter()
                try:
                    return train(*args, **kwargs)
                finally:
                    times["train"] += time.perf_counter() - t0

            pop.evaluate, pop.train = timed_evaluate, timed_train
            count = {"n": 0}
            every = plan["checkpoint_every"]

            def on_eval(evaluation, trial=trial, cfg=cfg, times=times, count=count, directory=directory):
                t0 = time.perf_counter()
                write_evaluation(directory, evaluation, trial.time_s)
                t1 = time.perf_counter()
                lean_metrics(evaluation, cfg.relaxation)
                t2 = time.perf_counter()
                count["n"] += 1
                if count["n"] % every == 0 or evaluation.step >= cfg.steps:
                    save_state(trial, directory / f"checkpoint-{count['n']}")
                t3 = time.perf_counter()
                times["record write"] += t1 - t0
                times["lean metrics"] += t2 - t1
                times["checkpoint save"] += t3 - t2

            hooks = _evaluation_hooks(pop, times)
            try:
                started = time.perf_counter()
                trial.run(on_eval)
                run_s = time.perf_counter() - started
            finally:
                for owner, name, original in hooks:
                    if owner is pop:
                        delattr(pop, name)  # the instance attribute hid the class's method
                    else:
                        setattr(owner, name, original)
            times["evaluate (rest)"] = max(0.0, eval_total["s"] - times["sample metrics"] - times["probes"])
            if not warmup:
                rows.append({"relaxation": relaxation, "K": K, "evaluations": count["n"], "trial_s": times["construct"] + run_s,
                             "time_s": trial.time_s, **times})
                print(f"    profile {relaxation}, K={K}: {rows[-1]['trial_s']:.2f} s", file=sys.stderr, flush=True)
            del trial, pop
    return rows


def profile_summary(rows: list[dict]) -> list[dict]:
    """Mean seconds per trial by phase, per K and over the grid (the grid has as many of each K)."""
    phases = [k for k in rows[0] if k in PHASES]
    out = []
    for K in sorted({r["K"] for r in rows}, key=lambda k: (k is None, k)):
        sel = [r for r in rows if r["K"] == K]
        out.append({"K": K, **{p: statistics.fmean(r[p] for r in sel) for p in phases}, "trial_s": statistics.fmean(r["trial_s"] for r in sel)})
    return out


# ---------------------------------------------------------------------- the whole benchmark


def judge(value: float, goal: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "PASS" if value <= goal else "MISS"


def build_rows(r: dict) -> list[dict]:
    """The table: measure, measured, full grid (extrapolated when the run was a subset), goal, verdict."""
    plan, ours, exp = r["plan"], r["ours"], r["experiment"]
    scale = plan["full_trials"] / plan["trials"]
    subset = plan["trials"] != plan["full_trials"]
    rows = []

    def add(measure, measured, full, goal, unit, note=""):
        rows.append({"measure": measure, "measured": measured, "full grid": full, "goal": f"<= {goal:g}{unit}",
                     "verdict": judge(full if full is not None else measured, goal), "note": note})

    state_kb = exp["state_bytes_per_trial"] / 1e3
    add("experiment state per trial (KB)", state_kb, None, GOALS["state_kb"], " KB", f"{exp['state_file']}: {exp['state_bytes']:,} B / {exp['trials']} trials")
    stored_mb = exp["stored_bytes_per_trial_mean"] / 1e6
    by_k = ", ".join(f"K={k} {v / 1e6:.3f}" for k, v in exp.get("stored_bytes_per_trial_by_K", {}).items())
    add("stored per trial, no checkpoints (MB), mean", stored_mb, None, GOALS["stored_mb"], " MB",
        f"max {exp['stored_bytes_per_trial_max'] / 1e6:.3f} MB; {by_k} MB; with checkpoints {exp['total_bytes_per_trial_mean'] / 1e6:.2f} MB; "
        f"Ray's staging copy (session artifacts/) {exp.get('staging_bytes_per_trial', 0) / 1e6:.2f} MB")
    driver = ours["memory"]["root_peak_rss_gb"]
    growth = ours.get("rss_growth")
    driver_full = None
    if subset:
        driver_full = driver + (max(0.0, growth["bytes_per_trial"]) * (plan["full_trials"] - plan["trials"]) / 1e9 if growth else float("nan"))
    ray_other = ours["memory"]["tree_peak_by_kind_gb"]
    add("driver peak RSS (GB)", driver, driver_full, GOALS["driver_gb"], " GB",
        (f"extrapolated: {growth['bytes_per_trial'] / 1e3:+.1f} KB per trial (a fall counts as 0); " if subset and growth else "")
        + "Ray's other processes at the tree's peak: " + ", ".join(f"{k} {v:.2f}" for k, v in ray_other.items() if k != "root") + " GB")
    o, f = r.get("overhead_ours"), r.get("overhead_floor")
    if o and f:
        ratio = o["per_report_s"] / f["per_report_s"] if f["per_report_s"] > 0 else float("nan")

        def parts(x: dict) -> str:
            cpu = x.get("driver_cpu_per_report_s")
            return (f"{1e3 * x['per_report_s']:.1f} ms (in worker {1e3 * x['in_worker_per_report_s']:.1f}, between results "
                    f"{1e3 * x['between_results_per_report_s']:.1f}" + (f"; driver CPU {1e3 * cpu:.1f}" if cpu is not None else "") + ")")

        add("Tune overhead per report / bare-Tune floor (x)", ratio, None, GOALS["overhead_x"], "x",
            f"ours {parts(o)}; floor {parts(f)}" + _cpu_note(ours, exp))
    wall_min = ours["wall_s"] / 60
    full_min = None
    if subset:
        window = ours.get("fit_window_s")
        fit = (window[1] - window[0]) if window else ours["wall_s"]
        full_min = (ours["wall_s"] - fit + fit * scale) / 60
    add("the grid's wall time (min)", wall_min, full_min, GOALS["grid_min"], " min",
        f"{plan['trials']} trials" + (f"; extrapolated x{scale:g} in trials (start-up not scaled)" if subset else ""))
    rep = r.get("report")
    if rep and rep["rc"] != 0:
        rows.append({"measure": "report", "measured": None, "full grid": None, "goal": f"<= {GOALS['report_s']:g} s, {GOALS['report_gb']:g} GB",
                     "verdict": "n/a", "note": f"gumbel-study report failed (rc {rep['rc']}; its output's tail is printed above)"})
    elif rep:
        rs, rg = rep["wall_s"], rep["memory"]["root_peak_rss_gb"]
        add("report wall time (s)", rs, rs * scale if subset else None, GOALS["report_s"], " s",
            f"output {rep['out_bytes'] / 1e6:.1f} MB" + ("; extrapolated in proportion to trials" if subset else ""))
        add("report peak RSS (GB)", rg, rg * scale if subset else None, GOALS["report_gb"], " GB",
            f"tree sum {rep['memory']['tree_peak_rss_gb']:.2f} GB" + ("; extrapolated in proportion to trials" if subset else ""))
    return rows


def _cpu_note(ours: dict, exp: dict) -> str:
    cpu = ours.get("driver_cpu")
    per = max(exp["reports_per_trial"] or [1])
    if not cpu:
        return ""
    return (f"; driver CPU per report over the run {1e3 * cpu['first_half_s_per_trial'] / per:.1f} ms (first half of the trials), "
            f"{1e3 * cpu['second_half_s_per_trial'] / per:.1f} ms (second half)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default=SPEC, help=f"the study spec (default {SPEC})")
    p.add_argument("--trials", type=int, help="run a subset of the grid with this many trials (default: all); full-grid figures are extrapolated")
    p.add_argument("--steps", type=int, default=20, help="training steps per trial (default 20: evaluations at 0..20 with --eval-every 1)")
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--probe-estimates", type=int, default=2, help="estimates per probe (default 2, the minimum)")
    p.add_argument("--gpus", type=float, help="resources.gpus per trial (default: the spec's with a CUDA device, else 0)")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray (default 2)")
    p.add_argument("--floor-trials", type=int, default=64, help="trials of the bare-Tune floor (default 64)")
    p.add_argument("--no-floor", action="store_true", help="skip the bare-Tune floor")
    p.add_argument("--no-report", action="store_true", help="skip `gumbel-study report`")
    p.add_argument("--no-profile", action="store_true", help="skip the in-process profile of the trainable")
    p.add_argument("--keep", metavar="DIR", help="keep the experiments, the report and the logs here (default: a temporary directory, removed)")
    p.add_argument("--json", metavar="PATH", default=str(HERE / "results" / "scale.json"), help="write the result here (default benchmarks/results/scale.json; '' for none)")
    args = p.parse_args(argv)

    gpus = args.gpus
    if gpus is None:
        gpus = None if _has_cuda() else 0.0
    try:
        plan = plan_overrides(args.spec, trials=args.trials, steps=args.steps, eval_every=args.eval_every,
                              probe_estimates=args.probe_estimates, gpus=gpus)
    except ValueError as err:
        p.error(f"--trials: {err}")
    slots = max(1, min(int(args.num_cpus // max(plan["cpus_per_trial"], 1e-9)), plan["trials"]))
    print(f"scale: {plan['trials']} of {plan['full_trials']} trials x {plan['seeds']} seeds, {plan['evaluations']} evaluations "
          f"(steps={plan['steps']}, eval_every={plan['eval_every']}, probe_estimates={plan['probe_estimates']}), "
          f"{plan['cpus_per_trial']:g} CPU + {plan['gpus_per_trial']:g} GPU per trial (spec: {plan['spec_gpus_per_trial']:g} GPU), "
          f"{args.num_cpus} CPUs, {slots} trials at once", file=sys.stderr, flush=True)
    print("  --set " + " --set ".join(plan["sets"]), file=sys.stderr, flush=True)
    result: dict[str, Any] = {"benchmark": "scale", "plan": plan, "num_cpus": args.num_cpus, "machine_start": machine_info()}
    python = sys.executable
    tmp_ctx = tempfile.TemporaryDirectory(prefix="gumbel-scale-")
    base = Path(args.keep) if args.keep else Path(tmp_ctx.name)
    base.mkdir(parents=True, exist_ok=True)
    logs = base / "logs"
    try:
        ours = run_ours(plan, base / "ours", num_cpus=args.num_cpus, python=python, logs=logs)
        result["ours"] = ours
        experiment = base / "ours" / plan["name"]
        if not experiment.exists():
            print(f"no experiment directory at {experiment}", file=sys.stderr)
            write_json(args.json or None, result)
            return 1
        exp = analyze_experiment(experiment)
        result["experiment"] = exp
        window = ours.get("fit_window_s")
        fit = (window[1] - window[0]) if window else ours["wall_s"]
        result["overhead_ours"] = overhead(fit, slots, exp["time_s"], exp["time_total_s"], exp["reports"], ours.get("driver_cpu_in_fit_s"))
        exp["staging_bytes_per_trial"] = ours["staging"]["artifacts_bytes"] / max(exp["trials"], 1)
        if not args.no_floor:
            params = trial_dirs(experiment)[0] / "params.json" if trial_dirs(experiment) else None
            floor_trials = max(1, args.floor_trials)
            floor = run_floor(trials=floor_trials, reports=max(exp["reports_per_trial"] or [plan["evaluations"]]),
                              keys=max(1, len(exp["reported_keys"])), every=plan["checkpoint_every"],
                              checkpoint_bytes=int(exp["checkpoint_bytes_mean"]), config=params, storage=base / "floor",
                              num_cpus=args.num_cpus, python=python, logs=logs)
            result["floor"] = floor
            fexp = analyze_experiment(base / "floor" / "bare", with_record=False) if (base / "floor" / "bare").exists() else None
            result["floor_experiment"] = fexp
            if fexp and floor["rc"] == 0:
                fw = floor.get("fit_window_s")
                ffit = (fw[1] - fw[0]) if fw else floor["wall_s"]
                fslots = max(1, min(args.num_cpus, floor_trials))
                result["overhead_floor"] = overhead(ffit, fslots, 0.0, fexp["time_total_s"], fexp["reports"], floor.get("driver_cpu_in_fit_s"))
                result["floor_keys_check"] = {"ours": exp["reported_keys"], "floor": fexp["reported_keys"]}
        if not args.no_report:
            result["report"] = run_report(experiment, base / "report", python=python, logs=logs)
        if not args.no_profile:
            print("  profile of the trainable (in this process, one thread, no Ray) ...", file=sys.stderr, flush=True)
            rows = profile_trials(plan)
            result["profile"] = {"trials": rows, "by_K": profile_summary(rows)}
    finally:
        result["machine_end"] = machine_info()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
            for run in ("ours", "floor"):
                remove_staging(result.get(run, {}).get("staging", {}))
    rows = build_rows(result)
    result["rows"] = rows
    print_result(result)
    write_json(args.json or None, result)
    if args.json:
        print(f"wrote {args.json}")
    ok = result["ours"]["rc"] == 0 and result.get("floor", {}).get("rc", 0) == 0 and result.get("report", {}).get("rc", 0) == 0
    return 0 if ok else 1


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def print_result(r: dict) -> None:
    plan, exp = r["plan"], r["experiment"]
    print()
    if "profile" in r:
        by_k = r["profile"]["by_K"]
        phases = [k for k in by_k[0] if k not in ("K",)]
        print_table([{"K": str(row["K"]), **{ph: round(row[ph], 3) for ph in phases}} for row in by_k],
                    ["K", *phases], title="where a trial's seconds go (in-process, one torch thread, no Ray; mean over relaxations)")
        print()
    kinds = exp["bytes_per_trial_by_kind"]
    print_table([{"kind": k, "KB per trial": round(v / 1e3, 1)} for k, v in kinds.items()], title="bytes per trial directory, by kind (mean)")
    print()
    o, f = r.get("overhead_ours"), r.get("overhead_floor")
    if o:
        ov = [{"run": "gumbel-study run", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in o.items()}}]
        if f:
            ov.append({"run": "bare-Tune floor", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()}})
        print_table(ov, title="Tune overhead per report = (fit wall x slots - training and evaluation s) / reports")
        print(f"keys per report: ours {len(exp['reported_keys'])} ({', '.join(exp['reported_keys'])})"
              + (f"; floor {len(r['floor_experiment']['reported_keys'])}" if r.get("floor_experiment") else ""))
        print()
    subset = plan["trials"] != plan["full_trials"]
    table = [{k: (round(v, 3) if isinstance(v, float) else ("-" if v is None else v)) for k, v in row.items()} for row in r["rows"]]
    print_table(table, ["measure", "measured", "full grid", "goal", "verdict", "note"],
                title=f"scale: {plan['trials']} of {plan['full_trials']} trials x {plan['seeds']} seeds, {plan['evaluations']} evaluations"
                + (" (full-grid column extrapolated; verdicts on it)" if subset else ""))
    end = r.get("machine_end", {})
    if "load_average" in end:
        print(f"load average at the end: {end['load_average']} on {end.get('available_cpus')} CPUs")


if __name__ == "__main__":
    sys.exit(main())
