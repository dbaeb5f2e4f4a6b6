"""The bundled catalogue end to end, serially, as a user runs it: two sessions in a subprocess
each, side by side in one run, without and with a results file (issue 25: the catalogue in at
most 120 s; a results-writing session at most 1.2x one without)::

    python -m pytest --convergence fixtures -p no:cacheprovider -q --convergence-timing
    python -m pytest --convergence fixtures -p no:cacheprovider -q --convergence-timing \\
        --convergence-results=<tmp>/r.json

Each session takes minutes (3-5 on a shared 2-core machine), so this benchmark is the long part
of ``./dev bench``; ``./dev bench -k "not catalogue"`` leaves it out, ``./dev bench -k catalogue``
runs it alone. The summary (benchmarks/conftest.py) prints each session's wall time, the phase
totals of its runs (the session without a results file: the ``total`` line of its
``--convergence-timing`` table; the other: the results file's per-run ``phases``), the per-run
mean of ``other`` (every phase but build, trace and train) and the verdicts on both targets.
Time is not asserted; a session that exits with a failed test is timed all the same and its exit
status printed beside its time (the catalogue's own state is the demo's business).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [
    "-m",
    "pytest",
    "--convergence",
    "fixtures",
    "-p",
    "no:cacheprovider",
    "-q",
    "--convergence-timing",
]
TIMEOUT_S = 1800


def phase_table(output: str) -> tuple[dict[str, float], int]:
    """The ``total`` line of the ``--convergence-timing`` table as {phase: seconds} (``other``
    included), and the number of runs above it; ({}, 0) where the output has no table."""
    lines = output.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if "convergence timing (seconds per phase)" in line), None
    )
    if start is None:
        return {}, 0
    header = lines[start + 1].split()
    if header[:2] != ["case", "dtype"]:
        return {}, 0
    for runs, line in enumerate(lines[start + 3 :]):  # after the header and its rule
        cells = line.split()
        if cells and cells[0] == "total":
            return dict(zip(header[2:], (float(c) for c in cells[1:]))), runs
    return {}, 0


def results_phases(path: Path) -> tuple[dict[str, float], int]:
    """Each phase summed over the results file's runs, in the order of first appearance."""
    runs = json.loads(path.read_text())["runs"]
    totals: dict[str, float] = {}
    for run in runs:
        for name, seconds in run.get("phases", {}).items():
            totals[name] = totals.get(name, 0.0) + seconds
    return totals, len(runs)


@pytest.mark.parametrize("session", ["plain", "results"])
def test_catalogue_session_time(
    benchmark, session: str, tmp_path: Path, catalogue_sessions: dict[str, dict]
) -> None:
    results = tmp_path / "r.json"
    command = [sys.executable, *COMMAND]
    if session == "results":
        command.append(f"--convergence-results={results}")
    finished: list[subprocess.CompletedProcess[str]] = []
    walls: list[float] = []

    def once() -> None:
        start = time.perf_counter()
        finished.append(
            subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        )
        walls.append(time.perf_counter() - start)

    benchmark.extra_info.update({"command": " ".join(command[1:]), "session": session})
    benchmark.pedantic(once, rounds=1, iterations=1)
    done = finished[-1]
    (tmp_path / "output.txt").write_text(done.stdout + done.stderr)
    # 0: all passed; 1: some test failed (timed all the same); anything else: the session broke
    assert done.returncode in (0, 1), (
        f"the catalogue session exited {done.returncode}:\n{done.stdout[-4000:]}"
    )
    if session == "results":
        totals, runs = results_phases(results)
        source = "the results file's phases"
    else:
        totals, runs = phase_table(done.stdout)
        source = "the --convergence-timing total line"
    benchmark.extra_info.update({"returncode": done.returncode, "phases": totals, "runs": runs})
    catalogue_sessions[session] = {
        "seconds": walls[-1],
        "returncode": done.returncode,
        "totals": totals,
        "runs": runs,
        "source": source,
    }
