"""MSE at equal cost (summarize.with_cost), which estimator wins where (summarize.winners_table,
figures.winners_figure), and the estimator styles that keep 12 estimators apart.

The probe tables are built by hand, so every cell's winner is known: per estimate the least
median MSE wins, at equal cost the least median bias2 + variance x cost, where cost is vocab's
total_cost (f evaluations plus backward passes per sample) under the trial's options and K.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import figures as F
from analysis import summarize as S
from analysis.load import load_experiment
from analysis.report import FIGURES, build_summaries
from study.vocab import ESTIMATOR_NAMES, ESTIMATORS_INFO
from synthetic_record import write_experiment


def _rows(cells: dict, *, seeds: int = 3, source: str = "ladder", categories: int = 10, **extra) -> list[dict]:
    """Probe-mean rows: cells maps (target, tau, estimator) -> (bias2, [variance per seed] or one variance)."""
    rows = []
    for (target, tau, est), (bias2, variance) in cells.items():
        variances = variance if isinstance(variance, list) else [variance] * seeds
        for seed, var in enumerate(variances):
            rows.append(dict(trial_id=f"{target}-{categories}", seed=seed, estimator=est, source=source, tau=tau, target=target,
                             categories=categories, rows=1, bias2=bias2, variance=var, mse=bias2 + var, bias2_floor=var / 100, n=100, **extra))
    return rows


def _table(rows: list[dict]) -> pd.DataFrame:
    """As analysis.load gives probe_means: config columns as categoricals."""
    frame = pd.DataFrame(rows)
    for col in ("estimator", "source", "target", "categories", "unordered_set_k"):
        if col in frame:
            frame[col] = frame[col].astype("category")
    return frame


# ---------------------------------------------------------------- cost


def test_cost_is_vocab_total_cost_with_options_and_k():
    frame = _table([
        dict(estimator="soft", categories=5, unordered_set_k=4, bias2=0.1, variance=1.0),
        dict(estimator="reinforce", categories=5, unordered_set_k=4, bias2=0.0, variance=1.0),
        dict(estimator="rebar", categories=5, unordered_set_k=4, bias2=0.0, variance=1.0),
        dict(estimator="unordered_set", categories=5, unordered_set_k=2, bias2=0.0, variance=1.0),
        dict(estimator="unordered_set", categories=10, unordered_set_k=6, bias2=0.0, variance=0.5),
        dict(estimator="exact", categories=7, unordered_set_k=4, bias2=0.0, variance=0.0),
        dict(estimator="exact", categories=10, unordered_set_k=4, bias2=0.0, variance=0.0),
        dict(estimator="no_such_estimator", categories=5, unordered_set_k=4, bias2=0.0, variance=1.0),
    ])
    out = S.with_cost(frame)
    # soft: 1 f + 1 backward; reinforce: 1 f; rebar: 3 f + 2 backward; unordered_set: k f; exact: K f
    assert out["cost"].tolist()[:7] == [2.0, 1.0, 5.0, 2.0, 6.0, 7.0, 10.0] and np.isnan(out["cost"].iloc[7])
    assert out["cost"].iloc[4] == ESTIMATORS_INFO["unordered_set"].total_cost({"k": 6}, 10)
    assert out["cost"].iloc[6] == ESTIMATORS_INFO["exact"].total_cost(categories=10)
    assert np.allclose(out["mse_cost"].iloc[:7], out["bias2"].iloc[:7] + out["variance"].iloc[:7] * out["cost"].iloc[:7])
    assert out["mse_cost"].tolist()[:5] == [2.1, 1.0, 5.0, 2.0, 3.0] and np.isnan(out["mse_cost"].iloc[7])
    # without the option column the default k = 4; without categories exact's cost is unknown
    bare = S.with_cost(frame.drop(columns=["unordered_set_k", "categories"]))
    assert bare["cost"].iloc[3] == 4.0 and bare["cost"].iloc[0] == 2.0 and np.isnan(bare["cost"].iloc[6])
    assert S.COST_COLUMNS == ("unordered_set_k",)


def test_tradeoff_table_reports_cost_and_mse_at_equal_cost():
    cells = {("t", tau, est): (b2, var) for tau in (0.1, 1.0) for est, b2, var in (("soft", 0.01, 0.2), ("rebar", 0.0, 0.1), ("unordered_set", 0.0, 0.3))}
    trade = S.tradeoff_table(_table(_rows(cells, unordered_set_k=3)), n_boot=50)
    assert {"cost", "mse_cost", "mse_cost_lo", "mse_cost_hi", "mse"} <= set(trade)
    by_est = trade.groupby("estimator")["cost"].first()
    assert by_est.to_dict() == {"soft": 2.0, "rebar": 5.0, "unordered_set": 3.0}
    assert np.allclose(trade["mse_cost"], trade["bias2"] + trade["variance"] * trade["cost"])
    # an estimator of unknown cost keeps its bias2 / variance / mse, with no mse_cost
    odd = S.tradeoff_table(_table(_rows({("t", 1.0, "mystery"): (0.0, 0.1), ("t", 1.0, "soft"): (0.0, 0.1)})), n_boot=50)
    mystery = odd[odd["estimator"] == "mystery"].iloc[0]
    assert mystery["variance"] == pytest.approx(0.1) and np.isnan(mystery["cost"]) and np.isnan(mystery["mse_cost"])


# ---------------------------------------------------------------- winners


def _known_cells() -> dict:
    """Per (target, tau): rebar (cost 5) has the least variance, reinforce (cost 1) three times
    rebar's: rebar wins per estimate, reinforce at equal cost; except at ("b", 1.0), where soft
    (cost 2) has the least MSE both ways. reinforce's variance has one wild seed: a median is
    not moved by it, a mean would be."""
    cells = {}
    for target in ("a", "b"):
        for tau in (0.1, 0.3, 1.0):
            cells[(target, tau, "rebar")] = (0.0, 0.1)  # mse 0.1, at equal cost 0.5
            cells[(target, tau, "reinforce")] = (0.0, [0.3, 0.3, 100.0])  # median mse 0.3, at equal cost 0.3
            cells[(target, tau, "soft")] = (0.01, 0.02) if (target, tau) == ("b", 1.0) else (0.5, 0.5)  # 0.03 / 0.05, or 1.0 / 1.5
    return cells


def test_winners_per_estimate_and_at_equal_cost():
    win = S.winners_table(_table(_rows(_known_cells())))
    assert len(win) == 2 * 2 * 3 and set(win["source"]) == {"ladder"} and list(win["stat"].unique()) == ["mse", "mse_cost"]
    winner = {(r.stat, r.target, r.tau): r.winner for r in win.itertuples()}
    for target in ("a", "b"):
        for tau in (0.1, 0.3, 1.0):
            soft = (target, tau) == ("b", 1.0)
            assert winner[("mse", target, tau)] == ("soft" if soft else "rebar")
            assert winner[("mse_cost", target, tau)] == ("soft" if soft else "reinforce")
    cell = win[(win["stat"] == "mse_cost") & (win["target"] == "a") & (win["tau"] == 0.1)].iloc[0]
    assert cell["value"] == pytest.approx(0.3) and cell["runner_up"] == "rebar" and cell["runner_up_value"] == pytest.approx(0.5)
    assert cell["margin"] == pytest.approx(0.5 / 0.3) and cell["cost"] == 1.0 and cell["n_estimators"] == 3 and cell["n_rows"] == 3
    per_estimate = win[(win["stat"] == "mse") & (win["target"] == "a") & (win["tau"] == 0.3)].iloc[0]
    assert per_estimate["value"] == pytest.approx(0.1) and per_estimate["runner_up"] == "reinforce" and per_estimate["runner_up_value"] == pytest.approx(0.3)


def test_unordered_set_k_decides_the_equal_cost_winner():
    """unordered_set (variance 0.1) against reinforce (variance 0.3, cost 1): at k = 2 its equal-cost
    MSE is 0.2 and it wins; at k = 4 it is 0.4 and reinforce wins; per estimate it always wins."""
    cells = {("t", 1.0, "unordered_set"): (0.0, 0.1), ("t", 1.0, "reinforce"): (0.0, 0.3)}
    for k, equal_cost in ((2, "unordered_set"), (4, "reinforce")):
        win = S.winners_table(_table(_rows(cells, unordered_set_k=k))).set_index("stat")["winner"]
        assert win.to_dict() == {"mse": "unordered_set", "mse_cost": equal_cost}, k


def test_winners_prefer_the_ladder_else_bin_current_taus_and_facet_by_k():
    ladder = _rows(_known_cells())
    current = _rows({("a", 0.09, "soft"): (0.0, 0.001), ("a", 0.11, "soft"): (0.0, 0.001), ("a", 0.1, "rebar"): (0.0, 0.1)}, source="current")
    both = S.winners_table(_table(ladder + current))
    assert set(both["source"]) == {"ladder"} and "soft" not in set(both.loc[both["target"] == "a", "winner"])
    only_current = S.winners_table(_table(current))
    assert set(only_current["source"]) == {"current"} and len(only_current) == 2  # 0.09, 0.1, 0.11 share one bin
    assert set(only_current["winner"]) == {"soft"} and only_current["tau"].iloc[0] == pytest.approx(0.1, rel=0.05)
    two_k = S.winners_table(_table(_rows(_known_cells()) + _rows({("a", 0.1, "soft"): (0.0, 0.01), ("a", 0.1, "rebar"): (0.0, 0.1)}, categories=100)))
    assert set(two_k["categories"]) == {10, 100}
    assert set(two_k.loc[two_k["categories"] == 100, "winner"]) == {"soft"}
    # exact, the reference, is never a winner; an empty table gives an empty frame
    with_exact = S.winners_table(_table(_rows({**_known_cells(), ("a", 0.1, "exact"): (0.0, 0.0)})))
    assert "exact" not in set(with_exact["winner"])
    assert S.winners_table(pd.DataFrame()).empty


def test_winners_figure_colours_cells_by_winner():
    win = S.winners_table(_table(_rows(_known_cells())))
    fig = F.winners_figure(win)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and "per estimate" in panels[0].get_title() and "equal cost" in panels[1].get_title()
    styles = F._estimator_styles(["soft", "rebar", "reinforce"])
    for panel, stat in zip(panels, ("mse", "mse_cost")):
        image = panel.images[0]
        rgba = image.cmap(image.norm(image.get_array()))  # [tau, target, 4]; tau rising, targets sorted
        part = win[win["stat"] == stat]
        for r in part.itertuples():
            i, j = [0.1, 0.3, 1.0].index(r.tau), ["a", "b"].index(r.target)
            assert np.allclose(rgba[i, j, :3], styles[r.winner][0]), (stat, r.target, r.tau)
        texts = " ".join(t.get_text() for t in panel.texts)
        assert ("REBAR" if stat == "mse" else "REINFORCE") in texts and "soft" in texts and "×" in texts
        assert "τ" in panels[0].get_ylabel() and panel.get_xlabel() == "target"
    assert fig.legends and {t.get_text() for t in fig.legends[0].get_texts()} == {"soft", "REBAR", "REINFORCE"}
    # two values of K: a row of panels each; with `ax`, one panel on the caller's Axes
    two_k = S.winners_table(_table(_rows(_known_cells()) + _rows(_known_cells(), categories=100)))
    assert len([ax for ax in F.winners_figure(two_k).axes if ax.images]) == 4
    mine = Figure()
    ax = mine.add_subplot()
    assert F.winners_figure(win, ax=ax) is mine and ax.images
    assert isinstance(F.winners_figure(win.iloc[0:0]), Figure)


def test_twelve_estimators_get_distinct_colours_and_markers():
    styles = F._estimator_styles(list(ESTIMATOR_NAMES))
    assert len(styles) == len(ESTIMATOR_NAMES) >= 12
    colours = {tuple(np.round(c, 3)) for c, _ in styles.values()}
    markers = {m for _, m in styles.values()}
    assert len(colours) == len(styles) and len(markers) == len(styles)
    assert [styles[e][1] for e in ESTIMATOR_NAMES] == [ESTIMATORS_INFO[e].marker for e in ESTIMATOR_NAMES]
    # fixed by vocab order: a subset keeps each estimator's style
    assert F._estimator_styles(["relax", "soft"]) == {"soft": styles["soft"], "relax": styles["relax"]}


def test_report_summaries_with_every_estimator(tmp_path):
    """A run probing every estimator with unordered_set_k = 3: probe_means carries the option, the
    tradeoff reports its cost, the winners table and figure g cover every cell."""
    estimators = [e for e in ESTIMATOR_NAMES if e != "exact"]
    grid = {"relaxation": ["soft", "hard"], "target": ["zipf:s=1.2", "bimodal"]}
    root = write_experiment(tmp_path / "exp", grid=grid, seeds=2, steps=40, eval_every=20, probe_taus=[0.1, 1.0], probe_estimators=estimators, unordered_set_k=3, categories=6)
    exp = load_experiment(root)
    assert "unordered_set_k" in exp.probe_means and "unordered_set_k" not in exp.evals
    tables = build_summaries(exp, n_boot=50)
    trade = tables["tradeoff"]
    assert set(trade["estimator"]) == set(estimators)
    assert trade.loc[trade["estimator"] == "unordered_set", "cost"].eq(3.0).all() and trade.loc[trade["estimator"] == "rebar", "cost"].eq(5.0).all()
    win = tables["winners"]
    assert len(win) == 2 * 2 * 2 and set(win["source"]) == {"ladder"} and set(win["winner"]) <= set(estimators)
    fig = F.winners_figure(win)
    assert len([ax for ax in fig.axes if ax.images]) == 2
    spec = next(f for f in FIGURES if f.name == "winners")
    assert "equal cost" in spec.caption and "bias2_floor" in spec.caption


def test_winners_rank_by_error_relative_to_the_exact_gradient_when_known():
    """With rel_bias2 / rel_variance (bias2 and variance over ||exact||^2 at each probe point, as
    probe_means gives them) the winner is the least median relative MSE: here soft has the smaller
    absolute MSE (its probe points happen to have small gradients) and hard the smaller error for
    the gradient at hand. Without them, the absolute MSE ranks, as before."""
    cells = {("zipf", 1.0, "soft"): (0.0, 1e-3), ("zipf", 1.0, "hard"): (0.0, 2e-3)}
    absolute = _table(_rows(cells))
    relative = absolute.assign(rel_bias2=0.0, rel_variance=np.where(absolute["estimator"] == "soft", 0.5, 0.1))
    by_abs = S.winners_table(absolute)
    by_rel = S.winners_table(relative)
    assert set(by_abs["stat"]) == {"mse", "mse_cost"} and set(by_abs["winner"]) == {"soft"}
    assert set(by_rel["stat"]) == {"rel_mse", "rel_mse_cost"} and set(by_rel["winner"]) == {"hard"}
    assert by_rel.loc[by_rel["stat"] == "rel_mse", "margin"].item() == pytest.approx(5.0)
