"""Experiment directory (local path or cloud URI) -> tidy pandas tables -> parquet.

Reads the files Ray Tune and `study.sweep` write, as plain JSON; never unpickles, never trains,
and imports neither torch nor ray (only `target_probs` imports `study.targets`, inside the call):

    EXP/experiment_state-<session>.json   Tune's trial list: id, status, directory, config
    EXP/<trial_dir>/params.json           the flat trial config (TrialConfig fields, seeds, ...)
    EXP/<trial_dir>/result.json           JSON lines, one per evaluation, with `per_seed`
    EXP/<trial_dir>/error.txt             the error of a failed trial (text)

Finished, partial (truncated or missing result.json) and errored trials all load; a trial that
never started has no directory and appears in `trials` only, from experiment_state. Paths with
"://" (s3://, gs://, file://, ...) are read through `pyarrow.fs`; anything else is a local path.

The tables (one row per ...):

- `trials`  trial: `trial_id`, `trial_dir`, `status` (Tune's TERMINATED / ERROR / RUNNING /
  PENDING / PAUSED, or UNKNOWN when experiment_state does not list it), `error` (last line of the
  error, or None), `num_failures`, every params.json field (lists joined with ","), `n_evals`,
  `last_step`, `complete` (last_step >= steps), `bad_lines` (unparseable result lines),
  `time_total_s`, and `final/<key>` for every mean metric of the last evaluation (`final/fit/tv`).
- `evals`   trial x seed x evaluation step: `trial_id`, `seed`, `step`, `training_iteration`,
  `time_total_s`, every per-seed scalar metric under its own name (`tau`, `fit/tv`,
  `grad/soft/bias2`, `ladder/0.5/hard/variance`, ...), `diverged`, `fit/probs` (a list of K
  learned probabilities), and the config columns of GROUP_COLUMNS plus every grid axis.
- `probes`  trial x seed x step x estimator x probe temperature: `trial_id`, `seed`, `step`,
  `estimator`, `source` ("current": probed at the trial's own tau, from `grad/<est>/<stat>`;
  "ladder": at a fixed tau, from `ladder/<tau>/<est>/<stat>`), `tau`, the statistics of
  PROBE_STATS, and the config columns.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

__all__ = [
    "GROUP_COLUMNS",
    "PROBE_STATS",
    "Experiment",
    "load_experiment",
    "save_parquet",
    "target_probs",
]

# Config columns copied onto every evals / probes row so that tables group without a merge.
GROUP_COLUMNS = ("target", "categories", "relaxation", "schedule", "tau0", "anneal_rate", "tau_min", "anneal_interval", "steps")
# Statistics of a gradient probe (study.probes.STAT_NAMES plus the number of estimates).
PROBE_STATS = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor", "n")

_STATE_GLOB = re.compile(r"^experiment_state-.*\.json$")
_TRIAL_ID_IN_DIR = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
_RUNTIME_FAILURES = re.compile(r'"num_failures"\s*:\s*(\d+)')
_RUNTIME_ERROR_FILE = re.compile(r'"error_filename"\s*:\s*"([^"]+)"')
_PROBE_KEY = re.compile(r"^(?:grad|ladder/(?P<tau>[^/]+))/(?P<est>[^/]+)/(?P<stat>[^/]+)$")
_NOT_METRICS = {"seed", "step", "relaxation", "target", "diverged", "fit/probs"}


@dataclass
class Experiment:
    """The tables of one experiment directory (see the module docstring for their columns)."""

    path: str  # the directory or URI it was read from
    trials: pd.DataFrame  # one row per trial
    evals: pd.DataFrame  # one row per trial x seed x evaluation step
    probes: pd.DataFrame  # one row per trial x seed x step x estimator x probe tau
    meta: dict[str, Any] = field(default_factory=dict)  # name, counts, grid axes, times, warnings


# ------------------------------------------------------------------ files (local or cloud)


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        fs, root = pafs.FileSystem.from_uri(path)
    else:
        fs, root = pafs.LocalFileSystem(), Path(path).expanduser().resolve().as_posix()
    return fs, root.rstrip("/") or "/"


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _list(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------ experiment_state


def _read_state(fs: pafs.FileSystem, root: str, entries: list[pafs.FileInfo], warnings: list[str]) -> dict[str, dict]:
    """Trial id -> {status, relative_logdir, config, evaluated_params, num_failures, error_filename}.

    Tune writes experiment_state-<session>.json (a session string that sorts by time) and a new
    one on every restore; the latest holds every trial. Each trial is a pair of JSON strings: the
    trial (small: parsed) and its run metadata (large, with every last result: only two fields
    are read from it, by pattern, so a 1,000-trial state file parses in a fraction of a second).
    """
    states = sorted(e.base_name for e in entries if e.type == pafs.FileType.File and _STATE_GLOB.match(e.base_name))
    if not states:
        warnings.append("no experiment_state-*.json: statuses inferred from the trial directories")
        return {}
    text = _read_text(fs, f"{root}/{states[-1]}")
    try:
        state = json.loads(text or "")
    except json.JSONDecodeError as err:
        warnings.append(f"{states[-1]} is not valid JSON ({err}); statuses inferred from the trial directories")
        return {}
    out: dict[str, dict] = {}
    for item in state.get("trial_data", []):
        try:
            trial_json, runtime_json = item if isinstance(item, (list, tuple)) else (item, "")
            trial = json.loads(trial_json) if isinstance(trial_json, str) else dict(trial_json)
        except (ValueError, TypeError):
            warnings.append(f"{states[-1]}: an unreadable trial entry was skipped")
            continue
        runtime = runtime_json if isinstance(runtime_json, str) else json.dumps(runtime_json or {})
        failures = _RUNTIME_FAILURES.search(runtime)
        error_file = _RUNTIME_ERROR_FILE.search(runtime)
        config = trial.get("config")
        out[str(trial.get("trial_id"))] = {
            "status": trial.get("status"),
            "relative_logdir": trial.get("relative_logdir"),
            "config": config if isinstance(config, dict) else {},
            "evaluated_params": trial.get("evaluated_params") or {},
            "num_failures": int(failures.group(1)) if failures else 0,
            "error_filename": error_file.group(1) if error_file else None,
        }
    return out


# ------------------------------------------------------------------ one trial directory


def _error_message(text: str | None) -> str | None:
    """The last meaningful line of a Tune error.txt: the exception, without the traceback."""
    if not text:
        return None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Failure #")]
    return lines[-1] if lines else None


def _read_trial_dir(fs: pafs.FileSystem, root: str, name: str) -> dict[str, Any]:
    """Raw contents of one trial directory: params, result rows, error text, unparseable lines."""
    base = f"{root}/{name}"
    files = {e.base_name for e in _list(fs, base) if e.type == pafs.FileType.File}
    params_text = _read_text(fs, f"{base}/params.json") if "params.json" in files else None
    try:
        params = json.loads(params_text) if params_text else None
    except json.JSONDecodeError:
        params = None
    rows, bad = [], 0
    if "result.json" in files:
        for line in (_read_text(fs, f"{base}/result.json") or "").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by a crash mid-write
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    error = _read_text(fs, f"{base}/error.txt") if "error.txt" in files else None
    return {"name": name, "params": params, "rows": rows, "bad_lines": bad, "error_text": error, "has_result": "result.json" in files}


def _flat(value: Any) -> Any:
    """Config values as table cells: lists and tuples become "a,b,c" so that columns group."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


# ------------------------------------------------------------------ tables


def _trial_id_for(name: str, rows: list[dict], state_by_dir: dict[str, str]) -> str:
    if name in state_by_dir:
        return state_by_dir[name]
    for row in rows:
        if row.get("trial_id"):
            return str(row["trial_id"])
    match = _TRIAL_ID_IN_DIR.search(name)
    return match.group(1) if match else name


def _final_aggregates(row: dict) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key.startswith(("std/", "grad/", "ladder/")) or key in ("step", "training_iteration", "per_seed", "config"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (key.startswith(("fit/", "loss/", "sample/", "seeds/")) or key == "tau"):
            out[f"final/{key}"] = value
    if isinstance(row.get("std/fit/tv"), (int, float)):
        out["final/std/fit/tv"] = row["std/fit/tv"]
    return out


def _eval_records(trial_id: str, rows: list[dict], warnings: list[str]) -> list[dict]:
    records = []
    for row in rows:
        per_seed = row.get("per_seed")
        if not isinstance(per_seed, dict):
            warnings.append(f"trial {trial_id}: a result at step {row.get('step')} has no per_seed values; skipped")
            continue
        for seed_key, values in per_seed.items():
            if not isinstance(values, dict):
                continue
            record = {
                "trial_id": trial_id,
                "seed": int(values.get("seed", seed_key)),
                "step": int(values.get("step", row.get("step", -1))),
                "training_iteration": row.get("training_iteration"),
                "time_total_s": row.get("time_total_s"),
            }
            for key, value in values.items():
                if key in ("seed", "step", "relaxation", "target"):
                    continue  # relaxation and target come with the config columns
                record[key] = value
            records.append(record)
    return records


def _probe_table(evals: pd.DataFrame, config_cols: list[str]) -> pd.DataFrame:
    """Long probe rows from the wide `grad/...` and `ladder/...` columns of `evals`."""
    groups: dict[tuple[str, str | None, str], dict[str, str]] = {}
    for col in evals.columns:
        match = _PROBE_KEY.match(col)
        if match and match.group("stat") in PROBE_STATS:
            groups.setdefault(("ladder" if match.group("tau") else "current", match.group("tau"), match.group("est")), {})[match.group("stat")] = col
    keys = ["trial_id", "seed", "step"]
    columns = [*keys, "estimator", "source", "tau", *PROBE_STATS, *config_cols]
    parts = []
    for (source, tau_label, estimator), stats in groups.items():
        part = evals[keys].copy()
        part["estimator"] = estimator
        part["source"] = source
        if source == "current":
            part["tau"] = evals["tau"].astype(float) if "tau" in evals else math.nan
        else:
            try:
                part["tau"] = float(tau_label)
            except (TypeError, ValueError):
                continue
        for stat in PROBE_STATS:
            part[stat] = evals[stats[stat]].astype(float) if stat in stats else math.nan
        for col in config_cols:
            part[col] = evals[col]
        part = part[~part[list(PROBE_STATS[:3])].isna().all(axis=1)]
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=columns)
    probes = pd.concat(parts, ignore_index=True)
    order = {"current": 0, "ladder": 1}
    probes = probes.sort_values(["trial_id", "seed", "step", "source", "tau", "estimator"], key=lambda s: s.map(order) if s.name == "source" else s, kind="stable")
    return probes[columns].reset_index(drop=True)


def _grid_axes(states: dict[str, dict], trials: pd.DataFrame) -> dict[str, list]:
    """Grid axes: Tune's evaluated_params keys, else the config columns that vary across trials."""
    axes: list[str] = []
    for info in states.values():
        for key in info["evaluated_params"]:
            if key not in axes:
                axes.append(key)
    if not axes:
        skip = {"trial_id", "trial_dir", "status", "error", "num_failures", "n_evals", "last_step", "complete", "bad_lines", "time_total_s", "seed"}
        axes = [c for c in trials.columns if c not in skip and not c.startswith("final/") and trials[c].astype(str).nunique() > 1]
    out = {}
    for axis in axes:
        if axis in trials:
            values = trials[axis].dropna().unique().tolist()
            try:
                values = sorted(values)
            except TypeError:
                pass
            out[axis] = values
    return out


def load_experiment(path: str | Path, *, max_workers: int = 16) -> Experiment:
    """Read an experiment directory (local path or cloud URI) into an `Experiment`.

    Trial directories are read in a thread pool (`max_workers`) so that a cloud bucket's latency
    overlaps; each file is read once and every table is built in one go.
    """
    started = time.perf_counter()
    path = str(path)
    fs, root = _filesystem(path)
    root_info = fs.get_file_info(root)
    if root_info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no experiment directory at {path}")
    warnings: list[str] = []
    entries = _list(fs, root)
    states = _read_state(fs, root, entries, warnings)
    state_by_dir = {info["relative_logdir"]: tid for tid, info in states.items() if info["relative_logdir"]}

    # 1. every directory that looks like a trial (listed by Tune, or holding params/result files)
    dir_names = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory and not e.base_name.startswith("."))
    candidates = [n for n in dir_names if n in state_by_dir or _TRIAL_ID_IN_DIR.search(n) or n.startswith("trainable")]
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(candidates) or 1))) as pool:
        raw = list(pool.map(functools.partial(_read_trial_dir, fs, root), candidates))
    raw = [r for r in raw if r["name"] in state_by_dir or r["params"] is not None or r["has_result"]]

    # 2. trials: one row per directory, plus the trials Tune lists that have no directory yet
    trial_rows: list[dict] = []
    eval_records: list[dict] = []
    seen: set[str] = set()
    for item in raw:
        trial_id = _trial_id_for(item["name"], item["rows"], state_by_dir)
        seen.add(trial_id)
        info = states.get(trial_id, {})
        params = item["params"] or info.get("config") or {}
        rows = sorted(item["rows"], key=lambda r: (r.get("training_iteration") or 0, r.get("step") or 0))
        last = rows[-1] if rows else {}
        last_step = int(last["step"]) if isinstance(last.get("step"), (int, float)) else None
        error = _error_message(item["error_text"])
        status = info.get("status")
        if not status:
            status = "ERROR" if error else ("TERMINATED" if last_step is not None and last_step >= int(params.get("steps", math.inf)) else "UNKNOWN")
        if status == "ERROR" and error is None:
            error = "errored (no error.txt in the trial directory)"
        trial_rows.append(
            {
                "trial_id": trial_id,
                "trial_dir": item["name"],
                "status": status,
                "error": error,
                "num_failures": info.get("num_failures", 0),
                **{k: _flat(v) for k, v in params.items()},
                "n_evals": len(rows),
                "last_step": last_step,
                "bad_lines": item["bad_lines"],
                "time_total_s": last.get("time_total_s"),
                "date": last.get("date"),
                **_final_aggregates(last),
            }
        )
        if item["bad_lines"]:
            warnings.append(f"trial {trial_id}: {item['bad_lines']} unreadable line(s) in result.json (cut off mid-write?)")
        eval_records.extend(_eval_records(trial_id, rows, warnings))
    for trial_id, info in states.items():
        if trial_id in seen:
            continue
        trial_rows.append(
            {
                "trial_id": trial_id,
                "trial_dir": None,
                "status": info["status"] or "UNKNOWN",
                "error": "errored before writing its directory" if info["status"] == "ERROR" else None,
                "num_failures": info["num_failures"],
                **{k: _flat(v) for k, v in info["config"].items()},
                "n_evals": 0,
                "last_step": None,
                "bad_lines": 0,
            }
        )

    trials = pd.DataFrame(trial_rows)
    if trials.empty:
        trials = pd.DataFrame(columns=["trial_id", "trial_dir", "status", "error", "num_failures", "n_evals", "last_step", "bad_lines"])
    trials["last_step"] = trials["last_step"].astype("Int64")
    if "steps" in trials:
        trials["complete"] = (trials["last_step"].fillna(-1) >= pd.to_numeric(trials["steps"], errors="coerce")).astype(bool)
    else:
        trials["complete"] = False
    front = ["trial_id", "trial_dir", "status", "error", "num_failures"]
    tail = ["n_evals", "last_step", "complete", "bad_lines", "time_total_s", "date"]
    finals = sorted(c for c in trials.columns if c.startswith("final/"))
    config_cols = [c for c in trials.columns if c not in front and c not in tail and c not in finals]
    trials = trials[[c for c in [*front, *config_cols, *tail, *finals] if c in trials.columns]]
    trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)

    # 3. evals: per-seed rows plus the grouping config columns (one merge)
    grid = _grid_axes(states, trials)
    group_cols = [c for c in dict.fromkeys([*GROUP_COLUMNS, *grid]) if c in trials.columns and c != "seed"]
    evals = pd.DataFrame(eval_records)
    if evals.empty:
        evals = pd.DataFrame(columns=["trial_id", "seed", "step", "training_iteration", "time_total_s", "tau", "diverged", "fit/probs"])
    evals = evals.merge(trials[["trial_id", *group_cols]], on="trial_id", how="left")
    metric_cols = [c for c in evals.columns if c not in ("trial_id", "seed", "step", "training_iteration", "time_total_s", "diverged", "fit/probs", *group_cols)]
    for col in metric_cols:
        evals[col] = pd.to_numeric(evals[col], errors="coerce")
    ordered = ["trial_id", "seed", "step", *group_cols, "training_iteration", "time_total_s", *metric_cols, "diverged", "fit/probs"]
    evals = evals[[c for c in ordered if c in evals.columns]]
    if len(evals):
        evals = evals.sort_values(["trial_id", "seed", "step"], kind="stable").drop_duplicates(["trial_id", "seed", "step"], keep="last")
    evals = evals.reset_index(drop=True)
    evals["diverged"] = evals["diverged"].astype("boolean") if "diverged" in evals else pd.array([pd.NA] * len(evals), dtype="boolean")

    # 4. probes: the wide grad/ and ladder/ columns, long
    probes = _probe_table(evals, group_cols)

    seeds = sorted(int(s) for s in pd.unique(evals["seed"])) if len(evals) else []
    meta = {
        "path": path,
        "name": root.rstrip("/").rsplit("/", 1)[-1],
        "n_trials": int(len(trials)),
        "statuses": {str(k): int(v) for k, v in trials["status"].value_counts().items()},
        "seeds_per_trial": int(pd.to_numeric(trials["seeds"], errors="coerce").max()) if "seeds" in trials and trials["seeds"].notna().any() else len(seeds),
        "seeds": seeds,
        "grid": {k: [_plain(v) for v in vals] for k, vals in grid.items()},
        "estimators": sorted(pd.unique(probes["estimator"]).tolist()) if len(probes) else [],
        "ladder_taus": sorted(float(t) for t in pd.unique(probes.loc[probes["source"] == "ladder", "tau"])) if len(probes) else [],
        "n_evals": int(len(evals)),
        "n_probes": int(len(probes)),
        "first_result": trials["date"].dropna().min() if "date" in trials and trials["date"].notna().any() else None,
        "last_result": trials["date"].dropna().max() if "date" in trials and trials["date"].notna().any() else None,
        "loaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_seconds": round(time.perf_counter() - started, 3),
        "warnings": warnings,
    }
    return Experiment(path=path, trials=trials, evals=evals, probes=probes, meta=meta)


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (for JSON)."""
    return value.item() if hasattr(value, "item") else value


def save_parquet(exp: Experiment, out_dir: str | Path) -> dict[str, Path]:
    """Write trials.parquet, evals.parquet, probes.parquet and meta.json to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ("trials", "evals", "probes"):
        frame: pd.DataFrame = getattr(exp, name)
        path = out / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        written[name] = path
    meta_path = out / "meta.json"
    meta_path.write_text(json.dumps(exp.meta, indent=2, default=str) + "\n")
    written["meta"] = meta_path
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

