"""The files of a run directory, read through pyarrow: one listing, then each trial's record.

    list_run(path) -> RunFiles              everything under RUN (a local path or a URI), listed once
    read_trial(fs, files) -> TrialData      one trial: params, status files, hosts, evals, probe means
    read_probe_rows(fs, files) -> pa.Table  one trial's probe rows, in compact types
    read_state(fs, path, warnings)          Tune's experiment_state: trial id -> status, directory, ...

The trial record is study.record's format (its docstring is the authority):

    TRIAL/params.json                     the flat trial config
    TRIAL/record/evals-<step>.parquet     one row per seed
    TRIAL/record/probes-<step>.parquet    one row per seed x estimator x probed tau
    TRIAL/record/host-<step>.json         where the trial ran from <step> on
    TRIAL/error.txt                       Tune: the error of a failed trial
    TRIAL/summary.json                    `gumbel-study train`: final metrics and "error"

A trial directory is a child of RUN holding params.json or record files (a Tune experiment), or RUN
itself (a `train` output). Children that hold a run.json are runs of their own, not trials. Files are
named by step and rewritten whole when a step is evaluated again, so reading every file counts each
row once; temporary files (".evals-...tmp") do not match the names and are never read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.vocab import PROBE_STATS

__all__ = ["RunDirError", "RunFiles", "TrialFiles", "filesystem", "list_run", "read_probe_rows", "read_state", "read_trial"]

_TRIAL_FILE = re.compile(
    r"^(?:(?P<trial>[^/]+)/)?(?:(?P<top>params\.json|error\.txt|summary\.json)"
    r"|record/(?P<kind>evals|probes)-(?P<step>\d+)\.parquet|record/host-(?P<host>\d+)\.json)$"
)
_STATE_FILE = re.compile(r"^experiment_state-[^/]*\.json$")
_RUN_BELOW = re.compile(r"^(?P<run>[^/]+)/(?:experiment_state-[^/]*\.json|run\.json)$")
_RUNTIME_FAILURES = re.compile(r'"num_failures"\s*:\s*(\d+)')
_RUNTIME_ERROR_FILE = re.compile(r'"error_filename"\s*:\s*"([^"]+)"')
PROBS_TYPE = pa.list_(pa.float32())  # fit/probs of every trial (the record's is fixed-size: K varies)
_PROBE_KEYS = ["seed", "estimator", "source", "tau"]


class RunDirError(ValueError):
    """A RUN argument that cannot be read as a study: missing, not a directory, or holding no trial.

    `str()` is one line, `RUN_DIR='path': cause`, as the CLI prints its errors."""

    def __init__(self, path: str, cause: str):
        self.path, self.cause = path, cause
        super().__init__(f"RUN_DIR={path!r}: {cause}")


@dataclass
class TrialFiles:
    """The files of one trial directory (paths as the filesystem names them)."""

    name: str  # directory name under RUN; "" when RUN itself is the trial (a `train` output)
    params: str | None = None
    error: str | None = None
    summary: str | None = None
    evals: list[tuple[int, str]] = field(default_factory=list)  # (step, path), step order
    probes: list[tuple[int, str]] = field(default_factory=list)
    hosts: list[tuple[int, str]] = field(default_factory=list)
    newest: datetime | None = None  # modification time of the newest evals file


@dataclass
class RunFiles:
    """One listing of a run directory."""

    path: str  # as given
    fs: pafs.FileSystem
    root: str  # the directory in `fs`
    trials: dict[str, TrialFiles]  # directory name -> files
    state: str | None  # the latest experiment_state-*.json
    run_json: str | None
    runs_below: list[str]  # children that are runs themselves (for the error message)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, directory): pyarrow.fs for URIs ("://"), the local filesystem otherwise."""
    if "://" in path:
        fs, root = pafs.FileSystem.from_uri(path)
    else:
        fs, root = pafs.LocalFileSystem(), Path(path).expanduser().resolve().as_posix()
    return fs, root.rstrip("/") or "/"


def _add(trials: dict[str, TrialFiles], match: re.Match, info: pafs.FileInfo) -> None:
    name = match.group("trial") or ""
    files = trials.setdefault(name, TrialFiles(name))
    if match.group("top"):
        setattr(files, match.group("top").split(".")[0], info.path)
    elif match.group("kind"):
        getattr(files, match.group("kind")).append((int(match.group("step")), info.path))
        if match.group("kind") == "evals" and info.mtime is not None and (files.newest is None or info.mtime > files.newest):
            files.newest = info.mtime
    else:
        files.hosts.append((int(match.group("host")), info.path))


def list_run(path: str) -> RunFiles:
    """List RUN once (recursively) and sort its files into trials; RunDirError when it holds none."""
    fs, root = filesystem(path)
    kind = fs.get_file_info(root).type
    if kind == pafs.FileType.NotFound:
        raise RunDirError(path, "no such directory")
    if kind != pafs.FileType.Directory:
        raise RunDirError(path, "not a directory")
    trials: dict[str, TrialFiles] = {}
    states, run_json, below = [], None, set()
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root) + 1 :] if root != "/" else info.path.lstrip("/")
        if _STATE_FILE.match(rel):
            states.append(info.path)
        elif rel == "run.json":
            run_json = info.path
        elif match := _RUN_BELOW.match(rel):
            below.add(match.group("run"))
        if match := _TRIAL_FILE.match(rel):
            _add(trials, match, info)
    trials = {name: files for name, files in trials.items() if name not in below and (files.params or files.evals or files.probes)}
    for files in trials.values():
        files.evals.sort()
        files.probes.sort()
        files.hosts.sort()
    return RunFiles(path, fs, root, trials, max(states) if states else None, run_json, sorted(below))


# ------------------------------------------------------------------ small files


def read_text(fs: pafs.FileSystem, path: str | None) -> str | None:
    """The file's text, or None when there is no such file."""
    if path is None:
        return None
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def read_json(fs: pafs.FileSystem, path: str | None) -> Any:
    """The file's JSON value, or None when it is missing or not JSON."""
    text = read_text(fs, path)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def read_state(fs: pafs.FileSystem, path: str | None, warnings: list[str]) -> dict[str, dict]:
    """Trial id -> {status, relative_logdir, config, evaluated_params, num_failures, error_filename}.

    Tune writes experiment_state-<session>.json (a session string that sorts by time) and a new
    one on every restore; the latest holds every trial. Each trial is a pair of JSON strings: the
    trial (small: parsed) and its run metadata (large, with every last result: only two fields
    are read from it, by pattern, so a 1,000-trial state file parses in a fraction of a second).
    """
    if path is None:
        return {}
    name = path.rsplit("/", 1)[-1]
    try:
        state = json.loads(read_text(fs, path) or "")
    except json.JSONDecodeError as err:
        warnings.append(f"{name} is not valid JSON ({err}); statuses inferred from the trial directories")
        return {}
    out: dict[str, dict] = {}
    for item in state.get("trial_data", []):
        try:
            trial_json, runtime_json = item if isinstance(item, (list, tuple)) else (item, "")
            trial = json.loads(trial_json) if isinstance(trial_json, str) else dict(trial_json)
        except (ValueError, TypeError):
            warnings.append(f"{name}: an unreadable trial entry was skipped")
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


# ------------------------------------------------------------------ the record


@dataclass
class TrialData:
    """What one trial directory holds, read."""

    files: TrialFiles
    fs: pafs.FileSystem  # where the files are
    params: dict | None
    error_text: str | None  # Tune's error.txt
    summary: dict | None  # `train`'s summary.json
    hosts: list[dict]  # host-<step>.json, step order
    evals: pa.Table | None  # every evals file, fit/probs as list<float32>
    probe_means: pa.Table | None  # probe rows averaged over steps (see probe_means)
    probe_rows: int = 0  # probe rows read
    dropped_rows: int = 0  # probe rows with a non-finite bias2, variance or mse (diverged seeds)
    bad_files: list[str] = field(default_factory=list)  # record files that could not be read


def _read_parquet(fs: pafs.FileSystem, path: str) -> pa.Table:
    """One record file, fetched whole (one request on cloud storage; a third less CPU than
    random access on a local disk: the files are a few kB), decoded on this thread."""
    with fs.open_input_stream(path) as stream:
        data = stream.read_buffer()
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


def _read_tables(fs: pafs.FileSystem, paths: list[tuple[int, str]], bad: list[str]) -> list[pa.Table]:
    tables = []
    for _, path in paths:
        try:
            tables.append(_read_parquet(fs, path))
        except (pa.ArrowException, OSError) as err:  # cut off by a crash mid-copy, or not parquet
            bad.append(f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]} ({type(err).__name__})")
    return tables


def _with_list_probs(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("fit/probs")
    if index < 0 or table.schema.field(index).type == PROBS_TYPE:
        return table
    return table.set_column(index, "fit/probs", table.column(index).cast(PROBS_TYPE))


RELATIVE_STATS = ("rel_bias2", "rel_variance")  # bias2 and variance / ||exact gradient||^2, per probe row


def _with_relative_errors(rows: pa.Table) -> pa.Table:
    """rel_bias2 and rel_variance: bias2 and variance divided by the squared norm of the exact
    gradient at that probe point (= rel_rmse^2 / mse), so that points with large and small
    gradients weigh alike when estimators are ranked across trials (null where undefined)."""
    if not {"rel_rmse", "mse", "bias2", "variance"} <= set(rows.column_names):
        return rows
    f64 = lambda name: pc.cast(rows[name], pa.float64())  # noqa: E731
    scale = pc.divide(pc.multiply(f64("rel_rmse"), f64("rel_rmse")), f64("mse"))
    scale = pc.if_else(pc.and_(pc.is_finite(scale), pc.greater(f64("mse"), 0.0)), scale, pa.scalar(None, pa.float64()))
    return rows.append_column("rel_bias2", pc.multiply(f64("bias2"), scale)).append_column("rel_variance", pc.multiply(f64("variance"), scale))


def probe_means(rows: pa.Table) -> tuple[pa.Table, int]:
    """Probe rows averaged over steps: one row per seed x estimator x source x tau.

    Rows whose bias2, variance or mse is not finite (a diverged seed) are dropped first; the other
    statistics average their finite values. Output: seed, estimator, source, tau, `rows` (probe
    rows averaged), first_step, last_step, and the mean of each of PROBE_STATS and RELATIVE_STATS
    (float64).
    Returns (table, dropped rows).
    """
    finite = pc.and_(pc.and_(pc.is_finite(rows["bias2"]), pc.is_finite(rows["variance"])), pc.is_finite(rows["mse"]))
    kept = rows if pc.all(finite).as_py() else rows.filter(finite)
    for stat in PROBE_STATS:
        if stat in kept.column_names and pa.types.is_floating(kept.schema.field(stat).type):
            column = kept[stat]
            ok = pc.is_finite(column)
            if not pc.all(ok).as_py():  # NaN is no null to Arrow: make it one, so that mean skips it
                kept = kept.set_column(kept.schema.get_field_index(stat), stat, pc.if_else(ok, column, pa.scalar(None, column.type)))
    kept = _with_relative_errors(kept)
    stats = [s for s in (*PROBE_STATS, *RELATIVE_STATS) if s in kept.column_names]
    grouped = kept.group_by(_PROBE_KEYS, use_threads=False).aggregate(
        [("step", "count"), ("step", "min"), ("step", "max"), *((s, "mean") for s in stats)]
    )
    names = {"step_count": "rows", "step_min": "first_step", "step_max": "last_step", **{f"{s}_mean": s for s in stats}}
    grouped = grouped.rename_columns([names.get(c, c) for c in grouped.column_names])
    order = pc.sort_indices(grouped, [("seed", "ascending"), ("tau", "ascending")])
    table = grouped.take(order).select([*_PROBE_KEYS, "rows", "first_step", "last_step", *stats])
    return table.set_column(4, "rows", table["rows"].cast(pa.int32())), rows.num_rows - kept.num_rows


_COMPACT = {"seed": pa.int32(), "step": pa.int32(), "estimator": pa.dictionary(pa.int8(), pa.string()), "source": pa.dictionary(pa.int8(), pa.string())}


def compact_probe_rows(table: pa.Table) -> pa.Table:
    """seed and step as int32, estimator and source with int8 codes: the record's types take a
    third more memory on the tradeoff grid's 29M rows, for nothing."""
    for name, kind in _COMPACT.items():
        index = table.schema.get_field_index(name)
        if index >= 0:
            table = table.set_column(index, name, table.column(index).cast(kind))
    return table


def read_trial(fs: pafs.FileSystem, files: TrialFiles, *, means: bool = True) -> TrialData:
    """Read one trial directory: small files, every evals file and (with `means`) its probe means."""
    bad: list[str] = []
    hosts = [h for h in (read_json(fs, path) for _, path in files.hosts) if isinstance(h, dict)]
    evals = [_with_list_probs(t) for t in _read_tables(fs, files.evals, bad)]
    data = TrialData(
        files, fs, read_json(fs, files.params), read_text(fs, files.error), read_json(fs, files.summary), hosts,
        pa.concat_tables(evals, promote_options="default") if evals else None, None, bad_files=bad,
    )
    if means and files.probes:
        rows = _read_tables(fs, files.probes, bad)
        if rows:
            table = pa.concat_tables(rows, promote_options="default")
            data.probe_means, data.dropped_rows = probe_means(table)
            data.probe_rows = table.num_rows
    return data


def read_probe_rows(fs: pafs.FileSystem, files: TrialFiles) -> pa.Table | None:
    """Every probe row of one trial (study.record's columns, seed and step as int32), step order."""
    tables = _read_tables(fs, files.probes, [])
    return compact_probe_rows(pa.concat_tables(tables, promote_options="default")) if tables else None
