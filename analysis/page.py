"""The report page: HTML pieces and the template of index.html (see analysis.report).

One self-contained page: figures embedded as base64 PNG, inline CSS and inline scripts (the image
check; the parallel-coordinates view of analysis.parcoords), no network, no external CSS, JS or
fonts, so it opens offline. Every value from a run directory (spec text, command lines, errors,
paths) is HTML-escaped, or JSON-escaped inside the view's data block.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import Experiment

__all__ = ["ci_columns", "figure_html", "host_summary", "page", "table_html"]

MAX_HTML_ROWS = 60

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; line-height: 1.5; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { margin-bottom: 0.3em; } h4 { margin: 1.2em 0 0.3em; }
.muted { color: #666; font-size: 0.92em; }
figure { margin: 1.4em 0 2.2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.95em; color: #333; max-width: 980px; }
table { border-collapse: collapse; font-size: 0.86em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; } th { background: #f2f2f2; }
.scroll { overflow-x: auto; max-width: 100%; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
pre.spec { background: #f6f8fa; border: 1px solid #e1e4e8; padding: 8px 12px; overflow-x: auto; font-size: 0.85em; max-height: 420px; }
.session { border-left: 3px solid #ddd; padding-left: 14px; margin: 0.8em 0 1.4em; }
.guide { background: #f6f8fa; border-left: 4px solid #0072b2; padding: 8px 18px; }
.warn { background: #fff4e5; border-left: 4px solid #d55e00; padding: 6px 14px; }
nav a { margin-right: 14px; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
"""

# On load: count images that failed to decode; the count is a machine-readable marker
# (tests/test_report_browser.py reads it) and, when non-zero, a visible warning.
IMG_CHECK = """
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

GUIDE = """
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
variance. <b>REINFORCE</b> (the score function) is unbiased: its mean and variance are sums over the
K categories, computed exactly, so its bias² is 0 (figure a draws it on a line at the bottom); an
unbiased estimator that is sampled instead reads a bias² on the floor.</p>
<p>Intervals are 95% percentile-bootstrap intervals over independent replicas (one seed of one
trial); a configuration with a single seed has no interval.</p>
</div>
"""

_FIXED_KEYS = ("target", "categories", "generator", "discriminator", "schedule", "tau_min", "steps", "eval_every", "batch_size", "probe_estimates", "probe_taus", "probe_estimators")


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(v: Any) -> str:
    """A table cell: 3 significant digits, "–" for missing, "yes" / "" for booleans."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3g}"
    return str(v)


def ci_columns(frame: pd.DataFrame, stats: list[str]) -> pd.DataFrame:
    """Fold `<s>`, `<s>_lo`, `<s>_hi` into one text column "mean [lo, hi]" per statistic."""
    out = frame.copy()
    for s in stats:
        if {s, f"{s}_lo", f"{s}_hi"} <= set(out):
            cells = []
            for m, lo, hi in zip(out[s], out[f"{s}_lo"], out[f"{s}_hi"]):
                bounds = all(isinstance(x, (float, np.floating)) and np.isfinite(x) for x in (lo, hi))
                cells.append(fmt(m) + (f" [{fmt(lo)}, {fmt(hi)}]" if bounds else ""))
            out[s] = cells
            out = out.drop(columns=[f"{s}_lo", f"{s}_hi"])
    return out


def table_html(frame: pd.DataFrame | None, *, max_rows: int = MAX_HTML_ROWS, note: str = "", csv: str | None = None) -> str:
    if frame is None or frame.empty:
        return '<p class="muted">none</p>'
    shown = frame.head(max_rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False))
    more = ""
    if len(frame) > max_rows:
        more = f'<p class="muted">{max_rows} of {len(frame)} rows shown{"; all in " + esc(csv) if csv else ""}.</p>'
    elif csv:
        more = f'<p class="muted">CSV: <a href="{esc(csv)}">{esc(csv)}</a></p>'
    return f'{f"<p>{note}</p>" if note else ""}<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}'


def figure_html(number: int, name: str, label: str, caption: str, png: Path, width_in: float, pdf: bool) -> str:
    """<figure> with the PNG embedded (base64) at the figure's size, so every figure shares a text size."""
    uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    links = (f'<a href="figures/{name}.pdf">PDF</a>, ' if pdf else "") + f'<a href="figures/{name}.png">PNG</a>'
    return (
        f'<figure id="fig-{name}"><img src="{uri}" alt="{esc(f"Figure {number}: {label}")}" style="width: min(100%, {round(width_in * 96)}px)">'
        f'<figcaption><b>Figure {number}.</b> {caption} <span class="muted">({links})</span></figcaption></figure>'
    )


# ------------------------------------------------------------------ the Run section


def _study_html(exp: Experiment, out: Path, seconds: float) -> str:
    m, t = exp.meta, exp.trials
    fixed = [f"{k}={', '.join(t[k].dropna().astype(str).unique().tolist()[:4])}" for k in _FIXED_KEYS if k in t and k not in m.get("grid", {}) and (t[k].notna() & t[k].astype(str).str.len().gt(0)).any()]
    rows = [
        ("runs", "<br>".join(f"<code>{esc(r['name'])}</code>: {esc(r['path'])} ({r['trials']} trial{'s' if r['trials'] != 1 else ''})" for r in m.get("runs", []))),
        ("trials", f"{m.get('n_trials', 0)} (" + ", ".join(f"{n} {esc(s)}" for s, n in sorted(m.get("statuses", {}).items())) + ")"),
        ("seeds per trial", f"{m.get('seeds_per_trial', '?')} (seeds {esc(', '.join(map(str, m.get('seeds', [])[:20])))}{', ...' if len(m.get('seeds', [])) > 20 else ''})"),
        ("grid", "<br>".join(f"<code>{esc(k)}</code>: {esc(', '.join(fmt(v) for v in vals))}" for k, vals in m.get("grid", {}).items()) or "– (one configuration)"),
        ("fixed", esc("; ".join(fixed)) or "–"),
        ("estimators probed", esc(", ".join(m.get("estimators", [])) or "–")),
        ("ladder temperatures", esc(", ".join(fmt(v) for v in m.get("ladder_taus", [])) or "–")),
        ("results written", esc(f"{m.get('first_result') or '?'} to {m.get('last_result') or '?'}")),
        ("tables", f"{m.get('n_evals', 0):,} per-seed evaluations, {m.get('n_probes', 0):,} probe rows ({len(exp.probe_means):,} probe means), loaded in {m.get('load_seconds', 0):.1f} s"),
        ("report", esc(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}, {seconds:.1f} s, {out}")),
    ]
    return '<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _resources(text: Any) -> str:
    """Ray's (or this machine's) resources in a line: CPU, GPU, memory; node labels left out."""
    try:
        res = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return esc(text)
    parts = []
    for key, value in sorted(res.items(), key=lambda kv: (kv[0] not in ("CPU", "GPU"), kv[0])):
        if key.startswith("node:") or key.startswith("accelerator_type:"):
            continue
        parts.append(f"{key} {value / 2**30:.1f} GiB" if "memory" in key else f"{key} {fmt(value)}")
    return esc(", ".join(parts) or "–")


def _session_html(s: pd.Series) -> str:
    versions = ", ".join(f"{name} {fmt(s[key])}" for name, key in (("Python", "python"), ("torch", "torch"), ("Ray", "ray"), ("CUDA", "cuda")))
    rows = [
        ("started", esc(fmt(s["started"]))), ("command line", f"<code>{esc(fmt(s['argv']))}</code>"), ("revision", f"<code>{esc(fmt(s['revision']))}</code>"),
        ("versions", esc(versions)), ("host", esc(fmt(s["host"]))), ("resources", _resources(s["resources"])), ("spec", esc(fmt(s["spec_path"]))),
    ]
    spec = f'<pre class="spec">{esc(s["spec_text"])}</pre>' if isinstance(s["spec_text"], str) else '<p class="muted">spec text not recorded</p>'
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<div class="session"><p><b>Session {int(s["session"])}</b></p><dl class="meta">{items}</dl>{spec}</div>'


def host_summary(exp: Experiment) -> pd.DataFrame:
    """Distinct (host, device, gpu) with the number of trials that ran there (a trial that moved
    between sessions counts once per place)."""
    hosts = exp.hosts
    if hosts.empty:
        return pd.DataFrame(columns=["host", "device", "gpu", "trials"])
    grouped = hosts.groupby(["host", "device", "gpu"], sort=True, dropna=False)["trial_id"].nunique()
    return grouped.rename("trials").reset_index().sort_values("trials", ascending=False, kind="stable").reset_index(drop=True)


def run_section(exp: Experiment, out: Path, seconds: float) -> str:
    """The Run section: the study at a glance, each run's sessions (provenance), hosts and devices."""
    parts = [_study_html(exp, out, seconds), "<h3>Provenance</h3>"]
    for run in exp.meta.get("runs", []):
        sessions = exp.sessions[exp.sessions["run"] == run["name"]]
        parts.append(f"<h4>{esc(run['name'])} <span class=\"muted\">{esc(run['path'])}</span></h4>")
        if sessions.empty:
            parts.append('<p class="muted">no run.json: this run was written before provenance was recorded.</p>')
        parts += [_session_html(s) for _, s in sessions.iterrows()]
    parts.append("<h3>Hosts and devices</h3>")
    parts.append(table_html(host_summary(exp), csv="tables/hosts.csv", note="Where the trials ran (from each trial's record/host-*.json); every trial and session in the CSV."))
    return "\n".join(parts)


def page(exp: Experiment, *, run: str, figures: str, tables: str, failures: str, trials: str, warnings: str) -> str:
    """index.html from its sections (HTML strings)."""
    name = esc(exp.meta.get("name", "study"))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gumbel-study report: {name}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>gumbel-study report: {name}</h1>
<p class="muted">Gumbel-max / Gumbel-softmax gradient estimators in a toy GAN: measured bias, variance and fit.</p>
<nav><a href="#run">run</a><a href="#guide">reading guide</a><a href="#figures">figures</a><a href="#tables">tables</a><a href="#failures">failures</a><a href="#trials">trials</a></nav>
<h2 id="run">Run</h2>
{run}
{warnings}
<h2 id="guide">Reading guide: the bias-variance tradeoff</h2>
{GUIDE}
<h2 id="figures">Figures</h2>
{figures}
<h2 id="tables">Tables</h2>
{tables}
<h2 id="failures">Errored, missing and incomplete trials</h2>
{failures}
<h2 id="trials">Trials</h2>
{trials}
<p class="muted">Data for your own analysis: <code>data/trials.parquet</code>, <code>data/evals.parquet</code> (one row per trial × seed × step),
<code>data/probe_means.parquet</code> (one row per trial × seed × estimator × probe temperature, averaged over steps), <code>data/sessions.parquet</code>,
<code>data/hosts.parquet</code>, <code>data/meta.json</code>; all tables as CSV in <code>tables/</code>. Every probe row of every step:
<code>analysis.load_experiment(RUN).probes</code>.</p>
</main>
{IMG_CHECK}
</body>
</html>
"""
