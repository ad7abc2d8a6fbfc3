"""The report's index.html in headless Chromium: it renders offline, every figure decodes, no console errors.

index.html carries a small inline script that, on load, counts <img> elements that failed to
decode and writes the count to <div id="img-check" data-broken="N">. Chromium runs once per page
with --dump-dom (the DOM after load, marker included) and --screenshot, logging console messages
to stderr; the report logs nothing to the console, so any console line is a failure. A control
page with a broken image and a thrown error checks that this detector does detect.
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


@needs_chromium
def test_report_renders_offline_without_errors(smoke_run, tmp_path):
    report = write_report(smoke_run, tmp_path / "report", progress=False, n_boot=200, pdf=False)
    index = report / "index.html"
    screenshot = tmp_path / "report.png"
    dom, console = _open(index, tmp_path, screenshot)
    assert _broken(dom) == "0", "figures failed to load in the browser"
    assert 'data-images="6"' in dom
    assert not console, f"console messages:\n{console}"
    assert "gumbel-study report: smoke" in dom and "Reading guide" in dom
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copy(screenshot, report / "browser-screenshot.png")
