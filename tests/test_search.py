"""[search]: Optuna, random sampling and ASHA.

Validation and `check` without Ray (bad input exits 2 with one line naming the key, in the style of
test_bad_input.py); then Optuna (4 samples) and ASHA (a grid of 4) end to end on an embedded Ray
with 2 CPUs, in subprocesses, on experiments/smoke.toml turned into a search with `--set`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from spec_text import SHORT_ANNEALED, assert_spec_refused
from record_rows import record_rows, trial_dirs
from result_rows import result_rows

from study.cli import main
from study.config import load_spec, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"

GOOD = SHORT_ANNEALED + """[search]
algorithm = "optuna"
num_samples = 4
seed = 3
[search.space]
tau0 = {loguniform = [0.2, 5.0]}
relaxation = {choice = ["soft", "hard"]}
"""

# (case id, spec text, extra --set items, expected fragments of the one error line)
CASES = [
    ("unknown-search-key", GOOD.replace("seed = 3", "sed = 3"), [], ["search.sed", "unknown key"]),
    ("unknown-algorithm", GOOD.replace('"optuna"', '"hyperopt"'), [], ["search.algorithm", "hyperopt", "optuna"]),
    ("unknown-field", GOOD + "temperature = {uniform = [0.1, 1.0]}\n", [], ["search.space.temperature", "unknown key"]),
    ("unknown-distribution", GOOD + "lr_g = {normal = [0.0, 1.0]}\n", [], ["search.space.lr_g.normal", "unknown distribution"]),
    ("not-a-distribution", GOOD + "lr_g = 0.001\n", [], ["search.space.lr_g", "expected one distribution"]),
    ("two-distributions", GOOD + "lr_g = {uniform = [0.001, 0.01], loguniform = [0.001, 0.01]}\n", [], ["search.space.lr_g", "one distribution"]),
    ("loguniform-zero", GOOD.replace("[0.2, 5.0]", "[0.0, 5.0]"), [], ["search.space.tau0.loguniform", "> 0"]),
    ("low-above-high", GOOD.replace("[0.2, 5.0]", "[5.0, 0.2]"), [], ["search.space.tau0.loguniform", "low must be < high"]),
    ("one-bound", GOOD.replace("[0.2, 5.0]", "[0.2]"), [], ["search.space.tau0.loguniform", "[low, high]"]),
    ("bound-not-number", GOOD.replace("[0.2, 5.0]", '[0.2, "big"]'), [], ["search.space.tau0.loguniform", "'big'", "number"]),
    ("bound-inf", GOOD.replace("[0.2, 5.0]", "[0.2, inf]"), [], ["search.space.tau0.loguniform", "finite"]),
    ("uniform-on-int", GOOD + "batch_size = {uniform = [8, 64]}\n", [], ["search.space.batch_size.uniform", "integers", "int or choice"]),
    ("int-on-float", GOOD + "lr_g = {int = [1, 3]}\n", [], ["search.space.lr_g.int", "numbers"]),
    ("int-below-range", GOOD + "batch_size = {int = [0, 64]}\n", [], ["search.space.batch_size", "0", ">= 1"]),
    ("uniform-past-range", GOOD + "label_smoothing = {uniform = [0.0, 1.0]}\n", [], ["search.space.label_smoothing", "1.0", "[0, 1)"]),
    ("choice-bad-value", GOOD.replace('["soft", "hard"]', '["soft", "gumbel"]'), [], ["search.space.relaxation", "gumbel"]),
    ("choice-empty", GOOD.replace('["soft", "hard"]', "[]"), [], ["search.space.relaxation.choice", "at least one"]),
    ("choice-twice", GOOD.replace('["soft", "hard"]', '["soft", "soft"]'), [], ["search.space.relaxation.choice", "twice"]),
    ("list-field", GOOD + "probe_taus = {choice = [0.5, 1.0]}\n", [], ["search.space.probe_taus", "list field"]),
    # tau_min = 0.1 is fixed: tau0 may not go below it under an annealing schedule
    ("bound-breaks-other-field", GOOD.replace("[0.2, 5.0]", "[0.05, 5.0]"), [], ["search.space.tau0", "0.05", "tau_min"]),
    ("space-and-fixed", GOOD.replace("steps = 60", "steps = 60\ntau0 = 1.0"), [], ["search.space.tau0", "[fixed]"]),
    ("optuna-with-grid", GOOD, ["grid.lr_g=[0.001, 0.01]"], ["search.algorithm", "optuna", "grid", "lr_g"]),
    ("optuna-no-samples", GOOD.replace("num_samples = 4\n", ""), [], ["search.num_samples", "required"]),
    ("samples-zero", GOOD.replace("num_samples = 4", "num_samples = 0"), [], ["search.num_samples", ">= 1"]),
    ("seed-negative", GOOD.replace("seed = 3", "seed = -1"), [], ["search.seed", ">= 0"]),
    ("optuna-no-space", GOOD.split("[search.space]")[0], [], ["search.space", "at least one field"]),
    ("grid-with-space", GOOD.replace('"optuna"', '"grid"'), [], ["search.space", "optuna"]),
    ("grid-with-samples", GOOD.split("[search.space]")[0].replace('"optuna"', '"grid"'), [], ["search.num_samples", "once"]),
    ("unknown-scheduler", GOOD, ["search.scheduler=hyperband"], ["search.scheduler", "hyperband", "asha"]),
    ("asha-without-scheduler", GOOD + "[search.asha]\ngrace_steps = 20\n", [], ["search.asha", "scheduler"]),
    ("asha-unknown-key", GOOD, ["search.scheduler=asha", "search.asha.grace=20"], ["search.asha.grace", "unknown key"]),
    ("asha-grace-at-max", GOOD, ["search.scheduler=asha", "search.asha.grace_steps=60"], ["search.asha.grace_steps", "60", "max_steps=60"]),
    ("asha-max-beyond", GOOD, ["search.scheduler=asha", "search.asha.max_steps=100"], ["search.asha.max_steps", "100", "steps=60"]),
    ("asha-factor-one", GOOD, ["search.scheduler=asha", "search.asha.reduction_factor=1"], ["search.asha.reduction_factor", "> 1"]),
    ("asha-brackets-zero", GOOD, ["search.scheduler=asha", "search.asha.brackets=0"], ["search.asha.brackets", ">= 1"]),
    ("asha-too-many-brackets", GOOD, ["search.scheduler=asha", "search.asha.brackets=4"], ["search.asha.brackets", "no rung"]),
    ("metric-not-reported", GOOD, ["tune.metric=fit/probs"], ["tune.metric", "fit/probs", "fit/tv"]),
    # relaxation is searched, so no grad/<relaxation>/* key is reported by every trial
    ("metric-per-relaxation", GOOD, ["tune.metric=grad/soft/mse"], ["tune.metric", "grad/soft/mse"]),
    ("set-space-unknown-field", GOOD, ["search.space.colour={choice=[1]}"], ["search.space.colour", "unknown trial field"]),
    ("set-search-unknown", GOOD, ["search.colour=1"], ["search.colour", "unknown key"]),
]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_search_input_is_refused(tmp_path, capsys, command, case):
    name, text, sets, fragments = case
    assert_spec_refused(main, tmp_path, capsys, command, text, sets, fragments)


def test_good_spec_is_valid(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    loaded = load_spec(spec)
    assert loaded.search.algorithm == "optuna" and loaded.num_trials == 4
    assert {k: (d.kind, d.values) for k, d in loaded.search.space.items()} == {
        "tau0": ("loguniform", (0.2, 5.0)), "relaxation": ("choice", ("soft", "hard"))}


def test_check_prints_the_search(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD + "batch_size = {int = [16, 64]}\n")
    assert main(["check", str(spec), "--set", "search.scheduler=asha", "--set", "search.asha.reduction_factor=2"]) == 0
    out = capsys.readouterr().out
    assert "trials:        4 (optuna: 4 samples)" in out
    assert "search:        optuna (TPE, seed 3), 4 samples, min fit/tv" in out
    assert "tau0           loguniform [0.2, 5]" in out
    assert "relaxation     choice soft, hard" in out
    assert "batch_size     int [16, 64] (both included)" in out
    # ASHA's defaults: grace = eval_every, max = steps
    assert "scheduler:     asha on step, min fit/tv: grace 20, max 60, reduction factor 2, 1 bracket\n                 rungs at step 20, 40" in out
    assert "replica-steps: at most" in out
    fixed = next(line for line in out.splitlines() if line.startswith("  fixed:"))
    assert "tau0=" not in fixed and "relaxation=" not in fixed and "batch_size=" not in fixed
    assert out.rstrip().endswith("valid")


def test_random_search_crosses_the_grid(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD.replace('"optuna"', '"random"'))
    assert main(["check", str(spec), "--set", "grid.lr_g=[0.001, 0.01]"]) == 0
    out = capsys.readouterr().out
    assert "trials:        8 (2 grid combinations x 4 random samples)" in out
    assert "search:        random (Tune's random sampler, seed 3), 4 samples per grid combination" in out


@pytest.mark.parametrize("grace,max_steps,factor,brackets", [(20, 60, 2, 1), (1, 100, 4, 1), (10, 2000, 3, 3), (30, 1000, 1.5, 2), (20, 180, 3, 1)])
def test_asha_rungs_are_tunes(grace, max_steps, factor, brackets):
    """What check prints as rungs is what Tune's ASHA uses."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    from study.config import AshaSpec

    asha = AshaSpec(grace_steps=grace, max_steps=max_steps, reduction_factor=factor, brackets=brackets)
    for s in range(brackets):
        tune_rungs = sorted(milestone for milestone, _ in _Bracket(grace, max_steps, factor, s)._rungs)
        assert asha.rungs(s) == pytest.approx(tune_rungs)


def test_overrides_move_a_field_in_and_out_of_the_space(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    pinned = load_spec(spec, parse_overrides(["tau0=0.5"]))  # pinning leaves the space
    assert list(pinned.search.space) == ["relaxation"] and pinned.fixed.tau0 == 0.5
    moved = load_spec(SMOKE, parse_overrides(["search.algorithm=optuna", "search.num_samples=3",
                                              "search.space.tau0={loguniform = [0.3, 3.0]}", "search.space.relaxation={choice = ['soft', 'hard']}"]))
    assert moved.grid == {} and set(moved.search.space) == {"tau0", "relaxation"} and moved.num_trials == 3
    # X, fixed.X, grid.X and search.space.X are one setting: the last wins
    assert parse_overrides(["search.space.tau0={uniform = [1.0, 2.0]}", "tau0=0.7"]) == {"tau0": 0.7}
    regrid = load_spec(spec, parse_overrides(["search.algorithm=random", "grid.relaxation=['soft', 'hard']"]))
    assert list(regrid.search.space) == ["tau0"] and regrid.grid == {"relaxation": ("soft", "hard")}


def test_train_refuses_a_search_space(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    assert main(["train", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "search.space" in err and "tau0=..." in err and "relaxation=..." in err
    assert not (tmp_path / "out").exists()


SEARCH_SETS = ["search.algorithm=optuna", "search.num_samples=4", "search.space.tau0={loguniform = [0.2, 5.0]}",
               "search.space.relaxation={choice = ['soft', 'hard']}", "search.space.batch_size={int = [16, 18]}"]


def test_search_domains_and_a_seeded_optuna():
    """The space becomes Tune domains; the same seed draws the same trials, another seed others."""
    from ray import tune

    from study import sweep

    spec = load_spec(SMOKE, parse_overrides(SEARCH_SETS))
    domains = sweep.search_domains(spec)
    assert isinstance(domains["tau0"], tune.search.sample.Float) and (domains["tau0"].lower, domains["tau0"].upper) == (0.2, 5.0)
    assert domains["relaxation"].categories == ["soft", "hard"]
    assert (domains["batch_size"].lower, domains["batch_size"].upper) == (16, 19)  # Tune's randint excludes the upper bound

    def draws(seed: int) -> list[dict]:
        spec = load_spec(SMOKE, parse_overrides([*SEARCH_SETS, f"search.seed={seed}"]))
        searcher = sweep.search_algorithm(spec)
        assert searcher.set_search_properties(spec.tune.metric, spec.tune.mode, sweep.param_space(spec))
        return [searcher.suggest(f"t{i}") for i in range(4)]

    first, again, other = draws(5), draws(5), draws(6)
    assert first == again and first != other
    for config in first:
        assert 0.2 <= config["tau0"] <= 5.0 and config["relaxation"] in ("soft", "hard") and 16 <= config["batch_size"] <= 18


# ---------------------------------------------------------------------- end to end on Ray

LEAN = {"step", "tau", "loss/d", "loss/g", "fit/tv", "fit/js", "fit/kl", "sample/vertex_gap", "sample/mean_bias", "std/fit/tv",
        "seeds/count", "seeds/diverged"}


def _run(storage: Path, *sets: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "study.cli", "run", str(SMOKE), "--storage", str(storage), "--num-cpus", "2"]
    for item in sets:
        cmd += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always an embedded, private Ray
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _assert_record(trial_dir: Path, steps: list[int]) -> None:
    """The trial record holds every seed at exactly the reported steps."""
    evals = record_rows(trial_dir)
    assert sorted((r["step"], r["seed"]) for r in evals) == [(t, s) for t in steps for s in (0, 1)], trial_dir.name
    probes = record_rows(trial_dir, "probes")
    assert sorted({r["step"] for r in probes}) == steps


@pytest.mark.ray
@pytest.mark.slow
def test_optuna_search_end_to_end(tmp_path):
    from ray.tune import ExperimentAnalysis

    _run(tmp_path, "search.algorithm=optuna", "search.num_samples=4", "search.seed=7",
         "search.space.tau0={loguniform = [0.2, 5.0]}", "search.space.relaxation={choice = ['soft', 'hard']}")
    experiment = tmp_path / "smoke"
    analysis = ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == 4 and {t.status for t in analysis.trials} == {"TERMINATED"}
    assert list(experiment.glob("searcher-state-*.pkl")), "Tune saved no searcher state (needed by --resume)"
    drawn = set()
    for trial_dir in trial_dirs(experiment):
        rows = result_rows(trial_dir / "result.json")
        config = rows[-1]["config"]
        assert 0.2 <= config["tau0"] <= 5.0 and config["relaxation"] in ("soft", "hard")
        assert f"tau0={config['tau0']:.4g}" in trial_dir.name and f"relaxation={config['relaxation']}" in trial_dir.name
        drawn.add((config["tau0"], config["relaxation"]))
        assert [r["step"] for r in rows] == [0, 20, 40, 60]
        relaxation = config["relaxation"]
        assert LEAN | {f"grad/{relaxation}/{s}" for s in ("bias2", "variance", "mse")} <= set(rows[-1])
        _assert_record(trial_dir, [0, 20, 40, 60])
    assert len(drawn) == 4


@pytest.mark.ray
@pytest.mark.slow
def test_asha_stops_trials_and_they_end_cleanly(tmp_path):
    """A grid of 4 under ASHA. The metric is `tau` (tau0 * exp(-rate * step), the same rate for all),
    so which trials are worse at each rung is known in advance, whatever training does: with 2 CPUs
    the trials tau0 = 0.5 and 1.0 run first and record their rung-20 values, and tau0 = 2.0 and 4.0
    fall below the rung's median when they reach it and are stopped at step 20. tau0 = 1.0 may go
    either way (it races tau0 = 0.5 to the first rung); 0.5 is never worse and runs to the end."""
    from ray.tune import ExperimentAnalysis

    _run(tmp_path, "grid.tau0=[0.5, 1.0, 2.0, 4.0]", "relaxation=soft", "tune.metric=tau",
         "search.scheduler=asha", "search.asha.grace_steps=20", "search.asha.reduction_factor=2")
    experiment = tmp_path / "smoke"
    analysis = ExperimentAnalysis(str(experiment))
    assert len(analysis.trials) == 4
    assert {t.status for t in analysis.trials} == {"TERMINATED"} and not list(experiment.glob("*/error.txt"))
    last_step = {}
    for trial_dir in trial_dirs(experiment):
        rows = result_rows(trial_dir / "result.json")
        steps = [r["step"] for r in rows]
        tau0 = rows[0]["config"]["tau0"]
        last_step[tau0] = steps[-1]
        assert steps == [0, 20, 40, 60][: len(steps)]
        _assert_record(trial_dir, steps)  # complete up to the stop, nothing after it
    assert last_step[0.5] == 60 and last_step[2.0] == 20 and last_step[4.0] == 20, last_step


def test_the_search_experiment_is_valid():
    spec = load_spec(ROOT / "experiments" / "search.toml")
    assert spec.search.algorithm == "optuna" and spec.search.asha is not None and spec.search.asha.rungs() == [250, 750]
