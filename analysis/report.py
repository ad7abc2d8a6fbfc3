"""The report: an experiment directory -> figures (PNG + PDF), tables (CSV, parquet), index.html.

    write_report(run_dir, out=None) -> Path

`gumbel-study report RUN_DIR [--out DIR]` calls it. The report directory holds

    index.html                 one self-contained page: figures embedded (base64 PNG), tables,
                               run metadata, failures and a reading guide; no network, no
                               external CSS, JS or fonts, so it opens offline
    figures/<name>.png, .pdf   every figure (PDF for papers and slides)
    tables/<name>.csv          every summary table
    data/*.parquet, meta.json  the tidy tables of analysis.load, for your own analysis

It reads the experiment directory only (never trains) and prints one progress line per step.
"""

from __future__ import annotations

import base64
import html
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import figures as F
from analysis import summarize as S
from analysis.load import Experiment, load_experiment, save_parquet

__all__ = ["build_summaries", "write_report"]

_CORE_AXES = ("target", "relaxation", "tau0", "anneal_rate")
_MAX_HTML_ROWS = 60
_ALL_PANELS = 8  # probability-error figure: every configuration up to this many, else the best ones


def _say(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: None


def build_summaries(exp: Experiment, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every summary table of the report, from the loaded tables (see analysis.summarize).

    Final fits and learning curves are grouped by target, relaxation, tau0, anneal_rate and every
    other grid axis, so that no two grid points are pooled in the tables.
    """
    axes = list(exp.meta.get("grid", {}))
    extra = [a for a in axes if a not in _CORE_AXES and a in exp.evals]
    by = [c for c in (*_CORE_AXES, *extra) if c in exp.evals]
    # The ladder probes every trial at the same fixed temperatures, so each point compares estimators
    # at one tau with everything else held fixed; a trial's own tau confounds tau with training time.
    has_ladder = len(exp.probes) > 0 and bool((exp.probes["source"] == "ladder").any())
    tradeoff = S.tradeoff_table(exp.probes, source="ladder" if has_ladder else "current", n_boot=n_boot, alpha=alpha, seed=seed)
    final = S.final_fit_table(exp.evals, by=by, n_boot=n_boot, alpha=alpha, seed=seed)
    curves = S.learning_curves(exp.evals, "fit/tv", by=by, n_boot=min(n_boot, 1000), alpha=alpha, seed=seed)
    errors = S.probability_errors(exp.evals, by=[*by, "categories"])
    prob_curves = S.grouped_ci(errors, [*by, "step", "category"], "error", n_boot=min(n_boot, 1000), alpha=alpha, seed=seed) if len(errors) else pd.DataFrame()
    return {
        "tradeoff": tradeoff,
        "pareto_front": S.pareto_front(tradeoff) if len(tradeoff) else tradeoff,
        "final_fit": final,
        "best_configs": S.best_configs(final, "fit/tv", group="target") if len(final) else final,
        "learning_curves": curves,
        "probability_errors": prob_curves,
        "schedules": S.schedule_curves(exp.trials),
        "failures": S.failures(exp.trials, axes=axes),
    }


def _probability_selection(prob_curves: pd.DataFrame, final: pd.DataFrame, by: list[str]) -> tuple[pd.DataFrame, str]:
    """Every configuration when there are few, else the best (lowest final TV) per target x relaxation."""
    if prob_curves.empty or len(prob_curves[by].drop_duplicates()) <= _ALL_PANELS:
        return _order_configs(prob_curves, by), "every configuration"
    keep = _best_per_relaxation(final, by) if len(final) else final
    if keep.empty:
        return _order_configs(prob_curves, by), "the first 12 configurations"
    return _order_configs(prob_curves.merge(keep, on=by, how="inner"), by), "the configuration with the lowest final TV for each target and relaxation"


def _order_configs(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if "relaxation" not in frame:
        return frame.sort_values(by)
    rank = S.estimator_rank(frame["relaxation"].astype(str).unique().tolist())
    keyed = frame.assign(_rank=frame["relaxation"].astype(str).map(rank))
    rest = [c for c in by if c != "relaxation"]
    return keyed.sort_values(["_rank", *rest]).drop(columns="_rank")


def _best_per_relaxation(final: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    groups = [c for c in ("target", "relaxation") if c in final]
    data = final[np.isfinite(pd.to_numeric(final["fit/tv"], errors="coerce").astype(float))]
    if data.empty:
        return data
    idx = data.groupby(groups)["fit/tv"].idxmin() if groups else [data["fit/tv"].idxmin()]
    return data.loc[idx, by]


# ------------------------------------------------------------------ HTML pieces


def _fmt_num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3g}"
    return str(v)


def _ci_cell(m: Any, lo: Any, hi: Any) -> str:
    text = _fmt_num(m)
    if all(isinstance(x, (float, np.floating)) and np.isfinite(x) for x in (lo, hi)):
        text += f" [{_fmt_num(lo)}, {_fmt_num(hi)}]"
    return text


def _with_ci(frame: pd.DataFrame, stats: list[str]) -> pd.DataFrame:
    """Fold `<s>`, `<s>_lo`, `<s>_hi` into one text column "mean [lo, hi]" per statistic."""
    out = frame.copy()
    for s in stats:
        if {s, f"{s}_lo", f"{s}_hi"} <= set(out):
            out[s] = [_ci_cell(m, lo, hi) for m, lo, hi in zip(out[s], out[f"{s}_lo"], out[f"{s}_hi"])]
            out = out.drop(columns=[f"{s}_lo", f"{s}_hi"])
    return out


def _table(frame: pd.DataFrame, *, max_rows: int = _MAX_HTML_ROWS, note: str = "", csv: str | None = None) -> str:
    if frame is None or frame.empty:
        return '<p class="muted">none</p>'
    shown = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt_num(v))}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False))
    more = ""
    if len(frame) > max_rows:
        more = f'<p class="muted">{max_rows} of {len(frame)} rows shown{"; all in " + html.escape(csv) if csv else ""}.</p>'
    elif csv:
        more = f'<p class="muted">CSV: <a href="{html.escape(csv)}">{html.escape(csv)}</a></p>'
    return f'{f"<p>{note}</p>" if note else ""}<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}'


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; line-height: 1.5; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { margin-bottom: 0.3em; }
.muted { color: #666; font-size: 0.92em; }
figure { margin: 1.4em 0 2.2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.95em; color: #333; max-width: 980px; }
table { border-collapse: collapse; font-size: 0.86em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; } th { background: #f2f2f2; }
.scroll { overflow-x: auto; max-width: 100%; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
.guide { background: #f6f8fa; border-left: 4px solid #0072b2; padding: 8px 18px; }
.warn { background: #fff4e5; border-left: 4px solid #d55e00; padding: 6px 14px; }
nav a { margin-right: 14px; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
"""

# On load: count images that failed to decode; the count is a machine-readable marker
# (tests/test_report_browser.py reads it) and, when non-zero, a visible warning.
_IMG_CHECK = """
<div id="img-check" data-broken="pending" hidden></div>
<script>
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), broken = 0;
  for (var i = 0; i < imgs.length; i++) { if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken++; }
  var marker = document.getElementById("img-check");
  marker.setAttribute("data-broken", String(broken));
  marker.setAttribute("data-images", String(imgs.length));
  if (broken > 0) { marker.hidden = false; marker.className = "warn"; marker.textContent = broken + " figure(s) failed to load."; }
});
</script>
"""

_GUIDE = """
<div class="guide">
<p>Every evaluation probes each gradient estimator against the <b>exact</b> gradient of the
generator's loss (enumerated over the K categories) at the current parameters and
discriminator: N independent estimates g<sub>1..N</sub> of the true gradient g*.</p>
<ul>
<li><b>bias²</b> = ‖mean<sub>n</sub> g<sub>n</sub> − g*‖²: the systematic error, what averaging
more samples never removes.</li>
<li><b>variance</b> = trace of the covariance of one estimate: the noise, which averaging over a
batch of B samples divides by B.</li>
<li><b>MSE</b> = bias² + variance: the expected squared error of one estimate.</li>
<li><b>bias² floor</b> = variance / N: even an unbiased estimator reads this bias², because the mean of
N noisy estimates is itself noisy. A bias² near the floor means “no bias detectable”, not
“small bias”; <code>bias2_excess</code> = bias² − floor is the bias² left after removing it.</li>
</ul>
<p><b>soft</b> (Gumbel-softmax) differentiates a relaxed sample softmax((logits + G)/τ). At high τ
the samples are smooth and the gradient is calm but it is the gradient of a different, smoothed
objective: high bias, low variance. As τ falls the relaxation approaches the discrete sample, so
the bias falls, but the softmax becomes steep and its derivative (∝ 1/τ) spiky: the variance
rises. No temperature makes both small; that is the tradeoff figure a shows.</p>
<p><b>hard</b> (straight-through) sends the exact one-hot sample forward, so the loss it computes is
exact, yet its backward pass is the soft sample's: the gradient is still that of the relaxation
evaluated at a point it was not computed at, so it stays biased at every τ.
<b>Gumbel-Rao</b> (Paulus et al. 2021) averages the straight-through gradient over k Gumbel draws
conditioned on the same discrete sample: the same forward pass and the same mean, less
variance. <b>REINFORCE</b> (the score function) is unbiased (its bias² sits on the floor) but its
variance is typically orders of magnitude larger.</p>
<p>Intervals are 95% percentile-bootstrap intervals over independent replicas (one seed of one
trial); a configuration with a single seed has no interval.</p>
</div>
"""


def _meta_html(exp: Experiment, out: Path, seconds: float) -> str:
    m = exp.meta
    t = exp.trials
    fixed_keys = ["target", "categories", "generator", "discriminator", "schedule", "tau_min", "steps", "eval_every", "batch_size", "probe_estimates", "probe_taus", "probe_estimators"]
    fixed = []
    for k in fixed_keys:
        if k in t and k not in m.get("grid", {}) and t[k].notna().any():
            values = t[k].dropna().astype(str).unique().tolist()
            fixed.append(f"{k}={', '.join(values[:4])}")
    rows = [
        ("experiment", html.escape(m.get("path", ""))),
        ("trials", f"{m.get('n_trials', 0)} (" + ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(m.get("statuses", {}).items())) + ")"),
        ("seeds per trial", f"{m.get('seeds_per_trial', '?')} (seeds {html.escape(', '.join(map(str, m.get('seeds', [])[:20])))})"),
        ("grid", "<br>".join(f"<code>{html.escape(k)}</code>: {html.escape(', '.join(_fmt_num(v) for v in vals))}" for k, vals in m.get("grid", {}).items()) or "–"),
        ("fixed", html.escape("; ".join(fixed)) or "–"),
        ("estimators probed", html.escape(", ".join(m.get("estimators", [])) or "–")),
        ("ladder temperatures", html.escape(", ".join(_fmt_num(v) for v in m.get("ladder_taus", [])) or "–")),
        ("results written", html.escape(f"{m.get('first_result') or '?'} to {m.get('last_result') or '?'}")),
        ("tables", f"{m.get('n_evals', 0)} per-seed evaluations, {m.get('n_probes', 0)} probe rows (loaded in {m.get('load_seconds', 0):.2f} s)"),
        ("report", html.escape(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}, {seconds:.1f} s, {out}")),
    ]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="meta">{items}</dl>'


# ------------------------------------------------------------------ the report


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    progress: bool | Callable[[str], None] = True,
    n_boot: int = 2000,
    dpi: int = 150,
    pdf: bool = True,
) -> Path:
    """Write the report of the experiment at `run_dir` (path or cloud URI); return its directory.

    `out` defaults to RUN_DIR/report for a local experiment and ./report-<name> for a cloud URI
    (a report is files to open, so it is written locally). `progress`: print progress lines to
    stderr (True), stay quiet (False), or a callable that takes each line. `n_boot`: bootstrap
    resamples per interval; `dpi`: PNG resolution; `pdf`: also save every figure as PDF.
    """
    started = time.perf_counter()
    say = _say(progress)
    run_dir = str(run_dir)
    say(f"loading {run_dir} ...")
    exp = load_experiment(run_dir)
    m = exp.meta
    say(f"loaded {m['n_trials']} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(m["statuses"].items())) + f"), {m['n_evals']} evaluations, {m['n_probes']} probes in {m['load_seconds']:.2f} s")
    if out is None:
        out = Path(run_dir) / "report" if "://" not in run_dir else Path.cwd() / f"report-{m['name']}"
    out = Path(out)
    for sub in ("figures", "tables", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    save_parquet(exp, out / "data")
    say(f"data: {out / 'data'} (trials, evals, probes parquet; meta.json)")
    say("tables: bootstrap intervals over seeds ...")
    tables = build_summaries(exp, n_boot=n_boot)
    exp.trials.drop(columns=[c for c in ("date",) if c in exp.trials]).to_csv(out / "tables" / "trials.csv", index=False)
    for name, frame in tables.items():
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    say(f"tables: {len(tables) + 1} CSV files in {out / 'tables'}")

    # figures
    axes = list(m.get("grid", {}))
    extra = [a for a in axes if a not in _CORE_AXES and a in exp.evals]
    by = [c for c in (*_CORE_AXES, *extra) if c in exp.evals]
    pooled = f" Cells pool the other grid axes ({', '.join(extra)})." if extra else ""
    prob, prob_note = _probability_selection(tables["probability_errors"], tables["final_fit"], by)
    n_est = len(m.get("estimators", []))
    specs = [
        (
            "tradeoff",
            "headline tradeoff (bias² vs variance)",
            lambda: F.tradeoff_figure(tables["tradeoff"]),
            f"<b>The bias-variance tradeoff.</b> Each marker is one of the {n_est} probed gradient estimators (shape) at one temperature (colour, log scale), "
            "averaged over every probe at that temperature: the fixed ladder of temperatures when the study probed one (every trial, every evaluation, the same temperatures), "
            "else the trials' own temperatures, binned at four per decade; bars are 95% bootstrap intervals over seeds. "
            "The dashed line is the noise floor bias² = variance / N: below it bias is not resolvable with N estimates. "
            "The dotted line joins the Pareto front, the points no other point beats on both bias² and variance. Lower-left is better.",
        ),
        (
            "tau_sweep",
            "bias², variance and MSE against τ",
            lambda: F.tau_sweep_figure(tables["tradeoff"]),
            "<b>Where the error comes from, per temperature.</b> bias², variance and MSE of each estimator against the temperature, all on log axes, "
            "with 95% bootstrap bands over seeds; dotted lines in the bias² panel are each estimator's noise floor (variance / N).",
        ),
        (
            "final_fit_heatmaps",
            "final TV heatmaps",
            lambda: F.final_fit_heatmaps(tables["final_fit"]),
            "<b>How well each configuration learned the target.</b> Final total variation distance between the target and the learned distribution "
            "(0 = perfect, 1 = disjoint) over starting temperature × annealing rate, one panel per target and relaxation, mean over seeds with its 95% interval. "
            "The colour range spans at least the typical interval width, so differences inside the noise do not look like contrasts." + pooled,
        ),
        (
            "learning_curves",
            "learning curves of TV",
            lambda: F.learning_curves_figure(tables["learning_curves"]),
            "<b>Learning curves.</b> Total variation distance to the target against training step for each relaxation (panel) and starting temperature (colour; "
            "line style: annealing rate when it varies), mean over seeds with 95% bootstrap bands." + pooled,
        ),
        (
            "probability_errors",
            "learned − true probability per category",
            lambda: F.probability_error_figure(prob, panel=[*by], max_panels=12),
            "<b>The original post's figure.</b> Learned minus true probability of each category over training (mean over seeds, 95% bands), for "
            f"{prob_note}. Lines converging on zero mean the generator has learned the target; a category stuck below zero is under-sampled.",
        ),
        (
            "schedules",
            "temperature schedules",
            lambda: F.schedule_figure(tables["schedules"], exp.evals),
            "<b>The temperature schedules used.</b> τ against step for each distinct schedule (colour: starting temperature; line style: annealing rate), "
            "computed from the schedule formula; dots are the temperatures the trials recorded at their evaluations, and the dotted line is τ_min.",
        ),
    ]
    figure_html = []
    for i, (name, label, make, caption) in enumerate(specs, start=1):
        say(f"figure {i}/{len(specs)}: {label} -> figures/{name}.png{', .pdf' if pdf else ''}")
        fig = make()
        png = out / "figures" / f"{name}.png"
        fig.savefig(png, dpi=dpi, facecolor="white")
        if pdf:
            fig.set_layout_engine("none")  # keep the layout the PNG computed: the PDF does not redo it
            fig.savefig(out / "figures" / f"{name}.pdf", facecolor="white")
        alt = html.escape(f"Figure {i}: {label}")
        links = (f'<a href="figures/{name}.pdf">PDF</a>, ' if pdf else "") + f'<a href="figures/{name}.png">PNG</a>'
        width = round(fig.get_figwidth() * 96)  # CSS px at the figure's size: every figure at the same text size
        figure_html.append(
            f'<figure id="fig-{name}"><img src="{_png_data_uri(png)}" alt="{alt}" style="width: min(100%, {width}px)">'
            f'<figcaption><b>Figure {i}.</b> {caption} <span class="muted">({links})</span></figcaption></figure>'
        )

    # tables
    fail = tables["failures"]
    best = tables["best_configs"]
    final = tables["final_fit"]
    show_cols = lambda frame, extra_cols: [c for c in [*by, *extra_cols] if c in frame]  # noqa: E731
    metric_cols = ["n_seeds", "n_diverged", "fit/tv", "fit/tv_lo", "fit/tv_hi", "fit/js", "fit/js_lo", "fit/js_hi", "fit/kl", "fit/kl_lo", "fit/kl_hi"]
    best_view = _with_ci(best[show_cols(best, [*metric_cols, "rank_of"])], ["fit/tv", "fit/js", "fit/kl"]) if len(best) else best
    final_view = _with_ci(final.sort_values("fit/tv")[show_cols(final, metric_cols)], ["fit/tv", "fit/js", "fit/kl"]) if len(final) else final
    trade = tables["tradeoff"]
    trade_cols = ["estimator", "tau", "tau_lo", "tau_hi", "n_seeds", "bias2", "bias2_lo", "bias2_hi", "variance", "variance_lo", "variance_hi", "mse", "mse_lo", "mse_hi", "bias2_floor", "bias2_excess", "cosine", "pareto"]
    trade_view = _with_ci(trade[[c for c in trade_cols if c in trade]], ["bias2", "variance", "mse"]) if len(trade) else trade
    status_cols = [c for c in ["trial_id", "status", *axes, "n_evals", "last_step", "final/fit/tv", "error", "trial_dir"] if c in exp.trials]
    warnings = m.get("warnings", [])
    warn_html = ("<div class='warn'><b>Warnings while loading</b><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings[:50]) + "</ul></div>") if warnings else ""
    failed_html = (
        _table(fail, csv="tables/failures.csv")
        if len(fail)
        else '<p class="muted">none: every trial listed finished all its steps.</p>'
    )
    seconds = time.perf_counter() - started
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gumbel-study report: {html.escape(m['name'])}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>gumbel-study report: {html.escape(m['name'])}</h1>
<p class="muted">Gumbel-max / Gumbel-softmax gradient estimators in a toy GAN: measured bias, variance and fit.</p>
<nav><a href="#run">run</a><a href="#guide">reading guide</a><a href="#figures">figures</a><a href="#tables">tables</a><a href="#failures">failures</a><a href="#trials">trials</a></nav>
<h2 id="run">Run</h2>
{_meta_html(exp, out, seconds)}
{warn_html}
<h2 id="guide">Reading guide: the bias-variance tradeoff</h2>
{_GUIDE}
<h2 id="figures">Figures</h2>
{''.join(figure_html)}
<h2 id="tables">Tables</h2>
<h3>Best configuration per target (lowest mean final TV)</h3>
{_table(best_view, csv="tables/best_configs.csv")}
<h3>Bias-variance tradeoff per estimator and temperature</h3>
{_table(trade_view, max_rows=120, csv="tables/tradeoff.csv", note="Mean over seeds [95% bootstrap interval]; <code>pareto</code> marks the Pareto front of (bias², variance).")}
<h3>Final fit per configuration (sorted by TV)</h3>
{_table(final_view, csv="tables/final_fit.csv", note="Completed trials only; mean over seeds [95% bootstrap interval].")}
<h2 id="failures">Errored, missing and incomplete trials</h2>
{failed_html}
<h2 id="trials">Trials</h2>
{_table(exp.trials[status_cols], max_rows=200, csv="tables/trials.csv")}
<p class="muted">Data for your own analysis: <code>data/trials.parquet</code>, <code>data/evals.parquet</code> (one row per trial × seed × step),
<code>data/probes.parquet</code> (one row per trial × seed × step × estimator × probe temperature), <code>data/meta.json</code>; all tables as CSV in <code>tables/</code>.</p>
</main>
{_IMG_CHECK}
</body>
</html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    say(f"wrote {index} ({time.perf_counter() - started:.1f} s)")
    return out


def _main(argv: list[str] | None = None) -> int:  # python -m analysis.report RUN_DIR [OUT]
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m analysis.report RUN_DIR [OUT]", file=sys.stderr)
        return 2
    out = write_report(args[0], args[1] if len(args) > 1 else None)
    print(f"report: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
