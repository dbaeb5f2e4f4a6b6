"""The plugin session's side of a results file written as runs finish: rewritten after each test
that recorded runs, marked unfinished when the session stops early, and what a pytest-xdist worker
sends with each test's report. No TensorFlow, no pytest session: the session object alone."""

from __future__ import annotations

import json
from pathlib import Path

from test_results import record

from pytest_convergence.gate import results
from pytest_convergence.gate.progress import CrashedRun, SessionProgress
from pytest_convergence.plugin.options import Settings
from pytest_convergence.plugin.session import STILL_RUNNING, ConvergenceSession
from pytest_convergence.plugin.summary import SummaryRow

TESTS = [f"tests/test_models.py::test_seed[{dtype}]" for dtype in ("float16", "float32", "float64")]
ABORT = CrashedRun(TESTS[2], "seed", "float64", "loop", "SIGABRT", "Fatal Python error: Aborted")


def session(tmp_path: Path) -> ConvergenceSession:
    settings = Settings(enabled=True, dtypes=None, engine=None, default_engine="loop", default_dtypes=())
    return ConvergenceSession(settings=settings, results_path=str(tmp_path / "results.json"))


def test_the_results_file_is_rewritten_after_each_test_that_recorded_runs(tmp_path: Path) -> None:
    convergence = session(tmp_path)
    path = tmp_path / "results.json"
    convergence.plan(TESTS)
    convergence.plan(["another worker's list"])  # every worker sends the same: the first wins
    convergence.test_finished(TESTS[0], tmp_path)  # no run recorded: the file is not touched
    assert not path.exists() and not convergence.written
    convergence.records.append(record(dtype="float32"))
    convergence.test_finished(TESTS[1], tmp_path)
    written = results.load(path)
    assert [run.dtype for run in written.runs] == ["float32"]
    assert written.session == SessionProgress(TESTS, missing=[TESTS[2]], ended=STILL_RUNNING)
    convergence.test_finished("tests/test_plain.py::test_plain", tmp_path)  # not planned: ignored
    assert convergence.done == set(TESTS[:2])

    convergence.test_crashed(
        ABORT, SummaryRow.failed_to_train("seed", "float64", "loop", 20, "crashed"), tmp_path
    )
    assert results.load(path).session == SessionProgress(TESTS, crashed=[ABORT], ended=STILL_RUNNING)
    assert convergence.rows[-1].status == "crashed"

    assert convergence.finish(tmp_path) is None
    assert results.load(path).session == SessionProgress(TESTS, crashed=[ABORT], finished=True)


def test_an_unfinished_session_marks_the_file_it_wrote_and_leaves_an_unwritten_one_alone(
    tmp_path: Path,
) -> None:
    untouched = session(tmp_path)
    untouched.plan(TESTS)
    untouched.keep_files("was interrupted (KeyboardInterrupt)", snapshots_kept=False)
    untouched.finish(tmp_path)
    assert not (tmp_path / "results.json").exists()
    assert untouched.kept_line is not None and "(the file there is unchanged)" in untouched.kept_line

    convergence = session(tmp_path)
    convergence.plan(TESTS)
    convergence.records.append(record(dtype="float16"))
    convergence.test_finished(TESTS[0], tmp_path)
    convergence.keep_files("was interrupted (KeyboardInterrupt)", snapshots_kept=False)
    convergence.finish(tmp_path)
    assert convergence.kept_line == (
        f"convergence: the session was interrupted (KeyboardInterrupt), so it wrote the 1 run(s) that "
        f"finished to {tmp_path / 'results.json'}, marked unfinished: it names the 2 planned test(s) that "
        "have no result"
    )
    assert results.load(tmp_path / "results.json").session == SessionProgress(
        TESTS, missing=TESTS[1:], ended="the session was interrupted (KeyboardInterrupt)"
    )


def test_a_worker_sends_what_it_recorded_since_the_last_report_and_the_plan_once(tmp_path: Path) -> None:
    worker, controller = session(tmp_path), session(tmp_path)
    worker.worker = True
    worker.plan(TESTS)
    first = worker.outbox()
    assert first is not None and json.loads(first) == {"planned": TESTS}
    assert worker.outbox() is None  # nothing new: nothing sent
    worker.rows.append(SummaryRow.failed_to_train("seed", "float16", "loop", 20))
    worker.records.append(record(dtype="float16"))
    second = worker.outbox()
    assert second is not None
    assert worker.rows == [] and worker.records == []  # sent, so a worker's end has nothing left
    controller.take(first)
    controller.take(second)
    assert controller.planned == TESTS
    assert controller.records == [record(dtype="float16")]
    assert [row.dtype for row in controller.rows] == ["float16"]
