"""Ray Tune: the trainable, the Tuner driver (embedded Ray or an existing cluster), resume.

The only module in `study` that imports ray. The trainable is a plain function: a flat config
dict in (the TrialConfig fields plus `seeds` and `checkpoint_every`), `study.train.Trial` does
the work. Every evaluation goes out on two channels, each for its reader:

- `tune.report`: the lean metrics of `study.train.lean_metrics` (means over seeds, seed counts,
  the trained estimator's probe), about 20 keys: what dashboards, schedulers and searchers need.
- the trial record (`study.record`): every seed's every metric and every probe, as parquet files
  in the trial's directory, which Tune syncs to the experiment's storage (local or cloud) at every
  checkpoint and when the trial ends. Analysis reads these.

Seeds are packed as replicas in one trial, so a grid of T configurations costs T actors, and
`reuse_actors` keeps them between trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray._private import ray_constants
from ray.tune import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, SyncConfig, TuneConfig, Tuner

from study.config import PBT_MUTABLE, ConfigError, StudySpec, TrialConfig
from study.evaluation import Evaluation
from study.preflight import check_writable
from study.provenance import append_session, session_info
from study.record import drop_exploits_after, write_evaluation, write_exploit, write_host
from study.train import Trial, lean_metrics, load_state, save_state

__all__ = ["param_space", "run_study", "trainable"]

_TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}
_TUPLE_FIELDS = {f.name for f in dataclasses.fields(TrialConfig) if str(f.type).startswith("tuple")}


def trial_config_from(config: dict[str, Any]) -> TrialConfig:
    values = {k: (tuple(v) if k in _TUPLE_FIELDS else v) for k, v in config.items() if k in _TRIAL_FIELDS}
    return TrialConfig(**values)


def trainable(config: dict[str, Any]) -> None:
    """One Tune trial: a population of `seeds` replicas of one configuration."""
    cfg = trial_config_from(config)
    # One INFO line per checkpoint from Ray's storage layer would drown the progress lines.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cpus = max(1, int(config.get("cpus", 1)))
    torch.set_num_threads(cpus)  # the trial's CPU share, not the whole node
    trial = Trial(cfg, int(config["seeds"]))
    directory = tune.get_context().get_trial_dir()  # synced to storage with the checkpoints
    pbt_interval = int(config.get("pbt_interval", 0))  # PBT clones checkpoints at these steps
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as checkpoint_dir:
            _restore(trial, checkpoint_dir, directory)
    elif pbt_interval:  # the lineage's first segment: the trial's own starting values
        write_exploit(directory, 0, _lineage_entry(trial, {}, None))
    write_host(directory, trial.step, trial.population.device)
    every = int(config.get("checkpoint_every", 1))
    evaluations = {"count": 0}

    def on_eval(evaluation: Evaluation) -> None:
        write_evaluation(directory, evaluation, trial.time_s)
        metrics = lean_metrics(evaluation, cfg.relaxation)
        evaluations["count"] += 1
        at_perturbation = pbt_interval > 0 and evaluation.step % pbt_interval == 0
        if evaluations["count"] % every == 0 or at_perturbation or evaluation.step >= cfg.steps or trial.diverged:
            with tempfile.TemporaryDirectory(prefix="gumbel-ckpt-") as checkpoint_dir:
                save_state(trial, checkpoint_dir)
                _write_owner(checkpoint_dir)
                tune.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir))
        else:
            tune.report(metrics)

    trial.run(on_eval)


_OWNER_FILE = "owner.json"  # in a checkpoint: the trial that wrote it (a PBT exploit's donor)


def _write_owner(checkpoint_dir: str) -> None:
    context = tune.get_context()
    owner = {"trial_id": context.get_trial_id(), "trial_dir": Path(context.get_trial_dir()).name}
    Path(checkpoint_dir, _OWNER_FILE).write_text(json.dumps(owner) + "\n")


def _restore(trial: Trial, checkpoint_dir: str, trial_dir: str) -> None:
    """Load the checkpoint; when it was written for other values of PBT's mutable fields (a PBT
    exploit: another trial's checkpoint, our perturbed config), record that in the trial record."""
    written_for = load_state(trial, checkpoint_dir)
    drop_exploits_after(trial_dir, trial.step)  # a lineage this trial no longer follows
    fields = [f for f in PBT_MUTABLE.values() if written_for.get(f) != getattr(trial.config, f)]
    if not fields:
        return  # our own checkpoint: a retry, a resume, or a paused trial going on
    owner_file = Path(checkpoint_dir, _OWNER_FILE)
    owner = json.loads(owner_file.read_text()) if owner_file.exists() else {}
    write_exploit(trial_dir, trial.step, _lineage_entry(trial, written_for, owner))
    # The record at this step becomes the model the trial now continues, at its new temperature
    # (Tune is not told: it has the donor's result). The donor may have been ahead: then the
    # record has no rows between this trial's own last evaluation and this step.
    write_evaluation(trial_dir, trial.population.evaluate(), trial.time_s)


def _lineage_entry(trial: Trial, written_for: dict[str, Any], owner: dict[str, Any] | None) -> dict[str, Any]:
    """The trial record's pbt-<step>.json: from this step on, the trial's mutable values (`new`),
    and the checkpoint it continued (the donor's trial and values, `old`; none at step 0)."""
    step, tau = trial.population.tau_anchor
    return {
        "trial_id": tune.get_context().get_trial_id(), "donor": (owner or {}).get("trial_id"), "donor_dir": (owner or {}).get("trial_dir"),
        "old": {f: written_for.get(f) for f in PBT_MUTABLE.values()} if owner is not None else None,
        "new": {f: getattr(trial.config, f) for f in PBT_MUTABLE.values()}, "tau_anchor": [step, tau],
    }


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Flat: fixed TrialConfig fields, grid axes as grid_search, and the per-trial run settings."""
    space: dict[str, Any] = spec.fixed.to_dict()
    for axis, values in spec.grid.items():
        space[axis] = tune.grid_search([list(v) if isinstance(v, tuple) else v for v in values])
    space.update(search_domains(spec))
    space.update(seeds=spec.seeds, checkpoint_every=spec.tune.checkpoint_every, cpus=spec.resources.cpus)
    if spec.search.pbt is not None:  # the trainable checkpoints at every perturbation; analysis reads both
        space.update(pbt_interval=spec.search.pbt.interval, pbt_quantile=spec.search.pbt.quantile)
    return space


def _storage_path(storage: str) -> str:
    """A cloud URI as is; a local path made absolute and checked for writing before any work."""
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    check_writable(path, "--storage", storage)
    return str(path)


# Ray's switch for its macOS/Windows default, where the node's address is 127.0.0.1 and so the
# GCS, raylet, worker and agent gRPC servers listen on loopback only. On Linux it defaults to on,
# and even `_node_ip_address="127.0.0.1"` is resolved back to the machine's address.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only():
    """Start embedded Ray with every port on 127.0.0.1, then put the switch back.

    Ray's child processes read the switch from the environment when they start; this process
    imported ray already, so its cached constant is set too. Both are restored afterwards so that
    a later `ray start` of a real cluster from this process is not refused as multi-node.
    """
    saved_env, saved_flag = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = saved_env


def _init_ray(address: str | None, num_cpus: int | None, dashboard: bool = False) -> None:
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
        return
    # Embedded Ray on this machine, reachable from it alone. The dashboard (extra `dashboard`) is
    # opt-in: its ten processes take a large share of a laptop study's memory (README).
    with _loopback_only():
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1")


class _Progress(tune.Callback):
    """One line per finished or failed trial, and a status line at most every `every_s` seconds."""

    def __init__(self, spec: StudySpec, every_s: float = 10.0):
        self.grid = list(spec.grid) + list(spec.search.space)
        self.metric = spec.tune.metric
        self.every_s = every_s
        self.started = time.time()
        self.last = 0.0

    def setup(self, **info):
        self.started = time.time()  # also on a restored run, whose callback was unpickled

    def _label(self, trial) -> str:
        return ", ".join(f"{axis}={trial.config.get(axis)}" for axis in self.grid) or trial.trial_id

    def _status(self, trials) -> None:
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        print(f"[{time.time() - self.started:6.0f} s] trials: {states}", file=sys.stderr, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if time.time() - self.last >= self.every_s:
            self.last = time.time()
            self._status(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        print(f"  done   {self._label(trial)}: {self.metric}={last.get(self.metric, float('nan')):.4f} after {last.get('step')} steps", file=sys.stderr, flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"  failed {self._label(trial)} (retries left follow FailureConfig)", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- search, scheduler, trackers


def search_domains(spec: StudySpec) -> dict[str, Any]:
    """[search.space] as Tune domains; `int` bounds are both included (Tune's randint excludes the upper)."""
    out: dict[str, Any] = {}
    for name, dist in spec.search.space.items():
        if dist.kind == "choice":
            out[name] = tune.choice(list(dist.values))
        elif dist.kind == "int":
            out[name] = tune.randint(dist.values[0], dist.values[1] + 1)
        else:
            out[name] = (tune.loguniform if dist.kind == "loguniform" else tune.uniform)(*dist.values)
    return out


def search_algorithm(spec: StudySpec):
    """None for the grid (Tune's default generator); seeded random sampling; or Optuna's TPE.
    Metric and mode come from TuneConfig ([tune] metric, mode)."""
    search = spec.search
    if search.algorithm == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=search.seed)
    if search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=search.seed)
    return None


def searched_dirname(trial) -> str:
    """`trainable_<id>_<searched values>`: a searcher's trials are tagged with every config key by
    Tune, which truncates the name before the searched ones (alphabetical) appear."""
    values = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(trial.evaluated_params.items()))
    return f"trainable_{trial.trial_id}_{values}"[:120]


def scheduler(spec: StudySpec):
    """ASHA or PBT on `step` (discriminator steps, in every report), or None (FIFO: every trial to
    its end). A trial ASHA stops ends as TERMINATED at the evaluation it was judged on: its record
    holds every step up to that one (written before the report), and nothing after."""
    if spec.search.pbt is not None:
        return pbt_scheduler(spec)
    asha = spec.search.asha
    if asha is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        max_t=asha.max_steps,
        grace_period=asha.grace_steps,
        reduction_factor=asha.reduction_factor,
        brackets=asha.brackets,
    )


class ClipMutations:
    """Tune's PBT scales a continuous value by 0.8 or 1.2 with no regard for its distribution's
    bounds: clip each to them, so that every perturbed config is one `check` validated."""

    def __init__(self, bounds: dict[str, tuple[float, float]]):
        self.bounds = bounds

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high) in self.bounds.items():
            config[name] = min(max(config[name], low), high)
        return config


def pbt_mutations(spec: StudySpec) -> dict[str, Any]:
    """[search.pbt] mutations by TrialConfig field: a choice as a list (Tune shifts to a neighbour
    or resamples), a range as a Tune domain (scaled by 0.8 or 1.2, or resampled)."""
    out: dict[str, Any] = {}
    for name, dist in spec.search.pbt.fields.items():
        if dist.kind == "choice":
            out[name] = list(dist.values)
        else:
            out[name] = (tune.loguniform if dist.kind == "loguniform" else tune.uniform)(*dist.values)
    return out


def pbt_scheduler(spec: StudySpec):
    """Population Based Training on `step`: the trainable checkpoints at every multiple of the
    interval, where PBT clones the top quantile's checkpoints into the bottom quantile's trials
    (study.train.Trial.load_state_dict takes a checkpoint whose config differs in mutable fields)."""
    from ray.tune.schedulers import PopulationBasedTraining

    p = spec.search.pbt
    bounds = {name: dist.values for name, dist in p.fields.items() if dist.kind != "choice"}
    return PopulationBasedTraining(
        time_attr="step",
        perturbation_interval=p.interval,
        hyperparam_mutations=pbt_mutations(spec),
        quantile_fraction=p.quantile,
        resample_probability=p.resample_probability,
        custom_explore_fn=ClipMutations(bounds),
        synch=p.synch,
    )


# Keys Tune adds to every result (clock, host, config, bookkeeping): trackers get the lean report
# the trial sent (~20 keys) and `training_iteration`, the evaluation count W&B and Aim step by.
_TUNE_KEYS = frozenset({
    "config", "time_this_iter_s", "time_total_s", "timestamp", "date", "time_since_restore", "iterations_since_restore",
    "timesteps_since_restore", "timesteps_total", "episodes_total", "pid", "hostname", "node_ip", "trial_id",
    "experiment_id", "experiment_tag", "checkpoint_dir_name", "done", "should_checkpoint",
})


def lean_result(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in _TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def mlflow_uri(spec: StudySpec, storage: str) -> str | None:
    """The MLflow tracking URI: [tune] mlflow_uri, else $MLFLOW_TRACKING_URI, else a SQLite file in the
    experiment directory (MLflow 3 refuses plain file stores unless MLFLOW_ALLOW_FILE_STORE is set)."""
    if spec.tune.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return spec.tune.mlflow_uri or None  # None: mlflow reads the environment
    path = experiment_path(storage, spec.name)
    if "://" in path:
        raise ConfigError("tune.mlflow_uri", "", f"needed with a cloud --storage ({storage}): a tracking server or database URI, "
                          "or set MLFLOW_TRACKING_URI")
    return f"sqlite:///{Path(path).resolve() / 'mlflow.db'}"


class _Tracker(tune.Callback):
    """A tracker's Tune logger callback, fed the lean reports only (`lean_result`) and the trial's
    config as its parameters. The real callback is built in `setup`, on the driver, so that a study
    imports mlflow, wandb or aim only when it names them, and so that this wrapper pickles cheaply
    into the experiment state (Tuner.restore builds the real one again)."""

    def __init__(self, kind: str, spec: StudySpec, storage: str):
        self.kind, self.name = kind, spec.name
        self.uri = mlflow_uri(spec, storage) if kind == "mlflow" else None
        path = experiment_path(storage, spec.name)
        # W&B and Aim write from the driver: into the experiment directory when it is local. Left
        # to their default (the trial's directory in Ray's staging area), files they write after
        # a trial's last sync to storage would never get there.
        self.local_dir = None if "://" in path else str(Path(path).resolve())
        self.inner = None

    def __getstate__(self):
        return {**self.__dict__, "inner": None}

    def setup(self, **info):
        self.inner = _tracker_callback(self.kind, self.name, self.uri, self.local_dir)
        self.inner.setup(**info)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.inner.on_trial_start(iteration, trials, trial, **info)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.inner.on_trial_restore(iteration, trials, trial, **info)

    def on_trial_save(self, iteration, trials, trial, **info):
        self.inner.on_trial_save(iteration, trials, trial, **info)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.inner.on_trial_result(iteration, trials, trial, lean_result(result), **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.inner.on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.inner.on_trial_error(iteration, trials, trial, **info)

    def on_experiment_end(self, trials, **info):
        self.inner.on_experiment_end(trials, **info)


def _tracker_callback(kind: str, name: str, uri: str | None, local_dir: str | None):
    """Ray Tune's logger callback for one tracker (imported here: each pulls in its package)."""
    if kind == "mlflow":
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        class LeanMLflow(MLflowLoggerCallback):
            """Metrics at the discriminator step of each evaluation, in one batch per report."""

            def log_trial_result(self, iteration, trial, result):
                now, step = int(time.time() * 1000), int(result["step"])
                metrics = [Metric(k, float(v), now, step) for k, v in result.items() if k != "training_iteration"]
                self.client = getattr(self, "client", None) or MlflowClient(self.tracking_uri)
                self.client.log_batch(self._trial_runs[trial], metrics=metrics)

        return LeanMLflow(tracking_uri=uri, experiment_name=name, tags={"study": name})
    if kind == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        options = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}  # also on a cluster's workers
        if local_dir:
            options["dir"] = local_dir  # runs in STORAGE/NAME/wandb/
        return WandbLoggerCallback(project=name, **options)
    if kind == "aim":
        from ray.tune.logger.aim import AimLoggerCallback

        return AimLoggerCallback(repo=local_dir, experiment_name=name)  # repo STORAGE/NAME/.aim
    raise ValueError(f"unknown tracker {kind!r}")


def trackers(spec: StudySpec, storage: str) -> list[tune.Callback]:
    """The `[tune] loggers` callbacks; mlflow's URI is resolved here, before anything runs."""
    return [_Tracker(kind, spec, storage) for kind in spec.tune.loggers]


def _trainable_with_resources(spec: StudySpec):
    return tune.with_resources(trainable, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})


def _tuner(spec: StudySpec, storage: str) -> Tuner:
    return Tuner(
        _trainable_with_resources(spec),
        param_space=param_space(spec),
        tune_config=TuneConfig(
            metric=spec.tune.metric,
            mode=spec.tune.mode,
            # Not under PBT: Ray's function trainable writes its trial directory to the driver's
            # staging copy when an actor starts it, and to a working copy when a reused actor takes
            # an exploit (reset_config); both reach storage, and the stale copy of the record may
            # land last. A fresh actor per exploit keeps one copy.
            reuse_actors=spec.search.pbt is None,
            max_concurrent_trials=spec.tune.max_concurrent or None,
            search_alg=search_algorithm(spec),
            scheduler=scheduler(spec),
            num_samples=spec.search.samples,
            trial_dirname_creator=searched_dirname if spec.search.algorithm == "optuna" else None,
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=spec.tune.max_failures),
            # Keep every checkpoint: with num_to_keep, Tune deletes old ones before its experiment
            # snapshot names the new one, and a driver killed in between cannot resume (seen in CI).
            # Checkpoints are small (parameters, optimizer, RNG states), so this costs little.
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            # The trial record is written into each trial's directory: sync it with every
            # checkpoint (and at the trial's end), so that a restored trial finds every row up to
            # its checkpoint in storage and rewrites the rows after it.
            sync_config=SyncConfig(sync_artifacts=True, sync_artifacts_on_checkpoint=True),
            callbacks=[_Progress(spec), *trackers(spec, storage)],
            verbose=0,
        ),
    )


def experiment_path(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


def run_study(
    spec: StudySpec,
    *,
    storage: str = "runs",
    address: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    dashboard: bool = False,
) -> int:
    """Run (or resume) a study; print where the results are. Returns a process exit code."""
    storage = _storage_path(storage)
    path = experiment_path(storage, spec.name)
    trackers(spec, storage)  # a tracker that cannot log (mlflow, cloud storage, no URI) fails before anything is written
    if resume and not Tuner.can_restore(path):
        raise ConfigError("--resume", path, "no restorable experiment there")
    if not resume and "://" not in path and Path(path, "tuner.pkl").exists():
        raise ConfigError("--name", spec.name, f"{path} already holds an experiment; pass --resume to continue it or --name to start another")
    started = time.time()
    # Checkpointing each trial every few evaluations is by design; Tune's sync warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = address or os.environ.get("RAY_ADDRESS")  # as `ray job submit` sets it
    _init_ray(address, num_cpus, dashboard)
    if dashboard and not address:
        print("gumbel-study: Ray dashboard on http://127.0.0.1:8265", file=sys.stderr)
    session = session_info(spec.source, ray_version=ray.__version__, resources=ray.cluster_resources())
    append_session(path, session)
    print(f"gumbel-study: {spec.num_trials} trials x {spec.seeds} seeds -> {path}", file=sys.stderr)
    if resume:
        tuner = Tuner.restore(path, _trainable_with_resources(spec), resume_unfinished=True, resume_errored=True)
    else:
        tuner = _tuner(spec, storage)
    results = tuner.fit()
    errored = [r for r in results if r.error is not None]
    print(f"\nfinished in {time.time() - started:.1f} s: {len(results) - len(errored)} of {len(results)} trials completed")
    for result in errored:
        reason = str(result.error).strip().splitlines()[-1] if str(result.error).strip() else type(result.error).__name__
        print(f"  failed: {Path(result.path).name}: {reason}")
    print(f"results: {path}")
    print(f"report:  gumbel-study report {path}")
    return 1 if errored else 0
