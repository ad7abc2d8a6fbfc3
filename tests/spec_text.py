"""The head of the small specs that the bad-input and search tests build on: a study named "bad"
of 2 seeds over a uniform target with K = 5 (the [fixed] table stays open for more keys)."""

SPEC_HEAD = """
name = "bad"
seeds = 2
[fixed]
categories = 5
target = "uniform"
"""


def assert_refused(code: int, capsys, fragments) -> str:
    """A CLI call that must refuse its input: exit 2 and one stderr line holding every fragment."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])
    return err[0]
