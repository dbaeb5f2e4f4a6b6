"""``pytest-convergence bisect`` on bad input: a results file that is not there is named with the
fix (never a gate started in its place), a malformed --venv says how to write it, and two sides
that do not differ are said to leave nothing to bisect. No training: the command stops before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from factories import make_run

from pytest_convergence.gate import results as results_file
from pytest_convergence.gate.results import Results, RunRecord


def bisect(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_convergence.cli", "bisect", "2.15.1", "2.21.0", *arguments],
        cwd=directory, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_a_missing_results_file_is_named_and_no_gate_runs_in_its_place(tmp_path: Path) -> None:
    done = bisect(tmp_path, "--results-old", "old.json", "--results-new", "new.json")
    assert done.returncode == 2
    assert "error: --results-old old.json: no such file; give the old side's results file" in done.stderr
    assert not any(tmp_path.iterdir())  # no gate directory, no environment


def test_a_malformed_venv_says_how_to_write_it(tmp_path: Path) -> None:
    done = bisect(tmp_path, "--venv", "2.17.0")
    assert done.returncode == 2 and "--venv 2.17.0: write it LABEL=DIR" in done.stderr


def test_two_sides_that_do_not_differ_leave_nothing_to_bisect(tmp_path: Path) -> None:
    run = make_run([0.7, 0.5, 0.3])
    record = RunRecord.from_run(run, test="test_x.py::test_x", status="passed")
    results_file.write(tmp_path / "same.json", Results([record]))
    done = bisect(
        tmp_path, "--results-old", "same.json", "--results-new", "same.json", "--releases", "2.19.0"
    )
    assert done.returncode == 0, done.stderr
    assert "no run changed between 2.15.1 and 2.21.0: nothing to bisect" in done.stdout
    assert not (tmp_path / "bisect-2.15.1-to-2.21.0").exists()
