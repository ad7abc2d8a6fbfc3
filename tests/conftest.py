"""Shared fixtures. Minimal on purpose: nothing here imports ray or starts it in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment directory of `gumbel-study run experiments/smoke.toml`, run once per session.

    4 trials (relaxation soft/hard x tau0 0.5/2.0) x 2 seeds, 60 steps, evaluations at 0, 20, 40,
    60. Run as a subprocess (python -m study.cli), so Ray lives and dies outside the test process.
    """
    storage = tmp_path_factory.mktemp("smoke-storage")
    cmd = [sys.executable, "-m", "study.cli", "run", str(REPO / "experiments" / "smoke.toml"), "--storage", str(storage), "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always an embedded, private Ray
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"smoke study failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    path = storage / "smoke"
    assert (path / "tuner.pkl").exists(), f"no experiment at {path}:\n{proc.stderr[-2000:]}"
    return path
