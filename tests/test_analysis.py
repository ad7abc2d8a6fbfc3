"""analysis/: load -> summaries -> figures -> report, on a real smoke study and on synthetic data.

The real study comes from the session fixture `smoke_run` (tests/conftest.py). Synthetic
experiment directories mimic what Ray Tune and study.sweep write (experiment_state, params.json,
result.json with per_seed rows), so that partial, errored, missing and 1,000-trial directories
are cheap to build. Statistical tests use fixed generators and state their level.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import figures as F
from analysis import summarize as S
from analysis.load import PROBE_STATS, load_experiment, save_parquet
from analysis.report import build_summaries, write_report

ESTIMATORS = ("soft", "hard", "gumbel_rao", "reinforce")


# ---------------------------------------------------------------- synthetic experiment directories


def _probe_stats(est: str, tau: float, rng: np.random.Generator, n: int = 200) -> dict[str, float]:
    """Plausible probe numbers: soft's bias falls and variance rises as tau falls, and so on."""
    noise = lambda: float(rng.lognormal(0.0, 0.2))  # noqa: E731
    if est == "soft":
        var, b2 = 1e-3 / tau, 2e-4 * tau**1.5
    elif est == "hard":
        var, b2 = 8e-4 / math.sqrt(tau), 1e-4 + 1e-4 * tau
    elif est == "gumbel_rao":
        var, b2 = 2e-4 / math.sqrt(tau), 1e-4 + 1e-4 * tau
    else:
        var, b2 = 0.4, 0.0
    var *= noise()
    b2 = b2 * noise() + var / n
    return {"bias2": b2, "variance": var, "mse": b2 + var, "cosine": 0.99, "rel_rmse": 1.0, "bias2_floor": var / n, "n": float(n)}


def write_fake_experiment(
    root: Path,
    *,
    grid: dict[str, list] | None = None,
    seeds: int = 2,
    steps: int = 60,
    eval_every: int = 20,
    ladder: tuple[float, ...] = (0.5,),
    estimators: tuple[str, ...] = ESTIMATORS,
    categories: int = 5,
    target: str = "zipf:s=1.2",
    state: bool = True,
    seed: int = 0,
) -> Path:
    """A Tune-shaped experiment directory: experiment_state, one params.json / result.json per trial."""
    rng = np.random.default_rng(seed)
    grid = grid or {"relaxation": ["soft", "hard"], "tau0": [0.5, 2.0]}
    root.mkdir(parents=True, exist_ok=True)
    axes = list(grid)
    combos = [dict(zip(axes, values)) for values in itertools.product(*grid.values())]
    fixed = dict(
        target=target, categories=categories, generator="logits", relaxation="soft", schedule="exponential", tau0=1.0,
        anneal_rate=1e-3, tau_min=0.1, anneal_interval=1000, steps=steps, eval_every=eval_every,
        probe_estimators=list(estimators), probe_estimates=200, probe_taus=list(ladder), seed=0,
        seeds=seeds, checkpoint_every=2, cpus=1.0,
    )
    trial_data = []
    q = None
    for i, combo in enumerate(combos):
        config = {**fixed, **combo}
        k = int(config["categories"])
        if q is None or len(q) != k:
            q = np.arange(1, k + 1, dtype=float) ** -1.2
            q = q / q.sum()
        trial_id = f"abcde_{i:05d}"
        tag = ",".join(f"{a}={combo[a]}" for a in axes)
        name = f"trainable_{trial_id}_{i}_{tag}_2026-01-01_00-00-00"
        d = root / name
        d.mkdir()
        (d / "params.json").write_text(json.dumps(config))
        lines = []
        quality = rng.uniform(0.02, 0.1)
        for it, step in enumerate(range(0, steps + 1, eval_every), start=1):
            tau = max(config["tau_min"], config["tau0"] * math.exp(-config["anneal_rate"] * step))
            per_seed = {}
            for s in range(seeds):
                frac = math.exp(-step / max(steps / 3, 1))
                p = q + (np.full(k, 1 / k) - q) * frac + rng.normal(0, 0.01, k) * (1 - frac)
                p = np.clip(p, 1e-4, None)
                p = p / p.sum()
                tv = 0.5 * float(np.abs(p - q).sum()) + quality * (1 - frac)
                row = {"seed": s, "step": step, "relaxation": config["relaxation"], "target": config["target"], "tau": tau,
                       "loss/d": 1.38, "loss/g": 0.69, "fit/tv": tv, "fit/js": tv / 5, "fit/kl": tv / 1.2,
                       "sample/vertex_gap": 0.2, "sample/mean_bias": 0.04}
                for est in estimators:
                    row.update({f"grad/{est}/{k_}": v for k_, v in _probe_stats(est, tau, rng).items()})
                for lt in ladder:
                    for est in estimators:
                        row.update({f"ladder/{lt:g}/{est}/{k_}": v for k_, v in _probe_stats(est, lt, rng).items()})
                row["fit/probs"] = p.tolist()
                row["diverged"] = False
                per_seed[str(s)] = row
            rows = list(per_seed.values())
            mean = {key: sum(r[key] for r in rows) / len(rows) for key, v in rows[0].items() if isinstance(v, float)}
            result = {"step": step, **mean, **{f"std/{key}": 0.0 for key in mean}, "seeds/count": seeds, "seeds/diverged": 0,
                      "per_seed": per_seed, "done": False, "training_iteration": it, "trial_id": trial_id,
                      "date": "2026-01-01_00-00-10", "time_total_s": 0.1 * it}
            lines.append(json.dumps(result))
        (d / "result.json").write_text("\n".join(lines) + "\n")
        trial = {"trial_id": trial_id, "status": "TERMINATED", "relative_logdir": name, "config": config, "evaluated_params": combo}
        runtime = {"start_time": 0.0, "num_failures": 0, "num_failures_after_restore": 0, "error_filename": None, "last_result": {"step": steps}}
        trial_data.append([json.dumps(trial, indent=2), json.dumps(runtime, indent=2)])
    if state:
        (root / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": trial_data, "runner_data": {}, "stats": {"start_time": 0.0}}))
    return root


def _set_status(root: Path, trial_id: str, status: str, error_file: bool = False) -> None:
    path = next(root.glob("experiment_state-*.json"))
    state = json.loads(path.read_text())
    for item in state["trial_data"]:
        trial = json.loads(item[0])
        if trial["trial_id"] == trial_id:
            trial["status"] = status
            item[0] = json.dumps(trial)
            if error_file:
                runtime = json.loads(item[1])
                runtime["error_filename"] = "error.txt"
                runtime["num_failures"] = 3
                item[1] = json.dumps(runtime)
    path.write_text(json.dumps(state))


def _trial_dir(root: Path, index: int) -> Path:
    return next(root.glob(f"trainable_abcde_{index:05d}_*"))


# ---------------------------------------------------------------- the real smoke study


@pytest.fixture(scope="module")
def smoke(smoke_run, tmp_path_factory):
    """Everything computed once from the smoke study: tables, summaries, and the report, written
    by `gumbel-study report` (python -m study.cli) as a user would."""
    exp = load_experiment(smoke_run)
    tables = build_summaries(exp, n_boot=500)
    out = tmp_path_factory.mktemp("smoke-report") / "report"
    proc = subprocess.run([sys.executable, "-m", "study.cli", "report", str(smoke_run), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {"exp": exp, "tables": tables, "report": out, "stdout": proc.stdout, "progress": proc.stderr.splitlines()}


def test_load_smoke_tables(smoke):
    exp = smoke["exp"]
    trials, evals, probes = exp.trials, exp.evals, exp.probes
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    assert trials["error"].isna().all()
    assert {"trial_id", "trial_dir", "tau0", "relaxation", "anneal_rate", "target", "categories", "steps", "seeds", "n_evals", "last_step", "final/fit/tv"} <= set(trials)
    assert (trials["n_evals"] == 4).all() and (trials["last_step"] == 60).all() and trials["complete"].all()
    assert set(zip(trials["relaxation"], trials["tau0"])) == {("soft", 0.5), ("soft", 2.0), ("hard", 0.5), ("hard", 2.0)}
    # 4 trials x 2 seeds x 4 evaluation steps
    assert len(evals) == 32
    assert sorted(evals["step"].unique()) == [0, 20, 40, 60] and sorted(evals["seed"].unique()) == [0, 1]
    for col in ("tau", "fit/tv", "fit/js", "fit/kl", "loss/d", "sample/vertex_gap", "grad/soft/bias2", "ladder/0.5/hard/variance", "tau0", "anneal_rate", "schedule", "relaxation", "target", "categories"):
        assert col in evals, col
    assert evals["fit/probs"].map(len).eq(5).all()
    assert np.allclose(evals["fit/probs"].map(sum), 1.0, atol=1e-5)
    # per-seed means reproduce the trial-level mean Tune recorded
    last = evals[evals["step"] == 60].groupby("trial_id")["fit/tv"].mean()
    assert np.allclose(last.sort_index().to_numpy(), trials.set_index("trial_id")["final/fit/tv"].sort_index().to_numpy())
    # probes: every estimator, at the current tau and at the ladder tau 0.5
    assert set(probes["estimator"]) == set(ESTIMATORS)
    assert set(probes["source"]) == {"current", "ladder"}
    assert set(probes.loc[probes["source"] == "ladder", "tau"]) == {0.5}
    assert len(probes) == 32 * len(ESTIMATORS) * 2
    assert set(PROBE_STATS) <= set(probes) and {"trial_id", "seed", "step", "tau0", "relaxation"} <= set(probes)
    assert (probes["bias2"] >= 0).all() and (probes["variance"] > 0).all()
    assert np.allclose(probes["mse"], probes["bias2"] + probes["variance"], rtol=1e-5)
    assert exp.meta["grid"] == {"relaxation": ["hard", "soft"], "tau0": [0.5, 2.0]} and exp.meta["seeds_per_trial"] == 2


def test_smoke_summaries(smoke):
    t = smoke["tables"]
    trade = t["tradeoff"]
    assert set(trade["estimator"]) == set(ESTIMATORS)
    assert list(trade["estimator"].drop_duplicates()) == list(ESTIMATORS)  # display order
    assert {"tau", "bias2", "bias2_lo", "bias2_hi", "variance", "variance_lo", "variance_hi", "mse", "bias2_floor", "pareto"} <= set(trade)
    ok = trade["bias2_lo"].notna()
    assert ok.all() and ((trade["bias2_lo"] <= trade["bias2"]) & (trade["bias2"] <= trade["bias2_hi"])).all()
    assert trade["pareto"].any()
    final = t["final_fit"]
    assert len(final) == 4 and (final["n_seeds"] == 2).all() and (final["n_trials"] == 1).all()
    assert {"fit/tv", "fit/tv_lo", "fit/tv_hi"} <= set(final)
    best = t["best_configs"]
    assert len(best) == 1 and best["fit/tv"].iloc[0] == final["fit/tv"].min()
    assert t["failures"].empty
    assert len(t["learning_curves"]) == 4 * 4  # configurations x steps
    errors = t["probability_errors"]
    assert set(errors["category"]) == set(range(5)) and errors["error"].notna().all()


def test_smoke_figures_have_labelled_axes(smoke):
    t = smoke["tables"]
    exp = smoke["exp"]
    figs = [
        F.tradeoff_figure(t["tradeoff"]),
        F.tau_sweep_figure(t["tradeoff"]),
        F.final_fit_heatmaps(t["final_fit"]),
        F.learning_curves_figure(t["learning_curves"]),
        F.probability_error_figure(t["probability_errors"]),
        F.schedule_figure(t["schedules"], exp.evals),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
        assert visible
        assert any(ax.get_xlabel() for ax in visible) and any(ax.get_ylabel() for ax in visible)
    a = figs[0].axes[0]
    assert a.get_xscale() == "log" and a.get_yscale() == "log" and "variance" in a.get_xlabel() and "bias" in a.get_ylabel()
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in figs[1].axes[:3])
    assert "step" in figs[3].axes[0].get_xlabel()


def test_smoke_report_files(smoke):
    out = smoke["report"]
    html = (out / "index.html").read_text()
    names = ["tradeoff", "tau_sweep", "final_fit_heatmaps", "learning_curves", "probability_errors", "schedules"]
    for name in names:
        for ext in ("png", "pdf"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert f'id="fig-{name}"' in html
    assert (out / "figures" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figures" / "tradeoff.pdf").read_bytes()[:5] == b"%PDF-"
    for name in ("trials", "tradeoff", "pareto_front", "final_fit", "best_configs", "failures", "learning_curves"):
        assert (out / "tables" / f"{name}.csv").exists(), name
    for name in ("trials", "evals", "probes"):
        assert len(pd.read_parquet(out / "data" / f"{name}.parquet")) > 0
    assert html.count("data:image/png;base64,") == len(names)
    # offline: nothing fetched from the network
    assert "http://" not in html and "https://" not in html and "<link" not in html
    for phrase in ("bias²", "noise floor", "straight-through", "Gumbel-Rao", "REINFORCE", "TERMINATED", "img-check"):
        assert phrase in html, phrase
    assert smoke["stdout"].strip() == f"report: {out / 'index.html'}"
    figure_lines = [ln for ln in smoke["progress"] if ln.startswith("figure ")]
    assert [ln.split(":")[0] for ln in figure_lines] == [f"figure {i}/6" for i in range(1, 7)]
    assert any(ln.startswith("loading ") for ln in smoke["progress"]) and any(ln.startswith("wrote ") for ln in smoke["progress"])


# ---------------------------------------------------------------- import hygiene


def test_analysis_imports_neither_torch_nor_ray():
    code = "import sys, analysis.load, analysis.summarize, analysis.figures, analysis.report; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


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


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(v) for v in S.bootstrap_ci([]))
    est, lo, hi = S.bootstrap_ci([3.0])
    assert est == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert S.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert S.bootstrap_ci([1.0, np.nan, 3.0, np.inf])[0] == 2.0  # non-finite values drop out
    assert S.bootstrap_ci([1.0, 2.0, 5.0], seed=7) == S.bootstrap_ci([1.0, 2.0, 5.0], seed=7)  # reproducible
    with pytest.raises(ValueError, match="alpha"):
        S.bootstrap_ci([1.0, 2.0], alpha=1.5)


def test_grouped_ci_matches_bootstrap_ci_and_resamples_replicas():
    df = pd.DataFrame({"g": ["a"] * 6 + ["b"] * 3, "trial_id": ["t"] * 9, "seed": [0, 0, 1, 1, 2, 2, 0, 1, 2],
                       "v": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0, 1.0, 1.0, 1.0]})
    out = S.grouped_ci(df, ["g"], "v", n_boot=500)
    a = out.set_index("g").loc["a"]
    # replicas averaged first: seed means 2, 2, 6 -> mean 10/3
    assert a["n_seeds"] == 3 and a["v"] == pytest.approx(10 / 3)
    assert 2.0 <= a["v_lo"] <= a["v"] <= a["v_hi"] <= 6.0
    assert out.set_index("g").loc["b", ["v", "v_lo", "v_hi"]].tolist() == [1.0, 1.0, 1.0]


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


# ---------------------------------------------------------------- partial, errored, missing, cloud


def test_partial_errored_and_missing_trials(tmp_path):
    root = write_fake_experiment(tmp_path / "exp", grid={"relaxation": ["soft", "hard"], "tau0": [0.5, 1.0, 2.0]})
    # trial 1: result.json deleted (a trial that died before its first report)
    (_trial_dir(root, 1) / "result.json").unlink()
    _set_status(root, "abcde_00001", "ERROR", error_file=True)
    (_trial_dir(root, 1) / "error.txt").write_text("Failure # 1 (occurred at 2026-01-01)\nTraceback (most recent call last):\n  ...\nstudy.train.TrialDiverged: seeds [1] diverged\n")
    # trial 2: truncated mid-line (killed while writing)
    result = _trial_dir(root, 2) / "result.json"
    text = result.read_text()
    result.write_text(text[: len(text) // 2])
    _set_status(root, "abcde_00002", "RUNNING")
    # trial 3: listed by Tune but never started (no directory)
    shutil.rmtree(_trial_dir(root, 3))
    _set_status(root, "abcde_00003", "PENDING")
    # a stray directory that is not a trial is ignored
    (root / "report").mkdir()

    exp = load_experiment(root)
    t = exp.trials.set_index("trial_id")
    assert len(t) == 6
    assert t.loc["abcde_00001", "status"] == "ERROR" and "diverged" in t.loc["abcde_00001", "error"]
    assert t.loc["abcde_00001", "n_evals"] == 0 and t.loc["abcde_00001", "num_failures"] == 3
    assert t.loc["abcde_00002", "status"] == "RUNNING" and 0 < t.loc["abcde_00002", "n_evals"] < 4
    assert t.loc["abcde_00002", "bad_lines"] == 1 and not t.loc["abcde_00002", "complete"]
    assert t.loc["abcde_00003", "status"] == "PENDING" and pd.isna(t.loc["abcde_00003", "trial_dir"])
    assert t.loc["abcde_00003", "relaxation"] == "hard"  # config from experiment_state
    assert any("unreadable line" in w for w in exp.meta["warnings"])
    assert set(exp.evals["trial_id"]) == {"abcde_00000", "abcde_00002", "abcde_00004", "abcde_00005"}

    fail = S.failures(exp.trials, axes=["relaxation", "tau0"]).set_index("trial_id")
    assert fail.loc["abcde_00001", "problem"] == "error"
    assert fail.loc["abcde_00002", "problem"] == "incomplete"
    assert fail.loc["abcde_00003", "problem"] == "missing"
    assert len(fail) == 3
    final = S.final_fit_table(exp.evals, by=["relaxation", "tau0"])
    assert len(final) == 3  # the incomplete trial's early fit is left out

    out = write_report(root, tmp_path / "report", progress=False, n_boot=200, dpi=40, pdf=False)
    html = (out / "index.html").read_text()
    assert "diverged" in html and "PENDING" in html and "incomplete" in html


def test_no_experiment_state_and_empty_results(tmp_path):
    root = write_fake_experiment(tmp_path / "exp", state=False)
    (_trial_dir(root, 0) / "result.json").write_text("")
    exp = load_experiment(root)
    status = exp.trials.set_index("trial_id")["status"]
    assert status["abcde_00000"] == "UNKNOWN" and (status.drop("abcde_00000") == "TERMINATED").all()
    assert any("experiment_state" in w for w in exp.meta["warnings"])
    assert exp.meta["grid"] == {"relaxation": ["hard", "soft"], "tau0": [0.5, 2.0]}


def test_uri_and_empty_directory(tmp_path):
    root = write_fake_experiment(tmp_path / "exp")
    local = load_experiment(root)
    via_uri = load_experiment(root.resolve().as_uri())  # file:// goes through pyarrow.fs like s3:// or gs://
    pd.testing.assert_frame_equal(local.evals.drop(columns="fit/probs"), via_uri.evals.drop(columns="fit/probs"))
    assert len(via_uri.probes) == len(local.probes)
    empty = load_experiment(tmp_path)  # no trials at all
    assert empty.trials.empty and empty.evals.empty and empty.probes.empty
    with pytest.raises(FileNotFoundError):
        load_experiment(tmp_path / "nowhere")
    # every summary and figure copes with nothing to show
    tables = build_summaries(empty, n_boot=50)
    assert all(isinstance(v, pd.DataFrame) for v in tables.values())
    for fig in (F.tradeoff_figure(tables["tradeoff"]), F.final_fit_heatmaps(tables["final_fit"]), F.learning_curves_figure(tables["learning_curves"])):
        assert isinstance(fig, Figure)


def test_save_parquet_round_trip(tmp_path):
    exp = load_experiment(write_fake_experiment(tmp_path / "exp"))
    paths = save_parquet(exp, tmp_path / "pq")
    evals = pd.read_parquet(paths["evals"])
    assert list(evals.columns) == list(exp.evals.columns) and len(evals) == len(exp.evals)
    assert list(evals["fit/probs"].iloc[0]) == pytest.approx(exp.evals["fit/probs"].iloc[0])
    assert json.loads(paths["meta"].read_text())["n_trials"] == 4


def test_larger_grid_figures(tmp_path):
    """The quick study's shape (4 tau0 x 2 rates x 2 relaxations x 2 targets, 4 ladder taus)."""
    grid = {"tau0": [0.1, 0.3, 1.0, 3.0], "anneal_rate": [0.0, 2e-3], "relaxation": ["soft", "hard"], "target": ["zipf:s=1.2", "bimodal"]}
    root = write_fake_experiment(tmp_path / "exp", grid=grid, seeds=3, steps=300, eval_every=100, ladder=(0.1, 0.3, 1.0, 3.0), categories=10)
    exp = load_experiment(root)
    assert len(exp.trials) == 32 and exp.meta["ladder_taus"] == [0.1, 0.3, 1.0, 3.0]
    tables = build_summaries(exp, n_boot=200)
    final = tables["final_fit"]
    assert len(final) == 32 and set(tables["best_configs"]["target"]) == {"zipf:s=1.2", "bimodal"}
    heat = F.final_fit_heatmaps(final)
    assert len([ax for ax in heat.axes if ax.get_label() != "<colorbar>"]) == 4  # 2 targets x 2 relaxations
    curves = F.learning_curves_figure(tables["learning_curves"])
    assert isinstance(curves, Figure)
    trade = tables["tradeoff"]
    soft = trade[trade["estimator"] == "soft"].sort_values("tau")
    assert soft["variance"].is_monotonic_decreasing  # the synthetic soft variance ~ 1/tau
    assert isinstance(F.tradeoff_figure(trade), Figure)


def test_load_1000_trials(tmp_path):
    """A 1,000-trial directory loads (in about a second on a laptop; no wall time asserted)."""
    grid = {"tau0": [0.1 * (i + 1) for i in range(250)], "relaxation": ["soft", "hard", "gumbel_rao", "reinforce"]}
    root = write_fake_experiment(tmp_path / "exp", grid=grid, seeds=2, steps=40, eval_every=20, ladder=(), estimators=("soft", "hard"))
    started = time.perf_counter()
    exp = load_experiment(root)
    seconds = time.perf_counter() - started
    assert len(exp.trials) == 1000 and (exp.trials["status"] == "TERMINATED").all()
    assert len(exp.evals) == 1000 * 2 * 3
    assert len(exp.probes) == 1000 * 2 * 3 * 2
    print(f"loaded 1000 trials in {seconds:.2f} s")
