"""Run directories (local paths or cloud URIs) -> tidy pandas tables -> parquet.

    load_experiment(RUN) -> Experiment          one run; a list of runs is passed to load_runs
    load_runs([RUN, RUN, ...]) -> Experiment    several runs as one study (a grid and its follow-up)
    save_parquet(exp, DIR)                      the tables as DIR/<table>.parquet and DIR/meta.json

A RUN is a Tune experiment directory (`gumbel-study run`) or a `gumbel-study train` output, which
is read as a study of one trial. What is read (analysis.record lists it once and reads each trial in
a thread pool; study.record's docstring is the authority on the trial record):

    RUN/experiment_state-<session>.json   Tune's trial list: id, status, directory, config, grid values
    RUN/run.json                          provenance: one session per run or resume (study.provenance)
    RUN/<trial>/params.json, record/      a Tune trial: its flat config and its trial record
    RUN/<trial>/error.txt                 the error of a failed Tune trial
    RUN/params.json, record/, summary.json   a `train` output: status TERMINATED, or ERROR with
                                          summary.json's "error"; its trial_id is RUN's name

Nothing is unpickled, nothing trains, and neither torch nor ray is imported (`target_probs` imports
study.targets inside the call). Finished, partial and errored trials all load; a trial that never
started has no directory and appears in `trials` only, from experiment_state. A RUN that is
missing, or holds no trial, raises RunDirError (one line naming RUN). Paths with "://" (s3://,
gs://, file://, ...) are read through pyarrow.fs.

Tables (one row per ...); every one has `run` (RUN's directory name, made unique when two collide):

- `trials`  trial: trial_id (unique across runs: prefixed "<run>/" where two runs share one),
  run, trial_dir, status (TERMINATED / ERROR / RUNNING / PENDING / PAUSED, UNKNOWN when nothing
  says), error (the exception's line, or None), num_failures, every params.json field (lists
  joined with ","), n_evals, last_step, complete (last_step >= steps), bad_files (unreadable
  record files), time_total_s (the trial's training seconds), date (newest evals file, UTC),
  host, device, gpu (distinct values over the trial's sessions, joined with ","), and final/<key>
  at the last evaluation: the mean over seeds of tau, loss/*, fit/*, sample/*, and std/fit/tv,
  seeds/count, seeds/diverged.
- `evals`  trial x seed x evaluation step: trial_id, run, seed, step, the config columns
  (vocab.GROUP_COLUMNS and every grid axis), time_s, the scalar metrics of vocab.EVAL_KEYS
  (tau, loss/d, loss/g, fit/tv, fit/js, fit/kl, sample/vertex_gap, sample/mean_bias),
  diverged, fit/probs (the K learned probabilities, a float32 array). Sorted by trial, seed, step.
- `probe_means`  trial x seed x estimator x source x probed tau, averaged over the steps that
  probed it: trial_id, run, seed, estimator, source ("current": at the trial's own tau; "ladder":
  at a fixed tau), tau, rows (probe rows averaged), first_step, last_step, the statistics of
  vocab.PROBE_STATS (means of their finite values; rows whose bias2, variance or mse is not finite,
  a diverged seed's, are left out and counted in meta["warnings"]), and the config columns as
  categoricals, plus unordered_set_k (summarize.COST_COLUMNS: the options an estimator's cost
  depends on; `summarize.with_cost` adds cost and mse_cost). Reduced in Arrow while reading: what
  the tradeoff table and its figures need.
- `probes`  trial x seed x step x estimator x probed tau: trial_id, run, seed, step, estimator,
  source, tau, PROBE_STATS (float32; n int32), config and cost columns (categoricals). Read from the record
  again on first access, in trial, step, record order: the tradeoff grid's 29M rows take 1.7 GB
  in pandas and ~25 s to read on 2 cores, with a peak near 4.4 GB for the process; the report
  never reads them (probe_means is what its tables and figures need).
- `sessions`  run x session of run.json: run, session (1, 2, ...), started, argv (one shell
  line), spec_path, spec_text, revision, python, torch, ray, cuda, host, resources (JSON).
- `hosts`  trial x host file: run, trial_id, from_step, host, pid, device, gpu, cpu, threads.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.record import RunDirError, RunFiles, TrialData, list_run, read_json, read_probe_rows, read_state, read_trial
from analysis.summarize import COST_COLUMNS
from study.vocab import ESTIMATOR_NAMES, EVAL_KEYS, GROUP_COLUMNS, PROBE_STATS

__all__ = ["Experiment", "RunDirError", "load_experiment", "load_runs", "run_names", "save_parquet", "target_probs"]

_TRIAL_ID_IN_DIR = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
_NOT_AXES = {"seed", "seeds", "checkpoint_every", "cpus", "gpus", "device"}  # run settings, never grid axes
_FRONT = ["trial_id", "run", "trial_dir", "status", "error", "num_failures"]
_TAIL = ["n_evals", "last_step", "complete", "bad_files", "time_total_s", "date", "host", "device", "gpu"]
_SESSION_KEYS = ("started", "argv", "spec_path", "spec_text", "revision", "python", "torch", "ray", "cuda", "host", "resources")
_HOST_KEYS = ("from_step", "host", "pid", "device", "gpu", "cpu", "threads")


@dataclass
class Experiment:
    """The tables of one or more runs (see the module docstring for their columns)."""

    path: str  # the run directory or URI; several joined with ", "
    trials: pd.DataFrame
    evals: pd.DataFrame
    probe_means: pd.DataFrame
    sessions: pd.DataFrame
    hosts: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)  # name, runs, counts, grid axes, times, warnings
    probe_reader: Callable[[], pd.DataFrame] | None = field(default=None, repr=False)
    _probes: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def probes(self) -> pd.DataFrame:
        """Every probe row (trial x seed x step x estimator x tau), read from the record once."""
        if self._probes is None:
            self._probes = self.probe_reader() if self.probe_reader else pd.DataFrame(columns=["trial_id", "run", "seed", "step", "estimator", "source", "tau", *PROBE_STATS])
        return self._probes


def run_names(roots: Sequence[str]) -> list[str]:
    """A unique name per run: its directory name, with parents (then "#2", ...) where two collide."""
    parts = [r.rstrip("/").split("/") for r in roots]
    depth = [1] * len(parts)
    for _ in range(max((len(p) for p in parts), default=1)):
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            return names
        depth = [d + 1 if n in clashes and d < len(p) else d for p, d, n in zip(parts, depth, names)]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


# ------------------------------------------------------------------ trials


def _flat(value: Any) -> Any:
    """Config values as table cells: lists and tuples become "a,b,c" so that columns group."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _error_message(text: str | None) -> str | None:
    """The last meaningful line of a Tune error.txt: the exception, without the traceback."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip() and not ln.strip().startswith("Failure #")]
    return lines[-1] if lines else None


def _status(data: TrialData, info: dict, last_step: int | None, params: dict) -> tuple[str, str | None]:
    """(status, error): experiment_state's, a `train` output's summary.json, else from the files."""
    if data.files.name == "" and data.summary is not None:
        error = data.summary.get("error")
        return ("ERROR", str(error)) if error else ("TERMINATED", None)
    error = _error_message(data.error_text)
    status = info.get("status")
    if not status:
        steps = pd.to_numeric(params.get("steps"), errors="coerce")
        done = last_step is not None and pd.notna(steps) and last_step >= steps
        status = "ERROR" if error else ("TERMINATED" if done else "UNKNOWN")
    if status == "ERROR" and error is None:
        error = "errored (no error.txt in the trial directory)"
    return status, error


def _distinct(hosts: list[dict], key: str) -> str | None:
    values = list(dict.fromkeys(str(h[key]) for h in hosts if h.get(key) is not None))
    return ",".join(values) if values else None


def _trial_row(trial_id: str, run: str, data: TrialData, info: dict) -> dict[str, Any]:
    params = data.params or info.get("config") or {}
    evals = data.evals
    steps = np.unique(evals["step"].to_numpy()) if evals is not None else np.array([], dtype=np.int64)
    last_step = int(steps[-1]) if steps.size else None
    status, error = _status(data, info, last_step, params)
    times = evals["time_s"].to_numpy() if evals is not None and "time_s" in evals.column_names else np.array([])
    return {
        "trial_id": trial_id, "run": run, "trial_dir": data.files.name or ".", "status": status, "error": error,
        "num_failures": info.get("num_failures", 0), **{k: _flat(v) for k, v in params.items()},
        "n_evals": int(steps.size), "last_step": last_step, "bad_files": len(data.bad_files),
        "time_total_s": float(np.nanmax(times)) if times.size else None,
        "date": data.files.newest.astimezone(timezone.utc).isoformat(timespec="seconds") if data.files.newest else None,
        "host": _distinct(data.hosts, "host"), "device": _distinct(data.hosts, "device"), "gpu": _distinct(data.hosts, "gpu"),
    }


def _state_only_row(trial_id: str, run: str, info: dict) -> dict[str, Any]:
    """A trial Tune lists that has no directory: it never started, or errored before writing one."""
    return {
        "trial_id": trial_id, "run": run, "trial_dir": None, "status": info["status"] or "UNKNOWN",
        "error": "errored before writing its directory" if info["status"] == "ERROR" else None,
        "num_failures": info["num_failures"], **{k: _flat(v) for k, v in info["config"].items()},
        "n_evals": 0, "last_step": None, "bad_files": 0,
    }


def _trial_id(listing: RunFiles, name: str, by_dir: dict[str, str]) -> str:
    if name == "":
        return listing.root.rstrip("/").rsplit("/", 1)[-1]
    match = _TRIAL_ID_IN_DIR.search(name)
    return by_dir.get(name) or (match.group(1) if match else name)


def _run_rows(listing: RunFiles, run: str, state: dict[str, dict], data: list[TrialData]) -> list[tuple[dict, TrialData | None]]:
    """One (row, data) per trial of a run: its directories, then the trials listed without one."""
    by_dir = {info["relative_logdir"]: tid for tid, info in state.items() if info["relative_logdir"]}
    rows, seen = [], set()
    for item in data:
        trial_id = _trial_id(listing, item.files.name, by_dir)
        seen.add(trial_id)
        rows.append((_trial_row(trial_id, run, item, state.get(trial_id, {})), item))
    rows += [(_state_only_row(tid, run, info), None) for tid, info in state.items() if tid not in seen]
    return sorted(rows, key=lambda r: r[0]["trial_id"])


def _unique_ids(rows: list[tuple[dict, TrialData | None]]) -> None:
    """Prefix "<run>/" to the trial ids that two runs share."""
    counts: dict[str, int] = {}
    for row, _ in rows:
        counts[row["trial_id"]] = counts.get(row["trial_id"], 0) + 1
    for row, _ in rows:
        if counts[row["trial_id"]] > 1:
            row["trial_id"] = f"{row['run']}/{row['trial_id']}"


def _trials_table(rows: list[dict]) -> pd.DataFrame:
    trials = pd.DataFrame(rows)
    for col in [*_FRONT, *_TAIL]:
        if col not in trials:
            trials[col] = None
    trials["last_step"] = trials["last_step"].astype("Int64")
    steps = pd.to_numeric(trials["steps"], errors="coerce") if "steps" in trials else pd.Series(np.nan, index=trials.index)
    trials["complete"] = (trials["last_step"].astype("float64").fillna(-1) >= steps).to_numpy(dtype=bool)
    params = [c for c in trials.columns if c not in _FRONT and c not in _TAIL]
    return trials[[*_FRONT, *params, *_TAIL]]


def _grid_axes(states: list[dict[str, dict]], trials: pd.DataFrame) -> dict[str, list]:
    """Grid axes: Tune's evaluated_params keys; with several runs (or none), also every config
    column that varies across trials, so that no two configurations are pooled."""
    axes = list(dict.fromkeys(key for state in states for info in state.values() for key in info["evaluated_params"]))
    if len(states) > 1 or not axes:
        params = [c for c in trials.columns if c not in _FRONT and c not in _TAIL and c not in _NOT_AXES]
        axes += [c for c in params if c not in axes and trials[c].dropna().astype(str).nunique() > 1]
    out = {}
    for axis in (a for a in axes if a in trials):
        values = trials[axis].dropna().unique().tolist()
        try:
            values = sorted(values)
        except TypeError:
            pass
        out[axis] = [v.item() if hasattr(v, "item") else v for v in values]
    return out


# ------------------------------------------------------------------ evals, probes, provenance


def _codes(trials: pd.DataFrame, tables: list[tuple[int, pa.Table]]) -> tuple[pa.Table | None, np.ndarray]:
    """The tables of several trials in one, and each row's trial position in `trials`."""
    tables = [(i, t) for i, t in tables if t is not None and t.num_rows]
    if not tables:
        return None, np.array([], dtype=np.int32)
    codes = np.concatenate([np.full(t.num_rows, i, dtype=np.int32) for i, t in tables])
    return pa.concat_tables([t for _, t in tables], promote_options="default").unify_dictionaries(), codes


def _with_keys(frame: pd.DataFrame, trials: pd.DataFrame, codes: np.ndarray, config: list[str], categorical: bool) -> pd.DataFrame:
    """trial_id and run (categoricals) in front, the trials' config columns looked up by `codes`."""
    frame.insert(0, "trial_id", pd.Categorical.from_codes(codes, categories=pd.Index(trials["trial_id"])))
    runs = pd.Index(pd.unique(trials["run"]))
    frame.insert(1, "run", pd.Categorical.from_codes(runs.get_indexer(trials["run"]).astype(np.int32)[codes], categories=runs))
    for col in config:
        if categorical:
            values, uniques = pd.factorize(trials[col])
            frame[col] = pd.Categorical.from_codes(values.astype(np.int16 if len(uniques) < 2**15 else np.int32)[codes], categories=uniques)
        else:
            frame[col] = trials[col].array.take(codes)
    return frame


def _evals_table(trials: pd.DataFrame, data: list[TrialData | None], config: list[str]) -> pd.DataFrame:
    table, codes = _codes(trials, [(i, d.evals) for i, d in enumerate(data) if d is not None])
    metrics = list(EVAL_KEYS)
    if table is None:
        return pd.DataFrame(columns=["trial_id", "run", "seed", "step", *config, "time_s", *metrics, "diverged", "fit/probs"])
    frame = _with_keys(table.to_pandas(), trials, codes, config, categorical=False)
    frame["diverged"] = frame["diverged"].astype("boolean")
    order = np.lexsort((frame["step"].to_numpy(), frame["seed"].to_numpy(), codes))
    front = ["trial_id", "run", "seed", "step", *config, "time_s"]
    rest = [c for c in frame.columns if c not in front and c not in ("diverged", "fit/probs")]
    return frame.iloc[order][[*front, *rest, "diverged", "fit/probs"]].reset_index(drop=True)


def _probe_config(trials: pd.DataFrame, config: list[str]) -> list[str]:
    """The config columns of probe rows: `config`, then the options an estimator's cost depends on
    (summarize.COST_COLUMNS: unordered_set_k), so that mse_cost can be computed per row."""
    return [*config, *(c for c in COST_COLUMNS if c in trials.columns and c not in config)]


def _probe_means_table(trials: pd.DataFrame, data: list[TrialData | None], config: list[str]) -> pd.DataFrame:
    config = _probe_config(trials, config)
    table, codes = _codes(trials, [(i, d.probe_means) for i, d in enumerate(data) if d is not None])
    if table is None:
        return pd.DataFrame(columns=["trial_id", "run", "seed", "estimator", "source", "tau", "rows", "first_step", "last_step", *PROBE_STATS, *config])
    return _with_keys(table.to_pandas(), trials, codes, config, categorical=True)


def _read_probe_rows(trials: pd.DataFrame, data: list[TrialData | None], config: list[str], workers: int) -> pd.DataFrame:
    """The `probes` table: every trial's probe files, read again (Experiment.probes calls this once)."""
    config = _probe_config(trials, config)
    jobs = [(i, d) for i, d in enumerate(data) if d is not None and d.files.probes]
    with ThreadPoolExecutor(max(1, min(workers, len(jobs) or 1))) as pool:
        tables = list(pool.map(lambda job: (job[0], read_probe_rows(job[1].fs, job[1].files)), jobs))
    table, codes = _codes(trials, tables)
    del tables  # the concatenated table alone holds the rows, so that dropping its columns frees them
    if table is None:
        return pd.DataFrame(columns=["trial_id", "run", "seed", "step", "estimator", "source", "tau", *PROBE_STATS, *config])
    frame = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    for name in table.column_names:  # one column at a time: the peak is the table plus one column
        frame[name] = table.column(name).to_pandas()
        table = table.drop_columns([name])
    return _with_keys(frame, trials, codes, config, categorical=True)


def _final_metrics(trials: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """final/<key>: means over the seeds of each trial's last evaluation (non-finite values left out)."""
    if evals.empty:
        return trials
    last = evals[evals["step"] == evals.groupby("trial_id", observed=True)["step"].transform("max")]
    finite = last[list(EVAL_KEYS)].where(np.isfinite(last[list(EVAL_KEYS)]))
    grouped = finite.groupby(last["trial_id"].astype(str), sort=False)
    final = grouped.mean().add_prefix("final/")
    final["final/std/fit/tv"] = grouped["fit/tv"].std().fillna(0.0)
    final["final/seeds/count"] = last.groupby(last["trial_id"].astype(str), sort=False).size()
    final["final/seeds/diverged"] = last["diverged"].fillna(False).astype(int).groupby(last["trial_id"].astype(str), sort=False).sum()
    return trials.merge(final, left_on="trial_id", right_index=True, how="left")


def _sessions_table(listings: list[RunFiles], names: list[str]) -> pd.DataFrame:
    rows = []
    for listing, run in zip(listings, names):
        doc = read_json(listing.fs, listing.run_json)
        sessions = doc.get("sessions", []) if isinstance(doc, dict) else []
        for i, session in enumerate(s for s in sessions if isinstance(s, dict)):
            row = {"run": run, "session": i + 1, **{k: session.get(k) for k in _SESSION_KEYS}}
            row["argv"] = shlex.join(map(str, row["argv"])) if isinstance(row["argv"], list) else row["argv"]
            row["resources"] = json.dumps(row["resources"], sort_keys=True) if row["resources"] is not None else None
            rows.append(row)
    return pd.DataFrame(rows, columns=["run", "session", *_SESSION_KEYS])


def _hosts_table(trials: pd.DataFrame, data: list[TrialData | None]) -> pd.DataFrame:
    rows = [
        {"run": run, "trial_id": tid, **{k: host.get(k) for k in _HOST_KEYS}}
        for tid, run, d in zip(trials["trial_id"], trials["run"], data) if d is not None for host in d.hosts
    ]
    return pd.DataFrame(rows, columns=["run", "trial_id", *_HOST_KEYS])


# ------------------------------------------------------------------ load


def _read_all(listings: list[RunFiles], workers: int) -> list[list[TrialData]]:
    """Every trial of every run, read in one thread pool; per run, in listing order."""
    jobs = [(r, listing.fs, files) for r, listing in enumerate(listings) for files in listing.trials.values()]
    with ThreadPoolExecutor(max(1, min(workers, len(jobs) or 1))) as pool:
        data = list(pool.map(lambda job: read_trial(job[1], job[2]), jobs))
    out: list[list[TrialData]] = [[] for _ in listings]
    for (r, _, _), item in zip(jobs, data):
        out[r].append(item)
    return out


def _warnings(data: list[TrialData | None], trials: pd.DataFrame) -> list[str]:
    out = []
    for tid, d in zip(trials["trial_id"], data):
        if d is not None and d.bad_files:
            out.append(f"trial {tid}: {len(d.bad_files)} unreadable record file(s), left out: {', '.join(d.bad_files[:3])}")
        if d is not None and d.dropped_rows:
            out.append(f"trial {tid}: {d.dropped_rows} probe row(s) with non-finite statistics (diverged seeds) left out of probe_means")
    return out


def _meta(paths: list[str], names: list[str], trials: pd.DataFrame, evals: pd.DataFrame, means: pd.DataFrame, grid: dict, data: list) -> dict[str, Any]:
    seeds = sorted(int(s) for s in pd.unique(evals["seed"])) if len(evals) else []
    dates = trials["date"].dropna()
    ladder = means.loc[means["source"] == "ladder", "tau"] if len(means) else pd.Series(dtype=float)
    per_trial = pd.to_numeric(trials["seeds"], errors="coerce") if "seeds" in trials else pd.Series(dtype=float)
    return {
        "path": ", ".join(paths), "name": " + ".join(names),
        "runs": [{"name": n, "path": p, "trials": int((trials["run"] == n).sum())} for n, p in zip(names, paths)],
        "n_trials": int(len(trials)), "statuses": {str(k): int(v) for k, v in trials["status"].value_counts().items()},
        "seeds_per_trial": int(per_trial.max()) if per_trial.notna().any() else len(seeds), "seeds": seeds,
        "grid": grid, "estimators": sorted(map(str, pd.unique(means["estimator"])), key=lambda e: (e not in ESTIMATOR_NAMES, ESTIMATOR_NAMES.index(e) if e in ESTIMATOR_NAMES else 0, e)) if len(means) else [],
        "ladder_taus": sorted(float(t) for t in pd.unique(ladder)), "n_evals": int(len(evals)),
        "n_probes": int(sum(d.probe_rows for d in data if d is not None)),
        "first_result": dates.min() if len(dates) else None, "last_result": dates.max() if len(dates) else None,
        "loaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _no_trial_cause(listing: RunFiles) -> str:
    cause = "holds no trial (no experiment_state-*.json, no trial directory with params.json or record/)"
    if listing.runs_below:
        shown = ", ".join(listing.runs_below[:5]) + (", ..." if len(listing.runs_below) > 5 else "")
        cause += f"; it holds runs: {shown} (pass those)"
    return cause


def load_runs(paths: Sequence[str | Path], *, max_workers: int | None = None, progress: Callable[[str], None] | None = None) -> Experiment:
    """Read one or more runs (paths or URIs) into one `Experiment`; RunDirError for a bad RUN.

    Every trial of every run is read in one thread pool (`max_workers`: default twice the CPU
    count for local paths, up to 8, so that one thread decodes while another runs Python; 16 when
    a URI's latency has to overlap); each file is read once. `progress`, when
    given, receives one line once every RUN is known to hold trials, before the reading starts.
    """
    started = time.perf_counter()
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("load_runs needs at least one run directory")
    listings = [list_run(p) for p in paths]
    warnings: list[str] = []
    states = [read_state(listing.fs, listing.state, warnings) for listing in listings]
    for listing, state in zip(listings, states):
        if not listing.trials and not state:
            raise RunDirError(listing.path, _no_trial_cause(listing))
    warnings += [f"{x.path}: no experiment_state-*.json; statuses inferred from the trial directories" for x in listings if x.state is None and "" not in x.trials]
    workers = max_workers or (16 if any("://" in p for p in paths) else min(8, 2 * (os.cpu_count() or 1)))
    if progress is not None:
        progress(f"loading {sum(len(x.trials) for x in listings)} trial directories from {', '.join(paths)} ...")
    names = run_names([listing.root for listing in listings])
    rows = [r for listing, name, state, data in zip(listings, names, states, _read_all(listings, workers)) for r in _run_rows(listing, name, state, data)]
    _unique_ids(rows)
    data = [d for _, d in rows]
    trials = _trials_table([r for r, _ in rows])
    grid = _grid_axes(states, trials)
    config = [c for c in dict.fromkeys([*GROUP_COLUMNS, *grid]) if c in trials.columns and c not in _NOT_AXES]
    evals = _evals_table(trials, data, config)
    trials = _final_metrics(trials, evals)
    means = _probe_means_table(trials, data, config)
    for item in data:  # the pandas tables hold it all now; the probe reader needs only the files
        if item is not None:
            item.evals = item.probe_means = None
    pa.default_memory_pool().release_unused()
    meta = _meta(paths, names, trials, evals, means, grid, data)
    meta["warnings"] = warnings + _warnings(data, trials)
    meta["load_seconds"] = round(time.perf_counter() - started, 3)
    reader = functools.partial(_read_probe_rows, trials, data, config, workers)
    return Experiment(meta["path"], trials, evals, means, _sessions_table(listings, names), _hosts_table(trials, data), meta, reader)


def load_experiment(path: str | Path | Sequence[str | Path], *, max_workers: int | None = None, progress: Callable[[str], None] | None = None) -> Experiment:
    """Read a run directory (path or URI), or a list of them (see load_runs), into an `Experiment`."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return load_runs(paths, max_workers=max_workers, progress=progress)


def save_parquet(exp: Experiment, out_dir: str | Path, *, probes: bool = False) -> dict[str, Path]:
    """Write trials, evals, probe_means, sessions, hosts (and with `probes`, every probe row) as
    OUT/<name>.parquet, and OUT/meta.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ("trials", "evals", "probe_means", "sessions", "hosts", *(["probes"] if probes else [])):
        written[name] = out / f"{name}.parquet"
        getattr(exp, name).to_parquet(written[name], index=False)
    written["meta"] = out / "meta.json"
    written["meta"].write_text(json.dumps(exp.meta, indent=2, default=str) + "\n")
    return written


@functools.lru_cache(maxsize=None)
def _target_probs_cached(target: str, categories: int | None, base_dir: str | None) -> tuple[float, ...]:
    from study.targets import parse_target  # imports torch: only when true probabilities are asked for

    probs = parse_target(target, categories, base_dir=base_dir).probs
    return tuple(float(p) for p in probs)


def target_probs(target: str, categories: int | None = None, *, base_dir: str | Path | None = None) -> tuple[float, ...]:
    """The target's reference probabilities q [K] (study.targets.parse_target; cached per target).

    Raises study.targets.TargetError (a ValueError) when the target cannot be built here, e.g. a
    stream file that is not on this machine.
    """
    k = None if categories is None or (isinstance(categories, float) and math.isnan(categories)) else int(categories)
    return _target_probs_cached(str(target), k, None if base_dir is None else str(base_dir))
