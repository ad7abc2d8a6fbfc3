"""Reducers: pure functions from the tables of `analysis.load` to summary tables.

Every confidence interval is a percentile bootstrap over independent replicas (rliable's
practice: intervals over seeds, not bare means). A replica is one seed of one trial, the unit
`("trial_id", "seed")`: seeds of the same trial share a configuration but nothing random, and the
same seed number in two trials is two independent runs. Values of one replica (several steps in a
temperature bin, say) are averaged first, so every replica counts once.

The resample indices of a group depend only on its size and `seed` (a generator seeded with
(seed, size)), so a group's interval does not change when other groups are added. Every group of
one size is resampled at once, as a product of resample counts [n_boot, n] with the groups'
values [n, G]: the 43,008 replicas x 28 temperature groups of the tradeoff grid take seconds.
A group with one replica has a mean and no interval (NaN bounds): one seed says nothing about
spread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.record import RELATIVE_STATS
from study.vocab import ESTIMATOR_NAMES, ESTIMATORS_INFO, PROBE_STATS, schedule_tau

__all__ = [
    "COST_COLUMNS",
    "REPLICA",
    "best_configs",
    "estimator_rank",
    "bootstrap_ci",
    "failures",
    "final_fit_table",
    "grouped_ci",
    "learning_curves",
    "pareto_front",
    "pareto_mask",
    "probability_errors",
    "probe_costs",
    "probe_means",
    "schedule_curves",
    "tau_bins",
    "tradeoff_table",
    "winners_table",
    "with_cost",
]

REPLICA = ("trial_id", "seed")  # the resampling unit
_MAX_CELLS = 4_000_000  # resample counts or bootstrap means held at once (32 MB); larger ones are chunked


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: Callable[..., np.ndarray] = np.mean,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, lo, hi): `statistic` of the finite values and its percentile bootstrap interval.

    The interval holds the alpha/2 and 1 - alpha/2 quantiles of `statistic` over `n_boot`
    resamples (with replacement, the size of the data) drawn by `numpy.random.default_rng(seed)`.
    `statistic(array, axis=-1)` must reduce the last axis (np.mean, np.median). No finite values:
    all NaN; one value: (value, NaN, NaN).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha=}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot=}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    estimate = float(statistic(x, axis=-1))
    if x.size == 1:
        return (estimate, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # [n_boot, n]
    stats = statistic(x[idx], axis=-1)  # [n_boot]
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (estimate, float(lo), float(hi))


def _resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The [n_boot, n] matrix of resample counts / n for groups of size n, in blocks of rows.

    Row b counts how often each of the n replicas is drawn in resample b (n draws with
    replacement) by numpy.random.default_rng((seed, n))."""
    block = max(1, _MAX_CELLS // n)
    rng = np.random.default_rng((seed, n))
    for b0 in range(0, n_boot, block):
        nb = min(block, n_boot - b0)
        idx = rng.integers(0, n, size=(nb, n))  # [nb, n]
        counts = np.bincount((idx + (np.arange(nb) * n)[:, None]).ravel(), minlength=nb * n)
        yield counts.reshape(nb, n) / n


@functools.lru_cache(maxsize=1)
def _openblas() -> tuple[Callable, Callable] | None:
    """(get, set) of the thread count of the OpenBLAS numpy uses, where one is loaded (Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = [p for p in dict.fromkeys(line.split()[-1] for line in maps.splitlines() if "openblas" in line.rsplit("/", 1)[-1].lower())]
    for path in sorted(paths, key=lambda p: "numpy" not in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            get, put = getattr(lib, f"{prefix}_get_num_threads{suffix}", None), getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """OpenBLAS on one thread inside the block. Its threads spin while they wait, so on a machine
    whose cores other work keeps busy a 2-thread product of the bootstrap's size took 10x the CPU
    time (and 18x the wall time) of a 1-thread one; a no-op where no OpenBLAS is found."""
    blas = _openblas()
    if blas is None:
        yield
        return
    previous = blas[0]()
    blas[1](1)
    try:
        yield
    finally:
        blas[1](previous)


def _bootstrap_bounds(matrix: np.ndarray, n_boot: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds of the bootstrap mean of each row of `matrix` [G, n]."""
    g, n = matrix.shape
    lo, hi = np.empty(g), np.empty(g)
    step = max(1, _MAX_CELLS // n_boot)  # groups per block of bootstrap means
    with _one_blas_thread():
        for g0 in range(0, g, step):
            part = matrix[g0 : g0 + step]  # [g, n]
            boots = np.concatenate([part @ counts.T for counts in _resample_counts(n, n_boot, seed)], axis=1)  # [g, n_boot]
            lo[g0 : g0 + step], hi[g0 : g0 + step] = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=1)
    return lo, hi


def _replica_means(data: pd.DataFrame, keys: list[str], values: list[str], weight: str | None) -> pd.DataFrame:
    """One row per replica and group: the mean, or the `weight`-weighted mean, of its rows."""
    if weight is None:
        return data.groupby(keys, sort=True, dropna=False, observed=True)[values].mean().reset_index()
    w = pd.to_numeric(data[weight], errors="coerce").astype(float)
    parts = data[keys].assign(_w=w, **{f"_{v}": data[v] * w for v in values})
    sums = parts.groupby(keys, sort=True, dropna=False, observed=True)[["_w", *(f"_{v}" for v in values)]].sum()
    return pd.DataFrame({v: sums[f"_{v}"] / sums["_w"] for v in values}).reset_index()


def grouped_ci(
    df: pd.DataFrame,
    by: Sequence[str],
    value: str | Sequence[str],
    *,
    unit: Sequence[str] = REPLICA,
    weight: str | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean of `value` per group of `by`, with a bootstrap interval over replicas.

    Input: `df` with the columns `by`, `unit` (default trial_id, seed), `value` (one column, or
    several resampled together: a row counts only where all of them are finite) and, when given,
    `weight` (how many rows each row stands for: `rows` of a probe_means table).
    Steps: 1. average each value within each replica of each group (finite values only; weighted
    by `weight` when given); 2. per group, the mean over replicas and its percentile interval
    (see `bootstrap_ci`; groups of one size are resampled together, see the module docstring).
    Output: the `by` columns, then per value `<value>`, `<value>_lo`, `<value>_hi`, and `n_seeds`
    (replicas with a finite value), sorted by `by`.
    """
    by, values = list(by), [value] if isinstance(value, str) else list(value)
    cols = [*by, *(c for v in values for c in (v, f"{v}_lo", f"{v}_hi")), "n_seeds"]
    if df.empty or not set(values) <= set(df):
        return pd.DataFrame(columns=cols)
    data = df[list(dict.fromkeys([*by, *unit, *([weight] if weight else [])]))].assign(**{v: pd.to_numeric(df[v], errors="coerce").astype(float) for v in values})
    data = data[np.isfinite(data[values].to_numpy()).all(axis=1)]
    if data.empty:
        return pd.DataFrame(columns=cols)
    # 1. one row per replica and group
    per_unit = _replica_means(data, [*by, *unit], values, weight)
    # 2. groups as contiguous runs of replicas: sizes, means, bounds
    codes = per_unit.groupby(by, sort=True, dropna=False, observed=True).ngroup().to_numpy() if by else np.zeros(len(per_unit), dtype=int)
    order = np.argsort(codes, kind="stable")
    x = per_unit[values].to_numpy(dtype=float)[order]  # [replicas, V]
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes
    lo, hi = np.full((len(sizes), len(values)), np.nan), np.full((len(sizes), len(values)), np.nan)
    for n in np.unique(sizes[sizes >= 2]).tolist():
        members = np.flatnonzero(sizes == n)
        matrix = x[starts[members][:, None] + np.arange(n)].transpose(0, 2, 1).reshape(-1, n)  # [G * V, n]
        bounds = _bootstrap_bounds(matrix, n_boot, alpha, seed)
        lo[members], hi[members] = (b.reshape(len(members), len(values)) for b in bounds)
    out = per_unit.iloc[order[starts]][by].reset_index(drop=True) if by else pd.DataFrame(index=range(len(sizes)))
    means = np.add.reduceat(x, starts, axis=0) / sizes[:, None]
    for j, v in enumerate(values):
        out[v], out[f"{v}_lo"], out[f"{v}_hi"] = means[:, j], lo[:, j], hi[:, j]
    out["n_seeds"] = sizes
    return out[cols].reset_index(drop=True)


def estimator_rank(names: Sequence[str]) -> dict[str, int]:
    """Display rank of each estimator name: vocab.ESTIMATOR_NAMES' order, then the others alphabetically."""
    known = [e for e in ESTIMATOR_NAMES if e in set(names)]
    return {name: i for i, name in enumerate([*known, *sorted(set(map(str, names)) - set(known))])}


def _estimator_key(series: pd.Series) -> pd.Series:
    return series.map(estimator_rank(series.unique().tolist()))


def tau_bins(tau: pd.Series | np.ndarray, bins_per_decade: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(bin id, representative tau) per value: bins of equal width in log10(tau).

    Bin id = round(log10(tau) * bins_per_decade); a bin's representative is the geometric mean of
    the temperatures that fall in it, so exact ladder temperatures (0.5) stay close to themselves
    and the temperatures of an annealing schedule gather around their middle.
    """
    t = np.asarray(tau, dtype=float)
    ids = np.full(t.shape, np.nan)
    ok = np.isfinite(t) & (t > 0)
    ids[ok] = np.round(np.log10(t[ok]) * bins_per_decade)
    rep = np.full(t.shape, np.nan)
    frame = pd.DataFrame({"id": ids, "log": np.where(ok, np.log10(np.where(ok, t, 1.0)), np.nan)})
    centres = frame.groupby("id")["log"].mean()
    rep[ok] = 10 ** frame.loc[ok, "id"].map(centres).to_numpy()
    return ids, rep


def probe_means(probes: pd.DataFrame) -> pd.DataFrame:
    """The `probe_means` table of analysis.load from a `probes` table (every row of every step).

    One row per trial x seed x estimator x source x tau (and any other column that is not a
    statistic or the step, such as run and the config columns): rows, first_step, last_step, and
    the mean of each statistic. Rows whose bias2, variance or mse is not finite are left out; the
    other statistics average their finite values.
    """
    stats = [s for s in PROBE_STATS if s in probes]
    keys = [c for c in probes.columns if c not in stats and c != "step" and c not in RELATIVE_STATS]
    values = probes[stats].apply(pd.to_numeric, errors="coerce").astype(float)
    values = values.where(np.isfinite(values))
    if {"rel_rmse", "mse", "bias2", "variance"} <= set(values):  # as analysis.record.probe_means
        scale = values["rel_rmse"].pow(2) / values["mse"].where(values["mse"] > 0)
        values = values.assign(rel_bias2=values["bias2"] * scale, rel_variance=values["variance"] * scale)
        stats = [*stats, *RELATIVE_STATS]
    cols = [*keys, "rows", "first_step", "last_step", *stats]
    if probes.empty:
        return pd.DataFrame(columns=cols)
    keep = values[[s for s in ("bias2", "variance", "mse") if s in values]].notna().all(axis=1)
    data = pd.concat([probes.loc[keep, [*keys, "step"]], values[keep]], axis=1)
    grouped = data.groupby(keys, sort=False, dropna=False, observed=True)
    out = grouped[stats].mean()
    out.insert(0, "last_step", grouped["step"].max())
    out.insert(0, "first_step", grouped["step"].min())
    out.insert(0, "rows", grouped.size().astype("int32"))
    return out.reset_index()[cols]


def _weighted_means(data: pd.DataFrame, by: list[str], columns: list[str], weight: str) -> pd.DataFrame:
    """Per group: the `weight`-weighted mean of each column over its finite values."""
    w = data[weight].astype(float)
    parts = {}
    for col in columns:
        x = pd.to_numeric(data[col], errors="coerce").astype(float)
        ok = np.isfinite(x)
        parts[f"{col}_s"], parts[f"{col}_w"] = (x * w).where(ok, 0.0), w.where(ok, 0.0)
    sums = data[by].assign(**parts).groupby(by, observed=True, sort=True).sum()
    return pd.DataFrame({col: sums[f"{col}_s"] / sums[f"{col}_w"].replace(0.0, np.nan) for col in columns})


def tradeoff_table(
    probes: pd.DataFrame,
    *,
    source: str = "all",
    bins_per_decade: int = 4,
    stats: Sequence[str] = ("bias2", "variance", "mse", "mse_cost"),
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """The bias-variance tradeoff: per estimator and temperature, mean statistics with intervals.

    Input: a `probe_means` table (trial_id, seed, estimator, source, tau, rows and the statistics),
    or a `probes` table, which is reduced with `probe_means` first. `source`: "all", "current" or
    "ladder" probes. Temperatures are binned on a log scale (`tau_bins`); each replica's probes in
    a bin are averaged (weighted by `rows`: every probe row counts once) before the bootstrap.
    Output, one row per (estimator, temperature bin), estimators in vocab order, tau rising:
    estimator, tau (bin representative), tau_lo / tau_hi (smallest and largest member),
    n_probes (probe rows), n_seeds, cost (passes through f per sample, `with_cost`), then for each
    stat `<stat>`, `<stat>_lo`, `<stat>_hi` (mse_cost, the MSE at equal cost, is added with
    `with_cost` when asked for and missing; its interval is resampled on its own, so an estimator
    of unknown cost leaves the others' intervals alone); bias2_floor (mean variance / N: what bias2 reads for an unbiased estimator), bias2_excess =
    bias2 - bias2_floor (the bias² left after removing the floor's expectation), cosine, n
    (estimates per probe), and pareto (on the (bias2, variance) Pareto front of the table).
    """
    if source not in ("all", "current", "ladder"):
        raise ValueError(f"source must be 'all', 'current' or 'ladder', got {source=}")
    stats = list(stats)
    base = ["estimator", "tau", "tau_lo", "tau_hi", "n_probes", "n_seeds", "cost"]
    cols = [*base, *(c for s in stats for c in (s, f"{s}_lo", f"{s}_hi")), "bias2_floor", "bias2_excess", "cosine", "n", "pareto"]
    data = probes if probes.empty or "rows" in probes else probe_means(probes)
    data = with_cost(data) if "mse_cost" in stats and "mse_cost" not in data and len(data) else data
    data = data if source == "all" or data.empty else data[data["source"] == source]
    data = data[np.isfinite(pd.to_numeric(data["tau"], errors="coerce").astype(float))] if len(data) else data
    if data.empty:
        return pd.DataFrame(columns=cols)
    ids, rep = tau_bins(data["tau"], bins_per_decade)
    data = data.assign(estimator=data["estimator"].astype(str), tau_bin=ids, tau_rep=rep)
    by = ["estimator", "tau_bin"]
    grouped = data.groupby(by, observed=True, sort=True)
    out = pd.DataFrame({"tau": grouped["tau_rep"].first(), "tau_lo": grouped["tau"].min(), "tau_hi": grouped["tau"].max(), "n_probes": grouped["rows"].sum()})
    out = out.join(_weighted_means(data, by, [c for c in ("cost", "bias2_floor", "cosine", "n") if c in data], "rows")).reset_index()
    for group in ([s for s in stats if s != "mse_cost"], [s for s in stats if s == "mse_cost"]):  # NaN cost: only mse_cost drops
        ci = grouped_ci(data, by, group, weight="rows", n_boot=n_boot, alpha=alpha, seed=seed) if group else pd.DataFrame()
        if len(ci):
            out = out.merge(ci.drop(columns="n_seeds") if "n_seeds" in out else ci, on=by, how="left")
    out["bias2_excess"] = out["bias2"] - out["bias2_floor"] if {"bias2", "bias2_floor"} <= set(out) else np.nan
    out["pareto"] = pareto_mask(out["bias2"], out["variance"]) if {"bias2", "variance"} <= set(out) else False
    out = out.sort_values(["estimator", "tau"], key=lambda s: _estimator_key(s) if s.name == "estimator" else s)
    return out[[c for c in cols if c in out]].reset_index(drop=True)


def pareto_mask(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """True where the point (x, y) is not dominated when both are minimised.

    q dominates p when q <= p in both coordinates and q < p in one. Exact duplicates of a front
    point are on the front too; points with a NaN are never on it.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    mask = np.zeros(x.shape, dtype=bool)
    finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = finite[np.lexsort((y[finite], x[finite]))]  # by x, then y
    best_y = math.inf
    last = None  # (x, y) of the last point put on the front
    for i in order:
        if y[i] < best_y:
            mask[i] = True
            best_y = y[i]
            last = (x[i], y[i])
        elif last is not None and x[i] == last[0] and y[i] == last[1]:
            mask[i] = True
    return mask


def pareto_front(points: pd.DataFrame, x: str = "bias2", y: str = "variance") -> pd.DataFrame:
    """The rows of `points` on the Pareto front of (x, y), both minimised, sorted by x."""
    return points[pareto_mask(points[x], points[y])].sort_values([x, y]).reset_index(drop=True)


# ---------------------------------------------------------------------- cost and winners


def _cost_options() -> dict[str, dict[str, str]]:
    """estimator -> {option: trial config column} for the options its cost depends on
    (unordered_set's f evaluations are its option k, the trial field unordered_set_k)."""
    out: dict[str, dict[str, str]] = {}
    for info in ESTIMATORS_INFO.values():
        names = [v for v in (info.f_evals, info.backward_passes) if isinstance(v, str) and v != "K"]
        if names:
            out[info.name] = {v: f"{info.name}_{v}" for v in names}
    return out


_COST_OPTIONS = _cost_options()
COST_COLUMNS: tuple[str, ...] = tuple(c for options in _COST_OPTIONS.values() for c in options.values())  # carried onto probe rows


def _one_cost(cell: dict) -> float:
    """total_cost of one (estimator, categories, option columns) combination; NaN when unknown."""
    info = ESTIMATORS_INFO.get(str(cell["estimator"]))
    if info is None:
        return math.nan
    options = {opt: cell[col] for opt, col in _COST_OPTIONS.get(info.name, {}).items() if col in cell and pd.notna(cell[col])}
    k = cell.get("categories")
    try:
        return float(info.total_cost(options, None if k is None or pd.isna(k) else int(k)))
    except (TypeError, ValueError):  # K unknown for a cost that needs it, or an unreadable option
        return math.nan


def probe_costs(table: pd.DataFrame) -> np.ndarray:
    """Passes through f per sample of each row's estimate: vocab's `total_cost` of the row's
    estimator under the row's trial options (COST_COLUMNS; the defaults where a column is missing)
    and K (`categories`). NaN for an estimator vocab does not know or a cost it cannot resolve."""
    if table.empty or "estimator" not in table:
        return np.full(len(table), np.nan)
    keys = [c for c in ("estimator", "categories", *COST_COLUMNS) if c in table]
    codes = table.groupby(keys, observed=True, dropna=False, sort=False).ngroup().to_numpy()  # one cost per distinct cell
    firsts = np.unique(codes, return_index=True)[1]
    costs = np.array([_one_cost(dict(zip(keys, row))) for row in table[keys].iloc[firsts].itertuples(index=False)], dtype=float)
    return costs[codes]


def with_cost(table: pd.DataFrame) -> pd.DataFrame:
    """`table` (probes or probe_means) plus cost (`probe_costs`) and mse_cost = bias2 + variance x cost;
    with rel_bias2 / rel_variance (probe_means), rel_mse and rel_mse_cost, the same relative to the
    exact gradient's squared norm at each probe point.

    mse_cost is the MSE at equal cost: with a budget of C passes through f per sample, averaging
    C / cost independent estimates gives bias2 + variance x cost / C; mse_cost is that at C = 1
    (the normalisation is common to every estimator, so rankings hold at any budget)."""
    cost = probe_costs(table)
    out = table.assign(cost=cost)
    number = lambda col: pd.to_numeric(table[col], errors="coerce").astype(float)  # noqa: E731
    if {"bias2", "variance"} <= set(table):
        out["mse_cost"] = number("bias2") + number("variance") * cost
    if set(RELATIVE_STATS) <= set(table):  # the same, relative to the exact gradient's squared norm
        out["rel_mse"] = number("rel_bias2") + number("rel_variance")
        out["rel_mse_cost"] = number("rel_bias2") + number("rel_variance") * cost
    return out


def _winner_cells(data: pd.DataFrame, source: str, bins_per_decade: int) -> pd.DataFrame:
    """The probes of `source` with a `tau` per cell: a ladder tau as it is (the same for every
    trial), a current tau at its bin's representative (`tau_bins`); reference estimators out."""
    data = data[data["source"].astype(str) == source] if "source" in data else data
    data = data[np.isfinite(pd.to_numeric(data["tau"], errors="coerce").astype(float))]
    references = [name for name, info in ESTIMATORS_INFO.items() if not info.trains]  # exact: zero error by construction
    data = data[~data["estimator"].astype(str).isin(references)]
    tau = pd.to_numeric(data["tau"], errors="coerce").astype(float).to_numpy()
    tau = tau if source == "ladder" else tau_bins(tau, bins_per_decade)[1]
    return data.assign(estimator=data["estimator"].astype(str), tau=tau)


def _rank_cells(medians: pd.DataFrame, cell: list[str], stat: str) -> pd.DataFrame:
    """Per cell, the estimator with the least median `stat` and the runner-up (ties: vocab order)."""
    part = medians[[*cell, "estimator", stat, "cost", "rows"]].dropna(subset=[stat])
    if part.empty:
        return pd.DataFrame()
    part = part.assign(_rank=_estimator_key(part["estimator"])).sort_values([*cell, stat, "_rank"])
    grouped = part.groupby(cell, sort=True, observed=True, dropna=False)
    first, second = grouped.nth(0).set_index(cell), grouped.nth(1).set_index(cell)
    out = pd.DataFrame({"winner": first["estimator"], "value": first[stat], "cost": first["cost"], "n_rows": first["rows"]})
    out["runner_up"], out["runner_up_value"] = second["estimator"].reindex(out.index), second[stat].reindex(out.index)
    out["margin"] = out["runner_up_value"] / out["value"].where(out["value"] > 0)
    out["n_estimators"] = grouped.size()
    return out.reset_index().assign(stat=stat)


def winners_table(
    probes: pd.DataFrame,
    *,
    stats: Sequence[str] | None = None,
    by: Sequence[str] = ("categories", "target"),
    source: str | None = None,
    bins_per_decade: int = 4,
) -> pd.DataFrame:
    """Which estimator wins where: per statistic and cell (the `by` columns x tau), the estimator
    with the least median of that statistic. By default rel_mse and rel_mse_cost (MSE and MSE at
    equal cost divided by ||exact gradient||^2 at each probe point, then averaged), else mse and
    mse_cost: the absolute MSE's median would rank by whichever trials have large gradients.

    Input: a `probe_means` (or `probes`) table: estimator, source, tau, bias2, variance, mse and
    the `by` columns (cost and mse_cost are added with `with_cost` when missing). `source`: the
    ladder probes (fixed temperatures, the same for every trial) when there are any, else the
    current-tau probes binned with `tau_bins` (None chooses so). The median is over the cell's
    rows: with probe_means, each replica's (trial x seed) mean over its evaluations at that tau;
    with probes, every evaluation. Reference estimators (exact) are left out.
    Output, one row per (stat, by..., tau), stats in the given order, by and tau rising: stat, the
    by columns, tau, source, winner, value (its median), cost (its mean cost), runner_up,
    runner_up_value, margin (runner_up_value / value: how clear the win is), n_estimators, n_rows
    (the winner's rows). A ladder tau is a float; the cells of other grid axes pool.
    """
    by = [c for c in by if c in probes]
    head = ["stat", *by, "tau", "source", "winner", "value", "cost", "runner_up", "runner_up_value", "margin", "n_estimators", "n_rows"]
    if probes.empty or not {"estimator", "tau"} <= set(probes):
        return pd.DataFrame(columns=head)
    data = probes if "mse_cost" in probes else with_cost(probes)
    if stats is None:  # relative errors when the table has them: every probe point weighs alike
        stats = ("rel_mse", "rel_mse_cost") if "rel_mse" in data and data["rel_mse"].notna().any() else ("mse", "mse_cost")
    if source is None:
        source = "ladder" if "source" in data and data["source"].astype(str).eq("ladder").any() else "current"
    data = _winner_cells(data, source, bins_per_decade)
    stats = [s for s in stats if s in data]
    if data.empty or not stats:
        return pd.DataFrame(columns=head)
    cell = [*by, "tau"]
    grouped = data.groupby([*cell, "estimator"], sort=True, observed=True, dropna=False)
    medians = grouped[stats].median().join(grouped["cost"].mean()).join(grouped.size().rename("rows")).reset_index()
    parts = [_rank_cells(medians, cell, stat) for stat in stats]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=head)
    out = pd.concat(parts, ignore_index=True).assign(source=source)
    out["_stat"] = out["stat"].map({s: i for i, s in enumerate(stats)})
    return out.sort_values(["_stat", *cell])[head].reset_index(drop=True)


def _final_rows(evals: pd.DataFrame, complete_only: bool) -> pd.DataFrame:
    last = evals.groupby("trial_id")["step"].transform("max")
    final = evals[evals["step"] == last]
    if complete_only and "steps" in final:
        final = final[final["step"] >= pd.to_numeric(final["steps"], errors="coerce")]
    return final


def final_fit_table(
    evals: pd.DataFrame,
    by: Sequence[str] = ("target", "relaxation", "tau0", "anneal_rate"),
    metrics: Sequence[str] = ("fit/tv", "fit/js", "fit/kl"),
    *,
    complete_only: bool = True,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Final fit per configuration, with intervals over seeds.

    Input: the `evals` table (trial_id, seed, step, steps, the `by` columns, the metrics,
    diverged). Each trial's final evaluation is its largest step; with `complete_only`, trials
    that stopped before `steps` (errored, still running) are left out, since an early fit is not
    comparable. Trials sharing the `by` values are pooled (pass every grid axis to keep them apart).
    Output, one row per `by` group: the `by` columns, n_trials, n_seeds, n_diverged, and for each
    metric `<m>`, `<m>_lo`, `<m>_hi` (a diverged seed's non-finite value drops out of its metric).
    """
    by = [c for c in by if c in evals]
    cols = [*by, "n_trials", "n_seeds", "n_diverged", *[c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")]]
    if evals.empty:
        return pd.DataFrame(columns=cols)
    final = _final_rows(evals, complete_only)
    if final.empty:
        return pd.DataFrame(columns=cols)
    if "diverged" not in final:
        final = final.assign(diverged=False)
    counts = final.groupby(by, observed=True, dropna=False).agg(
        n_trials=("trial_id", "nunique"),
        n_seeds=("seed", "size"),
        n_diverged=("diverged", lambda s: int(pd.Series(s).fillna(False).astype(bool).sum())),
    )
    out = counts.reset_index()
    for metric in metrics:
        if metric not in final:
            continue
        ci = grouped_ci(final, by, metric, n_boot=n_boot, alpha=alpha, seed=seed).drop(columns="n_seeds")
        out = out.merge(ci, on=by, how="left")
    return out[[c for c in cols if c in out]].sort_values(by).reset_index(drop=True)


def best_configs(final: pd.DataFrame, metric: str = "fit/tv", group: str = "target", mode: str = "min") -> pd.DataFrame:
    """The best row of `final` (a `final_fit_table`) per `group`: lowest (mode="min") mean metric.

    Output: the same columns as `final`, one row per group value, plus `rank_of` (how many
    configurations competed in that group).
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode=}")
    data = final[np.isfinite(pd.to_numeric(final[metric], errors="coerce").astype(float))] if len(final) else final
    if data.empty:
        return final.iloc[0:0].assign(rank_of=pd.Series(dtype=int))
    groups = data.groupby(group, observed=True) if group in data else [(None, data)]
    rows = []
    for _, part in groups:
        best = part[metric].idxmin() if mode == "min" else part[metric].idxmax()
        rows.append(data.loc[best].to_dict() | {"rank_of": len(part)})
    return pd.DataFrame(rows).reset_index(drop=True)


def learning_curves(
    evals: pd.DataFrame,
    metric: str = "fit/tv",
    by: Sequence[str] = ("target", "relaxation", "tau0", "anneal_rate"),
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """`metric` against step per configuration: mean over seeds with bootstrap intervals.

    Input: the `evals` table (trial_id, seed, step, the `by` columns, `metric`). Output: the `by`
    columns, step, `<metric>`, `<metric>_lo`, `<metric>_hi`, n_seeds.
    """
    by = [c for c in by if c in evals]
    return grouped_ci(evals, [*by, "step"], metric, n_boot=n_boot, alpha=alpha, seed=seed)


def _truth_matrix(pairs: pd.DataFrame, truth: Callable[[str, int], Sequence[float]]) -> np.ndarray:
    """[pairs, max K] true probabilities of each (target, categories) row of `pairs`, NaN-padded;
    a target whose truth cannot be built (a stream file missing here) is all NaN."""
    rows = []
    for target, k in pairs.itertuples(index=False):
        try:
            rows.append(np.asarray(truth(target, k), dtype=float))
        except (ValueError, OSError):
            rows.append(np.array([]))
    out = np.full((len(rows), max([len(r) for r in rows] + [1])), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def probability_errors(
    evals: pd.DataFrame,
    truth: Callable[[str, int], Sequence[float]] | None = None,
    by: Sequence[str] = ("target", "categories", "relaxation", "tau0", "anneal_rate"),
) -> pd.DataFrame:
    """Learned minus true probability per category, per replica and step (long).

    Input: the `evals` table (trial_id, seed, step, target, categories, fit/probs and the `by`
    columns). `truth(target, categories) -> q [K]` gives the true probabilities; by default
    `analysis.load.target_probs` (study.targets, imported on first use). A target whose truth
    cannot be built (a stream file missing here) gets NaN. Output: trial_id, seed, step, the `by`
    columns, category, learned, true, error = learned - true: K rows per evals row (filter the
    evals first on a large study: the tradeoff grid would give 50M rows).
    """
    by = [c for c in dict.fromkeys(by) if c in evals and c not in ("trial_id", "seed", "step")]
    cols = ["trial_id", "seed", "step", *by, "category", "learned", "true", "error"]
    if evals.empty or "fit/probs" not in evals:
        return pd.DataFrame(columns=cols)
    if truth is None:
        from analysis.load import target_probs as truth
    probs = evals["fit/probs"]
    sizes = np.fromiter((len(p) if isinstance(p, (list, tuple, np.ndarray)) else 0 for p in probs), dtype=np.int64, count=len(probs))
    rows = np.flatnonzero(sizes > 0)
    if rows.size == 0:
        return pd.DataFrame(columns=cols)
    sizes = sizes[rows]
    data = evals.iloc[rows]
    rep = np.repeat(np.arange(len(data)), sizes)
    long = data[list(dict.fromkeys(["trial_id", "seed", "step", *by, "target", "categories"]))].iloc[rep].reset_index(drop=True)
    long["category"] = np.arange(len(rep)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    long["learned"] = np.concatenate([np.asarray(p, dtype=float) for p in data["fit/probs"]])
    pairs = long[["target", "categories"]].drop_duplicates().reset_index(drop=True)
    q = _truth_matrix(pairs, truth)
    pair = long[["target", "categories"]].merge(pairs.reset_index(), on=["target", "categories"], how="left")["index"].to_numpy()
    category = long["category"].to_numpy()
    long["true"] = np.where(category < q.shape[1], q[pair, np.minimum(category, q.shape[1] - 1)], np.nan)
    long["error"] = long["learned"] - long["true"]
    return long[cols]


def schedule_curves(trials: pd.DataFrame, n_points: int = 200) -> pd.DataFrame:
    """tau against step for each distinct schedule of the trials (vocab.schedule_tau's formulas).

    Input: the `trials` table (schedule, tau0, anneal_rate, tau_min, anneal_interval, steps).
    Output: schedule, tau0, anneal_rate, tau_min, anneal_interval, step, tau: `n_points` steps
    from 0 to `steps` (every step for a stepwise schedule shorter than that, so its jumps show).
    A schedule with an unknown kind or values out of range is left out.
    """
    keys = ["schedule", "tau0", "anneal_rate", "tau_min", "anneal_interval", "steps"]
    cols = [*keys[:-1], "step", "tau"]
    if trials.empty or not {"schedule", "tau0"} <= set(trials):
        return pd.DataFrame(columns=cols)
    present = [k for k in keys if k in trials]
    parts = []
    for values in trials[present].dropna().drop_duplicates().itertuples(index=False):
        cfg = dict(zip(present, values))
        steps, kind = int(cfg.get("steps", 1000)), str(cfg["schedule"])
        tau0, rate, tau_min, interval = float(cfg["tau0"]), float(cfg.get("anneal_rate", 0.0)), float(cfg.get("tau_min", 0.1)), int(cfg.get("anneal_interval", 1))
        if not (tau0 > 0 and tau_min > 0 and rate >= 0 and interval >= 1):
            continue
        grid = np.arange(steps + 1) if kind == "stepwise" and steps <= 4 * n_points else np.unique(np.linspace(0, steps, n_points).round().astype(int))
        try:
            tau = schedule_tau(kind, grid, tau0, rate, tau_min, interval, exp=np.exp, floor=np.maximum, log=np.log)
        except ValueError:
            continue
        part = pd.DataFrame({"step": grid, "tau": np.broadcast_to(tau, grid.shape).astype(float)})
        if not np.isfinite(part["tau"]).all():
            continue
        parts.append(part.assign(**{k: cfg.get(k) for k in cols[:-2]}))
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def failures(trials: pd.DataFrame, axes: Sequence[str] = ()) -> pd.DataFrame:
    """Trials that errored, never ran, or stopped early; one row each.

    Input: the `trials` table (trial_id, run, trial_dir, status, error, n_evals, last_step, steps,
    complete). Output: trial_id, run, trial_dir, status, problem ("error", "missing": no directory
    or no results, "incomplete": stopped before `steps`), error, n_evals, last_step, steps, and the
    `axes` columns (e.g. the grid axes), so a failure can be traced to its configuration.
    """
    axes = [a for a in axes if a in trials]
    cols = ["trial_id", *(["run"] if "run" in trials else []), "trial_dir", "status", "problem", "error", "n_evals", "last_step", "steps", *axes]
    if trials.empty:
        return pd.DataFrame(columns=cols)
    t = trials.copy()
    problem = np.where(
        t["status"].eq("ERROR"),
        "error",
        np.where(t["trial_dir"].isna() | t["n_evals"].fillna(0).eq(0), "missing", np.where(~t["complete"].astype(bool), "incomplete", "")),
    )
    t["problem"] = problem
    t = t[t["problem"] != ""]
    if "steps" not in t:
        t["steps"] = pd.NA
    return t[cols].reset_index(drop=True)
