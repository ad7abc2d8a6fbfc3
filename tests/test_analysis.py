"""analysis/: load -> summaries -> figures -> report, on a real smoke study and on synthetic data.

The real study comes from the session fixture `smoke_run` (tests/conftest.py). Synthetic run
directories (tests/synthetic_record.py) hold the trial record as study.record writes it (params.json,
record/evals-*.parquet, probes-*.parquet, host-*.json) plus a minimal experiment_state and run.json,
so that partial, errored, missing, multi-run and many-trial directories are cheap to build. The
report command runs as users run it, `gumbel-study report` (python -m study.cli), which finds
analysis.command through its entry point.
Statistical tests use fixed generators and state their level.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.figure import Figure

from analysis import figures as F
from analysis import summarize as S
from analysis.load import RunDirError, load_experiment, load_runs, run_names, save_parquet
from analysis.report import build_summaries, write_report
from study.vocab import PROBE_STATS
from synthetic_record import ESTIMATORS, set_status, trial_dir, write_experiment, write_train_dir

REPO = Path(__file__).resolve().parents[1]
FIGURE_NAMES = ["tradeoff", "tau_sweep", "final_fit_heatmaps", "learning_curves", "probability_errors", "schedules", "winners"]
QUICK = dict(progress=False, n_boot=200, dpi=40, pdf=False)


def report_cli(*args: str) -> subprocess.CompletedProcess:
    """`gumbel-study report ARGS`: study.cli finds analysis.command through its entry point."""
    return subprocess.run([sys.executable, "-m", "study.cli", "report", *args], capture_output=True, text=True, timeout=600, cwd=REPO)


# ---------------------------------------------------------------- the real smoke study


@pytest.fixture(scope="module")
def smoke(smoke_run, tmp_path_factory):
    """Everything computed once from the smoke study: tables, summaries, and the report."""
    exp = load_experiment(smoke_run)
    tables = build_summaries(exp, n_boot=500)
    out = tmp_path_factory.mktemp("smoke-report") / "report"
    proc = report_cli(str(smoke_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return {"exp": exp, "tables": tables, "report": out, "stdout": proc.stdout, "progress": proc.stderr.splitlines()}


def test_load_smoke_tables(smoke, smoke_run):
    exp = smoke["exp"]
    trials, evals, means, probes = exp.trials, exp.evals, exp.probe_means, exp.probes
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"} and trials["error"].isna().all()
    assert {"trial_id", "run", "trial_dir", "tau0", "relaxation", "anneal_rate", "target", "categories", "steps", "seeds", "n_evals", "last_step", "final/fit/tv", "host", "device"} <= set(trials)
    assert (trials["n_evals"] == 4).all() and (trials["last_step"] == 60).all() and trials["complete"].all() and (trials["bad_files"] == 0).all()
    assert set(zip(trials["relaxation"], trials["tau0"])) == {("soft", 0.5), ("soft", 2.0), ("hard", 0.5), ("hard", 2.0)}
    assert set(trials["run"]) == {"smoke"} and trials["device"].eq("cpu").all()
    # 4 trials x 2 seeds x 4 evaluation steps, one row each
    assert len(evals) == 32 and not evals.duplicated(["trial_id", "seed", "step"]).any()
    assert sorted(evals["step"].unique()) == [0, 20, 40, 60] and sorted(evals["seed"].unique()) == [0, 1]
    for col in ("run", "tau", "time_s", "fit/tv", "fit/js", "fit/kl", "loss/d", "sample/vertex_gap", "tau0", "anneal_rate", "schedule", "relaxation", "target", "categories"):
        assert col in evals, col
    assert evals["fit/probs"].map(len).eq(5).all() and np.allclose(evals["fit/probs"].map(sum), 1.0, atol=1e-5)
    # the trial-level means Tune received equal the per-seed record's
    tune_last = {json.loads(line)["trial_id"]: json.loads(line) for d in smoke_run.glob("trainable_*") for line in (d / "result.json").read_text().splitlines()}
    last = evals[evals["step"] == 60].groupby("trial_id", observed=True)["fit/tv"].mean()
    assert all(last[tid] == pytest.approx(tune_last[tid]["fit/tv"]) for tid in last.index)
    assert np.allclose(last.sort_index().to_numpy(), trials.set_index("trial_id")["final/fit/tv"].sort_index().to_numpy())
    # probes: every estimator at the current tau and at the ladder tau 0.5, every step
    assert len(probes) == 32 * len(ESTIMATORS) * 2 and set(probes["estimator"]) == set(ESTIMATORS) and set(probes["source"]) == {"current", "ladder"}
    assert set(PROBE_STATS) <= set(probes) and {"trial_id", "run", "seed", "step", "tau0", "relaxation"} <= set(probes)
    assert (probes["bias2"] >= 0).all() and (probes["variance"] > 0).all()
    assert np.allclose(probes["mse"], probes["bias2"] + probes["variance"], rtol=1e-5)
    # probe_means: the ladder rows of the 4 steps averaged; the current tau anneals, one row per step
    ladder = means[means["source"] == "ladder"]
    assert len(ladder) == 4 * 2 * len(ESTIMATORS) and (ladder["rows"] == 4).all() and set(ladder["tau"]) == {0.5}
    assert means["rows"].sum() == len(probes) == exp.meta["n_probes"]
    assert exp.meta["grid"] == {"relaxation": ["hard", "soft"], "tau0": [0.5, 2.0]} and exp.meta["seeds_per_trial"] == 2
    assert len(exp.sessions) == 1 and "run" in exp.sessions["argv"].iloc[0] and exp.sessions["spec_text"].iloc[0].startswith("# Seconds")
    assert len(exp.hosts) == 4 and set(exp.hosts["from_step"]) == {0}


def test_smoke_summaries(smoke):
    t = smoke["tables"]
    trade = t["tradeoff"]
    assert list(trade["estimator"]) == list(ESTIMATORS)  # one ladder tau, display order
    assert {"tau", "bias2", "bias2_lo", "bias2_hi", "variance", "variance_lo", "variance_hi", "mse", "bias2_floor", "pareto", "n_probes", "cost", "mse_cost"} <= set(trade)
    assert np.allclose(trade["mse_cost"], trade["bias2"] + trade["variance"] * trade["cost"])  # one cost per estimator here
    win = t["winners"]  # one ladder tau, one target, K = 5: one cell per statistic
    assert list(win["stat"]) == ["rel_mse", "rel_mse_cost"] and set(win["winner"]) <= set(ESTIMATORS) and (win["source"] == "ladder").all()
    assert ((trade["bias2_lo"] <= trade["bias2"]) & (trade["bias2"] <= trade["bias2_hi"])).all() and trade["pareto"].any()
    assert (trade["n_probes"] == 32).all() and (trade["n_seeds"] == 8).all()
    final = t["final_fit"]
    assert len(final) == 4 and (final["n_seeds"] == 2).all() and (final["n_trials"] == 1).all()
    best = t["best_configs"]
    assert len(best) == 1 and best["fit/tv"].iloc[0] == final["fit/tv"].min()
    assert t["failures"].empty and len(t["learning_curves"]) == 4 * 4
    errors = t["probability_errors"]
    assert set(errors["category"]) == set(range(5)) and errors["error"].notna().all()


def test_smoke_figures_have_labelled_axes(smoke):
    t, exp = smoke["tables"], smoke["exp"]
    figs = [
        F.tradeoff_figure(t["tradeoff"]),
        F.tau_sweep_figure(t["tradeoff"]),
        F.final_fit_heatmaps(t["final_fit"]),
        F.learning_curves_figure(t["learning_curves"]),
        F.probability_error_figure(t["probability_errors"]),
        F.schedule_figure(t["schedules"], exp.evals),
        F.winners_figure(t["winners"]),
    ]
    for fig in figs:
        visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
        assert isinstance(fig, Figure) and visible
        assert any(ax.get_xlabel() for ax in visible) and any(ax.get_ylabel() for ax in visible)
    a = figs[0].axes[0]
    assert a.get_xscale() == "log" and a.get_yscale() == "log" and "variance" in a.get_xlabel() and "bias" in a.get_ylabel()
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in figs[1].axes[:3])
    assert "step" in figs[3].axes[0].get_xlabel()


def test_figures_draw_on_a_given_axes(smoke):
    """Every builder draws onto the caller's Axes (one panel) and returns the caller's figure."""
    t, exp = smoke["tables"], smoke["exp"]
    fig = Figure(figsize=(20, 8))
    axes = fig.subplots(2, 4).ravel()
    calls = [
        lambda ax: F.tradeoff_figure(t["tradeoff"], ax=ax),
        lambda ax: F.tau_sweep_figure(t["tradeoff"], stats=["variance"], ax=ax),
        lambda ax: F.final_fit_heatmaps(t["final_fit"], ax=ax),
        lambda ax: F.learning_curves_figure(t["learning_curves"], ax=ax),
        lambda ax: F.probability_error_figure(t["probability_errors"], ax=ax),
        lambda ax: F.schedule_figure(t["schedules"], exp.evals, ax=ax),
        lambda ax: F.winners_figure(t["winners"], ax=ax),
    ]
    for ax, call in zip(axes, calls):
        assert call(ax) is fig
        assert ax.has_data() or ax.collections or ax.images, call
    assert axes[1].get_yscale() == "log" and "variance" in axes[1].get_ylabel()
    fig.savefig(Path(smoke["report"]) / "composed.png", dpi=40)


def test_smoke_report_files(smoke):
    out = smoke["report"]
    html = (out / "index.html").read_text()
    for name in FIGURE_NAMES:
        for ext in ("png", "pdf"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert f'id="fig-{name}"' in html
    assert (out / "figures" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figures" / "tradeoff.pdf").read_bytes()[:5] == b"%PDF-"
    for name in ("trials", "sessions", "hosts", "hosts_summary", "tradeoff", "winners", "pareto_front", "final_fit", "best_configs", "failures", "learning_curves", "probability_errors"):
        assert (out / "tables" / f"{name}.csv").exists(), name
    for name in ("trials", "evals", "probe_means", "sessions", "hosts"):
        assert len(pd.read_parquet(out / "data" / f"{name}.parquet")) > 0, name
    assert html.count("data:image/png;base64,") == len(FIGURE_NAMES)
    assert "http://" not in html and "https://" not in html and "<link" not in html  # offline
    for phrase in ("bias²", "noise floor", "straight-through", "Gumbel-Rao", "REINFORCE", "TERMINATED", "img-check", "Provenance", "Hosts and devices"):
        assert phrase in html, phrase
    # the Run section: the spec as run, the command line, revision, versions
    assert '<pre class="spec"># Seconds: the end-to-end check the tests run.' in html
    assert "experiments/smoke.toml --storage" in html and "--num-cpus 2" in html and "Ray 2.60.0" in html and "Python 3." in html
    assert smoke["stdout"].strip() == f"report: {out / 'index.html'}"
    figure_lines = [ln for ln in smoke["progress"] if ln.startswith("figure ")]
    assert [ln.split(":")[0] for ln in figure_lines] == [f"figure {i}/{len(FIGURE_NAMES)}" for i in range(1, len(FIGURE_NAMES) + 1)]
    assert smoke["progress"][0].startswith("loading 4 trial directories") and smoke["progress"][-1].startswith("wrote ")


# ---------------------------------------------------------------- import hygiene and code shape


def _imports_torch(modules: str) -> list[str]:
    code = f"import sys, {modules}; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.replace("'", '"'))


def test_analysis_imports_neither_torch_nor_ray():
    loaded = _imports_torch("analysis.load, analysis.summarize, analysis.figures, analysis.report, analysis.command")
    assert loaded == []
    assert _imports_torch("study.vocab") == []  # study/__init__.py re-exports lazily


def test_analysis_functions_stay_small():
    """No function over 80 lines, no class over 250, write_report and load_experiment / load_runs
    at 60 or fewer (the project's hook measures the same way, with ast)."""
    limits = {"write_report": 60, "load_experiment": 60, "load_runs": 60}
    for path in sorted((REPO / "analysis").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                size = node.end_lineno - node.lineno + 1
                limit = 250 if isinstance(node, ast.ClassDef) else limits.get(node.name, 80)
                assert size <= limit, f"{path.name}: {node.name} is {size} lines (limit {limit})"


def test_add_command_registers_report():
    import argparse

    from analysis.command import add_command, report_command

    parser = argparse.ArgumentParser(prog="gumbel-study")
    add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "a", "b", "--out", "x"])
    assert args.run_dirs == ["a", "b"] and args.out == "x" and args.func is report_command


# ---------------------------------------------------------------- statistics on synthetic data


def test_bootstrap_ci_coverage():
    """95% percentile-bootstrap intervals of a normal mean cover it at close to the nominal rate.

    400 datasets of n = 20 from N(1, 1), n_boot = 1000, fixed generators. The percentile bootstrap
    of a mean under-covers slightly at n = 20 (about 93-94%); 400 replications give a binomial
    standard error of 1.2 points, so we accept 0.90-0.985 (the 99% z-band around 0.94, widened
    up to the nominal level).
    """
    rng = np.random.default_rng(12345)
    covered = 0
    reps = 400
    for i in range(reps):
        x = rng.normal(1.0, 1.0, size=20)
        est, lo, hi = S.bootstrap_ci(x, n_boot=1000, alpha=0.05, seed=i)
        assert lo <= est <= hi
        covered += lo <= 1.0 <= hi
    assert 0.90 <= covered / reps <= 0.985, covered / reps


def test_grouped_ci_coverage_matches_bootstrap_ci():
    """grouped_ci (every group of one size resampled with the same counts, as a matrix product)
    covers like bootstrap_ci: the 400 datasets of test_bootstrap_ci_coverage in one call, the same
    band, and within 3 points of bootstrap_ci's own coverage of them (the two differ only in their
    resamples: n_boot = 1000 puts each bound's Monte Carlo error at a few percent of its width)."""
    rng = np.random.default_rng(12345)
    x = np.stack([rng.normal(1.0, 1.0, size=20) for _ in range(400)])  # [400, 20]
    df = pd.DataFrame({"g": np.repeat(np.arange(400), 20), "trial_id": "t", "seed": np.tile(np.arange(20), 400), "v": x.ravel()})
    out = S.grouped_ci(df, ["g"], "v", n_boot=1000)
    assert ((out["v_lo"] <= out["v"]) & (out["v"] <= out["v_hi"])).all() and np.allclose(out["v"], x.mean(axis=1))
    covered = ((out["v_lo"] <= 1.0) & (1.0 <= out["v_hi"])).mean()
    reference = np.mean([lo <= 1.0 <= hi for _, lo, hi in (S.bootstrap_ci(row, n_boot=1000, seed=i) for i, row in enumerate(x))])
    assert 0.90 <= covered <= 0.985 and abs(covered - reference) <= 0.03, (covered, reference)


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(v) for v in S.bootstrap_ci([]))
    est, lo, hi = S.bootstrap_ci([3.0])
    assert est == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert S.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert S.bootstrap_ci([1.0, np.nan, 3.0, np.inf])[0] == 2.0  # non-finite values drop out
    assert S.bootstrap_ci([1.0, 2.0, 5.0], seed=7) == S.bootstrap_ci([1.0, 2.0, 5.0], seed=7)  # reproducible
    with pytest.raises(ValueError, match="alpha"):
        S.bootstrap_ci([1.0, 2.0], alpha=1.5)


def test_grouped_ci_replicas_weights_and_values():
    df = pd.DataFrame({"g": ["a"] * 6 + ["b"] * 3, "trial_id": ["t"] * 9, "seed": [0, 0, 1, 1, 2, 2, 0, 1, 2],
                       "v": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0, 1.0, 1.0, 1.0], "rows": [1, 3, 1, 1, 1, 1, 1, 1, 1]})
    out = S.grouped_ci(df, ["g"], "v", n_boot=500).set_index("g")
    # replicas averaged first: seed means 2, 2, 6 -> mean 10/3
    assert out.loc["a", "n_seeds"] == 3 and out.loc["a", "v"] == pytest.approx(10 / 3)
    assert 2.0 <= out.loc["a", "v_lo"] <= out.loc["a", "v"] <= out.loc["a", "v_hi"] <= 6.0
    assert out.loc["b", ["v", "v_lo", "v_hi"]].tolist() == [1.0, 1.0, 1.0]
    # weighted: seed 0 of group a is (1 * 1 + 3 * 3) / 4 = 2.5
    assert S.grouped_ci(df, ["g"], "v", weight="rows", n_boot=500).set_index("g").loc["a", "v"] == pytest.approx((2.5 + 2 + 6) / 3)
    # several values at once give each value's own interval
    both = S.grouped_ci(df.assign(w=2 * df["v"]), ["g"], ["v", "w"], n_boot=500).set_index("g")
    assert both.loc["a", "w_hi"] == pytest.approx(2 * both.loc["a", "v_hi"]) and both.loc["a", "v_lo"] == out.loc["a", "v_lo"]


def test_grouped_ci_does_not_depend_on_other_groups_or_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": np.repeat(["a", "b", "c"], [30, 30, 7]), "trial_id": "t", "seed": np.r_[np.arange(30), np.arange(30), np.arange(7)], "v": rng.normal(size=67)})
    whole = S.grouped_ci(df, ["g"], "v", n_boot=700).set_index("g")
    alone = S.grouped_ci(df[df["g"] == "a"], ["g"], "v", n_boot=700).set_index("g")
    pd.testing.assert_series_equal(whole.loc["a"], alone.loc["a"])
    monkeypatch.setattr(S, "_MAX_CELLS", 50)  # tiny blocks of counts and of bootstrap means
    pd.testing.assert_frame_equal(S.grouped_ci(df, ["g"], "v", n_boot=700).set_index("g"), whole)


def test_pareto_front_hand_made():
    points = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "bias2": [1.0, 2.0, 3.0, 2.5, 1.0, 4.0, 2.0, np.nan],
            "variance": [5.0, 3.0, 1.0, 3.5, 6.0, 1.0, 3.0, 0.1],
        }
    )
    # a, b, c are the front; g duplicates b; d is dominated by b; e by a (same bias2, more
    # variance); f by c (same variance, more bias2); h has a NaN.
    mask = S.pareto_mask(points["bias2"], points["variance"])
    assert points.loc[mask, "name"].tolist() == ["a", "b", "c", "g"]
    front = S.pareto_front(points)
    assert front["name"].tolist()[0] == "a" and front["name"].tolist()[-1] == "c"
    assert not S.pareto_mask([], []).size


def test_tau_bins_keep_ladder_values():
    ids, rep = S.tau_bins(pd.Series([0.1, 0.1, 0.5, 0.5, 2.0, 1.9]))
    assert rep[0] == pytest.approx(0.1) and rep[2] == pytest.approx(0.5)
    assert ids[4] == ids[5] and rep[4] == pytest.approx(math.sqrt(2.0 * 1.9))


def test_schedule_curves_follow_vocab_formulas():
    trials = pd.DataFrame({"schedule": ["exponential", "stepwise", "constant", "linear"], "tau0": [2.0, 1.0, 0.5, 1.0], "anneal_rate": [1e-2, 1e-2, 0.0, 1e-3],
                           "tau_min": [0.1, 0.2, 0.1, 0.3], "anneal_interval": [1, 50, 1, 1], "steps": [300, 300, 300, 300]})
    curves = S.schedule_curves(trials).set_index(["schedule", "step"])["tau"]
    assert curves[("exponential", 0)] == 2.0 and curves[("exponential", 300)] == pytest.approx(max(0.1, 2.0 * math.exp(-3.0)))
    assert curves[("stepwise", 49)] == 1.0 and curves[("stepwise", 50)] == pytest.approx(math.exp(-0.5))  # every step: the jumps show
    assert (curves["constant"] == 0.5).all() and curves[("linear", 300)] == pytest.approx(0.7)
    relgan = S.schedule_curves(trials.assign(schedule="relgan_exp", anneal_interval=100))
    assert set(relgan["schedule"]) == {"relgan_exp"} and np.isfinite(relgan["tau"]).all()
    assert relgan.groupby("tau0")["tau"].first().to_dict() == {0.5: 0.5, 1.0: 1.0, 2.0: 2.0}  # beta(0) = 1


# ---------------------------------------------------------------- the record on synthetic runs


def test_probe_means_equal_the_reduction_of_every_probe_row(tmp_path):
    """The loader's probe_means (reduced in Arrow while reading) equal summarize.probe_means of
    the full probes table, and the tradeoff table is the same from either."""
    root = write_experiment(tmp_path / "exp", grid={"relaxation": ["soft", "hard"], "tau0": [0.5, 2.0]}, seeds=3, probe_taus=[0.1, 1.0])
    exp = load_experiment(root)
    keys = ["trial_id", "seed", "estimator", "source", "tau"]
    ours = exp.probe_means.astype({"trial_id": str, "estimator": str, "source": str}).sort_values(keys).reset_index(drop=True)
    theirs = S.probe_means(exp.probes).astype({"trial_id": str, "estimator": str, "source": str}).sort_values(keys).reset_index(drop=True)
    assert len(ours) == len(theirs) == 4 * 3 * len(ESTIMATORS) * (4 + 2)  # 4 current taus (annealing) + 2 ladder taus
    pd.testing.assert_frame_equal(ours[[*keys, "rows", "first_step", "last_step"]], theirs[[*keys, "rows", "first_step", "last_step"]], check_dtype=False)
    assert np.allclose(ours[list(PROBE_STATS)].to_numpy(float), theirs[list(PROBE_STATS)].to_numpy(float), rtol=1e-6)
    relative = ["rel_bias2", "rel_variance"]  # per probe point: bias2 and variance / ||exact||^2 = x rel_rmse^2 / mse
    assert np.allclose(ours[relative].to_numpy(float), theirs[relative].to_numpy(float), rtol=1e-6, equal_nan=True)
    rows = exp.probes
    scale = rows["rel_rmse"].astype(float) ** 2 / rows["mse"].astype(float)
    one = rows.assign(rb=rows["bias2"].astype(float) * scale).groupby(keys, observed=True)["rb"].mean().reset_index()
    merged = theirs.astype({"tau": float}).merge(one.astype({"trial_id": str, "estimator": str, "source": str, "tau": float}), on=keys)
    assert np.allclose(merged["rel_bias2"], merged["rb"], rtol=1e-9, equal_nan=True)
    for source in ("ladder", "current"):
        pd.testing.assert_frame_equal(S.tradeoff_table(exp.probe_means, source=source, n_boot=300), S.tradeoff_table(exp.probes, source=source, n_boot=300), rtol=1e-6)


def _rewrite(path: Path, **changes) -> None:
    table = pq.read_table(path)
    for name, value in changes.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array(np.full(table.num_rows, value), table.schema.field(i).type))
    pq.write_table(table, path)


def test_a_rewritten_step_counts_once(tmp_path):
    """A restored trial rewrites the files of the steps it evaluates again: the loader reads each
    step once, with the new values, and never reads a half-written temporary file."""
    root = write_experiment(tmp_path / "exp", grid={"tau0": [0.5]}, seeds=2)
    record = trial_dir(root, 0) / "record"
    _rewrite(record / "evals-000000040.parquet", **{"fit/tv": 0.123})
    _rewrite(record / "probes-000000040.parquet", bias2=0.5)
    shutil.copy(record / "evals-000000040.parquet", record / ".evals-000000060.parquet.999.tmp")  # a kill mid-write
    (record / "probes-000000060.parquet.999.tmp").write_bytes(b"half a file")
    exp = load_experiment(root)
    assert len(exp.evals) == 2 * 4 and not exp.evals.duplicated(["trial_id", "seed", "step"]).any()
    assert (exp.evals.loc[exp.evals["step"] == 40, "fit/tv"] == 0.123).all()
    assert len(exp.probes) == 4 * 2 * len(ESTIMATORS) * 2 and exp.meta["n_probes"] == len(exp.probes)
    assert (exp.probes.loc[exp.probes["step"] == 40, "bias2"] == 0.5).all()
    ladder = exp.probe_means[exp.probe_means["source"] == "ladder"]
    assert (ladder["rows"] == 4).all() and not exp.meta["warnings"]


def test_partial_errored_and_missing_trials(tmp_path):
    root = write_experiment(tmp_path / "exp", grid={"relaxation": ["soft", "hard"], "tau0": [0.5, 1.0, 2.0]})
    # trial 1: errored before its first evaluation (params.json only), with Tune's error.txt
    shutil.rmtree(trial_dir(root, 1) / "record")
    set_status(root, "abcde_00001", "ERROR", error_file="error.txt", failures=3)
    (trial_dir(root, 1) / "error.txt").write_text("Failure # 1 (occurred at 2026-01-01)\nTraceback (most recent call last):\n  ...\nstudy.train.TrialDiverged: seeds [1] diverged\n")
    # trial 2: still running, two evaluations so far, one of them a corrupt file
    for step in (40, 60):
        for kind in ("evals", "probes"):
            (trial_dir(root, 2) / "record" / f"{kind}-{step:09d}.parquet").unlink()
    (trial_dir(root, 2) / "record" / "probes-000000020.parquet").write_bytes(b"PAR1 not parquet")
    set_status(root, "abcde_00002", "RUNNING")
    # trial 3: listed by Tune but never started (no directory)
    shutil.rmtree(trial_dir(root, 3))
    set_status(root, "abcde_00003", "PENDING")
    (root / "report" / "data").mkdir(parents=True)  # a report directory is no trial

    exp = load_experiment(root)
    t = exp.trials.set_index("trial_id")
    assert len(t) == 6
    assert t.loc["abcde_00001", "status"] == "ERROR" and "diverged" in t.loc["abcde_00001", "error"]
    assert t.loc["abcde_00001", "n_evals"] == 0 and t.loc["abcde_00001", "num_failures"] == 3
    assert t.loc["abcde_00002", "status"] == "RUNNING" and t.loc["abcde_00002", "n_evals"] == 2 and t.loc["abcde_00002", "last_step"] == 20
    assert t.loc["abcde_00002", "bad_files"] == 1 and not t.loc["abcde_00002", "complete"]
    assert any("unreadable record file" in w for w in exp.meta["warnings"])
    assert t.loc["abcde_00003", "status"] == "PENDING" and pd.isna(t.loc["abcde_00003", "trial_dir"]) and t.loc["abcde_00003", "relaxation"] == "hard"
    assert set(exp.evals["trial_id"].astype(str)) == {"abcde_00000", "abcde_00002", "abcde_00004", "abcde_00005"}

    fail = S.failures(exp.trials, axes=["relaxation", "tau0"]).set_index("trial_id")
    assert fail["problem"].to_dict() == {"abcde_00001": "error", "abcde_00002": "incomplete", "abcde_00003": "missing"}
    assert len(S.final_fit_table(exp.evals, by=["relaxation", "tau0"])) == 3  # the incomplete trial's early fit is left out
    html = (write_report(root, tmp_path / "report", **QUICK) / "index.html").read_text()
    assert "diverged" in html and "PENDING" in html and "incomplete" in html and "unreadable record file" in html


def test_diverged_probe_rows_leave_probe_means(tmp_path):
    root = write_experiment(tmp_path / "exp", grid={"tau0": [0.5]}, seeds=2)
    _rewrite(trial_dir(root, 0) / "record" / "probes-000000060.parquet", variance=float("nan"))
    exp = load_experiment(root)
    assert len(exp.probes) == 4 * 2 * len(ESTIMATORS) * 2 and exp.probes["variance"].isna().sum() == 2 * len(ESTIMATORS) * 2
    assert exp.probe_means["last_step"].max() == 40 and np.isfinite(exp.probe_means["variance"]).all()
    assert any("non-finite" in w for w in exp.meta["warnings"])


def test_no_experiment_state(tmp_path):
    root = write_experiment(tmp_path / "exp", state=False)
    for path in (trial_dir(root, 0) / "record").glob("*-000000060.parquet"):
        path.unlink()
    exp = load_experiment(root)
    status = exp.trials.set_index("trial_id")["status"]
    assert status["abcde_00000"] == "UNKNOWN" and (status.drop("abcde_00000") == "TERMINATED").all()
    assert any("experiment_state" in w for w in exp.meta["warnings"])
    assert exp.meta["grid"] == {"relaxation": ["hard", "soft"], "tau0": [0.5, 2.0]}


def test_uri_and_bad_directories(tmp_path):
    root = write_experiment(tmp_path / "exp")
    local = load_experiment(root)
    via_uri = load_experiment(root.resolve().as_uri())  # file:// goes through pyarrow.fs like s3:// or gs://
    pd.testing.assert_frame_equal(local.evals.drop(columns="fit/probs"), via_uri.evals.drop(columns="fit/probs"))
    pd.testing.assert_frame_equal(local.probe_means, via_uri.probe_means)
    (tmp_path / "empty").mkdir()
    for path, cause in ((tmp_path / "empty", "holds no trial"), (tmp_path / "nowhere", "no such directory"), (root / "run.json", "not a directory")):
        with pytest.raises(RunDirError, match=cause) as err:
            load_experiment(path)
        assert str(err.value).startswith(f"RUN_DIR='{path}': ") and "\n" not in str(err.value)
    with pytest.raises(RunDirError, match=r"holds runs: exp \(pass those\)"):
        load_experiment(tmp_path)  # a storage root: the runs are one level down


def test_save_parquet_round_trip(tmp_path):
    exp = load_experiment(write_experiment(tmp_path / "exp"))
    paths = save_parquet(exp, tmp_path / "pq")
    assert set(paths) == {"trials", "evals", "probe_means", "sessions", "hosts", "meta"}
    evals = pd.read_parquet(paths["evals"])
    assert list(evals.columns) == list(exp.evals.columns) and len(evals) == len(exp.evals)
    assert list(evals["fit/probs"].iloc[0]) == pytest.approx(exp.evals["fit/probs"].iloc[0])
    assert len(pd.read_parquet(paths["probe_means"])) == len(exp.probe_means)
    assert json.loads(paths["meta"].read_text())["n_trials"] == 4
    assert len(pd.read_parquet(save_parquet(exp, tmp_path / "all", probes=True)["probes"])) == len(exp.probes)


def test_larger_grid_figures(tmp_path):
    """The quick study's shape (4 tau0 x 2 rates x 2 relaxations x 2 targets, 4 ladder taus)."""
    grid = {"tau0": [0.1, 0.3, 1.0, 3.0], "anneal_rate": [0.0, 2e-3], "relaxation": ["soft", "hard"], "target": ["zipf:s=1.2", "bimodal"]}
    root = write_experiment(tmp_path / "exp", grid=grid, seeds=3, steps=300, eval_every=100, probe_taus=[0.1, 0.3, 1.0, 3.0], categories=10)
    exp = load_experiment(root)
    assert len(exp.trials) == 32 and exp.meta["ladder_taus"] == [0.1, 0.3, 1.0, 3.0]
    tables = build_summaries(exp, n_boot=200)
    final = tables["final_fit"]
    assert len(final) == 32 and set(tables["best_configs"]["target"]) == {"zipf:s=1.2", "bimodal"}
    heat = F.final_fit_heatmaps(final)
    assert len([ax for ax in heat.axes if ax.get_label() != "<colorbar>"]) == 4  # 2 targets x 2 relaxations
    assert isinstance(F.learning_curves_figure(tables["learning_curves"]), Figure)
    # figure e shows the best configuration per target and relaxation; the table holds just those
    errors = tables["probability_errors"]
    assert len(errors[["target", "relaxation", "tau0", "anneal_rate"]].drop_duplicates()) == 4 and "lowest final TV" in errors.attrs["note"]
    soft = tables["tradeoff"][tables["tradeoff"]["estimator"] == "soft"].sort_values("tau")
    assert soft["variance"].is_monotonic_decreasing  # the synthetic soft variance ~ 1/tau


def test_many_trials(tmp_path):
    """300 trials in one directory: every row lands on its own trial (no wall time asserted; the
    full tradeoff-grid size is measured by hand: tests/synthetic_record.py --tradeoff)."""
    grid = {"tau0": [0.1 * (i + 1) for i in range(75)], "relaxation": ["soft", "hard", "gumbel_rao", "reinforce"]}
    root = write_experiment(tmp_path / "exp", grid=grid, seeds=2, steps=40, eval_every=20, probe_taus=[], probe_estimators=["soft", "hard"])
    exp = load_experiment(root)
    assert len(exp.trials) == 300 and (exp.trials["status"] == "TERMINATED").all()
    assert len(exp.evals) == 300 * 2 * 3 and len(exp.probes) == 300 * 2 * 3 * 2
    config = exp.trials.set_index("trial_id")[["tau0", "relaxation"]]
    rows = config.loc[exp.evals["trial_id"].astype(str)]
    assert (rows["tau0"].to_numpy() == exp.evals["tau0"].to_numpy()).all() and (rows["relaxation"].to_numpy() == exp.evals["relaxation"].to_numpy()).all()
    means = config.loc[exp.probe_means["trial_id"].astype(str)]
    assert (means["tau0"].to_numpy() == exp.probe_means["tau0"].astype(float).to_numpy()).all()


# ---------------------------------------------------------------- train directories, several runs, the command


def test_train_dir_is_a_study_of_one_trial(tmp_path):
    """A real `gumbel-study train` output gets its own report: one trial named after the directory,
    figure e included, the grid figures saying that there is no grid."""
    out = tmp_path / "blog-like"
    cmd = [sys.executable, "-m", "study.cli", "train", str(REPO / "experiments" / "smoke.toml"), "--out", str(out), "--steps", "40",
           "--set", "relaxation=soft", "--set", "tau0=0.5", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    exp = load_experiment(out)
    assert exp.trials[["trial_id", "run", "status", "trial_dir"]].values.tolist() == [["blog-like", "blog-like", "TERMINATED", "."]]
    assert len(exp.evals) == 2 * 3 and exp.meta["grid"] == {} and " train " in exp.sessions["argv"].iloc[0]
    report = report_cli(str(out))
    assert report.returncode == 0, report.stderr
    html = (out / "report" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURE_NAMES) and 'id="fig-probability_errors"' in html
    assert "one configuration" in html  # the grid summary; the heatmap figure says it in its picture
    assert (out / "report" / "figures" / "probability_errors.png").stat().st_size > 10_000
    # reading a train output again ignores the report written into it
    assert len(load_experiment(out).trials) == 1


def test_train_dir_error_status(tmp_path):
    root = write_train_dir(tmp_path / "failed", error="seeds [1] diverged (non-finite parameters) by step 40")
    t = load_experiment(root).trials.iloc[0]
    assert t["status"] == "ERROR" and "diverged" in t["error"] and t["trial_id"] == "failed" and t["host"] == "laptop"


def test_report_of_a_bad_directory_exits_2_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    write_experiment(tmp_path / "storage" / "quick")
    cases = {
        (str(tmp_path / "empty"),): f"RUN_DIR='{tmp_path / 'empty'}': holds no trial",
        (str(tmp_path / "nowhere"),): f"RUN_DIR='{tmp_path / 'nowhere'}': no such directory",
        ((tmp_path / "nowhere").as_uri(),): f"RUN_DIR='{(tmp_path / 'nowhere').as_uri()}': no such directory",
        (str(tmp_path / "storage"),): "holds runs: quick",
        (str(tmp_path / "storage" / "quick"), str(tmp_path / "empty")): "--out=None: 2 runs make one report",
        (str(tmp_path / "storage" / "quick"), str(tmp_path / "empty"), "--out", str(tmp_path / "r")): f"RUN_DIR='{tmp_path / 'empty'}': holds no trial",
    }
    for args, message in cases.items():
        proc = report_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gumbel-study: error: ") and message in proc.stderr, proc.stderr
        assert proc.stdout == ""
    assert not (tmp_path / "empty" / "report").exists() and not (tmp_path / "r").exists()


def test_two_runs_one_report(tmp_path):
    """A grid and its follow-up, read as one study: a run column everywhere, trial ids unique."""
    first = write_experiment(tmp_path / "a" / "quick", grid={"relaxation": ["soft", "hard"], "tau0": [0.5, 2.0]}, experiment_id="aaaaa")
    second = write_experiment(tmp_path / "b" / "quick", grid={"relaxation": ["soft"], "tau0": [0.1, 0.5]}, anneal_rate=0.0, experiment_id="aaaaa", hosts=("gpu-1",), devices=("cuda:0",))
    exp = load_runs([first, second])
    assert run_names([str(first), str(second)]) == ["a/quick", "b/quick"]
    assert exp.trials["run"].tolist() == ["a/quick"] * 4 + ["b/quick"] * 2 and exp.trials["trial_id"].is_unique
    assert exp.trials["trial_id"].iloc[-1] == "b/quick/aaaaa_00001"  # both runs had an aaaaa_00001
    for table in (exp.evals, exp.probe_means, exp.probes):
        assert set(table["run"].astype(str)) == {"a/quick", "b/quick"}
    assert len(exp.evals) == 6 * 2 * 4 and len(exp.sessions) == 2
    assert "anneal_rate" in exp.meta["grid"]  # fixed in each run, varies across them: kept apart
    out = tmp_path / "both"
    proc = report_cli(str(first), str(second), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    html = (out / "index.html").read_text()
    assert "a/quick" in html and "b/quick" in html and html.count('class="session"') == 2
    assert set(pd.read_parquet(out / "data" / "evals.parquet")["run"].astype(str)) == {"a/quick", "b/quick"}
    hosts = pd.read_csv(out / "tables" / "hosts_summary.csv")
    assert hosts.set_index("host")["trials"].to_dict() == {"node-1": 4, "gpu-1": 2} and set(hosts["gpu"].dropna()) == {"NVIDIA H100 80GB HBM3"}


def test_run_section(tmp_path):
    """Every session of run.json (a run and its resume) with its spec, command line, revision,
    versions, resources and start; hosts and devices in a compact table and in full in a CSV."""
    root = write_experiment(tmp_path / "exp", grid={"tau0": [0.5, 1.0, 2.0]}, hosts=("node-a", "node-b"))
    sessions = json.loads((root / "run.json").read_text())["sessions"]
    resume = {**sessions[0], "started": "2026-01-02T03:04:05+00:00", "argv": ["gumbel-study", "run", "spec.toml", "--resume", "--set", "tau0=<1>"],
              "spec_text": 'name = "x"  # <b>not bold</b> & co\n', "cuda": "12.4", "resources": {"CPU": 64.0, "GPU": 8.0, "memory": 2.0**35, "node:10.0.0.1": 1.0}}
    (root / "run.json").write_text(json.dumps({"sessions": [sessions[0], resume]}))
    (trial_dir(root, 0) / "record" / "host-000000040.json").write_text(json.dumps({"host": "node-c", "pid": 9, "from_step": 40, "device": "cuda:0", "gpu": "NVIDIA A10G"}))
    out = write_report(root, tmp_path / "report", **QUICK)
    html = (out / "index.html").read_text()
    run = html[html.index('<h2 id="run">') : html.index('<h2 id="guide">')]
    assert run.count('class="session"') == 2 and run.count('<pre class="spec">') == 2
    assert "&lt;b&gt;not bold&lt;/b&gt; &amp; co" in run and "<b>not bold</b>" not in run  # escaped
    assert "gumbel-study run spec.toml --resume --set &#x27;tau0=&lt;1&gt;&#x27;" in run
    assert "2026-01-02T03:04:05+00:00" in run and "0123456789abcdef" in run and "CUDA 12.4" in run and "Ray 2.60.0" in run
    assert "CPU 64, GPU 8, memory 32.0 GiB" in run and "node:10.0.0.1" not in run
    summary = pd.read_csv(out / "tables" / "hosts_summary.csv").fillna("–")
    assert summary.values.tolist() == [["node-a", "cpu", "–", 2], ["node-b", "cpu", "–", 1], ["node-c", "cuda:0", "NVIDIA A10G", 1]]
    hosts = pd.read_csv(out / "tables" / "hosts.csv")
    assert len(hosts) == 4 and hosts[hosts["from_step"] == 40]["trial_id"].tolist() == ["abcde_00000"]
    trial = pd.read_csv(out / "tables" / "trials.csv").set_index("trial_id").loc["abcde_00000"]
    assert trial["host"] == "node-a,node-c" and trial["device"] == "cpu,cuda:0" and trial["gpu"] == "NVIDIA A10G"
