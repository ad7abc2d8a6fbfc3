"""The Ray Tune study end to end, with a real local Ray (2 CPUs), in subprocesses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proc_tree import process_tree
from result_rows import result_rows

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
PER_SEED_KEYS = ("tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "fit/probs", "sample/vertex_gap", "sample/mean_bias")
ESTIMATORS = ("soft", "hard", "gumbel_rao", "reinforce")
STATS = ("bias2", "variance", "mse", "cosine", "rel_rmse", "bias2_floor", "n")

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
    for name, rows in results.items():
        assert [r["step"] for r in rows] == [0, 20, 40, 60], name
        for row in rows:
            assert row["seeds/count"] == 2 and row["seeds/diverged"] == 0
            assert set(row["per_seed"]) == {"0", "1"}
            for seed_row in row["per_seed"].values():
                for key in PER_SEED_KEYS:
                    assert key in seed_row, (name, key)
                for prefix in ("grad", "ladder/0.5"):
                    for est in ESTIMATORS:
                        for stat in STATS:
                            assert f"{prefix}/{est}/{stat}" in seed_row
            assert row["fit/tv"] == pytest.approx(sum(s["fit/tv"] for s in row["per_seed"].values()) / 2)
    frame = analysis.dataframe()
    assert len(frame) == 4 and "fit/tv" in frame.columns
    # TensorBoard event files hold the namespaced scalars.
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
    spawned: list[int] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            spawned = sorted(set(spawned) | set(_children(driver.pid)))
            if experiment.exists():
                done = {k: v for k, v in _results(experiment).items() if v and v[-1].get("step") == 1000}
                if done:
                    finished_before = done
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
    from ray.tune import ExperimentAnalysis

    assert {t.status for t in ExperimentAnalysis(str(experiment)).trials} == {"TERMINATED"}


def test_existing_experiment_needs_resume_or_new_name(tmp_path, smoke_run):
    storage = Path(smoke_run).parent
    proc = subprocess.run(_cli("run", str(SMOKE), "--storage", str(storage)), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr
