"""The head of the small specs that the bad-input and search tests build on: a study named "bad"
of 2 seeds over a uniform target with K = 5 (the [fixed] table stays open for more keys)."""

SPEC_HEAD = """
name = "bad"
seeds = 2
[fixed]
categories = 5
target = "uniform"
"""


# SPEC_HEAD plus a short annealed run (60 steps, 3 evaluations, small probes): the search and PBT tests' base.
SHORT_ANNEALED = SPEC_HEAD + """schedule = "exponential"
anneal_rate = 1e-3
tau_min = 0.1
steps = 60
eval_every = 20
probe_estimates = 20
eval_samples = 20
"""


def assert_refused(code: int, capsys, fragments) -> str:
    """A CLI call that must refuse its input: exit 2 and one stderr line holding every fragment."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])
    return err[0]


def assert_spec_refused(main, tmp_path, capsys, command: str, text: str, sets: list[str], fragments) -> str:
    """`gumbel-study COMMAND SPEC [--storage TMP/runs] --set ...` on spec `text` must refuse it (as
    assert_refused) and, for `run`, before the experiment directory exists."""
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    argv = [command, str(spec)] + (["--storage", str(tmp_path / "runs")] if command == "run" else [])
    for item in sets:
        argv += ["--set", item]
    line = assert_refused(main(argv), capsys, fragments)
    assert not (tmp_path / "runs" / "bad").exists()
    return line
