"""The report's interactive view: final fit over every axis, as parallel coordinates.

    parcoords_data(trials, grid) -> dict | None    the view's data: axes (scale, ticks), one row per trial
    parcoords_html(trials, grid) -> str            its HTML: caption, data, the drawing script

One polyline per trial with a finite final fit: the axes the run varies (`grid`: the grid and
search keys of `Experiment.meta["grid"]`, in the spec's order; `last_step` too when trials stopped
at different steps, e.g. under ASHA), then final fit/tv, fit/js, fit/kl (the trials table's
final/<key>: mean over seeds at the trial's last evaluation). Colour is final fit/tv (viridis).

Each axis maps values to positions in [0, 1] here, so the script only draws: text axes are evenly
spaced ticks, numeric ones are log scale when positive and over a decade, linear otherwise; a
numeric axis with few values, a 0 among them and positive values over a decade (anneal_rate =
0, 1e-5, 1e-4, 1e-3) is evenly spaced in numeric order, since neither scale shows it.

The drawing is analysis/parcoords.js (vanilla JS, one canvas for the lines, SVG for axes and
brushes), inlined with its data as JSON in <script type="application/json">, so the page stays one
offline file. Every string from a run directory reaches the page only inside that JSON, with <, >
and & escaped as \\u003c, \\u003e, \\u0026 (so "</script>" cannot end the block), and the script
writes it with textContent, never as HTML.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.summarize import estimator_rank

__all__ = ["FIT_KEYS", "axis_spec", "parcoords_data", "parcoords_html", "script_json"]

FIT_KEYS = ("fit/tv", "fit/js", "fit/kl")
COLOR_KEY = "fit/tv"
_FEW = 12  # a numeric axis with at most this many distinct values gets a tick at each
_JS = Path(__file__).with_name("parcoords.js")

CSS = """
.pc { position: relative; margin: 0.6em 0 0.4em; }
.pc-head { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 18px; font-size: 0.9em; }
.pc-head button { font: inherit; padding: 1px 10px; }
.pc-plot { position: relative; width: 100%; height: 440px; user-select: none; }
.pc-plot canvas, .pc-plot svg { position: absolute; left: 0; top: 0; }
.pc-plot text { font-size: 11px; fill: #222; paint-order: stroke; stroke: #fff; stroke-width: 3px; stroke-linejoin: round; }
.pc-plot text.pc-label { font-weight: 600; font-size: 12px; }
.pc-tip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.96); border: 1px solid #bbb; padding: 4px 8px; font-size: 0.8em; white-space: nowrap; box-shadow: 0 1px 4px rgba(0,0,0,0.15); }
.pc-tip td, .pc-tip th { border: 0; padding: 0 6px 0 0; }
"""


def script_json(obj: Any) -> str:
    """JSON for a <script type="application/json"> block: <, > and & as \\u escapes, so no value
    can close the block or open a comment; JSON.parse reads it back unchanged."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(v: float) -> float:
    return float(f"{v:.6g}")  # 6 digits: the tooltip shows 3; keeps 1,344 rows' JSON small


def _label(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v)


def _labels(values: list[Any]) -> list[str]:
    """3 significant digits, or up to 6 where 3 would print two distinct values alike."""
    for digits in range(3, 7):
        labels = [_label(v, digits) for v in values]
        if len(set(labels)) == len(set(values)):
            break
    return labels


def _numeric(values: pd.Series) -> np.ndarray | None:
    """The values as floats when every non-missing one is a number (booleans are not), else None."""
    present = values.dropna()
    if present.empty or any(isinstance(v, (bool, np.bool_, str)) for v in present):
        return None
    out = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return out if np.isfinite(out[values.notna().to_numpy()]).all() else None


def _scale(x: np.ndarray) -> str:
    """log, linear or ordinal (evenly spaced in numeric order) for the finite values x."""
    lo, hi = float(x.min()), float(x.max())
    if lo > 0 and hi / lo > 10:
        return "log"
    pos = x[x > 0]
    if lo >= 0 and pos.size and pos.max() / pos.min() > 10 and np.unique(x).size <= _FEW:
        return "ordinal"
    return "linear"


def _nice_ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Round values inside [lo, hi]: powers of ten (then 1-2-5) on a log axis, a 1-2-5 step else."""
    if log:
        exps = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for mults in ((1,), (1, 2, 5), (1, 2, 3, 5)):
            ticks = [m * 10.0**e for e in exps for m in mults if lo <= m * 10.0**e <= hi]
            if len(ticks) >= 2:
                return ticks[:: max(1, len(ticks) // 8)]
        return [lo, hi]
    raw = (hi - lo) / 5
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    return [k * step for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]


def axis_spec(key: str, values: pd.Series, label: str | None = None) -> tuple[dict[str, Any], list[float | None], list[Any]]:
    """(axis, positions in [0, 1] or None for missing, raw values for the tooltip) of one column.

    axis: key, label, scale (categorical, ordinal, log, linear), ticks [[position, text], ...],
    and for categorical / ordinal axes `categories` (the tooltip's values are their indices)."""
    axis: dict[str, Any] = {"key": key, "label": label or key}
    x = _numeric(values)
    missing = values.isna().to_numpy()
    if x is None or _scale(x[~missing]) == "ordinal":
        cats = sorted(values.dropna().unique().tolist(), key=lambda v: (float(v), "") if x is not None else (0, str(v)))
        if x is None:
            cats = list(dict.fromkeys(str(c) for c in cats))  # 1 and "1" are one category
            rank = estimator_rank(cats) if key == "relaxation" else {}
            cats = sorted(cats, key=lambda c: (rank.get(c, len(rank)), c))
        index = {c: i for i, c in enumerate(cats)}
        place = lambda i: (i + 0.5) / len(cats)  # noqa: E731  (half a gap at each end: room for the spread)
        axis |= {"scale": "categorical" if x is None else "ordinal", "categories": _labels(cats), "ticks": [[round(place(i), 4), t] for i, t in enumerate(_labels(cats))]}
        codes = [None if m else index[str(v) if x is None else v] for v, m in zip(values, missing)]
        return axis, [None if c is None else round(place(c), 4) for c in codes], codes
    finite = x[~missing]
    scale = _scale(finite)
    lo, hi = float(finite.min()), float(finite.max())
    f = np.log10 if scale == "log" else (lambda v: v)
    span = float(f(hi) - f(lo)) or 1.0
    where = lambda v: round(float((f(v) - f(lo)) / span) if hi > lo else 0.5, 4)  # noqa: E731
    distinct = np.unique(finite)
    ticks = distinct if distinct.size <= _FEW else (_nice_ticks(lo, hi, scale == "log") if hi > lo else [lo])
    tick_labels, ends = _labels([float(t) for t in ticks]), _labels([lo, hi])
    axis |= {"scale": scale, "domain": [_num(lo), _num(hi)], "ends": ends, "ticks": [[where(t), lab] for t, lab in zip(ticks, tick_labels)]}
    return axis, [None if m else where(v) for v, m in zip(x, missing)], [None if m else _num(v) for v, m in zip(x, missing)]


def _rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials drawn: a finite final fit/tv, worst first, so the best lines are drawn on top."""
    if f"final/{COLOR_KEY}" not in trials:
        return trials.iloc[0:0]
    tv = pd.to_numeric(trials[f"final/{COLOR_KEY}"], errors="coerce")
    kept = trials[np.isfinite(tv.to_numpy(dtype=float))]
    return kept.iloc[np.argsort(-pd.to_numeric(kept[f"final/{COLOR_KEY}"]).to_numpy(dtype=float), kind="stable")]


def _spread(codes: list[int | None], n_cats: int) -> list[float]:
    """Per row, an offset in positions that fans the trials of one category over 60% of its gap,
    lowest TV at the bottom (rows come worst first), so that a category's lines show their fits'
    spread instead of meeting in one point; brushes still select by category."""
    s = pd.Series([-1 if c is None else c for c in codes])
    rank, count = s.groupby(s).cumcount(ascending=False), s.map(s.value_counts())
    return [0.0 if c < 0 else round(((r + 0.5) / n - 0.5) * 0.6 / n_cats, 4) for c, r, n in zip(s, rank, count)]


def varying_axes(rows: pd.DataFrame, grid: dict[str, Any] | list[str]) -> list[str]:
    """The grid / search keys that take more than one value over `rows`, then last_step if it does."""
    keys = [k for k in [*grid, "last_step"] if k in rows and k not in FIT_KEYS]
    return [k for k in dict.fromkeys(keys) if rows[k].dropna().astype(str).nunique() > 1]


def parcoords_data(trials: pd.DataFrame, grid: dict[str, Any] | list[str]) -> dict[str, Any] | None:
    """The view's data, or None when there is nothing to compare (under 2 trials with a final fit,
    or no axis that varies). `trials`: analysis.load's trials table; `grid`: the axes' names."""
    rows = _rows(trials)
    axes_keys = varying_axes(rows, grid)
    if len(rows) < 2 or not axes_keys:
        return None
    labels = {"last_step": "final step", **{k: f"final {k}" for k in FIT_KEYS}}
    columns = [(k, rows[k]) for k in axes_keys] + [(k, rows[f"final/{k}"]) for k in FIT_KEYS if f"final/{k}" in rows and rows[f"final/{k}"].notna().any()]
    axes, pos, raw = [], [], []
    for key, values in columns:
        axis, p, r = axis_spec(key, values.reset_index(drop=True), labels.get(key))
        axes.append(axis)
        pos.append(p)
        raw.append(r)
    return {
        "axes": axes,
        "color": next(i for i, a in enumerate(axes) if a["key"] == COLOR_KEY),
        "n_fit_axes": len(columns) - len(axes_keys),
        "trials": rows["trial_id"].astype(str).tolist(),
        "status": rows["status"].astype(str).tolist() if "status" in rows else [],
        "pos": pos,  # [axis][row]: position on the axis, 0 = bottom
        "spread": [_spread(v, len(a["categories"])) if "categories" in a else None for a, v in zip(axes, raw)],
        "values": raw,  # [axis][row]: the number, or the index into axis["categories"]
    }


def _note(trials: pd.DataFrame, data: dict[str, Any] | None) -> str:
    n = len(_rows(trials))
    if data is None:
        why = f"{n} trial{'s' if n != 1 else ''} with a final fit" if n < 2 else "no axis that varies across the trials"
        return f'<p class="muted">No parallel-coordinates view: {why}.</p>'
    left = len(trials) - n
    return f" {left} trial{'s' if left != 1 else ''} without a finite final TV (not started, or every seed diverged) {'are' if left != 1 else 'is'} left out." if left else ""


def parcoords_html(trials: pd.DataFrame, grid: dict[str, Any] | list[str]) -> str:
    """The view with its caption, or a one-line note when there is nothing to compare."""
    data = parcoords_data(trials, grid)
    if data is None:
        return _note(trials, None)
    script = _JS.read_text(encoding="utf-8")
    assert "</script" not in script.lower(), "parcoords.js must not contain </script"
    caption = (
        f"<b>Final fit over every axis.</b> One line per trial ({len(data['trials'])} trials): the values of the axes the run varies, "
        "then its final fit (mean over seeds at its last evaluation) on the last axes; colour is the final TV (viridis, scale in the legend), "
        "and the best trials are drawn on top. Text axes are evenly spaced; numeric axes over a decade are on a log scale. "
        "<b>Drag</b> along an axis to keep the trials in a range (brushes on several axes combine), <b>click</b> an axis to clear its brush, "
        f"and <b>hover</b> a line to see its trial's values.{_note(trials, data)}"
    )
    return (
        f'<figure id="fig-parcoords"><style>{CSS}</style>'
        '<div id="parcoords" class="pc"><div class="pc-head"><span id="parcoords-count"></span>'
        '<button type="button" id="parcoords-clear">clear brushes</button><svg id="parcoords-legend" width="300" height="34"></svg></div>'
        '<div class="pc-plot" id="parcoords-plot"></div></div>'
        f"<figcaption>{caption}</figcaption></figure>"
        '<div id="parcoords-check" data-status="pending" hidden></div>'
        f'<script type="application/json" id="parcoords-data">{script_json(data)}</script>'
        f"<script>\n{script}</script>"
    )
