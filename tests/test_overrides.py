"""`--set` overrides apply in every combination and order (issue 13, item 7).

The semantics (study.config.apply_overrides): `X` and `fixed.X` pin a trial field X (it leaves
[grid]); `grid.X` with a list makes X an axis (it leaves [fixed]), with a scalar pins it like `X`;
`seeds`, `name`, `resources.X`, `tune.X` set their own slot. `X`, `fixed.X`, `grid.X` are one
setting: for one setting the last override wins; overrides of distinct settings commute, and the
grid's axis order (which orders the trials) is the spec's, then new axes in TrialConfig order.

The property tests build specs and override sequences from small pools of real fields and values
chosen so that every combination is valid (targets that take any K >= 3, tau_min below every tau0,
batch sizes >= 2), and check the result against a model of those semantics written out here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from study.cli import _load, main
from study.config import ResourceSpec, StudySpec, TrialConfig, TuneSpec, load_spec, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"

TRIAL_FIELDS = [f.name for f in dataclasses.fields(TrialConfig)]

# Trial fields and values any combination of which is a valid trial.
POOL: dict[str, list[Any]] = {
    "target": ["uniform", "zipf:s=1.2", "geometric:p=0.3", "sparse:n=2"],
    "categories": [3, 5, 8],
    "generator": ["logits", "mlp"],
    "discriminator": ["logistic", "mlp"],
    "relaxation": ["soft", "hard", "gumbel_rao", "reinforce"],
    "schedule": ["constant", "exponential", "stepwise", "linear"],
    "tau0": [0.5, 1.0, 2.0],
    "tau_min": [0.05, 0.1, 0.25],
    "anneal_rate": [0.0, 0.001],
    "steps": [10, 20, 50],
    "batch_size": [8, 32],
    "eval_every": [5, 10],
    "lr_g": [0.001, 0.0003],
    "label_smoothing": [0.0, 0.1],
    "probe_taus": [(), (0.5,), (0.5, 2.0)],
    "seed": [0, 3],
    "dtype": ["float32", "float64"],
}
FIELDS = sorted(POOL)
LIST_FIELDS = {"probe_taus"}  # a list value is the field's value, so `grid.X=[...]` is always an axis
TOP: dict[str, list[Any]] = {"seeds": [1, 2, 7], "name": ["a", "b-2", "study"]}
SECTIONS: dict[str, list[Any]] = {
    "resources.cpus": [0.5, 1.0, 2.0],
    "resources.gpus": [0.0, 0.5],
    "tune.checkpoint_every": [1, 2, 5],
    "tune.max_failures": [0, 3],
    "tune.max_concurrent": [0, 4],
    "tune.mode": ["min", "max"],
}


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(toml(v) for v in value) + "]"


def spec_text(spec: dict[str, Any]) -> str:
    lines = [f"{k} = {toml(spec[k])}" for k in ("name", "seeds") if k in spec]
    for table in ("fixed", "grid", "resources", "tune"):
        if spec.get(table):
            lines.append(f"[{table}]")
            lines += [f"{k} = {toml(v)}" for k, v in spec[table].items()]
    return "\n".join(lines) + "\n"


def write_spec(folder: str, spec: dict[str, Any]) -> Path:
    path = Path(folder) / "spec.toml"
    path.write_text(spec_text(spec))
    return path


class Item(NamedTuple):
    setting: str  # what it sets: the trial field for X / fixed.X / grid.X, else the key
    form: str  # bare, fixed, grid_pin, grid_axis, top, section
    value: Any
    text: str  # the --set argument


@st.composite
def specs(draw) -> dict[str, Any]:
    axes = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=2))
    fixed = draw(st.lists(st.sampled_from([f for f in FIELDS if f not in axes]), unique=True, max_size=5))
    if "target" not in axes and "target" not in fixed:
        fixed.append("target")  # the default target (blog) needs K = 5
    spec: dict[str, Any] = {}
    for key, values in TOP.items():
        if draw(st.booleans()):
            spec[key] = draw(st.sampled_from(values))
    spec["fixed"] = {f: draw(st.sampled_from(POOL[f])) for f in fixed}
    spec["grid"] = {a: draw(st.lists(st.sampled_from(POOL[a]), unique=True, min_size=1, max_size=3)) for a in axes}
    for key in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True, max_size=3)):
        section, sub = key.split(".")
        spec.setdefault(section, {})[sub] = draw(st.sampled_from(SECTIONS[key]))
    return spec


def _literal(draw, value: Any) -> str:
    """A value as `--set` reads it: TOML, or (for most strings) the bare text."""
    if isinstance(value, str) and draw(st.booleans()):
        return value
    return toml(value)


@st.composite
def items(draw, settings_from: list[str] | None = None) -> Item:
    setting = draw(st.sampled_from(settings_from or FIELDS + sorted(TOP) + sorted(SECTIONS)))
    if setting in TOP or setting in SECTIONS:
        value = draw(st.sampled_from({**TOP, **SECTIONS}[setting]))
        return Item(setting, "top" if setting in TOP else "section", value, f"{setting}={_literal(draw, value)}")
    forms = ["bare", "fixed", "grid_axis"] + ([] if setting in LIST_FIELDS else ["grid_pin"])
    form = draw(st.sampled_from(forms))
    if form == "grid_axis":
        value = draw(st.lists(st.sampled_from(POOL[setting]), unique=True, min_size=1, max_size=2))
        return Item(setting, form, value, f"grid.{setting}={toml(value)}")
    value = draw(st.sampled_from(POOL[setting]))
    prefix = {"bare": "", "fixed": "fixed.", "grid_pin": "grid."}[form]
    return Item(setting, form, value, f"{prefix}{setting}={_literal(draw, value)}")


def expected(spec: dict[str, Any], sequence: list[Item], path: Path) -> StudySpec:
    """The model: apply the items in order to the spec's tables, then build the StudySpec by hand."""
    fixed, grid = dict(spec["fixed"]), dict(spec["grid"])
    top = {"name": spec.get("name", path.stem), "seeds": spec.get("seeds", 1)}
    sections: dict[str, dict[str, Any]] = {"resources": dict(spec.get("resources", {})), "tune": dict(spec.get("tune", {}))}
    for item in sequence:
        if item.form == "grid_axis":
            grid[item.setting] = item.value
            fixed.pop(item.setting, None)
        elif item.form in ("bare", "fixed", "grid_pin"):
            fixed[item.setting] = item.value
            grid.pop(item.setting, None)
        elif item.form == "top":
            top[item.setting] = item.value
        else:
            section, sub = item.setting.split(".")
            sections[section][sub] = item.value
    order = [a for a in spec["grid"] if a in grid] + [a for a in TRIAL_FIELDS if a in grid and a not in spec["grid"]]
    axes = {a: tuple(grid[a]) for a in order}
    return StudySpec(
        name=top["name"],
        seeds=top["seeds"],
        fixed=TrialConfig(**fixed, **{a: values[0] for a, values in axes.items()}),
        grid=axes,
        resources=ResourceSpec(**sections["resources"]),
        tune=TuneSpec(**sections["tune"]),
        source=str(path),
    )


def assert_same(got: StudySpec, want: StudySpec) -> None:
    assert dataclasses.asdict(got) == dataclasses.asdict(want)
    assert got == want
    assert list(got.grid) == list(want.grid)  # dict equality ignores the axis order; the trials don't
    assert got.trials == want.trials


# Example counts: one example loads a spec a few times (~2-5 ms each, up to a few dozen trials to
# validate), so 200 + 150 + 150 examples run in a few seconds on one core and cover every field,
# form and section of the small pools many times over; derandomize=True makes every run check the
# same examples, so a failure reproduces and CI never flakes.


@settings(max_examples=200, deadline=None, derandomize=True)
@given(spec=specs(), sequence=st.lists(items(), max_size=6, unique_by=lambda item: item.setting), data=st.data())
def test_distinct_settings_commute(spec, sequence, data):
    """Overrides of distinct settings: the same StudySpec in every order, and the model's."""
    shuffled = data.draw(st.permutations(sequence))
    with tempfile.TemporaryDirectory() as folder:
        path = write_spec(folder, spec)
        want = expected(spec, sequence, path)
        for order in (sequence, shuffled, sequence[::-1]):
            assert_same(load_spec(path, parse_overrides([item.text for item in order])), want)


# Few settings, so that sequences name one setting several times in different forms.
CROWDED = ["tau0", "relaxation", "probe_taus", "seeds", "tune.mode"]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(spec=specs(), sequence=st.lists(items(CROWDED), max_size=7))
def test_same_setting_last_wins(spec, sequence):
    """One setting given several times, in any of its forms: the last one wins."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_spec(folder, spec)
        assert_same(load_spec(path, parse_overrides([item.text for item in sequence])), expected(spec, sequence, path))


# (--set item, the key its one error line names)
INVALID = [
    ("colour=red", "colour"),
    ("fixed.colour=1", "fixed.colour"),
    ("grid.temperature=[1.0, 2.0]", "grid.temperature"),
    ("fixed.seeds=3", "fixed.seeds"),  # seeds is not a trial field
    ("hyper.tau0=1.0", "hyper.tau0"),  # unknown section
    ("seed.s=1", "seed.s"),
    ("resources.tpus=1", "resources.tpus"),
    ("tune.colour=1", "tune.colour"),
    ("tau0=-0.5", "tau0"),
    ("fixed.tau0=0", "tau0"),
    ("grid.tau0=[1.0, -2.0]", "tau0"),
    ("grid.tau0=[]", "grid.tau0"),
    ("grid.steps=[10, 10]", "grid.steps"),
    ("tau0=[0.5, 1.0]", "tau0"),  # a list pins only a list field; the axis form is grid.tau0
    ("categories=1", "categories"),
    ("steps=0", "steps"),
    ("batch_size=abc", "batch_size"),
    ("fixed.batch_size=1.5", "fixed.batch_size"),
    ("relaxation=gumbel", "relaxation"),
    ("schedule=cosine", "schedule"),
    ("lr_g=inf", "lr_g"),
    ("label_smoothing=1.0", "label_smoothing"),
    ("target=lognormal", "target"),
    ("seeds=0", "seeds"),
    ("name=a/b", "name"),
    ("resources.gpus=1.5", "resources.gpus"),
    ("tune.checkpoint_every=0", "tune.checkpoint_every"),
    ("tune.mode=up", "tune.mode"),
]


def _setting(key: str) -> str:
    section, dot, sub = key.partition(".")
    return sub if dot and section in ("fixed", "grid") and sub in TRIAL_FIELDS else key


def run_check(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(spec=specs(), sequence=st.lists(items(), max_size=5, unique_by=lambda item: item.setting), bad=st.sampled_from(INVALID), data=st.data())
def test_invalid_override_is_one_line_exit_2(spec, sequence, bad, data):
    """One bad override among valid ones, anywhere in the sequence: exit 2, one line naming it."""
    item, key = bad
    valid = [i.text for i in sequence if i.setting != _setting(item.partition("=")[0])]
    at = data.draw(st.integers(0, len(valid)))
    sets = valid[:at] + [item] + valid[at:]
    with tempfile.TemporaryDirectory() as folder:
        path = write_spec(folder, spec)
        code, out, err = run_check(["check", str(path), *[a for s in sets for a in ("--set", s)]])
    lines = err.splitlines()
    assert code == 2, (sets, out)
    assert out == ""
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"gumbel-study: error: {key}="), (lines[0], sets)


# ---------------------------------------------------------------- plain regressions


def _seeds_and_steps(argv: list[str], capsys) -> tuple[str, str]:
    assert main(["check", str(SMOKE), *argv]) == 0
    out = capsys.readouterr().out
    seeds = next(line for line in out.splitlines() if "seeds/trial:" in line).split()[1]
    fixed = next(line for line in out.splitlines() if line.strip().startswith("fixed:"))
    steps = next(part for part in fixed.split(", ") if part.startswith("steps="))
    return seeds, steps


def test_reported_case_both_orders(capsys):
    """The report: `--set fixed.steps=100 --set seeds=7` dropped seeds=7 (2 seeds per trial)."""
    assert _seeds_and_steps(["--set", "fixed.steps=100", "--set", "seeds=7"], capsys) == ("7", "steps=100")
    assert _seeds_and_steps(["--set", "seeds=7", "--set", "fixed.steps=100"], capsys) == ("7", "steps=100")
    assert _seeds_and_steps(["--set", "grid.steps=100", "--set", "seeds=7"], capsys) == ("7", "steps=100")


def test_bare_and_fixed_forms_are_one_key():
    def tau0(*sets: str) -> float:
        spec = load_spec(SMOKE, parse_overrides(list(sets)))
        assert "tau0" not in spec.grid
        return spec.fixed.tau0

    assert tau0("tau0=0.5", "fixed.tau0=1") == 1.0
    assert tau0("fixed.tau0=1", "tau0=0.5") == 0.5
    assert tau0("tau0=0.5", "fixed.tau0=1", "tau0=3") == 3.0  # the last, not the first key's slot
    assert tau0("grid.tau0=[0.5, 1.0]", "tau0=3") == 3.0
    spec = load_spec(SMOKE, parse_overrides(["tau0=3", "grid.tau0=[0.5, 1.0]"]))
    assert spec.grid["tau0"] == (0.5, 1.0) and list(spec.grid) == ["relaxation", "tau0"]


def test_grid_list_sets_axis_scalar_pins():
    spec = load_spec(SMOKE, parse_overrides(["grid.tau0=[1.0, 3.0, 4.0]"]))
    assert spec.grid == {"relaxation": ("soft", "hard"), "tau0": (1.0, 3.0, 4.0)} and spec.num_trials == 6
    spec = load_spec(SMOKE, parse_overrides(["grid.tau0=3"]))
    assert spec.grid == {"relaxation": ("soft", "hard")} and spec.fixed.tau0 == 3.0
    spec = load_spec(SMOKE, parse_overrides(["grid.steps=[5, 7]"]))  # [fixed] steps becomes an axis
    assert list(spec.grid) == ["relaxation", "tau0", "steps"] and spec.grid["steps"] == (5, 7)


def test_override_settles_a_key_in_grid_and_fixed(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text('[fixed]\ntarget = "uniform"\nsteps = 10\n[grid]\nsteps = [10, 20]\n')
    assert main(["check", str(path)]) == 2 and "grid.steps" in capsys.readouterr().err
    assert load_spec(path, parse_overrides(["steps=30"])).fixed.steps == 30
    spec = load_spec(path, parse_overrides(["grid.steps=[30, 40]"]))
    assert spec.grid == {"steps": (30, 40)}


def test_bad_value_replaced_by_later_good_one(capsys):
    assert main(["check", str(SMOKE), "--set", "tau0=-1", "--set", "fixed.tau0=1"]) == 0
    assert main(["check", str(SMOKE), "--set", "tau0=1", "--set", "fixed.tau0=-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("gumbel-study: error: tau0=-1.0")


def test_cli_flags_win_over_set():
    """cli._load merges --steps / --seeds / --name after --set: the dedicated flag wins, whatever
    form or order the --set items have."""
    for sets in (["steps=5"], ["fixed.steps=5"], ["fixed.steps=5", "steps=6"], ["steps=6", "grid.steps=[5, 6]"]):
        spec = _load(argparse.Namespace(spec=str(SMOKE), set=sets + ["seeds=3"]), {"steps": 9, "seeds": 4, "name": "n"})
        assert (spec.fixed.steps, "steps" in spec.grid, spec.seeds, spec.name) == (9, False, 4, "n"), sets


def test_grid_target_stream_is_relative_to_the_shell(tmp_path, monkeypatch):
    (tmp_path / "numbers.txt").write_text("0 1 2 2\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(SMOKE, parse_overrides(["grid.target=['stream:numbers.txt', 'uniform']", "categories=3"]))
    assert spec.grid["target"] == ("stream:" + str(tmp_path.resolve() / "numbers.txt"), "uniform")
