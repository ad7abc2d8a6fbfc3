"""The population benchmark's FLOP accounting, checked against the matmuls the population runs;
the pieces of the scale benchmark (benchmarks/scale.py) at tiny size, with no timing assertions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import scale
from benchmarks.population import WIDTH, bench_config, flops_per_replica_step
from study.population import Population

BATCH = 64  # small enough to be quick; K = 100 >= B exercises the path without distinct rows


@pytest.mark.parametrize("K", [10, 100])
@pytest.mark.parametrize("distinct", [True, False])
def test_executed_flops_are_the_flops_of_the_population_matmuls(K, distinct):
    R = 3
    pop = Population(bench_config(K, batch=BATCH), seeds=list(range(R)), distinct_rows=distinct)
    pop.train(1)
    with FlopCounterMode(display=False) as counter:
        pop.train_step()
    flops = flops_per_replica_step(K, batch=BATCH, distinct_rows=distinct)
    assert flops["d_rows"] == (K + BATCH if distinct and K < BATCH else 2 * BATCH)
    # The input gradient of the width-1 output layer is an outer product, not a matmul:
    # 2 x WIDTH FLOPs per row of the D step and of the G step.
    not_matmul = (flops["d_rows"] + BATCH) * 2 * WIDTH
    assert counter.get_total_flops() / R + not_matmul == flops["executed"]
    assert flops["executed"] < flops["nominal"]


# ---------------------------------------------------------------------- benchmarks/scale.py's pieces

REPO = Path(__file__).resolve().parents[1]
TRADEOFF_AXES = {"tau0": 7, "anneal_rate": 4, "relaxation": 4, "target": 6, "categories": 2}


def test_scale_subsets_keep_both_K_every_relaxation_and_target_first():
    assert scale.subset_counts(TRADEOFF_AXES, 1344) == TRADEOFF_AXES
    assert scale.subset_counts(TRADEOFF_AXES, 336) == {**TRADEOFF_AXES, "anneal_rate": 1}
    assert scale.subset_counts(TRADEOFF_AXES, 48) == {**TRADEOFF_AXES, "tau0": 1, "anneal_rate": 1}
    with pytest.raises(ValueError, match="nearest"):
        scale.subset_counts(TRADEOFF_AXES, 1343)
    assert scale.spread([1, 2, 3, 4, 5, 6, 7], 3) == [1, 4, 7]
    assert scale.spread([1, 2, 3, 4], 1) == [2]


def test_scale_plan_keeps_the_trial_shape_and_cuts_steps_and_probes():
    plan = scale.plan_overrides(scale.SPEC, trials=48, steps=20, eval_every=1, probe_estimates=2, gpus=0.0)
    assert (plan["trials"], plan["full_trials"]) == (48, scale.FULL_TRIALS)
    assert plan["evaluations"] == 21 and plan["seeds"] == 32 and plan["gpus_per_trial"] == 0
    assert sorted(plan["grid"]["categories"]) == [10, 100] and len(plan["grid"]["relaxation"]) == 4
    assert "steps=20" in plan["sets"] and "probe_estimates=2" in plan["sets"]
    full = scale.plan_overrides(scale.SPEC, trials=None, steps=20, eval_every=1, probe_estimates=2, gpus=None)
    assert full["trials"] == scale.FULL_TRIALS and not any(s.startswith("grid.") for s in full["sets"])


def test_scale_reads_an_experiment_directory(smoke_run):
    exp = scale.analyze_experiment(smoke_run)
    assert exp["trials"] == 4 and exp["state_bytes"] > 0
    assert exp["state_bytes_per_trial"] == exp["state_bytes"] / 4
    assert 0 < exp["stored_bytes_per_trial_mean"] <= exp["stored_bytes_per_trial_max"]
    assert exp["stored_bytes_per_trial_mean"] < exp["total_bytes_per_trial_mean"]  # checkpoints left out
    assert exp["reports"] == 4 * 4 and exp["reports_per_trial"] == [4]
    assert "fit/tv" in exp["reported_keys"] and not set(exp["reported_keys"]) & scale.TUNE_AUTO_KEYS
    assert exp["trials_with_time_s"] == 4 and 0 < exp["time_s"] <= exp["time_total_s"]
    o = scale.overhead(10.0, 2, exp["time_s"], exp["time_total_s"], exp["reports"])
    assert o["per_report_s"] == pytest.approx(o["in_worker_per_report_s"] + o["between_results_per_report_s"])
    assert o["per_report_s"] == pytest.approx((20.0 - exp["time_s"]) / 16)


def test_scale_watch_times_marked_lines_and_counts_finished_trials(tmp_path):
    code = "import time; print('gumbel-study: 2 trials x 1'); time.sleep(0.3); print('  done   a'); print('finished in 0.3 s')"
    watch = scale.Watch([sys.executable, "-c", code], log=tmp_path / "w.log", interval=0.05)
    out = watch.run()
    assert out["rc"] == 0 and watch.done == 1
    start, end = watch.fit_window(r"^gumbel-study: \d+ trials x ")
    assert end - start >= 0.25
    assert "finished in" in (tmp_path / "w.log").read_text()


def test_scale_profile_splits_a_trials_seconds_into_phases():
    plan = scale.plan_overrides(scale.SPEC, trials=2, steps=2, eval_every=1, probe_estimates=2, gpus=0.0)
    rows = scale.profile_trials(plan, relaxations=["soft"], seeds=2)
    assert [(r["K"], r["evaluations"]) for r in rows] == [(10, 3), (100, 3)]  # trials=2: both K, one relaxation
    phases = scale.PHASES
    for row in rows:
        assert all(row[p] >= 0 for p in phases) and row["probes"] > 0 and row["sample metrics"] > 0
        assert sum(row[p] for p in phases) <= row["trial_s"] * 1.01
    assert [r["K"] for r in scale.profile_summary(rows)] == [10, 100]


@pytest.mark.slow
def test_bare_tune_floor_reports_as_many_keys_and_checkpoints_as_asked(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"tau0": 1.0, "relaxation": "soft", "seeds": 2}))
    cmd = [sys.executable, str(REPO / "benchmarks" / "_bare_tune.py"), "--storage", str(tmp_path / "floor"), "--trials", "2",
           "--reports", "3", "--keys", "4", "--checkpoint-every", "2", "--checkpoint-bytes", "1000", "--config", str(params)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    exp = scale.analyze_experiment(tmp_path / "floor" / "bare", with_record=False)
    assert exp["trials"] == 2 and exp["reports"] == 6
    assert len(exp["reported_keys"]) == 4  # Tune's own keys are all in TUNE_AUTO_KEYS
    assert exp["checkpoints_per_trial"] == [2] and exp["checkpoint_bytes_mean"] == 1000  # after report 2 and the last
    row = scale.result_rows(next(iter(scale.trial_dirs(tmp_path / "floor" / "bare"))))[0]
    assert row["config"]["relaxation"] == "soft" and "bare_trial" in row["config"]
