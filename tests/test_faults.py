"""Faults a cluster has: a trial's worker process SIGKILLed mid-run resumes from its checkpoint and
ends with exactly the metrics of an uninterrupted run (CPU, same seeds, same thread count), and its
trial record holds every row once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from record_rows import record_rows, trial_dirs
from result_rows import result_rows

from study.config import load_spec, parse_overrides
from study.record import evals_table, probes_table
from study.train import Trial

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
# Long enough that the kill lands mid-run on a quiet machine, short enough for CI.
OVERRIDES = ["relaxation=soft", "tau0=0.5", "steps=3000", "eval_every=500", "tune.checkpoint_every=1"]

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _rows(path: Path) -> list[dict]:
    files = list(path.glob("trainable*/result.json"))
    return result_rows(files[0]) if files else []


def test_worker_sigkill_resumes_from_checkpoint_exactly(tmp_path):
    storage = tmp_path / "runs"
    cmd = [sys.executable, "-m", "study.cli", "run", str(SMOKE), "--storage", str(storage), "--num-cpus", "2", "--name", "fault"]
    for item in OVERRIDES:
        cmd += ["--set", item]
    # Tune syncs results to storage with its experiment snapshot (at least every 10 s by default);
    # snapshot often so the test sees progress in time to kill mid-run.
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None:
            rows = _rows(storage / "fault")
            if len(rows) >= 3 and rows[-1]["step"] < 3000:  # checkpoints written, training goes on
                killed = rows[-1]["pid"]
                os.kill(killed, signal.SIGKILL)  # the trial's worker, a process this test's run started
                break
            time.sleep(0.05)
        assert killed is not None, "the trial finished before it could be interrupted"
        out, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]

    rows = _rows(storage / "fault")
    pids = {r["pid"] for r in rows}
    assert killed in pids and len(pids) == 2, "the trial was not restarted in a new worker"
    assert rows[-1]["step"] == 3000
    assert {r["step"] for r in rows} == set(range(0, 3001, 500))

    # The same trial, uninterrupted, in this process with the trainable's thread count.
    spec = load_spec(SMOKE, parse_overrides(OVERRIDES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluations: list = []
        Trial(spec.single_trial(), spec.seeds).run(evaluations.append)
    finally:
        torch.set_num_threads(threads)
    # The record: every evaluation once, equal in every value to the uninterrupted run's.
    (trial_dir,) = trial_dirs(storage / "fault")
    no_clock = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    expected_evals = [row for ev in evaluations for row in evals_table(ev, 0.0).to_pylist()]
    expected_probes = [row for ev in evaluations for row in probes_table(ev).to_pylist()]
    assert no_clock(record_rows(trial_dir)) == no_clock(expected_evals)
    assert record_rows(trial_dir, "probes") == expected_probes
    assert rows[-1]["fit/tv"] == pytest.approx(sum(r["fit/tv"] for r in expected_evals[-spec.seeds:]) / spec.seeds, rel=1e-12)


def test_diverging_trial_fails_with_reason_and_the_rest_completes(tmp_path):
    spec = tmp_path / "diverge.toml"
    spec.write_text(
        (ROOT / "experiments" / "smoke.toml").read_text()
        .replace('relaxation = ["soft", "hard"]\ntau0 = [0.5, 2.0]', "lr_d = [1e-3, 1e30]")
        .replace('name = "smoke"', 'name = "diverge"')
    )
    proc = subprocess.run([sys.executable, "-m", "study.cli", "run", str(spec), "--storage", str(tmp_path / "runs"), "--num-cpus", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 of 2 trials completed" in proc.stdout
    failed = [line for line in proc.stdout.splitlines() if line.strip().startswith("failed:")]
    assert len(failed) == 1 and "diverged" in failed[0] and "lr_d=1e+30" in failed[0]
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(tmp_path / "runs" / "diverge")).trials
    assert sorted(t.status for t in trials) == ["ERROR", "TERMINATED"]
    ok = next(t for t in trials if t.status == "TERMINATED")
    assert ok.last_result["step"] == 60 and ok.last_result["seeds/diverged"] == 0
