"""Figures: pure functions from summary tables (`analysis.summarize`) to matplotlib Figures.

Each function takes computed estimates and returns a `matplotlib.figure.Figure`, drawn with
seaborn / matplotlib's object API (no pyplot, so no global figure state and no window; saving uses
the Agg and PDF canvases). Styles are applied with context managers, never globally. Given `ax`,
a function draws onto that Axes (of your own figure) and returns its figure: a faceted figure then
draws the table it is given as one panel (filter the table to one facet first). Colours are
colour-blind safe: seaborn's "colorblind" palette for probability categories and cividis for
ordered quantities (temperature, tau0). Estimators (12 with exact) get a colour and a marker each,
both fixed by vocab order, so an estimator looks the same in every figure: the colours are
seaborn's "colorblind" ten (Okabe-Ito's hues) with its yellow moved last, then black and Paul
Tol's wine (#882255), yellow last because it is weak on white and exact, the reference, is the one
estimator the figures rarely draw. Ten colours cannot all stay apart under every colour-vision
deficiency, so the marker (vocab's, all distinct) carries the identity too, and legends with many
entries go outside the axes in columns. Estimator labels, markers and order come from
study.vocab. Every function copes with one value per axis (a single `train` run) and with large
grids; an empty table gives a figure that says there is nothing to show.

    tradeoff_figure            a. bias² vs variance per estimator, coloured by temperature
    tau_sweep_figure           b. bias², variance, MSE against temperature, CI bands
    final_fit_heatmaps         c. final TV over tau0 x anneal_rate, per relaxation x target
    learning_curves_figure     d. TV against step per relaxation / tau0, CI bands
    probability_error_figure   e. learned minus true probability per category over training
    schedule_figure            f. the temperature schedules used
    winners_figure             g. which estimator has the least MSE per tau x target, per estimate and at equal cost
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.summarize import estimator_rank
from study.vocab import ESTIMATOR_NAMES, ESTIMATORS_INFO, estimator_label

__all__ = [
    "final_fit_heatmaps",
    "learning_curves_figure",
    "probability_error_figure",
    "schedule_figure",
    "tau_sweep_figure",
    "tradeoff_figure",
    "winners_figure",
]

_EXTRA_MARKERS = ("v", "P", "X", "h", "<", ">")
AXIS_LABELS = {
    "tau0": "starting temperature τ₀",
    "anneal_rate": "annealing rate (per step)",
    "relaxation": "relaxation",
    "target": "target",
    "schedule": "schedule",
    "tau_min": "τ_min",
}
SHORT = {"tau0": "τ₀", "anneal_rate": "rate", "tau_min": "τ_min", "anneal_interval": "N"}
METRIC_NAMES = {"fit/tv": "TV distance", "fit/js": "JS divergence", "fit/kl": "KL(target ‖ learned)"}
STEP_LABEL = "step (discriminator updates)"
TAU_LABEL = "temperature τ (log scale)"
_SEQ = "cividis"  # ordered quantities: colour-blind safe, monotone in lightness
_FORMULAS = {
    "constant": "τ = τ₀",
    "exponential": "τ = max(τ_min, τ₀·exp(−rate·step))",
    "stepwise": "τ = max(τ_min, τ₀·exp(−rate·N·⌊step/N⌋))",
    "linear": "τ = max(τ_min, τ₀ − rate·step)",
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """seaborn's whitegrid look at talk-friendly sizes, for this figure only."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.95)}
    rc.update({"axes.titleweight": "bold", "axes.titlesize": 11, "legend.frameon": False, "savefig.dpi": 150})
    with mpl.rc_context(rc):
        yield


def _suptitle(fig: Figure, title: str, fontsize: float = 12) -> None:
    """A bold title over the figure, each line wrapped to the figure's width (never clipped)."""
    width = max(20, int(fig.get_figwidth() * 72 / (0.62 * fontsize)))  # characters that fit
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontweight="bold", fontsize=fontsize)


def _canvas(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """(figure, axes): the caller's, or a new constrained-layout figure with one Axes."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _empty(message: str, title: str, ax: Axes | None = None) -> Figure:
    """A figure (or the caller's Axes) that says why there is nothing to draw."""
    with _style():
        owned = ax is None
        fig, ax = _canvas(ax, (6.4, 2.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="0.35", wrap=True, transform=ax.transAxes)
        if owned:
            _suptitle(fig, title)
        else:
            ax.set_title(title)
    return fig


def _estimators(names: Sequence[str]) -> list[str]:
    rank = estimator_rank(list(names))
    return sorted(set(names), key=rank.get)


def _estimator_palette() -> list[tuple]:
    """12 colours in vocab order (see the module docstring): colorblind without its yellow, black,
    Tol's wine, then the yellow."""
    base = sns.color_palette("colorblind", 10)
    return [*base[:8], base[9], mpl.colors.to_rgb("#000000"), mpl.colors.to_rgb("#882255"), base[8]]


def _estimator_styles(names: Sequence[str]) -> dict[str, tuple[tuple, str]]:
    """estimator -> (colour, marker): vocab's marker and a colour fixed by vocab's order; names
    vocab does not know get seaborn's "dark" colours and spare markers."""
    palette, spare = _estimator_palette(), sns.color_palette("dark", 10)
    out, extra = {}, 0
    for name in _estimators(names):
        if name in ESTIMATORS_INFO:
            i = ESTIMATOR_NAMES.index(name)
            out[name] = (palette[i] if i < len(palette) else spare[i % 10], ESTIMATORS_INFO[name].marker)
        else:
            out[name] = (spare[extra % 10], _EXTRA_MARKERS[extra % len(_EXTRA_MARKERS)])
            extra += 1
    return out


def _short_label(name: str) -> str:
    """An estimator's label without its parenthesis: "soft (Gumbel-softmax)" -> "soft"."""
    return estimator_label(name).split(" (")[0]


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def _log_norm(values: pd.Series) -> LogNorm:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.1, 10.0)
    if hi / lo < 4:  # one or two temperatures: widen so the colours stay apart and readable
        mid = math.sqrt(lo * hi)
        lo, hi = min(lo, mid / 2), max(hi, mid * 2)
    return LogNorm(vmin=lo, vmax=hi)


def _ordered_colours(values: Sequence[float]) -> dict:
    """Distinct colours along cividis for an ordered set (dark = small), avoiding the pale end."""
    values = sorted(set(values))
    if len(values) == 1:
        return {values[0]: mpl.colormaps[_SEQ](0.15)}
    return {v: mpl.colormaps[_SEQ](0.05 + 0.8 * i / (len(values) - 1)) for i, v in enumerate(values)}


def _tau_ticks(axis, taus: Sequence[float]) -> None:
    """Plain-number ticks on a log temperature axis: at the temperatures themselves when few."""
    t = np.asarray([v for v in taus if np.isfinite(v) and v > 0], dtype=float)
    if t.size == 0:
        return
    values = np.unique(np.round(t, 6))
    if values.size <= 8:
        axis.set_major_locator(mpl.ticker.FixedLocator(values))
    axis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(mpl.ticker.NullFormatter())


def _positive(a: pd.Series | np.ndarray) -> np.ndarray:
    x = pd.to_numeric(pd.Series(a), errors="coerce").to_numpy(dtype=float)
    return np.where(x > 0, x, np.nan)


def _errors(center: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Asymmetric error bars [2, n]; missing bounds draw no bar."""
    low = np.where(np.isfinite(lo) & (lo > 0), center - lo, 0.0)
    high = np.where(np.isfinite(hi), hi - center, 0.0)
    return np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)])


def _legend(fig: Figure, ax: Axes, owned: bool, handles: list, **kwargs) -> None:
    """Outside the panels on a figure of our own (never over a point), inside the caller's Axes."""
    if owned:
        fig.legend(handles=handles, **kwargs)
    else:  # many entries: two columns, smaller, so that the legend covers less of the data
        ax.legend(handles=handles, fontsize=8 if len(handles) <= 6 else 6.5, loc="best", ncol=1 if len(handles) <= 6 else 2)


def _sorted_facets(data: pd.DataFrame, row: str, col: str) -> tuple[list, list]:
    rows = sorted(data[row].dropna().unique().tolist(), key=str)
    rank = estimator_rank(data[col].astype(str).unique().tolist())
    cols = sorted(data[col].dropna().unique().tolist(), key=lambda v: (rank.get(str(v), 0), str(v)))
    return rows, cols


MAX_FACET_COLUMNS = 4  # beyond this many facet columns (11 relaxations x 2 targets), facets wrap


def _facet_layout(rows: list, cols: list) -> tuple[list[tuple], int, int]:
    """The (row value, col value) facets in reading order, and the grid (nrows, ncols) they go in:
    rows x cols as they are when there are at most MAX_FACET_COLUMNS columns, else wrapped
    row-major into MAX_FACET_COLUMNS columns (titles then name both values)."""
    facets = [(rv, cv) for rv in rows for cv in cols]
    if len(cols) <= MAX_FACET_COLUMNS:
        return facets, len(rows), len(cols)
    return facets, math.ceil(len(facets) / MAX_FACET_COLUMNS), MAX_FACET_COLUMNS


def _facet_axes(fig: Figure, nrows: int, ncols: int, used: int, **kwargs) -> list[Axes]:
    """nrows x ncols subplots in reading order, the unused trailing ones removed."""
    axes = list(np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False, **kwargs)).ravel())
    for extra in axes[used:]:
        extra.remove()
    return axes[:used]


# -------------------------------------------------------------------- a. headline tradeoff


def _tradeoff_points(ax: Axes, data: pd.DataFrame, styles: dict, norm: LogNorm) -> None:
    """Each estimator: a faint path through its temperatures, interval bars, coloured markers."""
    for est in _estimators(data["estimator"].tolist()):
        part = data[data["estimator"] == est].sort_values("tau")
        colour, marker = styles[est]
        if len(part) > 1:
            ax.plot(part["x"], part["y"], color=colour, lw=1.2, alpha=0.7, zorder=2)
        xerr = _errors(part["x"].to_numpy(), _positive(part.get("variance_lo", part["x"])), _positive(part.get("variance_hi", part["x"])))
        yerr = _errors(part["y"].to_numpy(), _positive(part.get("bias2_lo", part["y"])), _positive(part.get("bias2_hi", part["y"])))
        ax.errorbar(part["x"], part["y"], xerr=xerr, yerr=yerr, fmt="none", ecolor="0.45", elinewidth=0.8, capsize=0, zorder=3)
        ax.scatter(part["x"], part["y"], c=part["tau"], cmap=_SEQ, norm=norm, marker=marker, s=80, edgecolors=colour, linewidths=1.8, zorder=4)


def _noise_floor(ax: Axes, data: pd.DataFrame, label_at: float = 0.03) -> list[int]:
    """Limits, and the grey region bias² <= variance / N under one dashed line per distinct N."""
    xs = np.concatenate([data["x"], _positive(data.get("variance_lo", data["x"])), _positive(data.get("variance_hi", data["x"]))])
    ys = np.concatenate([data["y"], _positive(data.get("bias2_lo", data["y"])), _positive(data.get("bias2_hi", data["y"]))])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    ys = ys if ys.size else xs / 100  # every bias² exactly 0: room for the zero line under the floor
    x_lo, x_hi, y_lo, y_hi = xs.min() / 2.5, xs.max() * 2.5, ys.min() / 2.5, ys.max() * 2.5
    ns = sorted({int(round(n)) for n in pd.to_numeric(data.get("n", pd.Series(dtype=float)), errors="coerce").dropna() if n > 0})
    if ns:  # show the floor under the points, but not decades of empty space
        y_lo = min(y_lo, max(x_lo / ns[-1], ys.min() / 30))
        ax.text(0.97, label_at, "below the noise floor:\nbias² not resolvable", transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5, color="0.4")
    grid = np.geomspace(x_lo, x_hi, 50)
    for n in ns:
        ax.fill_between(grid, y_lo / 100, grid / n, color="0.9", zorder=0, lw=0)
        ax.plot(grid, grid / n, color="0.55", lw=1, ls="--", zorder=1)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    return ns


def tradeoff_figure(table: pd.DataFrame, *, title: str | None = None, show_pareto: bool = True, ax: Axes | None = None) -> Figure:
    """a. bias² against variance (log-log) for each estimator at each temperature.

    Input: a `summarize.tradeoff_table` (estimator, tau, bias2[_lo/_hi], variance[_lo/_hi],
    bias2_floor, n, pareto). Marker shape = estimator, colour = temperature (cividis, log scale);
    bars = bootstrap intervals over seeds; the grey band is the noise floor bias² <= variance / N,
    where an unbiased estimator's bias² reads (N estimates per probe); the dotted line joins the
    Pareto front (no other point has both lower bias² and lower variance). A bias² of exactly 0
    (REINFORCE's, computed over the K categories rather than sampled) sits on a dash-dot line at
    the bottom, off the log scale.
    """
    title = title or "Bias-variance tradeoff of the gradient estimators"
    data = table.copy()
    if not data.empty:
        data["x"], data["y"] = _positive(data["variance"]), _positive(data["bias2"])
        data["zero"] = pd.to_numeric(data["bias2"], errors="coerce").eq(0.0).to_numpy()
        data = data[np.isfinite(data["x"]) & (np.isfinite(data["y"]) | data["zero"])]
    if data.empty:
        return _empty("no gradient probes to show", title, ax)
    styles, norm = _estimator_styles(data["estimator"].tolist()), _log_norm(data["tau"])
    with _style():
        owned = ax is None
        fig, ax = _canvas(ax, (7.6, 6.2))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ns = _noise_floor(ax, data, 0.08 if data["zero"].any() else 0.03)
        if data["zero"].any():  # bias² exactly 0 (computed, not sampled): a line at the bottom
            y_lo, y_hi = ax.get_ylim()
            zero_y = y_lo * (y_hi / y_lo) ** 0.04
            data.loc[data["zero"], "y"] = zero_y
            ax.axhline(zero_y, color="0.6", lw=0.8, ls="-.", zorder=1)
        _tradeoff_points(ax, data, styles, norm)
        front = data[data["pareto"].astype(bool)].sort_values(["x", "y"]) if show_pareto and "pareto" in data else data.iloc[0:0]
        if len(front) > 1:
            ax.plot(front["x"], front["y"], color="black", ls=":", lw=1.4, zorder=3.5)
        ax.set_xlabel("variance (trace of covariance, log scale)")
        ax.set_ylabel("bias² (‖mean estimate − exact gradient‖², log scale)")
        ax.set_title(title)
        handles = [
            Line2D([], [], marker=styles[e][1], color=styles[e][0], markerfacecolor="white", markeredgewidth=1.8, markersize=8, lw=1.2, label=estimator_label(e))
            for e in _estimators(data["estimator"].tolist())
        ]
        if ns:
            handles.append(Line2D([], [], color="0.55", ls="--", label=f"noise floor bias² = variance / N (N = {', '.join(map(str, ns))})"))
        if data["zero"].any():
            handles.append(Line2D([], [], color="0.6", ls="-.", lw=0.8, label="bias² = 0 (exact; off the log scale)"))
        if len(front) > 1:
            handles.append(Line2D([], [], color="black", ls=":", label="Pareto front"))
        _legend(fig, ax, owned, handles, loc="outside lower center", ncol=3, fontsize=8.5 if len(handles) <= 9 else 8)
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=_SEQ), ax=ax, pad=0.02, shrink=0.9)
        bar.set_label(TAU_LABEL)
        _tau_ticks(bar.ax.yaxis, data["tau"].tolist())
    return fig


# -------------------------------------------------------------------- b. statistics vs tau

_STAT_NAMES = {"bias2": "bias²", "mse": "MSE"}
_SWEEP_PANELS = {
    "bias2": ("bias² (log scale)", "bias²: systematic error"),
    "variance": ("variance (trace of covariance, log scale)", "variance: noise"),
    "mse": ("MSE = bias² + variance (log scale)", "MSE: total error"),
    "mse_cost": ("bias² + variance × cost (log scale)", "MSE at equal cost"),
}


def _tau_sweep_panel(ax: Axes, table: pd.DataFrame, stat: str, styles: dict) -> None:
    for est in _estimators(table["estimator"].tolist()):
        part = table[table["estimator"] == est].sort_values("tau")
        x, y = _positive(part["tau"]), _positive(part[stat])
        colour, marker = styles[est]
        ax.plot(x, y, color=colour, marker=marker, ms=6, lw=1.8, label=estimator_label(est))
        lo, hi = _positive(part.get(f"{stat}_lo", part[stat])), _positive(part.get(f"{stat}_hi", part[stat]))
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() == 1 or (ok.any() and len(part) == 1):
            ax.errorbar(x[ok], y[ok], yerr=_errors(y[ok], lo[ok], hi[ok]), fmt="none", ecolor=colour, elinewidth=1.5, capsize=3)
        elif ok.any():
            ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.2, lw=0)
        if stat == "bias2" and "bias2_floor" in part:
            ax.plot(x, _positive(part["bias2_floor"]), color=colour, ls=":", lw=1.2)
    zero = sorted(set(table.loc[pd.to_numeric(table[stat], errors="coerce").eq(0.0), "estimator"].astype(str)))
    if zero:  # nothing to draw on a log axis
        ax.text(0.02, 0.02, f"{_STAT_NAMES.get(stat, stat)} = 0 (exact): " + ", ".join(estimator_label(e) for e in _estimators(zero)), transform=ax.transAxes, fontsize=8, color="0.35")
    ylabel, panel_title = _SWEEP_PANELS.get(stat, (f"{stat} (log scale)", stat))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(TAU_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(panel_title)
    taus = _positive(table["tau"])
    taus = taus[np.isfinite(taus)]
    _tau_ticks(ax.xaxis, taus)
    if taus.size and taus.max() / taus.min() < 4:
        mid = math.sqrt(taus.min() * taus.max())
        ax.set_xlim(min(taus.min(), mid / 2) / 1.3, max(taus.max(), mid * 2) * 1.3)


def tau_sweep_figure(table: pd.DataFrame, *, stats: Sequence[str] = ("bias2", "variance", "mse", "mse_cost"), title: str | None = None, ax: Axes | None = None) -> Figure:
    """b. bias², variance, MSE and MSE at equal cost against temperature, one line per estimator.

    Input: a `summarize.tradeoff_table`. One panel per statistic of `stats` that the table has
    (with `ax`: the first one, on it); mse_cost = bias² + variance × cost (summarize.with_cost).
    All axes log scale; bands are bootstrap intervals over seeds; the dotted line in the bias²
    panel is each estimator's noise floor (variance / N).
    """
    title = title or "Gradient error against temperature"
    stats = [s for s in stats if s in table]
    stats = stats[:1] if ax is not None else stats
    if table.empty or not stats:
        return _empty("no gradient probes to show", title, ax)
    styles = _estimator_styles(table["estimator"].tolist())
    with _style():
        if ax is not None:
            _tau_sweep_panel(ax, table, stats[0], styles)
            _legend(ax.figure, ax, False, ax.get_legend_handles_labels()[0])
            return ax.figure
        fig = Figure(figsize=(min(4.4 * len(stats), 17.0), 4.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(stats), sharex=True))
        for panel, stat in zip(axes, stats):
            _tau_sweep_panel(panel, table, stat, styles)
        handles, labels = axes[0].get_legend_handles_labels()
        if "bias2" in stats:
            handles.append(Line2D([], [], color="0.3", ls=":", lw=1.2))
            labels.append("noise floor of bias² (variance / N)")
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=9)
        _suptitle(fig, title)
    return fig


# -------------------------------------------------------------------- c. final fit heatmaps


def _colour_range(data: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Shared colour range; at least the median interval width, so that differences well inside
    the intervals do not look like strong contrasts."""
    vmin, vmax = float(np.nanmin(data[metric])), float(np.nanmax(data[metric]))
    if {f"{metric}_lo", f"{metric}_hi"} <= set(data) and data[f"{metric}_hi"].notna().any():
        width = float(np.nanmedian(data[f"{metric}_hi"] - data[f"{metric}_lo"]))
        if np.isfinite(width) and vmax - vmin < width:
            mid = 0.5 * (vmin + vmax)
            vmin, vmax = max(0.0, mid - width / 2), mid + width / 2
    return (vmin - 0.01, vmax + 0.01) if not vmax > vmin else (vmin, vmax)


def _heatmap_panel(ax: Axes, part: pd.DataFrame, metric: str, x: str, y: str, xs: list, ys: list, limits: tuple[float, float], show_ci: bool, annotate: bool) -> None:
    """One heatmap: cells averaged over the rows they share, annotated with the mean (and with
    [lo, hi] when `show_ci`) when `annotate`."""
    pivot = lambda col: part.pivot_table(index=y, columns=x, values=col, aggfunc="mean").reindex(index=ys[::-1], columns=xs)  # noqa: E731
    grid = pivot(metric)
    text = np.where(np.isfinite(grid.to_numpy(dtype=float)), grid.map(lambda v: f"{v:.3f}").to_numpy(dtype=object), "")
    if show_ci and not part.empty:
        lo, hi = pivot(f"{metric}_lo").to_numpy(dtype=float), pivot(f"{metric}_hi").to_numpy(dtype=float)
        ci = np.vectorize(lambda a, b: f"\n[{a:.3f}, {b:.3f}]" if np.isfinite(a) and np.isfinite(b) else "", otypes=[object])(lo, hi)
        text = np.where(text != "", text + ci, "")
    cells = len(xs) * len(ys)
    sns.heatmap(
        grid, ax=ax, cmap=_SEQ, vmin=limits[0], vmax=limits[1], annot=text if annotate else False, fmt="", cbar=False, linewidths=1, linecolor="white",
        annot_kws={"fontsize": 10 if cells <= 8 else 8.5 if cells <= 30 else 7.5}, xticklabels=[_fmt(v) for v in xs], yticklabels=[_fmt(v) for v in ys[::-1]],
    )
    if grid.isna().all().all():
        ax.text(0.5, 0.5, "no completed trials", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.tick_params(axis="y", rotation=0)


def _single_cell(data: pd.DataFrame, metric: str, name: str, x: str, y: str) -> str | None:
    """The message for a table of one configuration: no grid to draw a heatmap of."""
    if len(data[[x, y]].drop_duplicates()) > 1 or len(data) > 1:
        return None
    row = data.iloc[0]
    ci = f" [{row[f'{metric}_lo']:.3f}, {row[f'{metric}_hi']:.3f}]" if np.isfinite(row.get(f"{metric}_lo", np.nan)) else ""
    return f"One configuration: final {name} {row[metric]:.3f}{ci}.\nA heatmap needs a grid of {AXIS_LABELS.get(x, x)} × {AXIS_LABELS.get(y, y)}."


def final_fit_heatmaps(
    final: pd.DataFrame,
    metric: str = "fit/tv",
    *,
    x: str = "tau0",
    y: str = "anneal_rate",
    row: str = "target",
    col: str = "relaxation",
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """c. Final `metric` (mean over seeds, with its interval) over x (tau0) by y (anneal_rate).

    Input: a `summarize.final_fit_table` with columns x, y, row, col, `<metric>`, `<metric>_lo`,
    `<metric>_hi`. One heatmap per (row, col) facet on a shared colour scale (cividis; lower TV is
    better); with `ax`, the whole table as one heatmap on it. Rows sharing a cell (other grid axes)
    are averaged. Cells show "mean [lo, hi]" up to 240 cells in all, the mean up to 800, colour
    alone beyond (the final_fit table has every number). A table of one configuration gets a note
    instead: a heatmap needs a grid.
    """
    name = METRIC_NAMES.get(metric, metric)
    title = title or f"Final {name} to the target (mean over seeds, 95% CI)"
    if final.empty or not {x, y, metric} <= set(final) or final[metric].notna().sum() == 0:
        return _empty("no completed trials with a final fit", title, ax)
    if (note := _single_cell(final, metric, name, x, y)) is not None:
        return _empty(note, title, ax)
    data = final.assign(**{c: "" for c in (row, col) if c not in final})
    rows, cols = _sorted_facets(data, row, col) if ax is None else ([None], [None])
    xs, ys = sorted(data[x].dropna().unique().tolist()), sorted(data[y].dropna().unique().tolist())
    limits = _colour_range(data, metric)
    cells = len(xs) * len(ys) * len(rows) * len(cols)  # annotations cost ~2 ms each to draw, per format
    show_ci = len(xs) * len(ys) <= 30 and cells <= 240 and {f"{metric}_lo", f"{metric}_hi"} <= set(data)
    annotate = cells <= 800
    facets, nrows, ncols = _facet_layout(rows, cols)
    wrapped = ncols != len(cols)
    w = max(2.6, 0.95 * len(xs) + 1.3) * ncols + 1.2
    h = max(2.4, (0.8 if show_ci else 0.5) * len(ys) + 1.4) * nrows + 0.9
    with _style():
        fig = ax.figure if ax is not None else Figure(figsize=(min(w, 18), min(h, 26)), layout="constrained")
        axes = [ax] if ax is not None else _facet_axes(fig, nrows, ncols, len(facets), sharex=True, sharey=True)
        for k, (rv, cv) in enumerate(facets):
            part = data if rv is None else data[(data[row] == rv) & (data[col] == cv)]
            _heatmap_panel(axes[k], part, metric, x, y, xs, ys, limits, show_ci, annotate)
            axes[k].set_title(" · ".join(s for s in (str(rv) if len(rows) > 1 else "", "" if cv is None else str(cv)) if s), fontsize=10)
            axes[k].set_xlabel(AXIS_LABELS.get(x, x) if k + ncols >= len(facets) else "")
            axes[k].xaxis.set_tick_params(labelbottom=k + ncols >= len(facets))  # above a removed slot too
            axes[k].set_ylabel(AXIS_LABELS.get(y, y) if k % ncols == 0 else "")
        if len(rows) > 1 and not wrapped:
            for i, rv in enumerate(rows):
                axes[i * ncols + ncols - 1].annotate(f"target {rv}", xy=(1.04, 0.5), xycoords="axes fraction", rotation=-90, va="center", ha="left", fontsize=9, color="0.3")
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=Normalize(*limits), cmap=_SEQ), ax=axes, shrink=0.85, pad=0.03 if len(rows) > 1 else 0.02)
        bar.set_label(f"final {name} (lower is better)")
        if ax is None:
            _suptitle(fig, title)
        elif not ax.get_title():
            ax.set_title(title)
    return fig


# -------------------------------------------------------------------- d. learning curves


def _curves_panel(ax: Axes, part: pd.DataFrame, metric: str, hue: str, style: str, colours: dict, dashes: dict, top: float) -> None:
    """One line per (hue, style) value with its band; rows sharing a step (pooled axes) averaged.
    Limits are set once (0 to `top`): autoscaling after every band of a large grid costs seconds."""
    cols = [c for c in (metric, f"{metric}_lo", f"{metric}_hi") if c in part]
    lines = part.groupby([hue, style, "step"], sort=True, observed=True)[cols].mean().reset_index()
    ax.set_autoscale_on(False)
    for (hv, sv), line in lines.groupby([hue, style], sort=True):
        ax.plot(line["step"], line[metric], color=colours[hv], ls=dashes[sv], lw=2, marker="o" if len(line) <= 12 else None, ms=3.5)
        if f"{metric}_lo" in line and line[f"{metric}_lo"].notna().any():
            ax.fill_between(line["step"], line[f"{metric}_lo"], line[f"{metric}_hi"], color=colours[hv], alpha=0.15, lw=0)
    if len(lines):
        lo, hi = float(lines["step"].min()), float(lines["step"].max())
        pad = 0.03 * (hi - lo) if hi > lo else 1.0
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(0, top)


def _top(data: pd.DataFrame, columns: Sequence[str]) -> float:
    """An upper y limit: 5% above the largest finite value of `columns` (1 when there is none)."""
    values = data[[c for c in columns if c in data]].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    return float(values.max()) * 1.05 if values.size and values.max() > 0 else 1.0


def learning_curves_figure(
    curves: pd.DataFrame,
    metric: str = "fit/tv",
    *,
    hue: str = "tau0",
    style: str = "anneal_rate",
    col: str = "relaxation",
    row: str = "target",
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """d. `metric` against step with bootstrap CI bands: one panel per (row, col), colour = hue.

    Input: a `summarize.learning_curves` table (step, `<metric>`, `<metric>_lo`, `<metric>_hi` and
    the hue / style / row / col columns). Colour: cividis by `hue` (tau0), dark = small; line
    style: `style` (anneal rate) when it takes more than one value. Curves sharing a (hue, style)
    value in a panel (other grid axes) are averaged. With `ax`, the whole table in one panel on it.
    """
    short = {"fit/tv": "TV distance to target"}.get(metric, METRIC_NAMES.get(metric, metric))
    title = title or f"Learning curves: {METRIC_NAMES.get(metric, metric)} to the target (mean over seeds, 95% CI)"
    if curves.empty or metric not in curves:
        return _empty("no evaluations to show", title, ax)
    data = curves.assign(**{c: "" for c in (hue, style, row, col) if c not in curves})
    rows, cols = _sorted_facets(data, row, col) if ax is None else ([None], [None])
    hues, styles_v = sorted(data[hue].dropna().unique().tolist()), sorted(data[style].dropna().unique().tolist())
    colours = _ordered_colours(hues)
    dashes = dict(zip(styles_v, ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))] * 4))
    facets, nrows, ncols = _facet_layout(rows, cols)
    with _style():
        fig = ax.figure if ax is not None else Figure(figsize=(min(4.6 * ncols + 2.6, 20), min(3.4 * nrows + 1.0, 26)), layout="constrained")
        axes = [ax] if ax is not None else _facet_axes(fig, nrows, ncols, len(facets), sharex=True, sharey=ncols == len(cols) and "row")
        for k, (rv, cv) in enumerate(facets):
            part = data if rv is None else data[(data[row] == rv) & (data[col] == cv)]
            _curves_panel(axes[k], part, metric, hue, style, colours, dashes, _top(data if rv is None else data[data[row] == rv], [metric, f"{metric}_hi"]))
            axes[k].set_title(" · ".join(s for s in ((f"target {rv}" if len(rows) > 1 else ""), "" if cv is None else str(cv)) if s), fontsize=10)
            axes[k].set_xlabel(STEP_LABEL if k + ncols >= len(facets) else "")
            axes[k].xaxis.set_tick_params(labelbottom=k + ncols >= len(facets))  # above a removed slot too
            axes[k].set_ylabel(f"{short} (linear scale)" if k % ncols == 0 else "")
        handles = [Line2D([], [], color=colours[h], lw=2.5, label=f"{SHORT.get(hue, hue)} = {_fmt(h)}") for h in hues]
        if len(styles_v) > 1:
            handles += [Line2D([], [], color="0.3", ls=dashes[s], lw=2, label=f"{SHORT.get(style, style)} = {_fmt(s)}") for s in styles_v]
        _legend(fig, axes[0], ax is None, handles, loc="outside right center", fontsize=9, title=AXIS_LABELS.get(hue, hue) if len(styles_v) <= 1 else None)
        if ax is None:
            _suptitle(fig, title)
    return fig


# -------------------------------------------------------------------- e. learned - true probability


def _category_palette(categories: list[int]) -> dict[int, tuple]:
    colours = sns.color_palette("colorblind" if len(categories) <= 10 else "viridis", len(categories))
    return dict(zip(categories, colours))


def _probability_panel(ax: Axes, part: pd.DataFrame, palette: dict, limits: tuple[float, float, float, float]) -> None:
    """One line per category with its band (configurations sharing the panel averaged); limits
    (x0, x1, y0, y1) set once, not after every band."""
    cols = [c for c in ("error", "error_lo", "error_hi") if c in part]
    lines = part.groupby(["category", "step"], sort=True)[cols].mean().reset_index()
    ax.set_autoscale_on(False)
    ax.axhline(0, color="black", lw=1, zorder=1)
    for k, line in lines.groupby("category", sort=True):
        ax.plot(line["step"], line["error"], color=palette[int(k)], lw=1.8, label=f"category {int(k)}", zorder=2)
        if "error_lo" in line and line["error_lo"].notna().any():
            ax.fill_between(line["step"], line["error_lo"], line["error_hi"], color=palette[int(k)], alpha=0.15, lw=0)
    ax.set_xlim(*limits[:2])
    ax.set_ylim(*limits[2:])


def _limits(curves: pd.DataFrame) -> tuple[float, float, float, float]:
    steps = curves["step"].to_numpy(dtype=float)
    y = curves[[c for c in ("error", "error_lo", "error_hi") if c in curves]].to_numpy(dtype=float)
    y = np.append(y[np.isfinite(y)], 0.0)
    x_pad = 0.03 * (steps.max() - steps.min()) or 1.0
    y_pad = 0.05 * (y.max() - y.min()) or 0.05
    return steps.min() - x_pad, steps.max() + x_pad, y.min() - y_pad, y.max() + y_pad


def probability_error_figure(
    curves: pd.DataFrame,
    *,
    panel: Sequence[str] = ("relaxation", "tau0", "anneal_rate", "target"),
    max_panels: int = 12,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """e. The original post's figure: learned minus true probability per category over training.

    Input: `grouped_ci` of `summarize.probability_errors` by (panel columns, step, category):
    columns step, category, error, error_lo, error_hi and the `panel` columns. One panel per
    configuration (at most `max_panels`, in table order; with `ax`, the table as one panel on it),
    one line per category with its CI band, and the zero line: where every line ends on it, the
    generator has learned the target.
    """
    title = title or "Learned minus true probability per category (mean over seeds, 95% CI)"
    if curves.empty or "error" not in curves or curves["error"].notna().sum() == 0:
        return _empty("no learned probabilities with a known target to show", title, ax)
    panel = [c for c in panel if c in curves]
    varying = [c for c in panel if curves[c].nunique() > 1]
    configs = curves[panel].drop_duplicates().head(max_panels) if panel and ax is None else pd.DataFrame(index=[0])
    n = len(configs)
    ncols = min(n, 4 if n > 6 else 3 if n > 4 else 2 if n > 1 else 1)
    nrows = math.ceil(n / ncols)
    palette = _category_palette(sorted(curves["category"].dropna().unique().astype(int).tolist()))
    limits = _limits(curves[curves["error"].notna()])
    with _style():
        fig = ax.figure if ax is not None else Figure(figsize=(min(4.4 * ncols + 1.8, 20), min(3.1 * nrows + 1.0, 26)), layout="constrained")
        axes = np.array([ax]) if ax is not None else np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)).ravel()
        for panel_ax, (_, cfg) in zip(axes, configs.iterrows()):
            mask = np.logical_and.reduce([(curves[c] == cfg[c]).to_numpy() for c in panel]) if panel and ax is None else np.ones(len(curves), dtype=bool)
            _probability_panel(panel_ax, curves[mask], palette, limits)
            if ax is None:
                label = [f"{SHORT.get(c, c)}={_fmt(cfg[c])}" if c not in ("relaxation", "target") else str(cfg[c]) for c in (varying or panel[:2])]
                panel_ax.set_title(" · ".join(label), fontsize=10)
        for i, panel_ax in enumerate(axes):
            panel_ax.set_visible(i < n)
            panel_ax.set_ylabel("learned − true probability" if i % ncols == 0 else "")
            if n - ncols <= i < n:
                panel_ax.set_xlabel(STEP_LABEL)
                panel_ax.tick_params(labelbottom=True)
        handles = [Line2D([], [], color=c, lw=2.5, label=f"category {k}") for k, c in palette.items()]
        _legend(fig, axes[0], ax is None, handles if len(handles) <= 20 else handles[:: math.ceil(len(handles) / 20)], loc="outside right center", fontsize=9, title="category")
        fixed = [c for c in panel if c not in varying]
        suffix = "\n" + ", ".join(f"{SHORT.get(c, c)} = {_fmt(curves[c].iloc[0])}" for c in fixed) if fixed else ""
        if ax is None:
            _suptitle(fig, title + suffix, fontsize=11)
        else:
            ax.set_title(title, fontsize=10)
    return fig


# -------------------------------------------------------------------- f. schedules


def _schedule_panel(ax: Axes, part: pd.DataFrame, points: pd.DataFrame | None, kind: str, colours: dict, dashes: dict) -> None:
    """The schedules of one kind: lines from the formula, recorded temperatures as dots."""
    for (t0, rate), line in part.groupby(["tau0", "anneal_rate"], sort=True, dropna=False):
        line = line.sort_values("step")
        ax.plot(line["step"], line["tau"], color=colours.get(t0, "0.3"), ls=dashes.get(rate, "-"), lw=2, drawstyle="steps-post" if kind == "stepwise" else "default")
    if points is not None and not points.empty:
        for t0, group in points.groupby("tau0"):
            ax.scatter(group["step"], group["tau"], color=colours.get(t0, "0.3"), edgecolors="white", s=36, zorder=3, linewidths=0.8)
    if kind != "constant":
        for tm in part["tau_min"].dropna().unique():
            ax.axhline(tm, color="0.6", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel(STEP_LABEL)
    ax.set_title(f"{kind}: {_FORMULAS[kind]}" if kind in _FORMULAS else kind, fontsize=10)


def _measured_points(measured: pd.DataFrame | None, kind: str | None) -> pd.DataFrame | None:
    """Mean recorded tau per (tau0, anneal_rate, step) of the evals of schedule `kind` (None: all)."""
    if measured is None or measured.empty or not {"step", "tau", "tau0"} <= set(measured):
        return None
    pts = measured[measured["schedule"].astype(str) == kind] if kind is not None and "schedule" in measured else measured
    keys = [c for c in ("tau0", "anneal_rate") if c in pts]
    return pts.groupby([*keys, "step"], as_index=False, observed=True)["tau"].mean()


def schedule_figure(curves: pd.DataFrame, measured: pd.DataFrame | None = None, *, title: str | None = None, ax: Axes | None = None) -> Figure:
    """f. The temperature schedules used: tau against step, one line per distinct schedule.

    Input: `summarize.schedule_curves` (schedule, tau0, anneal_rate, tau_min, step, tau) and,
    optionally, measured temperatures (the `evals` table: schedule, tau0, anneal_rate, step, tau),
    drawn as markers on their lines. One panel per schedule kind (with `ax`: every kind on it);
    colour = tau0 (cividis), line style = annealing rate; log temperature axis.
    """
    title = title or "Temperature schedules"
    source = curves if not curves.empty else (measured if measured is not None else pd.DataFrame())
    if source is None or source.empty or "tau" not in source:
        return _empty("no schedules to show", title, ax)
    data = source.assign(**{c: (np.nan if c != "schedule" else "?") for c in ("schedule", "tau0", "anneal_rate", "tau_min") if c not in source})
    kinds = sorted(data["schedule"].astype(str).unique()) if ax is None else [None]
    tau0s, rates = sorted(data["tau0"].dropna().unique().tolist()), sorted(data["anneal_rate"].dropna().unique().tolist())
    colours = _ordered_colours(tau0s)
    dashes = dict(zip(rates, ["-", "--", ":", "-.", (0, (5, 1, 1, 1))] * 4))
    with _style():
        fig = ax.figure if ax is not None else Figure(figsize=(min(5.2 * len(kinds) + 2.4, 20), 4.2), layout="constrained")
        axes = [ax] if ax is not None else np.atleast_1d(fig.subplots(1, len(kinds), squeeze=False, sharey=True)).ravel()
        for panel_ax, kind in zip(axes, kinds):
            part = data if kind is None else data[data["schedule"].astype(str) == kind]
            _schedule_panel(panel_ax, part, _measured_points(measured, kind), kind or "schedules", colours, dashes)
        axes[0].set_ylabel(TAU_LABEL)
        handles = [Line2D([], [], color=colours[t], lw=2.5, label=f"τ₀ = {_fmt(t)}") for t in tau0s]
        handles += [Line2D([], [], color="0.3", ls=dashes[r], lw=2, label=f"rate = {_fmt(r)}") for r in rates]
        if measured is not None and not measured.empty:
            handles.append(Line2D([], [], color="0.3", marker="o", lw=0, label="recorded τ at evaluations"))
        if data["schedule"].astype(str).ne("constant").any():
            handles.append(Line2D([], [], color="0.6", ls=":", label="τ_min floor"))
        _legend(fig, axes[0], ax is None, handles, loc="outside right center", fontsize=9)
        if ax is None:
            _suptitle(fig, title)
    return fig


# -------------------------------------------------------------------- g. which estimator wins where

_WIN_TITLES = {
    "mse": "per estimate: MSE", "mse_cost": "at equal cost: bias² + var × cost",
    "rel_mse": "per estimate: MSE / ‖exact‖²", "rel_mse_cost": "at equal cost: (bias² + var × cost) / ‖exact‖²",
}


def _ink(colour) -> str:
    """Black or white, whichever reads on `colour` (relative luminance)."""
    r, g, b = mpl.colors.to_rgb(colour)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _winner_text(row) -> str:
    margin = f"\n×{row.margin:.3g}" if np.isfinite(row.margin) else ""
    return _short_label(row.winner) + margin


def _winner_panel(ax: Axes, part: pd.DataFrame, targets: list, taus: list, styles: dict, annotate: bool) -> None:
    """One heatmap: cell (tau, target) coloured by its winner, with the winner's marker, label and
    margin over the runner-up; empty cells light grey. Small tau at the bottom."""
    order = list(styles)
    grid = np.full((len(taus), len(targets)), np.nan)
    row_of, col_of = {t: i for i, t in enumerate(taus)}, {t: j for j, t in enumerate(targets)}
    cmap = mpl.colors.ListedColormap([styles[e][0] for e in order]).with_extremes(bad="0.93")
    for row in part.itertuples(index=False):
        grid[row_of[row.tau], col_of[row.target]] = order.index(row.winner)
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, origin="lower", aspect="auto", interpolation="nearest")
    for row in part.itertuples(index=False):
        i, j, (colour, marker) = row_of[row.tau], col_of[row.target], styles[row.winner]
        ink = _ink(colour)
        ax.scatter([j], [i + (0.2 if annotate else 0.0)], marker=marker, s=48, color=ink, edgecolors=ink, zorder=3)
        if annotate:
            ax.text(j, i - 0.08, _winner_text(row), ha="center", va="top", fontsize=7, color=ink, linespacing=1.0, zorder=3)
    tilt = max(len(str(t)) for t in targets) > 8  # long target specs: tilted, anchored at their cell
    ax.set_xticks(range(len(targets)), [str(t) for t in targets], rotation=20 if tilt else 0, ha="right" if tilt else "center", rotation_mode="anchor")
    ax.set_yticks(range(len(taus)), [f"{t:.3g}" for t in taus])
    ax.set_xticks(np.arange(-0.5, len(targets)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(taus)), minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)


def _winner_facets(data: pd.DataFrame, stats: Sequence[str], ax: Axes | None) -> tuple[list, list]:
    """(K values, stats): one row of panels per K, one column per statistic; with `ax`, the first."""
    ks = sorted(data["categories"].dropna().unique().tolist()) or [None]
    stats = [s for s in stats if (data["stat"] == s).any()]
    return (ks[:1], stats[:1]) if ax is not None else (ks, stats)


def winners_figure(table: pd.DataFrame, *, stats: Sequence[str] = ("rel_mse", "rel_mse_cost", "mse", "mse_cost"), title: str | None = None, ax: Axes | None = None) -> Figure:
    """g. Which estimator wins where: per temperature (rows) x target (columns), the estimator with
    the least median MSE, per estimate (left) and at equal cost (right); one row of panels per K.
    The statistics drawn are those of `stats` the table has (relative to the exact gradient's
    squared norm when the winners table ranked by them).

    Input: a `summarize.winners_table` (stat, categories, target, tau, source, winner, margin).
    Cell colour and marker: the winner's (fixed per estimator, see the module docstring); the
    text names it and gives its margin, the runner-up's median over the winner's (×1.0x: a near
    tie). With `ax`: the first statistic at the first K, on it (filter the table first).
    """
    title = title or "Which estimator has the least MSE, per temperature and target"
    if table.empty or not {"stat", "tau", "winner"} <= set(table):
        return _empty("no gradient probes to rank", title, ax)
    data = table.assign(**{c: "" for c in ("target", "categories") if c not in table})
    data = data.assign(target=data["target"].astype(str), tau=data["tau"].astype(float), winner=data["winner"].astype(str))
    ks, stats = _winner_facets(data, stats, ax)
    if not stats:
        return _empty("no gradient probes to rank", title, ax)
    styles = _estimator_styles(data["winner"].tolist())
    targets, taus = sorted(data["target"].unique().tolist()), sorted(data["tau"].unique().tolist())
    annotate = len(targets) * len(taus) * len(ks) * len(stats) <= 400
    source = str(data["source"].iloc[0]) if "source" in data else "ladder"
    with _style():
        w, h = max(3.4, 1.25 * len(targets) + 1.3) * len(stats) + 2.2, max(2.6, 0.52 * len(taus) + 1.3) * len(ks) + 1.0
        fig = ax.figure if ax is not None else Figure(figsize=(min(w, 20), min(h, 24)), layout="constrained")
        axes = np.array([[ax]]) if ax is not None else np.atleast_2d(fig.subplots(len(ks), len(stats), squeeze=False, sharey=True))
        for i, k in enumerate(ks):
            for j, stat in enumerate(stats):
                part = data[(data["stat"] == stat) & ((data["categories"] == k) if k is not None else True)]
                _winner_panel(axes[i, j], part, targets, taus, styles, annotate)
                axes[i, j].set_title(_WIN_TITLES.get(stat, stat) + (f" · K = {_fmt(k)}" if len(ks) > 1 or ax is not None and k not in (None, "") else ""), fontsize=10)
                axes[i, j].set_ylabel(("τ (ladder)" if source == "ladder" else "τ (current, binned)") if j == 0 else "")
                axes[i, j].set_xlabel("target" if i == len(ks) - 1 else "")
        if ax is None:
            handles = [Line2D([], [], lw=0, marker=styles[e][1], markersize=9, markerfacecolor=styles[e][0], markeredgecolor="0.2", label=_short_label(e)) for e in styles]
            fig.legend(handles=handles, loc="outside right center", fontsize=9, title="winner", ncol=1 if len(handles) <= 12 else 2)
            _suptitle(fig, title)
    return fig
