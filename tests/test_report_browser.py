"""The report's index.html in headless Chromium: it renders offline, every figure decodes, no console errors.

index.html carries a small inline script that, on load, counts <img> elements that failed to
decode and writes the count to <div id="img-check" data-broken="N">. Chromium runs once per page
with --dump-dom (the DOM after load, marker included) and --screenshot, logging console messages
to stderr; the report logs nothing to the console, so any console line is a failure. A control
page with a broken image and a thrown error checks that this detector does detect.

The parallel-coordinates view (analysis.parcoords) writes its own marker, <div id="parcoords-check"
data-status="ok" data-lines="N" data-axes="..." data-shown="N">, after drawing and after every
brush; the brushing test appends a script to a copy of the page that drags on the axes with mouse
events and records the count after each step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless chromium is not installed (apt-get install chromium)")

_MARKER = re.compile(r'id="img-check"[^>]*data-broken="([^"]*)"|data-broken="([^"]*)"[^>]*id="img-check"')
_CONSOLE = re.compile(r"(?:INFO|WARNING|ERROR):CONSOLE|Uncaught")


def _open(page: Path, tmp: Path, screenshot: Path) -> tuple[str, str]:
    """Load `page` in headless Chromium; return (DOM after load, console lines)."""
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    console = "\n".join(line for line in proc.stderr.splitlines() if _CONSOLE.search(line))
    return proc.stdout, console


def _broken(dom: str) -> str:
    match = _MARKER.search(dom)
    assert match, "no img-check marker in the DOM"
    return match.group(1) or match.group(2)


@needs_chromium
def test_detector_catches_broken_images_and_console_errors(tmp_path):
    page = tmp_path / "control.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png"><img src="data:image/png;base64,AAAA">'
        '<div id="img-check" data-broken="pending"></div>'
        '<script>window.addEventListener("load", function () { var n = 0;'
        ' document.querySelectorAll("img").forEach(function (i) { if (!i.complete || i.naturalWidth === 0) n++; });'
        ' document.getElementById("img-check").setAttribute("data-broken", String(n)); });'
        " undefinedFunction();</script></body></html>"
    )
    dom, console = _open(page, tmp_path, tmp_path / "control.png")
    assert _broken(dom) == "2"
    assert "undefinedFunction" in console


@pytest.fixture(scope="module")
def smoke_report(smoke_run, tmp_path_factory) -> Path:
    return write_report(smoke_run, tmp_path_factory.mktemp("browser") / "report", progress=False, n_boot=200, pdf=False)


@needs_chromium
def test_report_renders_offline_without_errors(smoke_report, tmp_path):
    report = smoke_report
    index = report / "index.html"
    screenshot = tmp_path / "report.png"
    dom, console = _open(index, tmp_path, screenshot)
    assert _broken(dom) == "0", "figures failed to load in the browser"
    figures = len(list((report / "figures").glob("*.png")))  # every figure the report wrote is on the page
    assert figures >= 7 and f'data-images="{figures}"' in dom
    assert not console, f"console messages:\n{console}"
    assert "gumbel-study report: smoke" in dom and "Reading guide" in dom
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(screenshot, report / "browser-screenshot.png")


# ---------------------------------------------------------------- the parallel-coordinates view

_PC_MARKER = re.compile(r'<div id="parcoords-check"([^>]*)>')

# Appended to a copy of index.html: after load, brush tau0's upper half (tau0 = 2.0), then
# relaxation's upper half (hard), hover a line, click tau0 (clears its brush), press "clear
# brushes"; the shown count after each step goes to <div id="pc-test">. Real mouse events on the
# page's own elements, so the handlers a reader's mouse reaches are the ones tested.
_BRUSH_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var out = document.createElement("div"), marker = document.getElementById("parcoords-check");
  out.id = "pc-test";
  function ev(target, type, x, y) { target.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, clientX: x, clientY: y, view: window})); }
  function drag(key, from, to) {
    var hit = document.querySelector('#parcoords-plot rect.pc-hit[data-axis="' + key + '"]'), box = hit.getBoundingClientRect(), x = box.left + box.width / 2;
    ev(hit, "mousedown", x, box.top + from * box.height); ev(document, "mousemove", x, box.top + to * box.height); ev(document, "mouseup", x, box.top + to * box.height);
    return box;
  }
  function note(name) { out.setAttribute("data-" + name, marker.getAttribute("data-shown") + ";" + document.getElementById("parcoords-count").textContent); }
  var box = drag("tau0", 0, 0.45); note("tau0");
  drag("relaxation", 0, 0.45); note("both");
  var svg = document.querySelector("#parcoords-plot svg");
  ev(svg, "mousemove", box.left + box.width / 2 + 2, box.top + 10);  // on tau0 = 2.0, the axis top
  var tip = document.querySelector("#parcoords-plot .pc-tip");
  out.setAttribute("data-tip", tip.hidden ? "hidden" : tip.getAttribute("data-trial") + ";" + tip.textContent);
  drag("tau0", 0.3, 0.3); note("click");
  document.getElementById("parcoords-clear").click(); note("cleared");
  document.body.appendChild(out);
});
</script>
"""


def _attrs(tag: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


@needs_chromium
def test_parcoords_view_draws_every_trial(smoke_report, tmp_path):
    """The smoke report's view: one line per trial, the varied axes then the fits, no console line."""
    dom, console = _open(smoke_report / "index.html", tmp_path, tmp_path / "pc.png")
    assert not console, f"console messages:\n{console}"
    match = _PC_MARKER.search(dom)
    assert match, "no parcoords-check marker"
    marker = _attrs(match.group(1))
    assert marker["data-status"] == "ok", marker
    assert marker["data-lines"] == marker["data-shown"] == "4"  # 2 relaxations x 2 tau0
    axes = marker["data-axes"].split("|")
    assert sorted(axes[:2]) == ["relaxation", "tau0"] and axes[2:] == ["fit/tv", "fit/js", "fit/kl"]
    assert "4 of 4 trials shown" in dom and "Final fit over every axis" in dom


@needs_chromium
def test_parcoords_brushing_filters_and_clears(smoke_report, tmp_path):
    page = tmp_path / "brush.html"
    page.write_text((smoke_report / "index.html").read_text(encoding="utf-8").replace("</body>", _BRUSH_SCRIPT + "</body>"), encoding="utf-8")
    dom, console = _open(page, tmp_path, tmp_path / "brush.png")
    assert not console, f"console messages:\n{console}"
    match = re.search(r'<div id="pc-test"([^>]*)>', dom)
    assert match, "the brush script did not finish"
    got = _attrs(match.group(1))
    assert got["data-tau0"] == "2;2 of 4 trials shown"  # tau0 = 2.0 only
    assert got["data-both"] == "1;1 of 4 trials shown"  # and relaxation = hard
    assert got["data-click"] == "2;2 of 4 trials shown"  # a click on tau0 clears its brush only
    assert got["data-cleared"] == "4;4 of 4 trials shown"
    assert got["data-tip"] != "hidden" and "tau0" in got["data-tip"] and "final fit/tv" in got["data-tip"]


@needs_chromium
def test_parcoords_hostile_names_render_as_text(tmp_path):
    """A target named like a script tag reaches the page as text: the view draws, nothing runs."""
    import pandas as pd

    from analysis.parcoords import parcoords_html

    hostile = "</script><script>document.title='pwned'</script>"
    trials = pd.DataFrame({"trial_id": [f"t{i}" for i in range(4)], "status": "TERMINATED", "target": ["zipf:s=1.2", hostile] * 2,
                           "tau0": [0.1, 0.1, 1.0, 1.0], "last_step": 100, "final/fit/tv": [0.1, 0.2, 0.3, 0.4]})
    page = tmp_path / "hostile.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>safe</title></head><body>{parcoords_html(trials, ['target', 'tau0'])}</body></html>", encoding="utf-8")
    dom, console = _open(page, tmp_path, tmp_path / "hostile.png")
    assert not console, f"console messages:\n{console}"
    marker = _attrs(_PC_MARKER.search(dom).group(1))
    assert marker["data-status"] == "ok" and marker["data-lines"] == "4"
    assert "<title>safe</title>" in dom and "<script>document.title" not in dom  # no script element made from it
    assert "&lt;/script&gt;&lt;script&gt;document.ti" in dom  # the tick label, as text (cut at 21 characters)


@needs_chromium
def test_parcoords_tradeoff_grid_size(tmp_path):
    """The tradeoff grid's 1,344 trials: every line drawn, a brush on anneal_rate's top quarter
    keeps its 336 trials at 1e-3. Times go in the failure message, not into an assertion: this
    machine's load decides them (about 4 ms per full redraw in headless Chromium on 2 cores)."""
    import itertools

    import pandas as pd

    from analysis.parcoords import parcoords_html

    grid = {"tau0": [0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0], "anneal_rate": [0.0, 1e-5, 1e-4, 1e-3], "relaxation": ["soft", "hard", "gumbel_rao", "reinforce"],
            "target": ["zipf:s=1.2", "bimodal", "sparse", "geometric:p=0.3", "dirichlet:alpha=0.5,seed=3", "uniform"], "categories": [10, 100]}
    rows = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    trials = pd.DataFrame(rows).assign(trial_id=[f"t{i:04d}" for i in range(len(rows))], status="TERMINATED", last_step=100)
    trials["final/fit/tv"] = 0.05 + 0.3 * (trials["relaxation"] == "soft") + 0.001 * (trials.index % 7)
    trials["final/fit/js"], trials["final/fit/kl"] = trials["final/fit/tv"] / 5, trials["final/fit/tv"] * 0.8
    script = """<script>window.addEventListener("load", function () {
      var out = document.createElement("div"), hit = document.querySelector('rect.pc-hit[data-axis="anneal_rate"]'), b = hit.getBoundingClientRect(), x = b.left + 12;
      function ev(t, type, y) { t.dispatchEvent(new MouseEvent(type, {bubbles: true, cancelable: true, clientX: x, clientY: y, view: window})); }
      var t0 = performance.now(); ev(hit, "mousedown", b.top);
      for (var i = 1; i <= 20; i++) { ev(document, "mousemove", b.top + b.height * 0.25 * i / 20); }
      ev(document, "mouseup", b.top + b.height * 0.25);
      out.id = "pc-test"; out.setAttribute("data-shown", document.getElementById("parcoords-check").getAttribute("data-shown"));
      out.setAttribute("data-ms", ((performance.now() - t0) / 20).toFixed(2)); document.body.appendChild(out); });</script>"""
    page = tmp_path / "grid.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='width:1180px'>{parcoords_html(trials, grid)}{script}</body></html>", encoding="utf-8")
    dom, console = _open(page, tmp_path, tmp_path / "grid.png")
    assert not console, f"console messages:\n{console}"
    marker = _attrs(_PC_MARKER.search(dom).group(1))
    got = _attrs(re.search(r'<div id="pc-test"([^>]*)>', dom).group(1))
    assert marker["data-status"] == "ok" and marker["data-lines"] == "1344", marker
    assert marker["data-axes"] == "tau0|anneal_rate|relaxation|target|categories|fit/tv|fit/js|fit/kl"
    assert got["data-shown"] == "336", f"{got} ({got.get('data-ms')} ms per brush move)"
