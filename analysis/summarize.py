"""Reducers: pure functions from the tables of `analysis.load` to summary tables.

Every confidence interval is a percentile bootstrap over independent replicas (rliable's
practice: intervals over seeds, not bare means). A replica is one seed of one trial, the unit
`("trial_id", "seed")`: seeds of the same trial share a configuration but nothing random, and the
same seed number in two trials is two independent runs. Values of one replica (several steps in a
temperature bin, say) are averaged first, so every replica counts once.

The resampling uses one `numpy.random.Generator(seed)` per call and the same resample indices for
every group of the same size, so a group's interval does not change when other groups are added.
A group with one replica has a mean and no interval (NaN bounds): one seed says nothing about
spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ESTIMATOR_ORDER",
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
    "schedule_curves",
    "tau_bins",
    "tradeoff_table",
]

REPLICA = ("trial_id", "seed")  # the resampling unit
ESTIMATOR_ORDER = ("soft", "hard", "gumbel_rao", "reinforce", "exact")  # display order; others follow
_MAX_CELLS = 20_000_000  # floats resampled at once (160 MB); larger batches are chunked


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


def grouped_ci(
    df: pd.DataFrame,
    by: Sequence[str],
    value: str,
    *,
    unit: Sequence[str] = REPLICA,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean of `value` per group of `by`, with a bootstrap interval over replicas.

    Input: `df` with the columns `by`, `unit` (default trial_id, seed) and `value`.
    Steps: 1. average `value` within each replica of each group (finite values only);
    2. per group, the mean over replicas and its percentile interval (see `bootstrap_ci`).
    Output: the `by` columns, `value`, `<value>_lo`, `<value>_hi`, `n_seeds` (replicas with a finite
    value), sorted by `by`.
    """
    by = list(by)
    cols = [*by, value, f"{value}_lo", f"{value}_hi", "n_seeds"]
    if df.empty or value not in df:
        return pd.DataFrame(columns=cols)
    data = df[[*by, *unit, value]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce").astype(float)
    data = data[np.isfinite(data[value])]
    if data.empty:
        return pd.DataFrame(columns=cols)
    # 1. one value per replica and group
    per_unit = data.groupby([*by, *unit], sort=True, dropna=False, observed=True)[value].mean().reset_index()
    # 2. per group: mean and bootstrap interval; groups of equal size are resampled together
    groups = per_unit.groupby(by, sort=True, dropna=False, observed=True)[value] if by else [((), per_unit[value])]
    keys, arrays = [], []
    for key, series in groups:
        keys.append(key if isinstance(key, tuple) else (key,))
        arrays.append(series.to_numpy(dtype=float))
    out_mean = np.array([a.mean() for a in arrays])
    out_lo = np.full(len(arrays), np.nan)
    out_hi = np.full(len(arrays), np.nan)
    sizes = np.array([a.size for a in arrays])
    rng = np.random.default_rng(seed)
    for n in sorted(set(sizes.tolist())):
        if n < 2:
            continue
        members = np.flatnonzero(sizes == n)
        idx = rng.integers(0, n, size=(n_boot, n))  # [n_boot, n], shared by every group of size n
        matrix = np.stack([arrays[i] for i in members])  # [G, n]
        chunk = max(1, _MAX_CELLS // (n_boot * n))
        for start in range(0, len(members), chunk):
            boots = matrix[start : start + chunk][:, idx].mean(axis=-1)  # [g, n_boot]
            lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=1)
            out_lo[members[start : start + chunk]] = lo
            out_hi[members[start : start + chunk]] = hi
    out = pd.DataFrame(keys, columns=by) if by else pd.DataFrame(index=range(len(arrays)))
    out[value] = out_mean
    out[f"{value}_lo"] = out_lo
    out[f"{value}_hi"] = out_hi
    out["n_seeds"] = sizes
    return out[cols].reset_index(drop=True)


def estimator_rank(names: Sequence[str]) -> dict[str, int]:
    """Display rank of each estimator name: ESTIMATOR_ORDER first, then the others alphabetically."""
    known = [e for e in ESTIMATOR_ORDER if e in set(names)]
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


def tradeoff_table(
    probes: pd.DataFrame,
    *,
    source: str = "all",
    bins_per_decade: int = 4,
    stats: Sequence[str] = ("bias2", "variance", "mse"),
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """The bias-variance tradeoff: per estimator and temperature, mean statistics with intervals.

    Input: the `probes` table (columns trial_id, seed, estimator, source, tau, bias2, variance,
    mse, bias2_floor, n, cosine). `source`: "all", "current" or "ladder" probes. Temperatures are
    binned on a log scale (`tau_bins`).
    Output, one row per (estimator, temperature bin), estimators in ESTIMATOR_ORDER, tau rising:
    estimator, tau (bin representative), tau_lo / tau_hi (smallest and largest member),
    n_probes, n_seeds, then for each stat `<stat>`, `<stat>_lo`, `<stat>_hi`; bias2_floor (mean
    variance / N: what bias2 reads for an unbiased estimator), bias2_excess = bias2 - bias2_floor
    (the bias² left after removing the floor's expectation), cosine, n (estimates per probe), and
    pareto (on the (bias2, variance) Pareto front of the table).
    """
    base = ["estimator", "tau", "tau_lo", "tau_hi", "n_probes", "n_seeds"]
    stat_cols = [c for s in stats for c in (s, f"{s}_lo", f"{s}_hi")]
    cols = [*base, *stat_cols, "bias2_floor", "bias2_excess", "cosine", "n", "pareto"]
    data = probes if source == "all" else probes[probes["source"] == source]
    if source not in ("all", "current", "ladder"):
        raise ValueError(f"source must be 'all', 'current' or 'ladder', got {source=}")
    data = data[np.isfinite(pd.to_numeric(data["tau"], errors="coerce").astype(float))] if len(data) else data
    if data.empty:
        return pd.DataFrame(columns=cols)
    data = data.copy()
    data["tau_bin"], data["tau_rep"] = tau_bins(data["tau"], bins_per_decade)
    by = ["estimator", "tau_bin"]
    out = data.groupby(by, observed=True).agg(
        tau=("tau_rep", "first"),
        tau_lo=("tau", "min"),
        tau_hi=("tau", "max"),
        n_probes=("tau", "size"),
        bias2_floor=("bias2_floor", "mean"),
        cosine=("cosine", "mean"),
        n=("n", "mean"),
    )
    out = out.reset_index()
    seeds = None
    for stat in stats:
        ci = grouped_ci(data, by, stat, n_boot=n_boot, alpha=alpha, seed=seed)
        seeds = ci[[*by, "n_seeds"]] if seeds is None else seeds
        out = out.merge(ci.drop(columns="n_seeds"), on=by, how="left")
    out = out.merge(seeds, on=by, how="left")
    out["bias2_excess"] = out["bias2"] - out["bias2_floor"] if "bias2" in out else np.nan
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
    columns, category, learned, true, error = learned - true.
    """
    by = [c for c in by if c in evals]
    cols = ["trial_id", "seed", "step", *by, "category", "learned", "true", "error"]
    if evals.empty or "fit/probs" not in evals:
        return pd.DataFrame(columns=cols)
    if truth is None:
        from analysis.load import target_probs as truth
    data = evals[["trial_id", "seed", "step", *dict.fromkeys([*by, "target", "categories"]), "fit/probs"]].copy()
    data = data[data["fit/probs"].map(lambda p: isinstance(p, (list, tuple, np.ndarray)) and len(p) > 0)]
    if data.empty:
        return pd.DataFrame(columns=cols)
    data["category"] = data["fit/probs"].map(lambda p: list(range(len(p))))
    long = data.explode(["fit/probs", "category"], ignore_index=True).rename(columns={"fit/probs": "learned"})
    long["learned"] = long["learned"].astype(float)
    long["category"] = long["category"].astype(int)
    truths: dict[tuple, Sequence[float] | None] = {}
    for target, k in long[["target", "categories"]].drop_duplicates().itertuples(index=False):
        try:
            truths[(target, k)] = truth(target, k)
        except (ValueError, OSError):
            truths[(target, k)] = None

    def true_value(row: tuple) -> float:
        q = truths.get((row[0], row[1]))
        return float(q[row[2]]) if q is not None and row[2] < len(q) else math.nan

    long["true"] = [true_value(r) for r in long[["target", "categories", "category"]].itertuples(index=False)]
    long["error"] = long["learned"] - long["true"]
    return long[cols]


def schedule_curves(trials: pd.DataFrame, n_points: int = 200) -> pd.DataFrame:
    """tau against step for each distinct schedule of the trials, from `study.schedules`.

    Input: the `trials` table (schedule, tau0, anneal_rate, tau_min, anneal_interval, steps).
    Output: schedule, tau0, anneal_rate, tau_min, anneal_interval, step, tau: `n_points` steps
    from 0 to `steps` (every step for a stepwise schedule shorter than that, so its jumps show).
    Imports study.schedules (torch) on use; each distinct schedule is evaluated once.
    """
    keys = ["schedule", "tau0", "anneal_rate", "tau_min", "anneal_interval", "steps"]
    cols = [*keys[:-1], "step", "tau"]
    if trials.empty or not {"schedule", "tau0"} <= set(trials):
        return pd.DataFrame(columns=cols)
    from study.schedules import Schedule  # torch: only when curves are asked for

    present = [k for k in keys if k in trials]
    rows = []
    for values in trials[present].dropna().drop_duplicates().itertuples(index=False):
        cfg = dict(zip(present, values))
        steps = int(cfg.get("steps", 1000))
        kind = str(cfg["schedule"])
        if kind == "stepwise" and steps <= 4 * n_points:
            grid = np.arange(steps + 1)
        else:
            grid = np.unique(np.linspace(0, steps, n_points).round().astype(int))
        try:
            schedule = Schedule(kind, float(cfg["tau0"]), float(cfg.get("anneal_rate", 0.0)), float(cfg.get("tau_min", 0.1)), int(cfg.get("anneal_interval", 1)))
        except ValueError:
            continue
        for step in grid.tolist():
            rows.append({**{k: cfg.get(k) for k in cols[:-2]}, "step": step, "tau": schedule(step)})
    return pd.DataFrame(rows, columns=cols)


def failures(trials: pd.DataFrame, axes: Sequence[str] = ()) -> pd.DataFrame:
    """Trials that errored, never ran, or stopped early; one row each.

    Input: the `trials` table (trial_id, trial_dir, status, error, n_evals, last_step, steps,
    complete). Output: trial_id, trial_dir, status, problem ("error", "missing": no directory or
    no results, "incomplete": stopped before `steps`), error, n_evals, last_step, steps, and the
    `axes` columns (e.g. the grid axes), so a failure can be traced to its configuration.
    """
    axes = [a for a in axes if a in trials]
    cols = ["trial_id", "trial_dir", "status", "problem", "error", "n_evals", "last_step", "steps", *axes]
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
