"""``pytest-convergence bisect`` end to end, over fake releases: eight environments that differ in
known settings at known positions, built without installing anything (each is this interpreter
behind a script that says which release it is), and a user's suite that reads which release it
runs under. Two mechanisms appear at two releases; a third case moves within the gate's tolerance
only. The bisection must find each mechanism's release in ceil(log2(n)) + 1 probes, call the
third case borderline, and lose nothing to a Ctrl-C.

The sessions run as the gate runs them: subprocesses of this interpreter, from the pytester
directory (the results files' test ids are relative to it).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RELEASES = [f"r{i}" for i in range(1, 9)]
"""r1 is the old side, r8 the new; r2..r7 lie between."""
INIT_FROM, OPTIMIZER_FROM = 3, 6
"""The release from which the kernel initializer changes, and from which RMSprop's epsilon does."""

SUITE = """\
import os

import pytest
from pytest_convergence import Case

RELEASE = int(os.environ["FAKE_RELEASE"])
COMMON = dict(
    input_shape=(2,), x=[[-1.0, 0.5], [1.0, -0.25], [0.5, 0.75], [-0.3, -0.9]], y=[1.0, 0.0, 1.0, 0.0],
    loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}, steps=20, seed=0,
)


def dense(initializer="glorot_uniform"):
    return [{"class_name": "Dense", "config": {"units": 1, "kernel_initializer": initializer}}]


def rmsprop(epsilon=1e-7, learning_rate=0.01):
    return {"class_name": "RMSprop", "config": {"learning_rate": learning_rate, "epsilon": epsilon}}


INITIALIZER = "he_normal" if RELEASE >= {init} else "glorot_uniform"
INIT = Case.sequential("init", layers=dense(INITIALIZER), optimizer=rmsprop(), **COMMON)
EPSILON = 1e-2 if RELEASE >= {optimizer} else 1e-7
OPTIMIZER = Case.sequential("optimizer", layers=dense(), optimizer=rmsprop(EPSILON), **COMMON)
# two float32 ulps of learning rate apart, and one between: within its tolerance of both sides
RATE = {1: 0.01, 8: 0.010000002}.get(RELEASE, 0.010000001)
NUDGED = Case.sequential(
    "nudged", layers=dense(), optimizer=rmsprop(learning_rate=RATE), snapshot_tolerance=1e-2, **COMMON
)


@pytest.mark.convergence(dtypes=["float32"])
def test_init(convergence_train):
    convergence_train(INIT)


@pytest.mark.convergence(dtypes=["float32"])
def test_optimizer(convergence_train):
    convergence_train(OPTIMIZER)


@pytest.mark.convergence(dtypes=["float32"])
def test_nudged(convergence_train):
    convergence_train(NUDGED)
""".replace("{init}", str(INIT_FROM)).replace("{optimizer}", str(OPTIMIZER_FROM))


@pytest.fixture
def releases(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The suite, its results on the old (r1) and new (r8) side, and an environment per release."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_user=SUITE)
    for number, name in enumerate(RELEASES, start=1):
        python = pytester.path / "envs" / name / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(f'#!/bin/sh\nFAKE_RELEASE={number} exec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
    for name in (RELEASES[0], RELEASES[-1]):
        session = subprocess.run(
            [str(pytester.path / "envs" / name / "bin" / "python"), "-m", "pytest", "test_user.py",
             "--convergence", "-p", "no:cacheprovider", f"--convergence-results={name}.json",
             "--convergence-anatomy=3"],
            cwd=pytester.path, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert session.returncode == 0, session.stdout + session.stderr
    return pytester.path


def command(directory: Path) -> list[str]:
    between = RELEASES[1:-1]
    return [
        sys.executable, "-m", "pytest_convergence.cli", "bisect", RELEASES[0], RELEASES[-1],
        "--results-old", f"{RELEASES[0]}.json", "--results-new", f"{RELEASES[-1]}.json",
        "--releases", ",".join(between), "--work-dir", "work", "--out", "report",
        *[f"--venv={name}={directory / 'envs' / name}" for name in between],
    ]  # fmt: skip


def probe_files(directory: Path) -> list[Path]:
    return sorted((directory / "work" / "bisect" / "tensorflow-cpu-r1-to-r8").glob("probe-*.json"))


def runs_in(path: Path) -> list[tuple[str, str]]:
    return [(run["case"], run["dtype"]) for run in json.loads(path.read_text())["runs"]]


def test_each_mechanism_is_found_at_its_release_in_log2_probes_and_a_ctrl_c_loses_nothing(
    releases: Path,
) -> None:
    # Ctrl-C once the first probe has finished a run: as a terminal sends it, to the whole group
    process = subprocess.Popen(
        command(releases), cwd=releases, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any(runs_in(path) for path in probe_files(releases) if path.stat().st_size):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, out + err
    assert "interrupted: every finished run is kept" in err and "run the same command again" in err
    before = {path.name: runs_in(path) for path in probe_files(releases)}
    assert any(before.values())

    done = subprocess.run(
        command(releases), cwd=releases, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr  # 1: the nudged case is borderline
    report = done.stdout

    # nothing kept was trained again: every run of the files before the interrupt is in no later file
    after = {path.name: runs_in(path) for path in probe_files(releases)}
    for name, runs in before.items():
        assert after[name] == runs
        configuration = name.rsplit("-", 1)[0]
        later = [
            run
            for other, rs in after.items()
            if other not in before and other.startswith(f"{configuration}-")
            for run in rs
        ]
        assert not set(runs) & set(later), (name, runs, later)

    # each mechanism appears where the suite made it appear, and nowhere else
    assert "appeared in r3 (after r2)" in report, report
    assert "appeared in r6 (after r5)" in report, report
    sections = report.split("\n\n")
    init = next(s for s in sections if "init [float32]" in s and "appeared" in s)
    optimizer = next(s for s in sections if "optimizer [float32]" in s and "appeared" in s)
    assert "appeared in r3" in init and "r6" not in init.split("\n")[1]
    assert "appeared in r6" in optimizer
    assert "borderline: nudged [float32]" in report
    assert "within the gate's tolerance of both sides" in report

    # ceil(log2(n)) + 1 probes at most for each case, n the releases after the old side
    bound = math.ceil(math.log2(len(RELEASES) - 1)) + 1
    for key in (("init", "float32"), ("optimizer", "float32")):
        probed = {path.name.rsplit("-", 1)[0] for path in probe_files(releases) if key in runs_in(path)}
        assert 1 <= len(probed) <= bound, (key, probed)

    # the report in three forms, linking the neighbouring releases' results
    markdown = (releases / "report" / "bisect.md").read_text()
    assert "| mechanism | runs | where it appeared |" in markdown
    assert "[r2](results/results-r2.json)" in markdown and "[r3](results/results-r3.json)" in markdown
    assert (releases / "report" / "results" / "results-r3.json").is_file()
    assert "[the gate between them](steps/verdict-r2-to-r3.md)" in markdown
    step = (releases / "report" / "steps" / "verdict-r2-to-r3.md").read_text()
    assert "init [float32]" in step and "optimizer [float32]" not in step  # that step's cases only
    page = (releases / "report" / "bisect.html").read_text()
    assert page.count('<section id="m') >= 2 and 'href="results/results-r5.json"' in page

    # a second command resumes a finished bisection: it trains nothing and says the same
    again = subprocess.run(
        command(releases), cwd=releases, capture_output=True, text=True, timeout=600, check=False
    )
    assert again.returncode == 1 and "== probe" not in again.stderr
    assert again.stdout == report
    assert {path.name for path in probe_files(releases)} == set(after)
