"""Open a ``pytest-convergence history`` page in headless Chromium, as ``tools/check_report.sh`` does
for the gate's report: the DOM the browser built, and a screenshot. Imported by the history tests
as ``from history_browser import ...`` (pyproject puts tests/ on the path)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chromium(page: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile; no network, no first run
        return subprocess.run(
            [
                str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", *arguments, page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip


def rendered_dom(page: Path) -> str:
    """The DOM Chromium built from ``page`` (it failed the test if Chromium could not load it)."""
    done = _chromium(page, "--dump-dom")
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, out: Path, *, width: int = 1200, height: int = 2400) -> bytes:
    """A screenshot of the window (``width`` x ``height``) over ``page``, as PNG bytes."""
    _chromium(page, "--hide-scrollbars", f"--screenshot={out}", f"--window-size={width},{height}")
    data = out.read_bytes() if out.exists() else b""
    assert data.startswith(PNG_SIGNATURE), f"chromium wrote no screenshot of {page}"
    return data


def check_history_dom(dom: str) -> dict[str, int]:
    """What a history page must show once a browser built it: its heading, and per case a figure
    holding one SVG plot with its points; returns the counts it found."""
    heading = re.search(r'<h1 id="history">Convergence history: (\d+) versions?, (\d+) cases</h1>', dom)
    assert heading, "no history heading in the rendered page"
    declared = re.search(r'<body[^>]* data-figures="(\d+)"', dom)
    assert declared, "no data-figures count on <body>"
    counts = {
        "versions": int(heading.group(1)),
        "cases": int(heading.group(2)),
        "declared": int(declared.group(1)),
        "figures": dom.count("<figure"),
        "plots": dom.count("<svg"),
        "points": dom.count('class="point"'),
        "rings": dom.count('class="judged'),
        "cells": dom.count('class="run '),
    }
    assert counts["figures"] == counts["plots"] == counts["declared"] == counts["cases"], counts
    return counts
