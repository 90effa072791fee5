"""The Snakemake report opens in a real browser without console errors.

``check_report_in_chromium`` (tests/chromium_report.py) drives headless Chromium over the
DevTools protocol. These tests prove the checker on small static pages: a clean page passes,
and console errors, exceptions and missing resources are caught. The real workflow report
(``snakemake --report``) is checked with it in tests/test_workflow.py.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.chromium_report import CHROMIUM, check_report_in_chromium

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} not installed (Debian: apt-get install -y chromium)",
    ),
]


def _png_data_uri(tmp_path: Path) -> str:
    from spxflow.plots import plot_failure_png

    png = tmp_path / "embedded.png"
    plot_failure_png(png, "embedded figure", "a PNG embedded as a data URI")
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def static_page(tmp_path: Path, body_extra: str = "", name: str = "report.html") -> Path:
    page = tmp_path / name
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>spxflow test report</title>"
        "</head><body><h1 id='title'>spxflow report</h1>"
        f"<img id='fig' alt='figure' src='{_png_data_uri(tmp_path)}'>"
        "<script>console.log('rendered'); document.getElementById('title').dataset.ok='1';"
        f"</script>{body_extra}</body></html>",
        encoding="utf-8",
    )
    return page


def test_clean_page_passes(tmp_path):
    result = check_report_in_chromium(static_page(tmp_path))
    assert result["console_errors"] == [], result["console_errors"]
    assert "<img" in result["dom"] and "</html>" in result["dom"]
    shot = result["screenshot"]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 5000  # something was drawn


def test_detector_catches_console_error_and_exception(tmp_path):
    page = static_page(
        tmp_path,
        "<script>console.error('deliberate failure');</script><script>null.boom();</script>",
        name="broken.html",
    )
    result = check_report_in_chromium(page, settle_s=0.5)
    errors = result["console_errors"]
    assert any("deliberate failure" in e for e in errors), errors
    assert any(e.startswith("uncaught exception") for e in errors), errors
    assert 'data-ok="1"' in result["dom"]  # the page itself still rendered


def test_detector_catches_missing_resource(tmp_path):
    page = static_page(tmp_path, "<img src='does_not_exist.png'>", name="missing.html")
    errors = check_report_in_chromium(page, settle_s=0.5)["console_errors"]
    assert any("does_not_exist.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
