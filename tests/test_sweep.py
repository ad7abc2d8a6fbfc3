"""The Ray Tune study end to end, with a real local Ray (2 CPUs), in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proc_tree import process_tree
from record_rows import record_rows, trial_dirs
from result_rows import result_rows

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
PER_SEED_KEYS = ("tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "fit/probs", "sample/vertex_gap", "sample/mean_bias")
ESTIMATORS = ("soft", "hard", "gumbel_rao", "reinforce")
STATS = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor", "n")
# What Tune receives (README "Experiment directory, dashboards"): means over seeds and counts.
LEAN_KEYS = {"step", "tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "sample/vertex_gap", "sample/mean_bias",
             "std/fit/tv", "seeds/count", "seeds/diverged"}

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", *args]


def _results(path: Path) -> dict[str, list[dict]]:
    trial_dirs = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("trainable"))
    return {d.name: result_rows(d / "result.json") for d in trial_dirs}


def test_smoke_study_end_to_end(smoke_run):
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(smoke_run))
    assert len(analysis.trials) == 4
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    results = _results(Path(smoke_run))
    assert len(results) == 4
    for trial_dir in trial_dirs(Path(smoke_run)):
        rows = results[trial_dir.name]
        relaxation = rows[0]["config"]["relaxation"]
        assert [r["step"] for r in rows] == [0, 20, 40, 60], trial_dir.name
        for row in rows:
            ours = set(row) - _CLOCK_KEYS - {"config", "training_iteration", "trial_id", "time_this_iter_s", "should_checkpoint"}
            assert ours == LEAN_KEYS | {f"grad/{relaxation}/{s}" for s in ("bias2", "variance", "mse")}, ours
            assert row["seeds/count"] == 2 and row["seeds/diverged"] == 0
        # The trial record: every seed at every step, every probe at the current tau and the ladder's.
        evals = record_rows(trial_dir, "evals")
        assert sorted((r["step"], r["seed"]) for r in evals) == [(t, s) for t in (0, 20, 40, 60) for s in (0, 1)]
        assert all(set(PER_SEED_KEYS) <= set(r) and len(r["fit/probs"]) == 5 for r in evals)
        probes = record_rows(trial_dir, "probes")
        expected = {(t, s, e, src) for t in (0, 20, 40, 60) for s in (0, 1) for e in ESTIMATORS for src in ("current", "ladder")}
        assert sorted((r["step"], r["seed"], r["estimator"], r["source"]) for r in probes) == sorted(expected)
        assert all(set(STATS) <= set(r) for r in probes)
        assert {r["tau"] for r in probes if r["source"] == "ladder"} == {0.5}
        for row in rows:  # Tune's mean equals the mean of the record's seeds
            seeds = [r["fit/tv"] for r in evals if r["step"] == row["step"]]
            assert row["fit/tv"] == pytest.approx(sum(seeds) / len(seeds), rel=1e-12)
        assert list((trial_dir / "record").glob("host-*.json"))
    (session,) = json.loads((Path(smoke_run) / "run.json").read_text())["sessions"]
    assert 'name = "smoke"' in session["spec_text"] and session["argv"][1:3] == ["run", str(SMOKE)]
    assert session["ray"] and session["torch"] and session["resources"]["CPU"] == 2
    frame = analysis.dataframe()
    assert len(frame) == 4 and "fit/tv" in frame.columns
    # TensorBoard event files hold the lean scalars.
    events = list(Path(smoke_run).glob("trainable*/events.out.tfevents.*"))
    assert len(events) == 4 and all(e.stat().st_size > 0 for e in events)


# Wall-clock and host fields Tune adds to every result; everything else is the trial's own.
_CLOCK_KEYS = {"time_total_s", "time_this_iter_s", "timestamp", "date", "time_since_restore", "iterations_since_restore",
               "timesteps_since_restore", "pid", "hostname", "node_ip", "checkpoint_dir_name", "done"}


def _by_step(rows: list[dict]) -> dict[int, dict]:
    """The last row logged for each step, without the clock fields; a repeated row must equal the first."""
    out: dict[int, dict] = {}
    for row in rows:
        metrics = {k: v for k, v in row.items() if k not in _CLOCK_KEYS}
        if row["step"] in out:
            assert metrics == out[row["step"]], f"step {row['step']} logged twice with different metrics"
        out[row["step"]] = metrics
    return out


def _children(pid: int) -> list[int]:
    """Every live descendant of pid (the processes the driver started)."""
    return [p for p in process_tree(pid) if p != pid]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_resume_after_driver_killed(tmp_path, sig):
    """Kill (or interrupt) the driver once a trial has finished; --resume completes the study, keeps
    every finished trial's results as they were (not rerun), and every trial reaches its last step."""
    storage = tmp_path / "runs"
    args = ["run", str(SMOKE), "--storage", str(storage), "--num-cpus", "2", "--set", "steps=1000", "--set", "eval_every=250"]
    # Tune syncs results to storage with its experiment snapshot (at least every 10 s by default);
    # snapshot often so the test sees a finished trial while others still run.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    driver = subprocess.Popen(_cli(*args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    experiment = storage / "smoke"
    finished_before: dict[str, list[dict]] = {}
    records_before: dict[str, tuple[list[dict], list[dict]]] = {}
    spawned: list[int] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            spawned = sorted(set(spawned) | set(_children(driver.pid)))
            if experiment.exists():
                done = {k: v for k, v in _results(experiment).items() if v and v[-1].get("step") == 1000}
                if done:
                    finished_before = done
                    records_before = {d.name: (record_rows(d), record_rows(d, "probes")) for d in trial_dirs(experiment) if d.name in done}
                    break
            time.sleep(0.5)
        assert finished_before, "no trial finished before the deadline"
        assert driver.poll() is None, "the study ended before it could be interrupted"
        spawned = sorted(set(spawned) | set(_children(driver.pid)))
        driver.send_signal(sig)
        driver.wait(timeout=90)  # SIGINT: Tune saves its state and exits by itself
    finally:
        _kill([driver.pid] + spawned)
        if driver.stdout:
            driver.stdout.close()
    time.sleep(2)  # let the killed Ray processes release their ports and files

    resumed = subprocess.run(_cli(*args, "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "gumbel-study report" in resumed.stdout

    after = _results(experiment)
    assert len(after) == 4
    for name, rows in finished_before.items():
        # Tune logs a result before it records the checkpoint reported with it; a driver killed in
        # between leaves the trial restorable only from its previous checkpoint, and the resumed
        # trial repeats those steps and logs their rows again. Restores are bit-identical, so the
        # repeated rows must equal the first ones in every metric (analysis keeps one per step).
        assert _by_step(after[name]) == _by_step(rows), f"finished trial {name} changed"
    for name, rows in after.items():
        steps = [r["step"] for r in rows]
        assert steps[-1] == 1000 and set(steps) == {0, 250, 500, 750, 1000}, (name, steps)
        _by_step(rows)  # steps repeated after the resume repeat exactly
    # The trial record: no row lost, none counted twice, finished trials' rows unchanged.
    for trial_dir in trial_dirs(experiment):
        evals, probes = record_rows(trial_dir), record_rows(trial_dir, "probes")
        assert sorted((r["step"], r["seed"]) for r in evals) == [(t, s) for t in (0, 250, 500, 750, 1000) for s in (0, 1)], trial_dir.name
        assert len(probes) == 5 * 2 * len(ESTIMATORS) * 2  # steps x seeds x estimators x (current, ladder)
        if trial_dir.name in records_before:
            before_evals, before_probes = records_before[trial_dir.name]
            drop = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
            assert drop(evals) == drop(before_evals) and probes == before_probes, f"finished trial {trial_dir.name} changed"
    from ray.tune import ExperimentAnalysis

    assert {t.status for t in ExperimentAnalysis(str(experiment)).trials} == {"TERMINATED"}


def test_existing_experiment_needs_resume_or_new_name(tmp_path, smoke_run):
    storage = Path(smoke_run).parent
    proc = subprocess.run(_cli("run", str(SMOKE), "--storage", str(storage)), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr
