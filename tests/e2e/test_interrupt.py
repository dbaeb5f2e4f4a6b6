"""Ctrl-C, ``-x`` and other early ends: an unfinished session deletes nothing, and its results
file says what it did not finish.

A real ``pytest --convergence --snapshot-update`` runs as a subprocess in a project whose snapshots
and results file already exist, and gets a real SIGINT, sent to its process group as a terminal's
Ctrl-C is, at one moment of its life: while collecting, while training, right after a test wrote
its snapshot. Afterwards every file is checked: the snapshots of the tests that did not finish
are there byte for byte, the results file is the old one where no run finished, else the runs that
finished marked unfinished with the tests missing (it is rewritten as each test finishes, so a
session that dies keeps them too), no temporary file is left, and pytest ended promptly with its
interrupted exit code (2).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = textwrap.dedent(
    """
    import os
    import pathlib

    import pytest
    from pytest_convergence import Case

    LEARNING_RATE = float(os.environ.get("LEARNING_RATE", "0.1"))


    def case(name, steps=40):
        return Case.sequential(
            name,
            layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
            x=[[-1.0], [1.0]], y=[1.0, 0.0],
            loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
            optimizer={"class_name": "SGD", "config": {"learning_rate": LEARNING_RATE}},
            steps=steps, seed=0,
            shuffle=False,  # Keras 2 would draw every epoch's shuffled batch first, in one call
        )


    def reached(point):
        pathlib.Path(f"reached-{point}").touch()  # where the session is, for the test driving it


    def test_plain():
        if os.environ.get("STALL_IN_EXEC"):  # as making a dataclass does while a module is imported
            reached("exec")
            exec("import time; time.sleep(60)")


    @pytest.mark.convergence(dtypes=["float32"])
    def test_first(convergence_train, convergence_snapshot):
        if os.environ.get("FAIL_FIRST"):
            pytest.fail("failed on purpose")
        run = convergence_train(case("first"))
        assert run == convergence_snapshot
        reached("first-written")


    @pytest.mark.convergence(dtypes=["float32"])
    def test_long(convergence_train, convergence_snapshot):
        reached("long")
        run = convergence_train(case("long", int(os.environ.get("LONG_STEPS", "40"))))
        assert run == convergence_snapshot


    @pytest.mark.convergence(dtypes=["float32"])
    def test_last(convergence_train, convergence_snapshot):
        run = convergence_train(case("last"))
        assert run == convergence_snapshot
    """
)

CONFTEST = textwrap.dedent(
    """
    import os
    import pathlib
    import time


    def pytest_collection_modifyitems(items):
        if os.environ.get("SLOW_COLLECTION"):  # a conftest that takes its time, as heavy imports do
            pathlib.Path("reached-collection").touch()
            time.sleep(60)
    """
)

UPDATE = ["--convergence", "--snapshot-update", "--convergence-results=results.json"]
SNAPSHOTS = Path("__snapshots__/test_project")
FINISHED_SESSION_ENDS = 10.0
"""Seconds from the signal to pytest's "KeyboardInterrupt" banner, at most. Measured on this
shared 2-core machine under load: 0.5 to 3 s (TensorFlow's own exit takes 3 to 4 s more); without
the fix, a Ctrl-C in training waits for the whole compiled loop (over a minute for the long test)."""


def _environment(**extra: str) -> dict[str, str]:
    """This interpreter's environment, without what would make the user's session an xdist worker
    of this suite or inherit its options."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_XDIST_", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST"))
    }
    return {**environment, "PYTHONUNBUFFERED": "1", **extra}


def _pytest(directory: Path, *arguments: str, **environment: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments],
        cwd=directory,
        env=_environment(**environment),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, to signal as a terminal does
    )


def _files(directory: Path) -> dict[str, bytes]:
    """Every file of the project but Python's bytecode caches and the test's own markers."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith("reached-") and "__pycache__" not in path.parts
    }


def _end(process: subprocess.Popen[str], seconds: float) -> None:
    """Wait for ``process`` to end; past ``seconds``, kill its process group."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose snapshots and results file a finished session wrote."""
    directory = tmp_path_factory.mktemp("stored")
    (directory / "pytest.ini").write_text("[pytest]\n")
    (directory / "test_project.py").write_text(TESTS)
    (directory / "conftest.py").write_text(CONFTEST)
    process = _pytest(directory, *UPDATE)
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        _end(process, 0)
    assert process.returncode == 0, output
    assert len(list((directory / SNAPSHOTS).iterdir())) == 3, output
    for marker in directory.glob("reached-*"):
        marker.unlink()
    return directory


@dataclass
class Interrupted:
    """One interrupted session: its output, exit code, and the files before and after."""

    before: dict[str, bytes]
    after: dict[str, bytes]
    returncode: int
    output: str
    banner_after: float | None
    """Seconds from the signal to pytest's "KeyboardInterrupt" banner (None: never printed)."""

    def changed(self) -> set[str]:
        return {name for name in self.before if self.after.get(name) != self.before[name]}

    def new(self) -> set[str]:
        return set(self.after) - set(self.before)


def interrupt(
    stored: Path, tmp_path: Path, *, when: Callable[[Path], bool], after: float = 0.0, **environment: str
) -> Interrupted:
    """Run the stored project's ``pytest --convergence --snapshot-update``, send SIGINT to it once
    ``when(directory)`` holds (and ``after`` seconds more), and return what it did."""
    directory = tmp_path / "project"
    shutil.copytree(stored, directory)
    before = _files(directory)
    process = _pytest(directory, *UPDATE, **environment)
    lines: list[tuple[float, str]] = []
    assert process.stdout is not None
    stream = process.stdout
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in stream))
    reader.start()
    deadline = time.monotonic() + 180
    try:
        while not when(directory):
            assert process.poll() is None, "".join(line for _, line in lines)
            assert time.monotonic() < deadline, "the moment to interrupt never came"
            time.sleep(0.01)
        time.sleep(after)
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
    finally:
        _end(process, 30)
        reader.join()
    banner = [at for at, line in lines if "KeyboardInterrupt !!!" in line]
    return Interrupted(
        before=before,
        after=_files(directory),
        returncode=process.returncode,
        output="".join(line for _, line in lines),
        banner_after=banner[0] - signalled if banner else None,
    )


def _reached(point: str) -> Callable[[Path], bool]:
    return lambda directory: (directory / f"reached-{point}").exists()


PLANNED = ["test_project.py::test_first[float32]", "test_project.py::test_long[float32]"]
PLANNED.append("test_project.py::test_last[float32]")


def assert_nothing_lost(session: Interrupted, finished: Collection[str] = ()) -> None:
    """Every stored file is there; only the snapshots of ``finished`` tests may have changed, and
    the results file only to hold their runs, marked unfinished; no temporary file is left; pytest
    ended promptly, interrupted, and said what it kept."""
    ended = session.banner_after is not None and session.banner_after < FINISHED_SESSION_ENDS
    assert ended, f"no end of the session within {FINISHED_SESSION_ENDS} s of Ctrl-C\n{session.output}"
    assert session.returncode == pytest.ExitCode.INTERRUPTED, session.output
    assert not set(session.before) - set(session.after), session.output  # nothing deleted
    allowed = {str(SNAPSHOTS / f"{test}.convergence.txt") for test in finished} | {"results.json"}
    assert session.changed() <= allowed, session.output
    assert not session.new(), session.output  # no temporary file, no results written beside
    assert "convergence: the session was interrupted" in session.output
    if session.after["results.json"] == session.before["results.json"]:
        assert "did not write results.json (the file there is unchanged)" in session.output
    else:
        assert_marked_unfinished(session, finished)
    assert "PytestUnraisableExceptionWarning" not in session.output


def assert_marked_unfinished(session: Interrupted, finished: Collection[str]) -> None:
    """The results file holds the runs of tests that finished, and names every other one."""
    written = json.loads(session.after["results.json"])
    ran = {run["test"].partition("::")[2] for run in written["runs"]}
    assert ran and ran <= set(finished), session.output
    assert written["session"]["finished"] is False
    assert written["session"]["ended"] == "the session was interrupted (KeyboardInterrupt)"
    assert written["session"]["missing"] == [test for test in PLANNED if test.partition("::")[2] not in ran]
    assert (
        f"wrote the {len(ran)} run(s) that finished to results.json, marked unfinished: it names the "
        f"{len(PLANNED) - len(ran)} planned test(s) that have no result"
    ) in session.output


def test_ctrl_c_while_collecting_replaces_no_results_file(stored: Path, tmp_path: Path) -> None:
    session = interrupt(stored, tmp_path, when=_reached("collection"), SLOW_COLLECTION="1")
    assert_nothing_lost(session)
    assert "the session was interrupted before its tests ran" in session.output


def test_ctrl_c_while_training_stops_promptly_and_keeps_every_file(stored: Path, tmp_path: Path) -> None:
    # the long test trains 1,000,000 steps (over a minute): tracing takes 0.5 to 3 s here, so five
    # seconds after the test starts the compiled loop is running
    session = interrupt(stored, tmp_path, when=_reached("long"), after=5.0, LONG_STEPS="1000000")
    assert_nothing_lost(session, finished={"test_first[float32]"})
    assert "deleted no snapshot" in session.output
    assert_marked_unfinished(session, {"test_first[float32]"})  # the first test had finished


def test_ctrl_c_after_a_snapshot_write_keeps_it_and_every_other(stored: Path, tmp_path: Path) -> None:
    # another learning rate: every test would rewrite its snapshot; the first one did
    session = interrupt(stored, tmp_path, when=_reached("first-written"), LEARNING_RATE="0.2")
    first = str(SNAPSHOTS / "test_first[float32].convergence.txt")
    assert_nothing_lost(session, finished={"test_first[float32]"})
    assert session.changed() - {"results.json"} == {first}  # and its run, if the test had finished
    assert "\ncase: first\n" in session.after[first].decode()
    assert "learning_rate=0.2" in session.after[first].decode()


def test_ctrl_c_inside_an_exec_of_a_string_ends_with_pytests_exit_code(stored: Path, tmp_path: Path) -> None:
    # CPython would kill the process with SIGINT at exit (-2), although pytest handled the interrupt
    session = interrupt(stored, tmp_path, when=_reached("exec"), STALL_IN_EXEC="1")
    assert_nothing_lost(session)


def test_stopping_at_the_first_failure_deletes_no_snapshot(stored: Path, tmp_path: Path) -> None:
    directory = tmp_path / "project"
    shutil.copytree(stored, directory)
    before = _files(directory)
    process = _pytest(directory, *UPDATE, "-x", FAIL_FIRST="1")
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        _end(process, 0)
    assert process.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert _files(directory) == before, output
    assert (
        "convergence: the session stopped early (stopping after 1 failures), so it deleted no snapshot"
        in output
    )
