"""Population Based Training: lineages, learned temperature schedules, the equal-compute comparison.

    used_pbt(exp) -> bool                         did any run use `scheduler = "pbt"`
    lineage_entries(exp) -> DataFrame             every PBT trial's record/pbt-<step>.json
    learned_schedules(exp, entries) -> DataFrame  tau over steps along each trial's lineage
    reference_schedules(exp, entries) -> DataFrame  the hand-written schedules the trials started from
    comparison_table(exp, ...) -> DataFrame       best PBT trial vs best hand-written schedule, CIs over seeds
    learned_schedules_figure(lineages, references) -> Figure

A PBT trial's record holds one pbt-<step>.json per segment of its schedule (study.record): at step 0
its own starting values; at each exploit the perturbed values it continued with, the temperature
its schedule restarted from (tau_anchor) and the trial whose checkpoint it took (the donor). A
trial's *lineage* is the chain of checkpoints its final parameters descend from: the donor's
lineage up to the exploit step, then the trial's own segments. Its learned schedule is the
temperature along that chain, computed from each segment's formula (vocab.schedule_tau), exact
between evaluations. The *survivors* are the top quantile (the run's PBT quantile, as Tune counts
it) by final fit/tv, mean over seeds.

Reads files only (through pyarrow.fs, like analysis.record); never imports ray or torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.figures import STEP_LABEL, TAU_LABEL, _canvas, _empty, _legend, _style, _suptitle
from analysis.record import filesystem, read_json
from analysis.summarize import bootstrap_ci
from study.vocab import schedule_tau

__all__ = [
    "comparison_table",
    "learned_schedules",
    "learned_schedules_figure",
    "lineage_entries",
    "pbt_tables",
    "reference_schedules",
    "survivors",
    "used_pbt",
]

_MUTABLE = ("tau0", "anneal_rate", "lr_g", "lr_d")  # study.config.PBT_MUTABLE's fields
_ENTRY_COLUMNS = ["run", "trial_id", "step", "donor", "anchor_step", "tau", *_MUTABLE[1:]]
_POINTS = 60  # points per schedule segment


def pbt_trials(exp) -> pd.DataFrame:
    """The trials of runs that used PBT (their params hold pbt_interval)."""
    trials = exp.trials
    if "pbt_interval" not in trials:
        return trials.iloc[0:0]
    return trials[pd.to_numeric(trials["pbt_interval"], errors="coerce").notna()]


def used_pbt(exp) -> bool:
    return len(pbt_trials(exp)) > 0


def _entry_files(fs: pafs.FileSystem, root: str, trial_dir: str) -> list[str]:
    selector = pafs.FileSelector(f"{root}/{trial_dir}/record" if trial_dir != "." else f"{root}/record", allow_not_found=True)
    names = [info.path for info in fs.get_file_info(selector) if info.type == pafs.FileType.File]
    return sorted(p for p in names if p.rsplit("/", 1)[-1].startswith("pbt-") and p.endswith(".json"))


def lineage_entries(exp) -> pd.DataFrame:
    """One row per pbt-<step>.json of every PBT trial: run, trial_id, step, donor (the trial_id
    whose checkpoint it continued; None at step 0), anchor_step, tau (the temperature its schedule
    starts from), anneal_rate, lr_g, lr_d."""
    trials = pbt_trials(exp)
    roots = {r["name"]: r["path"] for r in exp.meta.get("runs", [])}
    by_dir = {(row.run, row.trial_dir): row.trial_id for row in trials.itertuples()}
    rows = []
    for row in trials.itertuples():
        if row.run not in roots or not isinstance(row.trial_dir, str):
            continue
        fs, root = filesystem(roots[row.run])
        for path in _entry_files(fs, root, row.trial_dir):
            doc = read_json(fs, path)
            if not isinstance(doc, dict) or not isinstance(doc.get("new"), dict):
                continue
            anchor = doc.get("tau_anchor") or [doc.get("step", 0), doc["new"].get("tau0")]
            donor = by_dir.get((row.run, doc.get("donor_dir"))) if doc.get("donor_dir") else None
            rows.append({"run": row.run, "trial_id": row.trial_id, "step": int(doc.get("step", 0)), "donor": donor,
                         "anchor_step": int(anchor[0]), "tau": float(anchor[1]), **{k: doc["new"].get(k) for k in _MUTABLE[1:]}})
    return pd.DataFrame(rows, columns=_ENTRY_COLUMNS).sort_values(["trial_id", "step"], ignore_index=True)


def _lineage(entries: dict[str, list[dict]], trial_id: str, end: int) -> list[tuple[dict, int, int]]:
    """(entry, start, stop) segments of the schedule that trained `trial_id`'s parameters up to
    `end`: the donor's lineage up to the last exploit before `end`, then this trial's own entries.
    Steps strictly decrease along donors (an exploit's donor is read before the exploit's step)."""
    own = [e for e in entries.get(trial_id, []) if e["step"] < end]
    exploits = [e for e in own if e["donor"] is not None]
    last = max(exploits, key=lambda e: e["step"]) if exploits else None
    start = last["step"] if last else 0
    prefix = _lineage(entries, last["donor"], start) if last is not None else []
    segments = sorted((e for e in own if e["step"] >= start), key=lambda e: e["step"])
    stops = [e["step"] for e in segments[1:]] + [end]
    return prefix + [(e, e["step"], stop) for e, stop in zip(segments, stops)]


def _segment_tau(entry: dict, start: int, stop: int, schedule: dict) -> tuple[np.ndarray, np.ndarray]:
    steps = np.unique(np.linspace(start, stop, _POINTS).round().astype(int))
    tau = schedule_tau(schedule["kind"], steps - entry["anchor_step"], entry["tau"], float(entry["anneal_rate"] or 0.0),
                       schedule["tau_min"], schedule["interval"], exp=np.exp, floor=np.maximum, log=np.log)
    return steps, np.broadcast_to(tau, steps.shape).astype(float)


def _schedule_of(row: Any) -> dict:
    return {"kind": str(row["schedule"]), "tau_min": float(row["tau_min"]), "interval": int(row["anneal_interval"]), "steps": int(row["steps"])}


def learned_schedules(exp, entries: pd.DataFrame) -> pd.DataFrame:
    """tau over steps along each PBT trial's lineage: run, trial_id, segment (0, 1, ...), step,
    tau, survivor (bool), final_tv (mean over seeds at the last step), exploits (in the lineage)."""
    trials = pbt_trials(exp)
    cols = ["run", "trial_id", "segment", "step", "tau", "survivor", "final_tv", "exploits"]
    if trials.empty or entries.empty:
        return pd.DataFrame(columns=cols)
    by_trial = {tid: [{**e, "donor": e["donor"] if isinstance(e["donor"], str) else None} for e in group.to_dict("records")]
                for tid, group in entries.groupby("trial_id", sort=False)}
    finals, alive = _final_tv(exp, trials), survivors(exp)
    parts = []
    for _, row in trials.iterrows():
        schedule = _schedule_of(row)
        segments = _lineage(by_trial, row["trial_id"], schedule["steps"] + 1)
        for i, (entry, start, stop) in enumerate(segments):
            steps, tau = _segment_tau(entry, start, min(stop, schedule["steps"]), schedule)
            parts.append(pd.DataFrame({"run": row["run"], "trial_id": row["trial_id"], "segment": i, "step": steps, "tau": tau,
                                       "survivor": row["trial_id"] in alive, "final_tv": finals.get(row["trial_id"], math.nan),
                                       "exploits": sum(e["donor"] is not None for e, _, _ in segments)}))
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def reference_schedules(exp, entries: pd.DataFrame) -> pd.DataFrame:
    """The hand-written schedules the PBT trials started from (their step-0 entries): tau0,
    anneal_rate, step, tau."""
    trials = pbt_trials(exp)
    cols = ["tau0", "anneal_rate", "step", "tau"]
    starts = entries[entries["step"] == 0]
    if trials.empty or starts.empty:
        return pd.DataFrame(columns=cols)
    schedule = _schedule_of(trials.iloc[0])
    parts = []
    for (tau0, rate), _ in starts.groupby(["tau", "anneal_rate"], dropna=False):
        entry = {"anchor_step": 0, "tau": tau0, "anneal_rate": rate}
        steps, tau = _segment_tau(entry, 0, schedule["steps"], schedule)
        parts.append(pd.DataFrame({"tau0": tau0, "anneal_rate": rate, "step": steps, "tau": tau}))
    return pd.concat(parts, ignore_index=True)[cols]


def _final_rows(exp, trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's rows at its last step, for trials that reached `steps` (complete)."""
    evals = exp.evals
    ids = set(trials.loc[trials["complete"].astype(bool), "trial_id"])
    rows = evals[evals["trial_id"].astype(str).isin(ids)]
    if rows.empty:
        return rows
    return rows[rows["step"] == rows.groupby("trial_id", observed=True)["step"].transform("max")]


def _final_tv(exp, trials: pd.DataFrame) -> dict[str, float]:
    rows = _final_rows(exp, trials)
    return {str(k): float(v) for k, v in rows.groupby(rows["trial_id"].astype(str))["fit/tv"].mean().items()} if len(rows) else {}


def survivors(exp) -> set[str]:
    """The top quantile by final fit/tv (lowest), counted as Tune's PBT counts it: ceil(n * q)
    trials, at most half of them, at least one."""
    trials = pbt_trials(exp)
    finals = _final_tv(exp, trials)
    if not finals:
        return set()
    q = float(pd.to_numeric(trials["pbt_quantile"], errors="coerce").dropna().iloc[0]) if "pbt_quantile" in trials else 0.25
    n = max(1, min(math.ceil(len(trials) * q), len(trials) // 2))
    return set(sorted(finals, key=lambda t: (not math.isfinite(finals[t]), finals[t]))[:n])


# ------------------------------------------------------------------ equal-compute comparison


def _best(exp, trials: pd.DataFrame, n_boot: int, alpha: float, seed: int) -> dict[str, Any] | None:
    """The trial with the lowest mean final fit/tv, its 95% bootstrap interval over seeds."""
    rows = _final_rows(exp, trials)
    if rows.empty:
        return None
    means = rows.groupby(rows["trial_id"].astype(str))["fit/tv"].mean().dropna()
    if means.empty:
        return None
    best = means.idxmin()
    values = rows.loc[rows["trial_id"].astype(str) == best, "fit/tv"].to_numpy(dtype=float)
    tv, lo, hi = bootstrap_ci(values, n_boot=n_boot, alpha=alpha, seed=seed)
    row = trials[trials["trial_id"] == best].iloc[0]
    return {"trial_id": best, "run": row["run"], "fit/tv": tv, "fit/tv_lo": lo, "fit/tv_hi": hi, "n_seeds": int(np.isfinite(values).sum())}


def _compute(trials: pd.DataFrame) -> dict[str, Any]:
    steps = pd.to_numeric(trials["steps"], errors="coerce")
    seeds = pd.to_numeric(trials["seeds"], errors="coerce") if "seeds" in trials else pd.Series(1, index=trials.index)
    return {"n_trials": len(trials), "steps": int(steps.max()), "seeds": int(seeds.max()), "replica_steps": int((steps * seeds).sum())}


def _companions(exp, pbt: pd.DataFrame) -> pd.DataFrame:
    """Trials of the other runs in the report that ran hand-written schedules at PBT's compute per
    trial: no PBT, complete, the same steps and seeds."""
    others = exp.trials[~exp.trials["run"].isin(set(pbt["run"]))]
    if others.empty or "steps" not in others:
        return others
    same = (pd.to_numeric(others["steps"], errors="coerce") == pd.to_numeric(pbt["steps"], errors="coerce").max())
    if "seeds" in others:
        same &= pd.to_numeric(others["seeds"], errors="coerce") == pd.to_numeric(pbt["seeds"], errors="coerce").max()
    return others[same & others["complete"].astype(bool)]


def comparison_table(exp, entries: pd.DataFrame, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Final fit/tv of the best PBT trial against the best hand-written schedule, mean over seeds
    with its bootstrap interval, and the compute each side spent (trials x steps x seeds).

    The hand-written side is the best trial of the report's other runs that ran without PBT at the
    same steps and seeds (the grid companion: the same spec run with search.scheduler=fifo); with
    none, the best PBT trial that was never exploited (it ran its starting schedule throughout, but
    survived PBT's selection: an optimistic baseline). attrs["note"] says which."""
    pbt = pbt_trials(exp)
    cols = ["side", "run", "trial_id", "schedule", "fit/tv", "fit/tv_lo", "fit/tv_hi", "n_seeds", "n_trials", "steps", "seeds", "replica_steps"]
    companions = _companions(exp, pbt)
    if len(companions):
        base, label = companions, "best hand-written schedule (grid companion)"
        note = "the best trial of the grid companion (the report's runs without PBT, at the same steps and seeds per trial)"
    else:
        exploited = set(entries.loc[entries["donor"].notna(), "trial_id"])
        base, label = pbt[~pbt["trial_id"].isin(exploited)], "best never-exploited PBT trial (its starting schedule)"
        note = ("the best PBT trial that never exploited another: it ran its starting hand-written schedule throughout, but survived PBT's selection, "
                "so it is an optimistic baseline from fewer trials. This report has no grid companion: run the same spec with "
                "--set search.scheduler=fifo --name NAME-grid and report both runs")
    rows = []
    for side, trials, describe in (("PBT (best trial, learned schedule)", pbt, _learned_label), (label, base, _start_label)):
        best = _best(exp, trials, n_boot, alpha, seed) if len(trials) else None
        if best is not None:
            rows.append({"side": side, **best, "schedule": describe(exp, best["trial_id"], entries), **_compute(trials)})
    table = pd.DataFrame(rows, columns=cols)
    table.attrs["note"] = note
    return table


def _learned_label(exp, trial_id: str, entries: pd.DataFrame) -> str:
    own = entries[entries["trial_id"] == trial_id]
    if not len(own):
        return "learned"
    n = int(own["donor"].notna().sum())
    return f"{n} exploit{'s' if n != 1 else ''}; last segment from τ = {own['tau'].iloc[-1]:.3g} at step {own['step'].iloc[-1]}, rate {own['anneal_rate'].iloc[-1]:g}"


def _start_label(exp, trial_id: str, entries: pd.DataFrame) -> str:
    start = entries[(entries["trial_id"] == trial_id) & (entries["step"] == 0)]
    if len(start):
        return f"τ₀ = {start['tau'].iloc[0]:g}, rate = {start['anneal_rate'].iloc[0]:g}"
    row = exp.trials[exp.trials["trial_id"] == trial_id].iloc[0]
    return ", ".join(f"{k} = {row[k]}" for k in ("schedule", "tau0", "anneal_rate") if k in row)


def pbt_tables(exp, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The report's PBT tables: pbt_lineage (the entries), pbt_schedules (learned), pbt_references
    (hand-written starting schedules), pbt_comparison."""
    entries = lineage_entries(exp)
    return {
        "pbt_lineage": entries,
        "pbt_schedules": learned_schedules(exp, entries),
        "pbt_references": reference_schedules(exp, entries),
        "pbt_comparison": comparison_table(exp, entries, n_boot=n_boot, alpha=alpha, seed=seed),
    }


# ------------------------------------------------------------------ figure


def learned_schedules_figure(lineages: pd.DataFrame, references: pd.DataFrame | None = None, *, title: str | None = None, ax: Axes | None = None) -> Figure:
    """tau over steps along every PBT trial's lineage (`learned_schedules`); the survivors in
    colour, labelled with their final TV, the others thin grey; the hand-written schedules the
    population started from (`reference_schedules`) faint and dashed; log temperature axis."""
    title = title or "Learned temperature schedules (PBT)"
    if lineages is None or lineages.empty:
        return _empty("no PBT lineages to show", title, ax)
    with _style():
        owned = ax is None
        fig, ax = _canvas(ax, (8.6, 4.6))
        handles = []
        if references is not None and len(references):
            for _, ref in references.groupby(["tau0", "anneal_rate"], dropna=False):
                ax.plot(ref["step"], ref["tau"], color="0.55", lw=1.2, ls="--", alpha=0.6, zorder=1)
            handles.append(Line2D([], [], color="0.55", lw=1.2, ls="--", label="hand-written starting schedules"))
        finals = lineages.groupby("trial_id", sort=False)[["final_tv", "survivor", "exploits"]].first().sort_values("final_tv")
        palette = sns.color_palette("colorblind", max(3, int(finals["survivor"].sum())))
        colour = iter(palette)
        for trial_id, info in finals.iloc[::-1].iterrows():  # the best drawn last, on top
            line = lineages[lineages["trial_id"] == trial_id].sort_values(["step", "segment"], kind="stable")
            if info["survivor"]:
                c = next(colour)
                ax.plot(line["step"], line["tau"], color=c, lw=2.4, zorder=3)
                n = int(info["exploits"])
                handles.insert(0, Line2D([], [], color=c, lw=2.4, label=f"{trial_id}: TV {info['final_tv']:.3f}, {n} exploit{'s' if n != 1 else ''} in lineage"))
            else:
                ax.plot(line["step"], line["tau"], color="0.35", lw=0.9, alpha=0.55, zorder=2)
        handles.append(Line2D([], [], color="0.35", lw=0.9, alpha=0.55, label="other lineages"))
        ax.set_yscale("log")
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(TAU_LABEL)
        _legend(fig, ax, owned, handles, loc="outside right center", fontsize=9, title="survivors (final TV, mean over seeds)")
        if owned:
            _suptitle(fig, title)
        else:
            ax.set_title(title)
    return fig
