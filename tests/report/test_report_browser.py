"""The report in headless Chromium: every image loads, no script or console error, screenshot.

Skips where no Chromium is installed (CI installs Debian's ``chromium``, see ``.ci/run``).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                  "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed")


def chromium(page, tmp_path, *args):
    """Run headless Chromium on ``page``; (stdout, stderr)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--window-size=1200,3000", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
           *args, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


def page_state(page, tmp_path):
    """The marks the report's inline script puts on <body>, and console lines in the log."""
    dom, log = chromium(page, tmp_path, "--virtual-time-budget=10000", "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"no <body> in Chromium's DOM dump; stderr:\n{log[-2000:]}"
    marks = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    console = [ln for ln in log.splitlines() if ":CONSOLE" in ln]
    return marks, console


def test_report_loads_every_image_without_errors(bench_dir, tmp_path):
    marks, console = page_state(bench_dir / "report.html", tmp_path)
    assert marks.get("loaded") == "1", marks
    assert int(marks["images"]) >= 8
    assert marks["images-broken"] == "0", marks
    assert marks["errors"] == "0", marks.get("error-messages")
    assert console == []
    shot = tmp_path / "report.png"
    chromium(bench_dir / "report.html", tmp_path, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_the_check_sees_a_broken_image_and_a_script_error(bench_dir, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text((bench_dir / "report.html").read_text().replace(
        "</body>", '<img src="data:image/png;base64,AAAA"><script>console.error("boom");'
        "notDefined();</script></body>"))
    marks, console = page_state(bad, tmp_path)
    assert marks["images-broken"] == "1" and int(marks["errors"]) >= 2
    assert any("boom" in line for line in console)
