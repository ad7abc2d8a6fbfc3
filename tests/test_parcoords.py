"""The parallel-coordinates view's Python builder (analysis.parcoords), without a browser: which
axes it draws, each axis's scale and positions, and that run-directory strings cannot break out of
the page's JSON block. tests/test_report_browser.py draws and brushes it in Chromium."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from analysis.parcoords import axis_spec, parcoords_data, parcoords_html, script_json

HOSTILE = "</script><script>alert(1)</script>"


def trials_table(grid: dict[str, list], **fixed) -> pd.DataFrame:
    """A trials table shaped like analysis.load's: one TERMINATED trial per grid point, with
    final/fit/* that grow with the trial's index (so trial 0 fits best)."""
    rows = []
    for i, combo in enumerate(itertools.product(*grid.values())):
        rows.append({"trial_id": f"t{i:03d}", "status": "TERMINATED", **fixed, **dict(zip(grid, combo)), "last_step": 100,
                     "final/fit/tv": 0.05 + 0.01 * i, "final/fit/js": 0.01 + 0.002 * i, "final/fit/kl": 0.02 + 0.004 * i})
    return pd.DataFrame(rows)


def test_axes_are_the_varied_keys_then_the_fits():
    grid = {"tau0": [0.1, 1.0], "anneal_rate": [0.0, 1e-3], "relaxation": ["soft", "hard"], "target": ["zipf:s=1.2", "bimodal"], "categories": [10], "lr": [0.01, 0.03]}
    trials = trials_table(grid, steps=100)
    trials.loc[0, "final/fit/tv"] = np.nan  # every seed diverged: no line
    trials["final/fit/kl"] = np.nan  # a record without KL: no KL axis
    data = parcoords_data(trials, grid)
    keys = [a["key"] for a in data["axes"]]
    # categories takes one value (not an axis); lr is a [search.space] key; the grid's order is kept
    assert keys == ["tau0", "anneal_rate", "relaxation", "target", "lr", "fit/tv", "fit/js"]
    assert data["n_fit_axes"] == 2 and keys[data["color"]] == "fit/tv"
    assert len(data["trials"]) == len(trials) - 1 and "t000" not in data["trials"]
    assert all(len(p) == len(data["trials"]) for p in data["pos"])
    tv = data["values"][keys.index("fit/tv")]
    assert tv == sorted(tv, reverse=True)  # worst first: the canvas draws the best lines last, on top
    assert [a["label"] for a in data["axes"]][-2:] == ["final fit/tv", "final fit/js"]


def test_final_step_axis_when_trials_stopped_early():
    trials = trials_table({"tau0": [0.1, 0.3, 1.0]})
    trials.loc[1, "last_step"] = 40  # stopped by ASHA
    assert [a["key"] for a in parcoords_data(trials, ["tau0"])["axes"]][:2] == ["tau0", "last_step"]


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([0.03, 0.1, 0.5, 2.0, 5.0], "log"),  # positive, over two decades
        ([0.5, 2.0], "linear"),  # under a decade
        ([10, 100], "linear"),  # exactly a decade is not more than one
        ([-1.0, 0.5, 20.0], "linear"),  # not positive
        ([0.0, 1e-5, 1e-4, 1e-3], "ordinal"),  # a zero and positive values over a decade: neither scale shows it
        (["soft", "hard", "reinforce"], "categorical"),
        ([True, False], "categorical"),  # booleans are not numbers
    ],
)
def test_scale_decision(values, scale):
    axis, pos, _ = axis_spec("x", pd.Series(values, dtype=object))
    assert axis["scale"] == scale
    assert all(0.0 <= p <= 1.0 for p in pos)


def test_positions_on_each_scale():
    axis, pos, raw = axis_spec("tau0", pd.Series([0.01, 0.1, 1.0, None]))
    assert axis["scale"] == "log" and pos == [0.0, 0.5, 1.0, None] and raw[:3] == [0.01, 0.1, 1.0] and raw[3] is None
    assert [t[1] for t in axis["ticks"]] == ["0.01", "0.1", "1"]  # few values: a tick at each
    axis, pos, _ = axis_spec("lr", pd.Series(np.linspace(1.0, 9.0, 50)))
    assert axis["scale"] == "linear" and pos[0] == 0.0 and pos[-1] == 1.0
    assert [t[1] for t in axis["ticks"]] == ["2", "4", "6", "8"]  # many values: round ticks
    # categories evenly spaced with half a gap at each end; relaxations in the estimators' order
    axis, pos, codes = axis_spec("relaxation", pd.Series(["reinforce", "soft", "hard", "soft"]))
    assert axis["categories"] == ["soft", "hard", "reinforce"] and codes == [2, 0, 1, 0]
    assert pos == pytest.approx([5 / 6, 1 / 6, 3 / 6, 1 / 6], abs=1e-4)


def test_labels_tell_close_values_apart():
    axis, _, _ = axis_spec("fit/tv", pd.Series([0.2981, 0.2989, 0.2994]))
    assert [t[1] for t in axis["ticks"]] == ["0.2981", "0.2989", "0.2994"] and axis["ends"] == ["0.298", "0.299"]  # the legend: distinct at 3 digits


def test_spread_fans_a_category_by_fit():
    """Within one category the lines fan out over 60% of the gap, the lowest TV at the bottom."""
    trials = trials_table({"relaxation": ["soft", "hard"], "tau0": [0.1, 0.3, 1.0]})
    data = parcoords_data(trials, ["relaxation", "tau0"])
    spread, tv = data["spread"][0], data["values"][2]
    assert data["spread"][1] is None  # tau0 is numeric (log): no spread
    for code in (0, 1):
        rows = [r for r, c in enumerate(data["values"][0]) if c == code]
        by_tv = sorted(rows, key=lambda r: tv[r])
        assert [spread[r] for r in by_tv] == sorted(spread[r] for r in rows)
        assert max(spread[r] for r in rows) - min(spread[r] for r in rows) <= 0.3 + 1e-9  # 60% of a 1/2 gap


def test_hostile_strings_stay_inside_the_json_block():
    trials = trials_table({"target": ["zipf:s=1.2", HOSTILE], "tau0": [0.1, 1.0]})
    trials["trial_id"] = trials["trial_id"] + "<!--&"
    html = parcoords_html(trials, ["target", "tau0"])
    assert HOSTILE not in html and "<!--" not in html and "alert(1)</script>" not in html
    assert html.lower().count("<script") == 2 and html.lower().count("</script") == 2  # the data block and the script
    block = re.search(r'<script type="application/json" id="parcoords-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(block)  # valid JSON, and the strings come back unchanged
    assert HOSTILE in data["axes"][0]["categories"] and all(t.endswith("<!--&") for t in data["trials"])


def test_script_json_escapes_and_round_trips():
    value = {"a": "</script>", "b": "<!-- & -->", "c": [1.5, None], "d": "\u2028"}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value
    with pytest.raises(ValueError):
        script_json({"x": math.nan})  # NaN is not JSON: the builder writes null


def test_one_line_note_when_there_is_nothing_to_compare():
    one = trials_table({"tau0": [0.1]})
    assert parcoords_data(one, ["tau0"]) is None
    assert parcoords_html(one, ["tau0"]) == '<p class="muted">No parallel-coordinates view: 1 trial with a final fit.</p>'
    same = trials_table({"tau0": [0.1, 0.1]})  # two trials, nothing varies
    assert "no axis that varies" in parcoords_html(same, ["tau0"])
    assert "parcoords-data" not in parcoords_html(same, ["tau0"])


def test_view_with_many_trials_stays_small():
    """The tradeoff grid's 1,344 trials: data under 400 kB of JSON, built in well under a second."""
    grid = {"tau0": [0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0], "anneal_rate": [0.0, 1e-5, 1e-4, 1e-3], "relaxation": ["soft", "hard", "gumbel_rao", "reinforce"],
            "target": ["zipf:s=1.2", "bimodal", "sparse", "geometric:p=0.3", "dirichlet:alpha=0.5,seed=3", "uniform"], "categories": [10, 100]}
    trials = trials_table(grid)
    html = parcoords_html(trials, grid)
    data = json.loads(re.search(r'id="parcoords-data">(.*?)</script>', html, re.S).group(1))
    assert len(data["trials"]) == 1344 and [a["scale"] for a in data["axes"]][:5] == ["log", "ordinal", "categorical", "categorical", "linear"]
    assert len(html) < 400_000
    assert "http://" not in html and "https://" not in html  # nothing the page could fetch
