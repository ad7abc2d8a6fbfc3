"""Analysis of run directories: tidy tables, summaries with bootstrap CIs, figures, the report.

Reads what `gumbel-study run` and `gumbel-study train` wrote (local paths or cloud URIs); never
trains, and imports neither torch nor ray at import time. See analysis/load.py for the table
shapes and analysis/record.py for the files read.
"""

from analysis.figures import (
    final_fit_heatmaps,
    learning_curves_figure,
    probability_error_figure,
    schedule_figure,
    tau_sweep_figure,
    tradeoff_figure,
)
from analysis.load import (
    Experiment,
    RunDirError,
    load_experiment,
    load_runs,
    save_parquet,
    target_probs,
)
from analysis.report import (
    build_summaries,
    write_report,
)
from analysis.summarize import (
    best_configs,
    bootstrap_ci,
    failures,
    final_fit_table,
    grouped_ci,
    learning_curves,
    pareto_front,
    pareto_mask,
    probability_errors,
    probe_means,
    schedule_curves,
    tradeoff_table,
)

__all__ = [
    "Experiment",
    "RunDirError",
    "best_configs",
    "bootstrap_ci",
    "build_summaries",
    "failures",
    "final_fit_heatmaps",
    "final_fit_table",
    "grouped_ci",
    "learning_curves",
    "learning_curves_figure",
    "load_experiment",
    "load_runs",
    "pareto_front",
    "pareto_mask",
    "probability_error_figure",
    "probability_errors",
    "probe_means",
    "save_parquet",
    "schedule_curves",
    "schedule_figure",
    "target_probs",
    "tau_sweep_figure",
    "tradeoff_figure",
    "tradeoff_table",
    "write_report",
]
