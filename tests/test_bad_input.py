"""Bad input is refused before any training: exit code 2, one line naming the field and value
(and the line number where there is one), no traceback. Table-driven over check, train and run."""

import subprocess
import sys
from pathlib import Path

import pytest

from study.cli import main

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
name = "bad"
seeds = 2
[fixed]
categories = 5
target = "uniform"
steps = 10
eval_every = 5
probe_estimates = 20
eval_samples = 20
"""

# (case id, spec text or None for GOOD, extra --set items, stream file text or None, expected fragments)
CASES = [
    ("unknown-top-key", GOOD + 'colour = "red"\n', [], None, ["colour", "unknown key"]),
    ("unknown-fixed-key", GOOD.replace("steps = 10", "stepz = 10"), [], None, ["fixed.stepz", "unknown key"]),
    ("wrong-type", GOOD.replace("categories = 5", 'categories = "five"'), [], None, ["fixed.categories", "'five'", "integer"]),
    ("tau-zero", GOOD + "tau0 = 0.0\n", [], None, ["tau0", "0.0"]),
    ("tau-negative", GOOD + "tau0 = -1.0\n", [], None, ["tau0", "-1.0"]),
    ("tau-nan", GOOD + "tau0 = nan\n", [], None, ["tau0", "nan"]),
    ("rate-negative", GOOD + 'schedule = "exponential"\nanneal_rate = -0.5\n', [], None, ["anneal_rate", "-0.5"]),
    ("k-one", GOOD.replace("categories = 5", "categories = 1"), [], None, ["categories", "1", ">= 2"]),
    ("probs-negative", GOOD.replace('"uniform"', '"probs:-0.2,0.6,0.6"').replace("categories = 5", "categories = 3"), [], None, ["target", "-0.2"]),
    ("probs-not-one", GOOD.replace('"uniform"', '"probs:0.2,0.2,0.2"').replace("categories = 5", "categories = 3"), [], None, ["target", "sum"]),
    ("stream-empty", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "\n  \n", ["target", "numbers.txt"]),
    ("stream-non-integer", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "1 2\n3 2.5\n", ["target", ":2", "2.5"]),
    ("stream-negative", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "1\n2\n-3\n", ["target", ":3", "-3"]),
    ("stream-too-large", GOOD.replace('"uniform"', '"stream:numbers.txt"'), [], "1\n9\n", ["target", ":2", "9"]),
    ("stream-missing", GOOD.replace('"uniform"', '"stream:nowhere.txt"'), [], None, ["target", "nowhere.txt"]),
    ("seeds-zero", GOOD.replace("seeds = 2", "seeds = 0"), [], None, ["seeds", "0"]),
    ("gpu-fraction", GOOD + "[resources]\ngpus = 1.5\n", [], None, ["resources.gpus", "1.5"]),
    ("toml-syntax", GOOD + "tau0 = = 1\n", [], None, ["TOML", "line 11"]),
    ("grid-not-list", GOOD + "[grid]\ntau0 = 1.0\n", [], None, ["grid.tau0", "list"]),
    ("grid-unknown-axis", GOOD + "[grid]\ntemperature = [1.0]\n", [], None, ["grid.temperature", "unknown"]),
    ("grid-empty", GOOD + "[grid]\ntau0 = []\n", [], None, ["grid.tau0", "at least one"]),
    ("grid-bad-value", GOOD + "[grid]\ntau0 = [1.0, -2.0]\n", [], None, ["tau0", "-2.0"]),
    ("relaxation-unknown", GOOD + 'relaxation = "gumbel"\n', [], None, ["relaxation", "gumbel"]),
    ("schedule-unknown", GOOD + 'schedule = "cosine"\n', [], None, ["schedule", "cosine"]),
    ("target-unknown", GOOD.replace('"uniform"', '"lognormal"'), [], None, ["target", "lognormal"]),
    ("tau-min-above-tau0", GOOD + 'schedule = "exponential"\ntau0 = 0.2\ntau_min = 0.5\n', [], None, ["tau_min", "0.5"]),
    ("batch-zero", GOOD + "batch_size = 0\n", [], None, ["batch_size", "0"]),
    ("probe-unknown", GOOD + 'probe_estimators = ["soft", "magic"]\n', [], None, ["probe_estimators", "magic"]),
    ("smoothing-one", GOOD + "label_smoothing = 1.0\n", [], None, ["label_smoothing", "1.0"]),
    ("lr-inf", GOOD + "lr_g = inf\n", [], None, ["lr_g", "inf"]),
    ("eval-every-zero", GOOD.replace("eval_every = 5", "eval_every = 0"), [], None, ["eval_every", "0"]),
    ("steps-negative", GOOD.replace("steps = 10", "steps = -5"), [], None, ["steps", "-5"]),
    ("dtype-half", GOOD + 'dtype = "float16"\n', [], None, ["dtype", "float16"]),
    ("name-slash", GOOD.replace('name = "bad"', 'name = "a/b"'), [], None, ["name", "a/b"]),
    ("set-unknown-key", GOOD, ["colour=red"], None, ["colour", "unknown key"]),
    ("set-no-equals", GOOD, ["tau0"], None, ["--set", "KEY=VALUE"]),
    ("set-bad-value", GOOD, ["tau0=-3"], None, ["tau0", "-3"]),
    ("grid-fixed-twice", GOOD + "[grid]\nsteps = [10, 20]\n", [], None, ["grid.steps", "[fixed]"]),
    ("code-in-target", GOOD.replace('"uniform"', "\"__import__('os').system('touch PWNED')\""), [], None, ["target", "__import__"]),
]


def _write(tmp_path: Path, spec_text: str | None, stream: str | None) -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text)
    if stream is not None:
        (tmp_path / "numbers.txt").write_text(stream)
    return spec


def _argv(command: str, spec: Path, sets: list[str], tmp_path: Path) -> list[str]:
    argv = [command, str(spec)]
    if command == "train":
        argv += ["--out", str(tmp_path / "out"), "--no-progress"]
    if command == "run":
        argv += ["--storage", str(tmp_path / "runs")]
    for item in sets:
        argv += ["--set", item]
    return argv


@pytest.mark.parametrize("command", ["check", "train", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(tmp_path, capsys, monkeypatch, command, case):
    name, text, sets, stream, fragments = case
    spec = _write(tmp_path, text, stream)
    monkeypatch.chdir(tmp_path)
    # If anything got as far as training or Ray, these would be called: make that a failure.
    monkeypatch.setattr("study.train.Trial.run", lambda *a, **k: pytest.fail("training started"))
    code = main(_argv(command, spec, sets, tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs" / "bad").exists()
    assert not (tmp_path / "PWNED").exists()


def test_bad_input_count():
    assert len(CASES) >= 25


def test_missing_spec_file(tmp_path, capsys):
    for command in ("check", "train", "run"):
        assert main([command, str(tmp_path / "absent.toml")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "absent.toml" in err[0] and "no such file" in err[0]


def test_unwritable_storage(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spec = _write(tmp_path, GOOD, None)
    monkeypatch.setattr("study.sweep._init_ray", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["run", str(spec), "--storage", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--storage" in err[0] and "cannot write" in err[0]
    assert blocker.read_text() == "not a directory"


def test_train_refuses_unpinned_grid(tmp_path, capsys):
    spec = _write(tmp_path, GOOD + "[grid]\ntau0 = [0.5, 1.0]\nrelaxation = ['soft', 'hard']\n", None)
    assert main(["train", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tau0" in err and "relaxation" in err and "--set" in err


@pytest.mark.parametrize("command", ["check", "train", "run"])
def test_real_process_exit_code_and_no_traceback(tmp_path, command):
    """The same through a real process: exit status 2, one line on stderr, no traceback."""
    spec = _write(tmp_path, GOOD + "tau0 = -1.0\n", None)
    proc = subprocess.run([sys.executable, "-m", "study.cli", *_argv(command, spec, [], tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tau0" in lines[0] and "-1.0" in lines[0]
    assert "Traceback" not in proc.stderr
