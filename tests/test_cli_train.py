"""`gumbel-study train` end to end in a subprocess (a few steps), and the `check` listing."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_train_writes_the_trial_record_and_summary(tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("0 1 2 3 4 5 6 7 8 9 10 11\n" * 5 + "3 3 3\n")
    out = tmp_path / "out"
    proc = _run("train", str(ROOT / "experiments" / "smoke.toml"), "--out", str(out), "--seeds", "3", "--steps", "30",
                "--set", "relaxation=hard", "--set", "tau0=0.5", "--set", f"target=stream:{numbers.name}",
                "--set", "categories=12", "--set", "eval_every=10", "--progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step" in proc.stderr and "tau=" in proc.stderr and "tv=" in proc.stderr  # the progress bar
    summary = json.loads((out / "summary.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1, 2]
    for row in summary["seeds"]:
        assert {"seed", "fit/tv", "fit/js", "fit/kl", "fit/probs"} <= set(row)
        assert len(row["fit/probs"]) == 12 and abs(sum(row["fit/probs"]) - 1) < 1e-5
        assert 0 <= row["fit/tv"] <= 1
    assert summary["config"]["relaxation"] == "hard" and summary["config"]["target"] == f"stream:{numbers}"
    import pyarrow.parquet as pq

    evals = [row for path in sorted((out / "record").glob("evals-*.parquet")) for row in pq.read_table(path).to_pylist()]
    assert len(evals) == 3 * 4  # 3 seeds x evaluations at 0, 10, 20, 30
    assert {(r["seed"], r["step"]) for r in evals} == {(s, t) for s in range(3) for t in (0, 10, 20, 30)}
    probes = [row for path in sorted((out / "record").glob("probes-*.parquet")) for row in pq.read_table(path).to_pylist()]
    keys = {(r["estimator"], r["source"], r["tau"] if r["source"] == "ladder" else None) for r in probes}
    assert ("gumbel_rao", "current", None) in keys and ("soft", "ladder", 0.5) in keys
    params = json.loads((out / "params.json").read_text())
    assert params["seeds"] == 3 and params["relaxation"] == "hard"
    session = json.loads((out / "run.json").read_text())["sessions"][0]
    assert session["argv"][1] == "train" and "name = \"smoke\"" in session["spec_text"]
    assert list((out / "record").glob("host-*.json"))
    assert (out / "state.pt").exists()
    assert "final tv: median" in proc.stdout


def test_check_prints_the_expanded_grid():
    proc = _run("check", str(ROOT / "experiments" / "quick.toml"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "trials:        88" in proc.stdout and "seeds/trial:   8" in proc.stdout
    assert "replica-steps: 1,408,000" in proc.stdout and proc.stdout.strip().endswith("valid")
