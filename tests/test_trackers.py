"""Trackers ([tune] loggers = ["mlflow", "wandb", "aim"]): opt-in Ray Tune logger callbacks fed the
lean reports only, with the trial config as parameters.

Without Ray: the result filter, MLflow's URI, a missing package (one line naming the extra), what
check prints. On Ray (2 CPUs): one smoke-sized study of 2 trials logs to MLflow (a SQLite store in
the experiment directory, read back with mlflow's client) and to W&B offline (the run files read
back with wandb's protobuf records) at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from record_rows import trial_dirs
from result_rows import result_rows

from study.cli import main
from study.config import ConfigError, load_spec, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
LEAN = {"step", "tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "sample/vertex_gap", "sample/mean_bias", "std/fit/tv",
        "seeds/count", "seeds/diverged", "grad/soft/bias2", "grad/soft/variance", "grad/soft/mse"}


def _spec(*sets: str):
    return load_spec(SMOKE, parse_overrides(list(sets)))


def test_lean_result_drops_what_tune_adds():
    from study import sweep

    lean = {"step": 20, "fit/tv": 0.3, "seeds/count": 2, "grad/soft/mse": 1e-4}
    tune_keys = {"config": {"tau0": 0.5, "probe_taus": [0.5]}, "training_iteration": 2, "time_this_iter_s": 0.1, "time_total_s": 1.0,
                 "timestamp": 1, "date": "2026-01-01", "pid": 1, "hostname": "h", "node_ip": "127.0.0.1", "trial_id": "a",
                 "experiment_tag": "0_tau0=0.5", "done": False, "should_checkpoint": True, "checkpoint_dir_name": "checkpoint_000001",
                 "time_since_restore": 1.0, "iterations_since_restore": 2, "timesteps_since_restore": 0, "timesteps_total": None}
    assert sweep.lean_result({**lean, **tune_keys}) == {**lean, "training_iteration": 2}


def test_mlflow_uri(tmp_path, monkeypatch):
    from study import sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = _spec("tune.loggers=['mlflow']")
    assert sweep.mlflow_uri(spec, str(tmp_path)) == f"sqlite:///{tmp_path.resolve()}/smoke/mlflow.db"
    with pytest.raises(ConfigError, match="tune.mlflow_uri.*cloud"):
        sweep.mlflow_uri(spec, "s3://bucket/runs")
    assert sweep.mlflow_uri(_spec("tune.loggers=['mlflow']", "tune.mlflow_uri=http://127.0.0.1:5000"), "s3://bucket/runs") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert sweep.mlflow_uri(spec, "s3://bucket/runs") is None  # mlflow reads the environment itself


def test_tracker_pickles_without_its_callback(tmp_path):
    """Tune pickles the run config (tuner.pkl) and restores it on --resume: the wrapper travels, the
    real callback (actors, clients) is built again in setup."""
    from study import sweep

    (tracker,) = sweep.trackers(_spec("tune.loggers=['wandb']"), str(tmp_path))
    tracker.inner = object()
    again = pickle.loads(pickle.dumps(tracker))
    assert again.inner is None and again.kind == "wandb" and again.name == "smoke"


def test_missing_package_names_the_extra(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    for command in ("check", "run"):
        code = main([command, str(SMOKE), "--set", "tune.loggers=['wandb', 'mlflow']"] + (["--storage", str(tmp_path)] if command == "run" else []))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "tune.loggers='mlflow'" in err[0] and "pip install 'gumbel-study[mlflow]'" in err[0]
    assert not (tmp_path / "smoke").exists()


@pytest.mark.skipif(importlib.util.find_spec("aim") is not None, reason="aim is installed")
def test_aim_not_installed_is_one_line(capsys):
    assert main(["check", str(SMOKE), "--set", "tune.loggers=['aim']"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gumbel-study[aim]" in err[0]


@pytest.mark.parametrize("sets,fragment", [
    (["tune.loggers=['neptune']"], "tune.loggers='neptune': unknown tracker"),
    (["tune.loggers=['wandb', 'wandb']"], "names a tracker twice"),
    (["tune.mlflow_uri=sqlite:///x.db"], "tune.mlflow_uri='sqlite:///x.db': is set but tune.loggers has no \"mlflow\""),
])
def test_bad_tracker_settings(capsys, sets, fragment):
    argv = ["check", str(SMOKE)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_check_prints_the_trackers(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["check", str(SMOKE), "--set", "tune.loggers=['mlflow', 'wandb']"]) == 0
    out = capsys.readouterr().out
    assert ("trackers:      mlflow (MLFLOW_TRACKING_URI, else sqlite:///STORAGE/smoke/mlflow.db, experiment 'smoke'); "
            "wandb (project 'smoke', mode offline from WANDB_MODE) (lean metrics; params = trial config)") in out


# ---------------------------------------------------------------------- end to end on Ray


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """smoke.toml with relaxation pinned (2 trials: tau0 0.5, 2.0), logging to MLflow and W&B offline."""
    pytest.importorskip("mlflow", reason="extra mlflow")
    pytest.importorskip("wandb", reason="extra wandb")
    storage = tmp_path_factory.mktemp("tracked")
    cmd = [sys.executable, "-m", "study.cli", "run", str(SMOKE), "--storage", str(storage), "--num-cpus", "2",
           "--set", "relaxation=soft", "--set", "tune.loggers=['mlflow', 'wandb']"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    wandb_home = storage / "wandb-home"  # keep W&B's settings and caches out of the user's home
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONFIG_DIR=str(wandb_home), WANDB_CACHE_DIR=str(wandb_home),
               WANDB_DATA_DIR=str(wandb_home))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return storage / "smoke"


def _tune_rows(experiment: Path) -> dict[float, list[dict]]:
    """Per trial (by tau0): what Tune received, one row per evaluation."""
    out = {}
    for trial_dir in trial_dirs(experiment):
        rows = result_rows(trial_dir / "result.json")
        out[rows[0]["config"]["tau0"]] = rows
    assert sorted(out) == [0.5, 2.0]
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_logs_lean_metrics_per_evaluation(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    tune_rows = _tune_rows(tracked_run)
    for run in runs:
        params = run.data.params
        tau0 = float(params["tau0"])
        rows = tune_rows[tau0]
        config = rows[0]["config"]
        assert set(params) == set(config)  # params = the trial config, nothing else
        assert params["relaxation"] == "soft" and params["seeds"] == "2" and params["probe_taus"] == "[0.5]"
        assert set(run.data.metrics) == LEAN  # the lean report: no config/*, no clock or host keys
        history = client.get_metric_history(run.info.run_id, "fit/tv")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(r["step"], r["fit/tv"]) for r in rows]
        assert [r["step"] for r in rows] == [0, 20, 40, 60]


def _wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file: a 7-byte header, then 32 KiB blocks of chunks, each
    with a 7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last), as LevelDB logs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    block, pos, chunks, records = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def _settled_wandb_records(path: Path, timeout_s: float = 60.0) -> list:
    """The records of a W&B offline run file once it holds its run record. W&B's service process
    writes the file on its own schedule and may still be flushing when the study's driver has
    exited (seen once in CI: a file with no run record yet), so wait for it, up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = _wandb_records(path)
        if any(r.WhichOneof("record_type") == "run" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _items(items) -> dict:
    """W&B items: `key`, or `nested_key` (a list of one key here) when set by newer wandb-core."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_offline_runs_hold_the_metric_history(tracked_run):
    tune_rows = _tune_rows(tracked_run)
    seen = set()
    run_files = sorted(tracked_run.glob("wandb/offline-run-*/run-*.wandb"))  # one W&B dir in the experiment directory
    assert len(run_files) == 2, run_files
    for run_file in run_files:
        records = _settled_wandb_records(run_file)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run.project == "smoke"
        config = _items(run.config.update)
        history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
        rows = tune_rows[config["tau0"]]
        seen.add(config["tau0"])
        assert config["relaxation"] == "soft" and config["probe_taus"] == [0.5]
        assert [h["step"] for h in history] == [0, 20, 40, 60]
        assert [h["fit/tv"] for h in history] == pytest.approx([r["fit/tv"] for r in rows], rel=1e-12)
        for h in history:  # the lean report, the evaluation count W&B steps by, and W&B's own keys
            assert set(h) == LEAN | {"training_iteration", "_step", "_runtime", "_timestamp"}, set(h)
    assert seen == {0.5, 2.0}
