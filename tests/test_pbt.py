"""Population Based Training (`[search] scheduler = "pbt"`).

Validation and `check` without Ray (bad input exits 2 with one line naming the key, as in
test_search.py); the tau anchor of a population restored into a perturbed config; then a small PBT
study end to end on an embedded Ray with 2 CPUs (in a subprocess), and its report's figure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from record_rows import record_rows, trial_dirs
from spec_text import SHORT_ANNEALED, assert_spec_refused

from study.cli import main
from study.config import TrialConfig, load_spec, parse_overrides
from study.train import Trial

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"

GOOD = SHORT_ANNEALED + """[grid]
tau0 = [0.5, 2.0]
[search]
scheduler = "pbt"
[search.pbt]
interval = 20
mutations = {tau = {loguniform = [0.2, 5.0]}, anneal_rate = {choice = [0.0, 1e-3]}, lr_g = {loguniform = [1e-4, 1e-2]}}
"""

# (case id, spec text, extra --set items, expected fragments of the one error line)
CASES = [
    ("not-mutable", GOOD, ["search.pbt.mutations.batch_size={choice = [16, 32]}"], ["search.pbt.mutations.batch_size", "not mutable", "tau, anneal_rate, lr_g, lr_d"]),
    ("field-name-not-key", GOOD, ["search.pbt.mutations.tau0={loguniform = [0.2, 5.0]}"], ["search.pbt.mutations.tau0", "not mutable"]),
    ("interval-not-multiple", GOOD.replace("interval = 20", "interval = 30"), [], ["search.pbt.interval", "30", "multiple of eval_every=20"]),
    ("interval-zero-steps", GOOD.replace("interval = 20", "interval = -20"), [], ["search.pbt.interval", ">= 1"]),
    ("interval-at-steps", GOOD.replace("interval = 20", "interval = 60"), [], ["search.pbt.interval", "steps=60"]),
    ("quantile-above-half", GOOD, ["search.pbt.quantile=0.6"], ["search.pbt.quantile", "0.6", "(0, 0.5]"]),
    ("resample-above-one", GOOD, ["search.pbt.resample_probability=1.5"], ["search.pbt.resample_probability", "[0, 1]"]),
    ("unknown-pbt-key", GOOD, ["search.pbt.colour=1"], ["search.pbt.colour", "unknown key"]),
    ("no-mutations", GOOD.split("mutations =")[0], [], ["search.pbt.mutations", "at least one mutable key"]),
    ("loguniform-zero", GOOD.replace("[0.2, 5.0]", "[0.0, 5.0]"), [], ["search.pbt.mutations.tau.loguniform", "> 0"]),
    ("unknown-distribution", GOOD, ["search.pbt.mutations.lr_d={normal = [0.0, 1.0]}"], ["search.pbt.mutations.lr_d.normal", "unknown distribution"]),
    # tau_min = 0.1 under an exponential schedule: a perturbed tau may not go below it
    ("tau-below-floor", GOOD.replace("[0.2, 5.0]", "[0.05, 5.0]"), [], ["search.pbt.mutations.tau", "0.05", "tau_min"]),
    ("rate-negative", GOOD.replace("[0.0, 1e-3]", "[-1e-3, 1e-3]"), [], ["search.pbt.mutations.anneal_rate", "-0.001", ">= 0"]),
    ("lr-zero", GOOD, ["search.pbt.mutations.lr_d={uniform = [0.0, 0.01]}"], ["search.pbt.mutations.lr_d", "lr_d", "> 0"]),
    ("pbt-without-scheduler", GOOD.replace('scheduler = "pbt"\n', ""), [], ["search.pbt", "scheduler"]),
    ("one-trial", GOOD, ["tau0=0.5"], ["search.scheduler", "pbt", "at least 2 trials"]),
    ("metric-not-reported", GOOD, ["tune.metric=fit/probs"], ["tune.metric", "PBT"]),
]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_pbt_input_is_refused(tmp_path, capsys, command, case):
    name, text, sets, fragments = case
    assert_spec_refused(main, tmp_path, capsys, command, text, sets, fragments)


def test_check_prints_the_pbt_settings(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    assert main(["check", str(spec), "--set", "search.pbt.mutations.lr_d={loguniform = [1e-4, 1e-2]}"]) == 0
    out = capsys.readouterr().out
    assert ("scheduler:     pbt on step, min fit/tv: every 20 steps the bottom 0.25 continue from the top 0.25's checkpoints, "
            "resample probability 0.25, asynchronous") in out
    assert "tau            loguniform [0.2, 5] (field tau0)" in out
    assert "anneal_rate    choice 0.0, 0.001" in out
    assert "lr_d           loguniform [0.0001, 0.01]" in out
    assert out.rstrip().endswith("valid")


def test_pbt_defaults_and_overrides(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD.replace("interval = 20\n", ""))
    pbt = load_spec(spec).search.pbt
    assert (pbt.interval, pbt.quantile, pbt.resample_probability) == (20, 0.25, 0.25)  # interval: eval_every
    assert pbt.fields["tau0"].values == (0.2, 5.0) and set(pbt.mutations) == {"tau", "anneal_rate", "lr_g"}
    fifo = load_spec(spec, parse_overrides(["search.scheduler=fifo"]))  # the grid companion: the table goes too
    assert fifo.search.pbt is None and fifo.search.scheduler == "fifo"
    assert load_spec(ROOT / "experiments" / "pbt.toml").search.pbt.interval == 300


def test_pbt_scheduler_is_tunes():
    from ray.tune import schedulers

    from study import sweep

    spec = load_spec(SMOKE, parse_overrides(["search.scheduler=pbt", "search.pbt.mutations.tau={loguniform = [0.2, 5.0]}",
                                             "search.pbt.mutations.lr_g={choice = [0.001, 0.003]}"]))
    pbt = sweep.scheduler(spec)
    assert isinstance(pbt, schedulers.PopulationBasedTraining) and pbt._perturbation_interval == 20
    assert sweep.param_space(spec)["pbt_interval"] == 20
    clip = sweep.ClipMutations({"tau0": (0.2, 5.0)})
    assert clip({"tau0": 6.0})["tau0"] == 5.0 and clip({"tau0": 0.1})["tau0"] == 0.2  # 0.8 / 1.2 past a bound


# ---------------------------------------------------------------------- the tau anchor

BASE = TrialConfig(categories=5, target="zipf:s=1.2", schedule="exponential", tau0=1.0, anneal_rate=1e-2, tau_min=0.05,
                   steps=60, batch_size=16, discriminator="mlp", disc_width=8, disc_depth=1, eval_every=20,
                   probe_estimates=20, eval_samples=20)


def _params(trial: Trial) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trial.population.gen_params + trial.population.disc_params]


def _state(trial: Trial) -> dict:
    """The trial's state as a checkpoint holds it: a copy (the optimizers' state_dict shares the
    live tensors, which the trial would go on changing)."""
    return copy.deepcopy(trial.state_dict())


def _trained(config: TrialConfig, steps: int, state: dict | None = None) -> Trial:
    trial = Trial(config, 2, device="cpu")
    if state is not None:
        trial.load_state_dict(state)
    trial.population.train(steps)
    return trial


def test_a_restore_into_the_same_config_is_bit_identical():
    whole = _trained(BASE, 40)
    resumed = _trained(BASE, 20, _state(_trained(BASE, 20)))
    assert resumed.population.tau_anchor == (0, 1.0)
    for a, b in zip(_params(whole), _params(resumed)):
        assert torch.equal(a, b)  # exact: the same numbers in the same order
    assert torch.equal(whole.population.tau(), resumed.population.tau())


def test_an_exploit_continues_from_the_new_tau_at_the_restored_step():
    donor = _trained(BASE, 20)
    perturbed = dataclasses.replace(BASE, tau0=0.3, lr_g=2e-3, lr_d=5e-4)
    trial = Trial(perturbed, 2, device="cpu")
    trial.load_state_dict(_state(donor))
    pop = trial.population
    assert pop.step == 20 and pop.tau_anchor == (20, 0.3)
    for a, b in zip(_params(donor), _params(trial)):
        assert torch.equal(a, b)  # the donor's parameters
    assert pop.opt_g.param_groups[0]["lr"] == 2e-3 and pop.opt_d.param_groups[0]["lr"] == 5e-4  # the trial's own
    # tau = max(tau_min, 0.3 * exp(-rate * (step - 20))), in float32
    for step in (20, 30, 400):
        expected = max(0.05, 0.3 * math.exp(-1e-2 * (step - 20)))
        assert pop.tau(step).tolist() == pytest.approx([expected] * 2, rel=1e-6)
    # a later plain restore (a retry) keeps the anchor and continues bit-identically
    pop.train(10)
    retried = _trained(perturbed, 10, _state(trial))
    trial.population.train(10)
    assert retried.population.tau_anchor == (20, 0.3)
    for a, b in zip(_params(trial), _params(retried)):
        assert torch.equal(a, b)


def test_a_new_rate_alone_anneals_on_from_the_checkpoints_temperature():
    donor = _trained(BASE, 20)
    trial = Trial(dataclasses.replace(BASE, anneal_rate=5e-2), 2, device="cpu")
    trial.load_state_dict(_state(donor))
    at_20 = math.exp(-1e-2 * 20)  # the donor's schedule at the checkpoint: tau0 = 1
    assert trial.population.tau_anchor == (20, pytest.approx(at_20))
    assert trial.population.tau(30).tolist() == pytest.approx([at_20 * math.exp(-5e-2 * 10)] * 2, rel=1e-6)


def test_a_checkpoint_of_a_config_differing_in_a_fixed_field_is_refused():
    state = _trained(BASE, 20).state_dict()
    trial = Trial(dataclasses.replace(BASE, tau0=0.5, batch_size=32), 2, device="cpu")
    with pytest.raises(ValueError, match=r"batch_size=16, this trial has batch_size=32.*only tau0, anneal_rate, lr_g, lr_d may differ"):
        trial.load_state_dict(state)


# ---------------------------------------------------------------------- end to end on Ray

E2E_SETS = [
    # tau is the metric (mode min), so the trial with the highest temperature is the worst whatever
    # training does. Synchronous PBT with one perturbation (step 40): every trial has reported
    # there, so tau0 = 4.0 exploits tau0 = 0.5 (the bottom and top quarters of 4 trials). Without
    # synch, 60-step trials may finish one after another, and PBT compares running trials only.
    "grid.tau0=[0.5, 1.0, 2.0, 4.0]", "relaxation=soft", "tune.metric=tau", "resources.cpus=0.5",
    "search.scheduler=pbt", "search.pbt.interval=40", "search.pbt.synch=true",
    "search.pbt.mutations.tau={loguniform = [0.2, 5.0]}", "search.pbt.mutations.lr_g={loguniform = [1e-4, 1e-2]}",
]


@pytest.mark.ray
@pytest.mark.slow
def test_pbt_end_to_end_exploits_and_reports(tmp_path):
    cmd = [sys.executable, "-m", "study.cli", "run", str(SMOKE), "--storage", str(tmp_path), "--num-cpus", "2"]
    for item in E2E_SETS:
        cmd += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always an embedded, private Ray
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    experiment = tmp_path / "smoke"
    dirs = trial_dirs(experiment)
    assert len(dirs) == 4 and not list(experiment.glob("*/error.txt"))
    exploits = []
    for trial_dir in dirs:
        entries = [json.loads(p.read_text()) for p in sorted((trial_dir / "record").glob("pbt-*.json"))]
        assert entries[0]["step"] == 0 and entries[0]["donor"] is None  # the trial's own start
        exploits += [(trial_dir, e, entries[i + 1]["step"] if i + 1 < len(entries) else None) for i, e in enumerate(entries) if i > 0]
        steps = [r["step"] for r in record_rows(trial_dir)]
        # every step once per seed; a step is missing where a trial took a checkpoint ahead of its own
        # (asynchronous PBT: the donor was further on)
        assert steps[:2] == [0, 0] and steps[-2:] == [60, 60] and all(steps.count(s) == 2 and s in (0, 20, 40, 60) for s in steps), steps
    assert exploits, "no trial exploited another (see E2E_SETS for why one must)"
    for trial_dir, entry, next_step in exploits:
        step, tau = entry["tau_anchor"]
        assert step == entry["step"] in (20, 40, 60) and entry["donor"] and entry["old"] != entry["new"]
        if entry["old"]["tau0"] == entry["new"]["tau0"]:  # tau clipped back to the donor's: the rate or lr_g changed
            continue
        assert tau == entry["new"]["tau0"]
        # the temperature continues from the perturbed tau: the record at the exploit's step is the
        # donor's model at it, and the next evaluation (20 steps on) has annealed from it
        for offset in (0, 20) if step < 60 and next_step != step + 20 else (0,):  # unless exploited again there
            rows = [r for r in record_rows(trial_dir) if r["step"] == step + offset]
            assert [r["tau"] for r in rows] == pytest.approx([max(0.1, tau * math.exp(-1e-3 * offset))] * 2, rel=1e-5)

    from analysis.report import write_report

    out = write_report(experiment, tmp_path / "report", progress=False, n_boot=200, pdf=False)
    assert (out / "figures" / "learned_schedules.png").stat().st_size > 10_000
    assert "PBT against hand-written schedules" in (out / "index.html").read_text()
    never = len(dirs) - len({trial_dir for trial_dir, _, _ in exploits})  # trials that never exploited: the baseline
    assert (out / "tables" / "pbt_comparison.csv").read_text().count("\n") == 2 + (never > 0)  # header, PBT, baseline
