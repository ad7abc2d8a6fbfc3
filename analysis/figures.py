"""Figures: pure functions from summary tables (`analysis.summarize`) to matplotlib Figures.

Each function takes computed estimates, draws with seaborn / matplotlib's object API onto a new
`matplotlib.figure.Figure` (no pyplot, so no global figure state and no window; saving uses the
Agg and PDF canvases) and returns it. Styles are applied with context managers, never globally.
Colours are colour-blind safe: seaborn's "colorblind" palette for categories (estimators,
probability categories) and cividis / viridis for ordered quantities (temperature, tau0).
Every function copes with one value per axis (the smoke study) and with larger grids; an empty
table gives a figure that says there is nothing to show.

    tradeoff_figure            a. bias² vs variance per estimator, coloured by temperature
    tau_sweep_figure           b. bias², variance, MSE against temperature, CI bands
    final_fit_heatmaps         c. final TV over tau0 x anneal_rate, per relaxation x target
    learning_curves_figure     d. TV against step per relaxation / tau0, CI bands
    probability_error_figure   e. learned minus true probability per category over training
    schedule_figure            f. the temperature schedules used
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.summarize import estimator_rank

__all__ = [
    "final_fit_heatmaps",
    "learning_curves_figure",
    "probability_error_figure",
    "schedule_figure",
    "tau_sweep_figure",
    "tradeoff_figure",
]

MARKERS = {"soft": "o", "hard": "s", "gumbel_rao": "D", "reinforce": "^", "exact": "*"}
_EXTRA_MARKERS = ("v", "P", "X", "h", "<", ">")
ESTIMATOR_LABELS = {
    "soft": "soft (Gumbel-softmax)",
    "hard": "hard (straight-through)",
    "gumbel_rao": "Gumbel-Rao",
    "reinforce": "REINFORCE",
    "exact": "exact",
}
AXIS_LABELS = {
    "tau0": "starting temperature τ₀",
    "anneal_rate": "annealing rate (per step)",
    "relaxation": "relaxation",
    "target": "target",
    "schedule": "schedule",
    "tau_min": "τ_min",
}
SHORT = {"tau0": "τ₀", "anneal_rate": "rate", "tau_min": "τ_min", "anneal_interval": "N"}
STEP_LABEL = "step (discriminator updates)"
TAU_LABEL = "temperature τ (log scale)"
_SEQ = "cividis"  # ordered quantities: colour-blind safe, monotone in lightness


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """seaborn's whitegrid look at talk-friendly sizes, for this figure only."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.95)}
    rc.update({"axes.titleweight": "bold", "axes.titlesize": 11, "legend.frameon": False, "savefig.dpi": 150})
    with mpl.rc_context(rc):
        yield


def _empty(message: str, title: str) -> Figure:
    with _style():
        fig = Figure(figsize=(6, 2.5), layout="constrained")
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="0.35", wrap=True)
        fig.suptitle(title)
    return fig


def _estimators(names: Sequence[str]) -> list[str]:
    rank = estimator_rank(list(names))
    return sorted(set(names), key=rank.get)


def _estimator_styles(names: Sequence[str]) -> dict[str, tuple[tuple, str]]:
    """estimator -> (colour, marker), stable for the canonical estimators."""
    palette = sns.color_palette("colorblind", 10)
    canonical = ["soft", "hard", "gumbel_rao", "reinforce", "exact"]
    out, extra = {}, 0
    for name in _estimators(names):
        if name in canonical:
            i = canonical.index(name)
            out[name] = (palette[i], MARKERS[name])
        else:
            out[name] = (palette[(len(canonical) + extra) % 10], _EXTRA_MARKERS[extra % len(_EXTRA_MARKERS)])
            extra += 1
    return out


def _label(name: str) -> str:
    return ESTIMATOR_LABELS.get(name, name)


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


# -------------------------------------------------------------------- a. headline tradeoff


def tradeoff_figure(table: pd.DataFrame, *, title: str | None = None, show_pareto: bool = True) -> Figure:
    """a. bias² against variance (log-log) for each estimator at each temperature.

    Input: a `summarize.tradeoff_table` (estimator, tau, bias2[_lo/_hi], variance[_lo/_hi],
    bias2_floor, n, pareto). Marker shape = estimator, colour = temperature (cividis, log scale);
    bars = bootstrap intervals over seeds; the grey band is the noise floor bias² <= variance / N,
    where an unbiased estimator's bias² reads (N estimates per probe); the dotted line joins the
    Pareto front (no other point has both lower bias² and lower variance).
    """
    title = title or "Bias-variance tradeoff of the gradient estimators"
    data = table.copy()
    if not data.empty:
        data["x"] = _positive(data["variance"])
        data["y"] = _positive(data["bias2"])
        data = data[np.isfinite(data["x"]) & np.isfinite(data["y"])]
    if data.empty:
        return _empty("no gradient probes to show", title)
    styles = _estimator_styles(data["estimator"].tolist())
    norm = _log_norm(data["tau"])
    cmap = mpl.colormaps[_SEQ]
    with _style():
        fig = Figure(figsize=(7.6, 6.2), layout="constrained")
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        xs = np.concatenate([data["x"], _positive(data.get("variance_lo", data["x"])), _positive(data.get("variance_hi", data["x"]))])
        ys = np.concatenate([data["y"], _positive(data.get("bias2_lo", data["y"])), _positive(data.get("bias2_hi", data["y"]))])
        xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
        x_lo, x_hi = xs.min() / 2.5, xs.max() * 2.5
        y_lo, y_hi = ys.min() / 2.5, ys.max() * 2.5
        # 1. the noise floor: bias2 = variance / N, one line per distinct N
        ns = sorted({int(round(n)) for n in pd.to_numeric(data.get("n", pd.Series(dtype=float)), errors="coerce").dropna() if n > 0})
        if ns:  # show the floor under the points, but not decades of empty space
            y_lo = min(y_lo, max(x_lo / ns[-1], ys.min() / 30))
        grid = np.geomspace(x_lo, x_hi, 50)
        for n in ns:
            ax.fill_between(grid, y_lo / 100, grid / n, color="0.9", zorder=0, lw=0)
            ax.plot(grid, grid / n, color="0.55", lw=1, ls="--", zorder=1)
        if ns:
            ax.text(0.97, 0.03, "below the noise floor:\nbias² not resolvable", transform=ax.transAxes, ha="right", va="bottom", fontsize=8.5, color="0.4")
        # 2. each estimator: a faint path through its temperatures, interval bars, coloured markers
        for est in _estimators(data["estimator"].tolist()):
            part = data[data["estimator"] == est].sort_values("tau")
            colour, marker = styles[est]
            if len(part) > 1:
                ax.plot(part["x"], part["y"], color=colour, lw=1.2, alpha=0.7, zorder=2)
            xerr = _errors(part["x"].to_numpy(), _positive(part.get("variance_lo", part["x"])), _positive(part.get("variance_hi", part["x"])))
            yerr = _errors(part["y"].to_numpy(), _positive(part.get("bias2_lo", part["y"])), _positive(part.get("bias2_hi", part["y"])))
            ax.errorbar(part["x"], part["y"], xerr=xerr, yerr=yerr, fmt="none", ecolor="0.45", elinewidth=0.8, capsize=0, zorder=3)
            ax.scatter(part["x"], part["y"], c=part["tau"], cmap=cmap, norm=norm, marker=marker, s=80, edgecolors=colour, linewidths=1.8, zorder=4)
        # 3. the Pareto front
        if show_pareto and "pareto" in data and data["pareto"].astype(bool).sum() > 1:
            front = data[data["pareto"].astype(bool)].sort_values("x")
            ax.plot(front["x"], front["y"], color="black", ls=":", lw=1.4, zorder=3.5)
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel("variance (trace of covariance, log scale)")
        ax.set_ylabel("bias² (‖mean estimate − exact gradient‖², log scale)")
        ax.set_title(title)
        handles = [
            Line2D([], [], marker=styles[e][1], color=styles[e][0], markerfacecolor="white", markeredgewidth=1.8, markersize=8, lw=1.2, label=_label(e))
            for e in _estimators(data["estimator"].tolist())
        ]
        if ns:
            floor = "N = " + ", ".join(str(n) for n in ns)
            handles.append(Line2D([], [], color="0.55", ls="--", label=f"noise floor bias² = variance / N ({floor})"))
        if show_pareto and "pareto" in data and data["pareto"].astype(bool).sum() > 1:
            handles.append(Line2D([], [], color="black", ls=":", label="Pareto front"))
        fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8.5)  # outside: never over a point
        mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = fig.colorbar(mappable, ax=ax, pad=0.02, shrink=0.9)
        bar.set_label(TAU_LABEL)
        _tau_ticks(bar.ax.yaxis, data["tau"].tolist())
    return fig


# -------------------------------------------------------------------- b. statistics vs tau


def tau_sweep_figure(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """b. bias², variance and MSE against temperature, one line per estimator, CI bands.

    Input: a `summarize.tradeoff_table`. All axes log scale; bands are bootstrap intervals over
    seeds; the dotted line in the bias² panel is each estimator's noise floor (variance / N).
    """
    title = title or "Gradient error against temperature"
    if table.empty or not {"bias2", "variance", "mse"} <= set(table):
        return _empty("no gradient probes to show", title)
    styles = _estimator_styles(table["estimator"].tolist())
    panels = [
        ("bias2", "bias² (log scale)", "bias²: systematic error"),
        ("variance", "variance (trace of covariance, log scale)", "variance: noise"),
        ("mse", "MSE = bias² + variance (log scale)", "MSE: total error"),
    ]
    with _style():
        fig = Figure(figsize=(13, 4.4), layout="constrained")
        axes = fig.subplots(1, 3, sharex=True)
        for ax, (stat, ylabel, panel_title) in zip(axes, panels):
            for est in _estimators(table["estimator"].tolist()):
                part = table[table["estimator"] == est].sort_values("tau")
                x = _positive(part["tau"])
                y = _positive(part[stat])
                colour, marker = styles[est]
                ax.plot(x, y, color=colour, marker=marker, ms=6, lw=1.8, label=_label(est))
                lo, hi = _positive(part.get(f"{stat}_lo", part[stat])), _positive(part.get(f"{stat}_hi", part[stat]))
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    if ok.sum() == 1 or len(part) == 1:
                        ax.errorbar(x[ok], y[ok], yerr=_errors(y[ok], lo[ok], hi[ok]), fmt="none", ecolor=colour, elinewidth=1.5, capsize=3)
                    else:
                        ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.2, lw=0)
                if stat == "bias2" and "bias2_floor" in part:
                    ax.plot(x, _positive(part["bias2_floor"]), color=colour, ls=":", lw=1.2)
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
        handles, labels = axes[0].get_legend_handles_labels()
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1.2))
        labels.append("noise floor of bias² (variance / N)")
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=9)
        fig.suptitle(title, fontweight="bold")
    return fig


# -------------------------------------------------------------------- c. final fit heatmaps


def final_fit_heatmaps(
    final: pd.DataFrame,
    metric: str = "fit/tv",
    *,
    x: str = "tau0",
    y: str = "anneal_rate",
    row: str = "target",
    col: str = "relaxation",
    title: str | None = None,
) -> Figure:
    """c. Final `metric` (mean over seeds, with its interval) over x (tau0) by y (anneal_rate).

    Input: a `summarize.final_fit_table` with columns x, y, row, col, `<metric>`, `<metric>_lo`,
    `<metric>_hi`. One heatmap per (row, col) facet on a shared colour scale (cividis; lower TV is
    better). Rows sharing a cell (other grid axes) are averaged.
    """
    name = {"fit/tv": "TV distance", "fit/js": "JS divergence", "fit/kl": "KL(target ‖ learned)"}.get(metric, metric)
    title = title or f"Final {name} to the target (mean over seeds, 95% CI)"
    needed = {x, y, metric}
    if final.empty or not needed <= set(final) or final[metric].notna().sum() == 0:
        return _empty("no completed trials with a final fit", title)
    data = final.copy()
    for c in (row, col):
        if c not in data:
            data[c] = ""
    rows = sorted(data[row].dropna().unique().tolist(), key=str)
    cols = sorted(data[col].dropna().unique().tolist(), key=lambda v: (estimator_rank(data[col].astype(str).unique().tolist()).get(str(v), 0), str(v)))
    xs = sorted(data[x].dropna().unique().tolist())
    ys = sorted(data[y].dropna().unique().tolist())
    vmin, vmax = float(np.nanmin(data[metric])), float(np.nanmax(data[metric]))
    if {f"{metric}_lo", f"{metric}_hi"} <= set(data):
        # Differences well inside the intervals should not look like strong contrasts: the colour
        # range spans at least the median interval width.
        width = float(np.nanmedian(data[f"{metric}_hi"] - data[f"{metric}_lo"])) if data[f"{metric}_hi"].notna().any() else 0.0
        if np.isfinite(width) and vmax - vmin < width:
            mid = 0.5 * (vmin + vmax)
            vmin, vmax = max(0.0, mid - width / 2), mid + width / 2
    if not vmax > vmin:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    cells = len(xs) * len(ys)
    show_ci = cells <= 30 and {f"{metric}_lo", f"{metric}_hi"} <= set(data)
    w = max(2.6, 0.95 * len(xs) + 1.3) * len(cols) + 1.2
    h = max(2.4, (0.8 if show_ci else 0.5) * len(ys) + 1.4) * len(rows) + 0.9
    with _style():
        fig = Figure(figsize=(min(w, 18), min(h, 22)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(rows), len(cols), squeeze=False, sharex=True, sharey=True))
        cmap = mpl.colormaps[_SEQ]
        for i, rv in enumerate(rows):
            for j, cv in enumerate(cols):
                ax = axes[i, j]
                part = data[(data[row] == rv) & (data[col] == cv)]
                grid = part.pivot_table(index=y, columns=x, values=metric, aggfunc="mean").reindex(index=ys[::-1], columns=xs)
                text = np.full(grid.shape, "", dtype=object)
                if not part.empty:
                    lo = part.pivot_table(index=y, columns=x, values=f"{metric}_lo", aggfunc="mean").reindex(index=ys[::-1], columns=xs) if show_ci else None
                    hi = part.pivot_table(index=y, columns=x, values=f"{metric}_hi", aggfunc="mean").reindex(index=ys[::-1], columns=xs) if show_ci else None
                    for a in range(grid.shape[0]):
                        for b in range(grid.shape[1]):
                            v = grid.iat[a, b]
                            if np.isfinite(v):
                                text[a, b] = f"{v:.3f}"
                                if show_ci and np.isfinite(lo.iat[a, b]) and np.isfinite(hi.iat[a, b]):
                                    text[a, b] += f"\n[{lo.iat[a, b]:.3f}, {hi.iat[a, b]:.3f}]"
                sns.heatmap(
                    grid,
                    ax=ax,
                    cmap=cmap,
                    vmin=vmin,
                    vmax=vmax,
                    annot=text,
                    fmt="",
                    annot_kws={"fontsize": 10 if cells <= 8 else 8.5 if cells <= 30 else 7.5},
                    cbar=False,
                    linewidths=1,
                    linecolor="white",
                    xticklabels=[_fmt(v) for v in xs],
                    yticklabels=[_fmt(v) for v in ys[::-1]],
                )
                if grid.isna().all().all():
                    ax.text(0.5, 0.5, "no completed trials", transform=ax.transAxes, ha="center", va="center", color="0.4")
                facet = " · ".join(s for s in (str(rv) if len(rows) > 1 or rv != "" else "", str(cv)) if s)
                ax.set_title(facet)
                ax.set_xlabel(AXIS_LABELS.get(x, x) if i == len(rows) - 1 else "")
                ax.set_ylabel(AXIS_LABELS.get(y, y) if j == 0 else "")
                ax.tick_params(axis="y", rotation=0)
        if len(rows) > 1:
            for i, rv in enumerate(rows):
                axes[i, -1].annotate(f"target {rv}", xy=(1.04, 0.5), xycoords="axes fraction", rotation=-90, va="center", ha="left", fontsize=9, color="0.3")
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap), ax=axes, shrink=0.85, pad=0.03 if len(rows) > 1 else 0.02)
        bar.set_label(f"final {name} (lower is better)")
        fig.suptitle(title, fontweight="bold")
    return fig


# -------------------------------------------------------------------- d. learning curves


def learning_curves_figure(
    curves: pd.DataFrame,
    metric: str = "fit/tv",
    *,
    hue: str = "tau0",
    style: str = "anneal_rate",
    col: str = "relaxation",
    row: str = "target",
    title: str | None = None,
) -> Figure:
    """d. `metric` against step with bootstrap CI bands: one panel per (row, col), colour = hue.

    Input: a `summarize.learning_curves` table (step, `<metric>`, `<metric>_lo`, `<metric>_hi` and
    the hue / style / row / col columns). Colour: cividis by `hue` (tau0), dark = small; line
    style: `style` (anneal rate) when it takes more than one value.
    """
    name = {"fit/tv": "total variation distance to target", "fit/js": "JS divergence to target", "fit/kl": "KL(target ‖ learned)"}.get(metric, metric)
    short = {"fit/tv": "TV distance to target", "fit/js": "JS divergence", "fit/kl": "KL(target ‖ learned)"}.get(metric, metric)
    title = title or f"Learning curves: {name} (mean over seeds, 95% CI)"
    if curves.empty or metric not in curves:
        return _empty("no evaluations to show", title)
    data = curves.copy()
    for c in (hue, style, row, col):
        if c not in data:
            data[c] = ""
    rows = sorted(data[row].dropna().unique().tolist(), key=str)
    cols = sorted(data[col].dropna().unique().tolist(), key=lambda v: (estimator_rank(data[col].astype(str).unique().tolist()).get(str(v), 0), str(v)))
    hues = sorted(data[hue].dropna().unique().tolist())
    styles_v = sorted(data[style].dropna().unique().tolist())
    colours = _ordered_colours(hues)
    dashes = dict(zip(styles_v, ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))] * 4))
    with _style():
        fig = Figure(figsize=(min(4.6 * len(cols) + 2.6, 20), min(3.4 * len(rows) + 1.0, 24)), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(rows), len(cols), squeeze=False, sharex=True, sharey="row"))
        for i, rv in enumerate(rows):
            for j, cv in enumerate(cols):
                ax = axes[i, j]
                part = data[(data[row] == rv) & (data[col] == cv)]
                for (hv, sv), line in part.groupby([hue, style], sort=True):
                    line = line.sort_values("step")
                    ax.plot(line["step"], line[metric], color=colours[hv], ls=dashes[sv], lw=2, marker="o" if len(line) <= 12 else None, ms=3.5)
                    lo, hi = line.get(f"{metric}_lo"), line.get(f"{metric}_hi")
                    if lo is not None and hi is not None and lo.notna().any():
                        ax.fill_between(line["step"], lo, hi, color=colours[hv], alpha=0.15, lw=0)
                ax.set_title(" · ".join(s for s in ((f"target {rv}" if len(rows) > 1 else ""), str(cv)) if s))
                ax.set_xlabel(STEP_LABEL if i == len(rows) - 1 else "")
                ax.set_ylabel(f"{short} (linear scale)" if j == 0 else "")
                ax.set_ylim(bottom=0)
        handles = [Line2D([], [], color=colours[h], lw=2.5, label=f"{SHORT.get(hue, hue)} = {_fmt(h)}") for h in hues]
        if len(styles_v) > 1:
            handles += [Line2D([], [], color="0.3", ls=dashes[s], lw=2, label=f"{SHORT.get(style, style)} = {_fmt(s)}") for s in styles_v]
        fig.legend(handles=handles, loc="outside right center", fontsize=9, title=AXIS_LABELS.get(hue, hue) if len(styles_v) <= 1 else None)
        fig.suptitle(title, fontweight="bold")
    return fig


# -------------------------------------------------------------------- e. learned - true probability


def probability_error_figure(
    curves: pd.DataFrame,
    *,
    panel: Sequence[str] = ("relaxation", "tau0", "anneal_rate", "target"),
    max_panels: int = 12,
    title: str | None = None,
) -> Figure:
    """e. The original post's figure: learned minus true probability per category over training.

    Input: `grouped_ci` of `summarize.probability_errors` by (panel columns, step, category):
    columns step, category, error, error_lo, error_hi and the `panel` columns. One panel per
    configuration (at most `max_panels`, in table order), one line per category with its CI band,
    and the zero line: where every line ends on it, the generator has learned the target.
    """
    title = title or "Learned minus true probability per category (mean over seeds, 95% CI)"
    if curves.empty or "error" not in curves or curves["error"].notna().sum() == 0:
        return _empty("no learned probabilities with a known target to show", title)
    panel = [c for c in panel if c in curves]
    varying = [c for c in panel if curves[c].nunique() > 1]
    configs = curves[panel].drop_duplicates().head(max_panels) if panel else pd.DataFrame(index=[0])
    n = len(configs)
    ncols = min(n, 4 if n > 6 else 3 if n > 4 else 2 if n > 1 else 1)
    nrows = math.ceil(n / ncols)
    categories = sorted(curves["category"].dropna().unique().astype(int).tolist())
    if len(categories) <= 10:
        palette = dict(zip(categories, sns.color_palette("colorblind", len(categories))))
    else:
        palette = dict(zip(categories, sns.color_palette("viridis", len(categories))))
    with _style():
        fig = Figure(figsize=(min(4.4 * ncols + 1.8, 20), min(3.1 * nrows + 1.0, 26)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)).ravel()
        for ax, (_, cfg) in zip(axes, configs.iterrows()):
            mask = np.ones(len(curves), dtype=bool)
            for c in panel:
                mask &= (curves[c] == cfg[c]).to_numpy()
            part = curves[mask]
            ax.axhline(0, color="black", lw=1, zorder=1)
            for k in categories:
                line = part[part["category"] == k].sort_values("step")
                if line.empty:
                    continue
                ax.plot(line["step"], line["error"], color=palette[k], lw=1.8, label=f"category {k}", zorder=2)
                if "error_lo" in line and line["error_lo"].notna().any():
                    ax.fill_between(line["step"], line["error_lo"], line["error_hi"], color=palette[k], alpha=0.15, lw=0)
            label = [f"{SHORT.get(c, c)}={_fmt(cfg[c])}" if c not in ("relaxation", "target") else str(cfg[c]) for c in (varying or panel[:2])]
            ax.set_title(" · ".join(label), fontsize=10)
        for ax in axes[n:]:
            ax.set_visible(False)
        for i, ax in enumerate(axes[:n]):
            if i % ncols == 0:
                ax.set_ylabel("learned − true probability")
            if i >= n - ncols:
                ax.set_xlabel(STEP_LABEL)
                ax.tick_params(labelbottom=True)
        handles = [Line2D([], [], color=palette[k], lw=2.5, label=f"category {k}") for k in categories]
        fig.legend(handles=handles, loc="outside right center", fontsize=9, title="category")
        suffix = ""
        fixed = [c for c in panel if c not in varying]
        if fixed:
            suffix = "\n" + ", ".join(f"{SHORT.get(c, c)} = {_fmt(curves[c].iloc[0])}" for c in fixed)
        fig.suptitle(title + suffix, fontweight="bold", fontsize=11)
    return fig


# -------------------------------------------------------------------- f. schedules


def schedule_figure(curves: pd.DataFrame, measured: pd.DataFrame | None = None, *, title: str | None = None) -> Figure:
    """f. The temperature schedules used: tau against step, one line per distinct schedule.

    Input: `summarize.schedule_curves` (schedule, tau0, anneal_rate, tau_min, step, tau) and,
    optionally, measured temperatures (the `evals` table: schedule, tau0, anneal_rate, step, tau),
    drawn as markers on their lines. One panel per schedule kind; colour = tau0 (cividis), line
    style = annealing rate; log temperature axis.
    """
    title = title or "Temperature schedules"
    source = curves if not curves.empty else (measured if measured is not None else pd.DataFrame())
    if source is None or source.empty or "tau" not in source:
        return _empty("no schedules to show", title)
    data = source.copy()
    for c in ("schedule", "tau0", "anneal_rate", "tau_min"):
        if c not in data:
            data[c] = np.nan if c != "schedule" else "?"
    kinds = sorted(data["schedule"].astype(str).unique())
    tau0s = sorted(data["tau0"].dropna().unique().tolist())
    rates = sorted(data["anneal_rate"].dropna().unique().tolist())
    colours = _ordered_colours(tau0s)
    dashes = dict(zip(rates, ["-", "--", ":", "-.", (0, (5, 1, 1, 1))] * 4))
    formulas = {
        "constant": "τ = τ₀",
        "exponential": "τ = max(τ_min, τ₀·exp(−rate·step))",
        "stepwise": "τ = max(τ_min, τ₀·exp(−rate·N·⌊step/N⌋))",
        "linear": "τ = max(τ_min, τ₀ − rate·step)",
    }
    with _style():
        fig = Figure(figsize=(min(5.2 * len(kinds) + 2.4, 20), 4.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(kinds), squeeze=False, sharey=True)).ravel()
        for ax, kind in zip(axes, kinds):
            part = data[data["schedule"].astype(str) == kind]
            for (t0, rate), line in part.groupby(["tau0", "anneal_rate"], sort=True, dropna=False):
                line = line.sort_values("step")
                ax.plot(line["step"], line["tau"], color=colours.get(t0, "0.3"), ls=dashes.get(rate, "-"), lw=2, drawstyle="steps-post" if kind == "stepwise" else "default")
            if measured is not None and not measured.empty and {"step", "tau", "tau0"} <= set(measured):
                pts = measured[measured.get("schedule", pd.Series(kind, index=measured.index)).astype(str) == kind]
                keys = [c for c in ("tau0", "anneal_rate") if c in pts]
                pts = pts.groupby([*keys, "step"], as_index=False)["tau"].mean()
                for values, group in pts.groupby(keys):
                    t0 = values[0] if isinstance(values, tuple) else values
                    ax.scatter(group["step"], group["tau"], color=colours.get(t0, "0.3"), edgecolors="white", s=36, zorder=3, linewidths=0.8)
            tmins = part["tau_min"].dropna().unique()
            if kind != "constant":
                for tm in tmins:
                    ax.axhline(tm, color="0.6", ls=":", lw=1)
            ax.set_yscale("log")
            ax.set_xlabel(STEP_LABEL)
            ax.set_title(f"{kind}: {formulas.get(kind, '')}", fontsize=10)
        axes[0].set_ylabel(TAU_LABEL)
        handles = [Line2D([], [], color=colours[t], lw=2.5, label=f"τ₀ = {_fmt(t)}") for t in tau0s]
        handles += [Line2D([], [], color="0.3", ls=dashes[r], lw=2, label=f"rate = {_fmt(r)}") for r in rates]
        if measured is not None and not measured.empty:
            handles.append(Line2D([], [], color="0.3", marker="o", lw=0, label="recorded τ at evaluations"))
        if any(k != "constant" for k in kinds):
            handles.append(Line2D([], [], color="0.6", ls=":", label="τ_min floor"))
        fig.legend(handles=handles, loc="outside right center", fontsize=9)
        fig.suptitle(title, fontweight="bold")
    return fig
