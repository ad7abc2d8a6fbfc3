"""The report: one or more run directories -> figures (PNG + PDF), tables (CSV), data, index.html.

    write_report(RUN or [RUN, ...], out=None) -> Path

`gumbel-study report RUN [RUN ...] [--out DIR]` (analysis.command) calls it. The report directory:

    index.html                 one self-contained page (analysis.page): the Run section (the study,
                               each run's sessions with spec, command line, revision, versions and
                               resources; hosts and devices), figures embedded, tables, failures
    figures/<name>.png, .pdf   every figure of FIGURES (PDF for papers and slides)
    tables/<name>.csv          every summary table, the trials, sessions and hosts
    data/*.parquet, meta.json  the tidy tables of analysis.load, for your own analysis

It reads the run directories only (never trains) and prints one progress line per step. A small
main: FIGURES lists (name, label, builder, caption) and analysis.page holds the template.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import figures as F
from analysis import page as P
from analysis import pbt as PB
from analysis import parcoords as PC
from analysis import summarize as S
from analysis.load import Experiment, load_runs, save_parquet

__all__ = ["FIGURES", "PBT_FIGURES", "ReportFigure", "build_summaries", "default_out", "report_figures", "write_report"]

_CORE_AXES = ("target", "relaxation", "tau0", "anneal_rate")
_ALL_PANELS = 8  # probability-error figure: every configuration up to this many, else the best ones


@dataclass(frozen=True)
class Context:
    """What the figure builders and captions read."""

    exp: Experiment
    tables: dict[str, pd.DataFrame]
    by: list[str]  # the configuration columns: core axes, then the other grid axes

    @property
    def words(self) -> dict[str, str]:
        extra = [a for a in self.by if a not in _CORE_AXES]
        return {
            "n_est": str(len(self.exp.meta.get("estimators", []))),
            "pooled": f" Cells pool the other grid axes ({', '.join(extra)})." if extra else "",
            "prob_note": self.tables["probability_errors"].attrs.get("note", "every configuration"),
            "win_taus": _winner_taus(self.tables["winners"]),
        }


def _winner_taus(winners: pd.DataFrame) -> str:
    """The caption's words for figure g's temperatures: the ladder, or binned current temperatures."""
    if len(winners) and (winners["source"] == "current").all():
        return "the trials' own temperatures, binned at four per decade (no ladder was probed)"
    return "the fixed ladder every trial probes"


@dataclass(frozen=True)
class ReportFigure:
    name: str  # file name: figures/<name>.png
    label: str  # progress line and alt text
    build: Callable[[Context], Figure]
    caption: str  # HTML; {n_est}, {pooled}, {prob_note}, {win_taus} filled from Context.words


FIGURES = (
    ReportFigure(
        "tradeoff", "headline tradeoff (bias² vs variance)", lambda c: F.tradeoff_figure(c.tables["tradeoff"]),
        "<b>The bias-variance tradeoff.</b> Each marker is one of the {n_est} probed gradient estimators (shape) at one temperature (colour, log scale), "
        "averaged over every probe at that temperature: the fixed ladder of temperatures when the study probed one (every trial, every evaluation, the same temperatures), "
        "else the trials' own temperatures, binned at four per decade; bars are 95% bootstrap intervals over seeds. "
        "The dashed line is the noise floor bias² = variance / N: below it bias is not resolvable with N estimates. "
        "The dotted line joins the Pareto front, the points no other point beats on both bias² and variance. Lower-left is better.",
    ),
    ReportFigure(
        "tau_sweep", "bias², variance and MSE against τ", lambda c: F.tau_sweep_figure(c.tables["tradeoff"]),
        "<b>Where the error comes from, per temperature.</b> bias², variance and MSE of each estimator against the temperature, all on log axes, "
        "with 95% bootstrap bands over seeds; dotted lines in the bias² panel are each estimator's noise floor (variance / N). "
        "The last panel is the MSE at equal cost, bias² + variance × cost, with cost the estimator's passes through f per sample "
        "(f evaluations plus backward passes): the error of the average of the estimates one budget of compute buys.",
    ),
    ReportFigure(
        "final_fit_heatmaps", "final TV heatmaps", lambda c: F.final_fit_heatmaps(c.tables["final_fit"]),
        "<b>How well each configuration learned the target.</b> Final total variation distance between the target and the learned distribution "
        "(0 = perfect, 1 = disjoint) over starting temperature × annealing rate, one panel per target and relaxation, mean over seeds with its 95% interval. "
        "The colour range spans at least the typical interval width, so differences inside the noise do not look like contrasts.{pooled}",
    ),
    ReportFigure(
        "learning_curves", "learning curves of TV", lambda c: F.learning_curves_figure(c.tables["learning_curves"]),
        "<b>Learning curves.</b> Total variation distance to the target against training step for each relaxation (panel) and starting temperature (colour; "
        "line style: annealing rate when it varies), mean over seeds with 95% bootstrap bands.{pooled}",
    ),
    ReportFigure(
        "probability_errors", "learned − true probability per category", lambda c: F.probability_error_figure(c.tables["probability_errors"], panel=c.by, max_panels=24),
        "<b>The original post's figure.</b> Learned minus true probability of each category over training (mean over seeds, 95% bands), for "
        "{prob_note}. Lines converging on zero mean the generator has learned the target; a category stuck below zero is under-sampled.",
    ),
    ReportFigure(
        "schedules", "temperature schedules", lambda c: F.schedule_figure(c.tables["schedules"], c.exp.evals),
        "<b>The temperature schedules used.</b> τ against step for each distinct schedule (colour: starting temperature; line style: annealing rate), "
        "computed from the schedule formula; dots are the temperatures the trials recorded at their evaluations, and the dotted line is τ_min.",
    ),
    ReportFigure(
        "winners", "which estimator wins where", lambda c: F.winners_figure(c.tables["winners"]),
        "<b>Which estimator wins where.</b> Each cell is one temperature (row: {win_taus}) and target (column), one row of panels per number of categories K; "
        "its colour, marker and name are those of the estimator with the least median MSE there, relative to the squared norm of the exact gradient at each probe point "
        "(so that trials with large and small gradients weigh alike; median over the trials' seeds of each seed's mean over its evaluations "
        "at that temperature). Left: per estimate (MSE = bias² + variance). Right: at equal cost (bias² + variance × cost, cost = f evaluations plus backward passes "
        "per sample), where a cheap noisy estimator can beat an expensive precise one. ×m under the name is the runner-up's median over the winner's: near 1 is a near tie. "
        "The exact-moment estimators (tempered ST, gapped ST, ReinMax, ZGR, REINFORCE) have numbers without Monte Carlo noise, computed by enumerating the K categories; "
        "the others' bias² carries sampling noise of the order of bias2_floor (variance / N), so a win by less than that is no win. <code>tables/winners.csv</code> has every cell "
        "with its runner-up.{pooled}",
    ),
)


# Only for a report of a run that used scheduler = "pbt" (analysis.pbt).
PBT_FIGURES = (
    ReportFigure(
        "learned_schedules", "learned temperature schedules (PBT)", lambda c: PB.learned_schedules_figure(c.tables["pbt_schedules"], c.tables["pbt_references"]),
        "<b>The temperature schedules PBT learned.</b> τ against step along each trial's lineage: the chain of checkpoints its final parameters descend from "
        "(the donor's schedule up to each exploit, then the trial's own, restarted at the exploit from its perturbed τ and annealed at its perturbed rate), "
        "computed from the schedule formula of each segment. The surviving trials, the top PBT quantile by final TV (mean over seeds), are in colour; "
        "the others thin grey; the hand-written schedules the population started from are dashed.",
    ),
)


def report_figures(tables: dict[str, pd.DataFrame]) -> tuple[ReportFigure, ...]:
    """The figures of this report: FIGURES, and PBT_FIGURES when a run used PBT."""
    return FIGURES + (PBT_FIGURES if "pbt_schedules" in tables else ())


def _say(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)


def config_columns(exp: Experiment) -> list[str]:
    """The columns that tell configurations apart: target, relaxation, tau0, anneal_rate, then every
    other grid axis, so that no two grid points are pooled in the tables."""
    axes = list(exp.meta.get("grid", {}))
    return [c for c in dict.fromkeys([*_CORE_AXES, *axes]) if c in exp.evals]


def _probability_configs(evals: pd.DataFrame, final: pd.DataFrame, by: list[str]) -> tuple[pd.DataFrame, str]:
    """The evals of the configurations figure e shows: every one when there are few, else the one
    with the lowest final TV for each target and relaxation."""
    configs = evals[by].drop_duplicates()
    if len(configs) <= _ALL_PANELS or final.empty or "fit/tv" not in final:
        return evals, "every configuration"
    data = final[np.isfinite(pd.to_numeric(final["fit/tv"], errors="coerce").astype(float))]
    groups = [c for c in ("target", "relaxation") if c in data]
    if data.empty:
        return evals.merge(configs.head(12), on=by), "the first 12 configurations"
    best = data.loc[data.groupby(groups)["fit/tv"].idxmin() if groups else [data["fit/tv"].idxmin()], by]
    return evals.merge(best, on=by), "the configuration with the lowest final TV for each target and relaxation"


def _order_configs(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if "relaxation" not in frame or frame.empty:
        return frame.sort_values(by) if by and not frame.empty else frame
    rank = S.estimator_rank(frame["relaxation"].astype(str).unique().tolist())
    keyed = frame.assign(_rank=frame["relaxation"].astype(str).map(rank))
    return keyed.sort_values(["_rank", *[c for c in by if c != "relaxation"]]).drop(columns="_rank")


def build_summaries(exp: Experiment, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every summary table of the report, from the loaded tables (see analysis.summarize).

    Final fits and learning curves are grouped by `config_columns`. The tradeoff uses the ladder
    probes when there are any: each point then compares estimators at one tau with everything else
    held fixed, where a trial's own tau confounds tau with training time. probability_errors holds
    the configurations of figure e only (its attrs["note"] says which).
    """
    by = config_columns(exp)
    means = exp.probe_means
    has_ladder = len(means) > 0 and bool((means["source"] == "ladder").any())
    means = S.with_cost(means)  # cost and mse_cost, the MSE at equal cost, per probe row
    tradeoff = S.tradeoff_table(means, source="ladder" if has_ladder else "current", n_boot=n_boot, alpha=alpha, seed=seed)
    final = S.final_fit_table(exp.evals, by=by, n_boot=n_boot, alpha=alpha, seed=seed)
    chosen, note = _probability_configs(exp.evals, final, by)
    errors = S.probability_errors(chosen, by=list(dict.fromkeys([*by, "categories"])))
    prob = S.grouped_ci(errors, list(dict.fromkeys([*by, "categories", "step", "category"])), "error", n_boot=min(n_boot, 1000), alpha=alpha, seed=seed)
    prob = _order_configs(prob, by)
    prob.attrs["note"] = note
    pbt = PB.pbt_tables(exp, n_boot=n_boot, alpha=alpha, seed=seed) if PB.used_pbt(exp) else {}
    return {
        **pbt,
        "tradeoff": tradeoff,
        "winners": S.winners_table(means, source="ladder" if has_ladder else "current"),
        "pareto_front": S.pareto_front(tradeoff) if len(tradeoff) else tradeoff,
        "final_fit": final,
        "best_configs": S.best_configs(final, "fit/tv", group="target") if len(final) else final,
        "learning_curves": S.learning_curves(exp.evals, "fit/tv", by=by, n_boot=min(n_boot, 1000), alpha=alpha, seed=seed),
        "probability_errors": prob,
        "schedules": S.schedule_curves(exp.trials),
        "failures": S.failures(exp.trials, axes=list(exp.meta.get("grid", {}))),
        "hosts_summary": P.host_summary(exp),
    }


def _tables_html(ctx: Context) -> str:
    t, by = ctx.tables, ctx.by
    fits = ["fit/tv", "fit/js", "fit/kl"]
    metric_cols = ["n_seeds", "n_diverged", *(c for m in fits for c in (m, f"{m}_lo", f"{m}_hi"))]
    view = lambda frame, cols: P.ci_columns(frame[[c for c in [*by, *cols] if c in frame]], fits) if len(frame) else frame  # noqa: E731
    trade = t["tradeoff"]
    stats = ["bias2", "variance", "mse", "mse_cost"]
    trade_cols = ["estimator", "tau", "tau_lo", "tau_hi", "n_seeds", "cost", *(c for s in stats for c in (s, f"{s}_lo", f"{s}_hi")), "bias2_floor", "bias2_excess", "cosine", "pareto"]
    trade_view = P.ci_columns(trade[[c for c in trade_cols if c in trade]], [s for s in stats if s in trade]) if len(trade) else trade
    return "\n".join([
        *_pbt_tables_html(t),
        "<h3>Best configuration per target (lowest mean final TV)</h3>", P.table_html(view(t["best_configs"], [*metric_cols, "rank_of"]), csv="tables/best_configs.csv"),
        "<h3>Bias-variance tradeoff per estimator and temperature</h3>",
        P.table_html(trade_view, max_rows=120, csv="tables/tradeoff.csv", note="Mean over seeds [95% bootstrap interval]; <code>cost</code>: passes through f per sample of an estimate (f evaluations plus backward passes); "
                     "<code>mse_cost</code> = bias² + variance × cost, the MSE at equal cost; <code>pareto</code> marks the Pareto front of (bias², variance)."),
        "<h3>Final fit per configuration (sorted by TV)</h3>",
        P.table_html(view(t["final_fit"].sort_values("fit/tv") if len(t["final_fit"]) else t["final_fit"], metric_cols), csv="tables/final_fit.csv", note="Completed trials only; mean over seeds [95% bootstrap interval]."),
        '<h3 id="parcoords-view">Final fit over every axis (interactive)</h3>', PC.parcoords_html(ctx.exp.trials, ctx.exp.meta.get("grid", {})),
    ])


def _pbt_tables_html(t: dict[str, pd.DataFrame]) -> list[str]:
    if "pbt_comparison" not in t:
        return []
    table = t["pbt_comparison"]
    note = ("Final TV at the last step, mean over seeds [95% bootstrap interval over seeds], of the best PBT trial against " + table.attrs.get("note", "")
            + ". Both sides are the best of their population, so both are selected on the same seeds; replica_steps is each side's compute.")
    return ["<h3>PBT against hand-written schedules at equal compute</h3>",
            P.table_html(P.ci_columns(table, ["fit/tv"]) if len(table) else table, csv="tables/pbt_comparison.csv", note=P.esc(note))]


def _sections(ctx: Context, figures: str, out: Path, seconds: float) -> dict[str, str]:
    exp, fail = ctx.exp, ctx.tables["failures"]
    warnings = exp.meta.get("warnings", [])
    status_cols = [c for c in ["trial_id", *(["run"] if len(exp.meta["runs"]) > 1 else []), "status", *exp.meta.get("grid", {}), "n_evals", "last_step", "final/fit/tv", "host", "device", "error", "trial_dir"] if c in exp.trials]
    return {
        "run": P.run_section(exp, out, seconds),
        "warnings": ("<div class='warn'><b>Warnings while loading</b><ul>" + "".join(f"<li>{P.esc(w)}</li>" for w in warnings[:50]) + "</ul></div>") if warnings else "",
        "figures": figures,
        "tables": _tables_html(ctx),
        "failures": P.table_html(fail, csv="tables/failures.csv") if len(fail) else '<p class="muted">none: every trial listed finished all its steps.</p>',
        "trials": P.table_html(exp.trials[status_cols], max_rows=200, csv="tables/trials.csv"),
    }


def _write_figure(i: int, spec: ReportFigure, ctx: Context, out: Path, dpi: int, pdf: bool) -> str:
    fig = spec.build(ctx)
    png = out / "figures" / f"{spec.name}.png"
    fig.savefig(png, dpi=dpi, facecolor="white")
    if pdf:
        fig.set_layout_engine("none")  # keep the layout the PNG computed: the PDF does not redo it
        fig.savefig(out / "figures" / f"{spec.name}.pdf", facecolor="white")
    return P.figure_html(i, spec.name, spec.label, spec.caption.format(**ctx.words), png, fig.get_figwidth(), pdf)


def _write_tables(exp: Experiment, tables: dict[str, pd.DataFrame], out: Path) -> int:
    extra = {"trials": exp.trials, "sessions": exp.sessions, "hosts": exp.hosts}
    for name, frame in {**extra, **tables}.items():
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    return len(extra) + len(tables)


def default_out(paths: Sequence[str]) -> Path:
    """RUN/report for one local run, ./report-<name> for one URI; several runs need an explicit out."""
    if len(paths) != 1:
        raise ValueError("several runs: say where their report goes (out=DIR, or --out DIR)")
    path = paths[0]
    return Path(path) / "report" if "://" not in path else Path.cwd() / f"report-{path.rstrip('/').rsplit('/', 1)[-1]}"


def write_report(
    run_dirs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    progress: bool | Callable[[str], None] = True,
    n_boot: int = 2000,
    dpi: int = 150,
    pdf: bool = True,
) -> Path:
    """Write the report of one or more runs (paths or cloud URIs, read as one study); return its
    directory. `out`: see `default_out`. `progress`: print progress lines to stderr (True), stay
    quiet (False), or a callable that takes each line. `n_boot`: bootstrap resamples per interval;
    `dpi`: PNG resolution; `pdf`: also save every figure as PDF.
    """
    started, say = time.perf_counter(), _say(progress)
    paths = [str(run_dirs)] if isinstance(run_dirs, (str, Path)) else [str(p) for p in run_dirs]
    out = Path(out) if out is not None else default_out(paths)
    exp = load_runs(paths, progress=say)
    m = exp.meta
    say(f"loaded {m['n_trials']} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(m["statuses"].items())) + f"), {m['n_evals']} evaluations, {m['n_probes']} probes in {m['load_seconds']:.1f} s")
    for sub in ("figures", "tables", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    save_parquet(exp, out / "data")
    say(f"data: {out / 'data'} (trials, evals, probe_means, sessions, hosts parquet; meta.json)")
    say("tables: bootstrap intervals over seeds ...")
    tables = build_summaries(exp, n_boot=n_boot)
    say(f"tables: {_write_tables(exp, tables, out)} CSV files in {out / 'tables'}")
    ctx = Context(exp, tables, config_columns(exp))
    figures = []
    chosen = report_figures(tables)
    for i, spec in enumerate(chosen, start=1):
        say(f"figure {i}/{len(chosen)}: {spec.label} -> figures/{spec.name}.png{', .pdf' if pdf else ''}")
        figures.append(_write_figure(i, spec, ctx, out, dpi, pdf))
    index = out / "index.html"
    index.write_text(P.page(exp, **_sections(ctx, "".join(figures), out, time.perf_counter() - started)), encoding="utf-8")
    say(f"wrote {index} ({time.perf_counter() - started:.1f} s)")
    return out
