"""A results file's ``session`` record (planned, missing, crashed tests), its round trip and
merge, the cached rendering the plugin rewrites it with after each test, and the gate failing what
a new session did not finish. No TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_results import record

from pytest_convergence.gate import results
from pytest_convergence.gate.progress import CrashedRun, merged, progress
from pytest_convergence.gate.results import Results, ResultsError
from pytest_convergence.gate.verdict import compare_results
from pytest_convergence.gate.verdict_data import FAIL, PASS, REMOVED

TESTS = [f"tests/test_models.py::test_seed[{dtype}]" for dtype in ("float16", "float32", "float64")]
ABORT = CrashedRun(TESTS[2], "seed", "float64", "loop", "SIGABRT", "Fatal Python error: Aborted")
STILL_RUNNING = "written while the session ran; it then died, or still runs"


def test_missing_tests_are_the_planned_ones_neither_done_nor_crashed() -> None:
    state = progress(TESTS, {TESTS[0]}, [ABORT], finished=False, ended=STILL_RUNNING)
    assert state.missing == [TESTS[1]]
    assert not state.complete
    assert state.problems() == [
        f"not a whole session ({STILL_RUNNING}): 1 of 3 planned tests have no result: {TESTS[1]}",
        "1 run(s) crashed, their process killed: seed [float64] (SIGABRT)",
    ]
    whole = progress(TESTS, TESTS, [], finished=True, ended="")
    assert whole.complete and whole.problems() == []


def test_a_long_list_of_missing_tests_is_cut_short() -> None:
    planned = [f"t::test[{i}]" for i in range(9)]
    line = progress(planned, [], [], finished=False, ended="").problems()[0]
    assert line.endswith("t::test[0], t::test[1], t::test[2], t::test[3], t::test[4] and 4 more")
    assert "(the session did not finish)" in line


def test_the_session_record_travels_through_the_file(tmp_path: Path) -> None:
    state = progress(TESTS, {TESTS[0]}, [ABORT], finished=False, ended="the session was interrupted")
    path = tmp_path / "results.json"
    results.write(path, Results(runs=[record(dtype="float16")], session=state))
    assert json.loads(path.read_text())["session"] == {
        "finished": False,
        "ended": "the session was interrupted",
        "planned": TESTS,
        "missing": [TESTS[1]],
        "crashed": [
            {
                "test": TESTS[2],
                "case": "seed",
                "dtype": "float64",
                "engine": "loop",
                "signal": "SIGABRT",
                "detail": "Fatal Python error: Aborted",
            }
        ],
    }
    assert results.load(path).session == state


def test_a_file_without_a_session_record_loads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results.write(path, Results(runs=[record()]))
    assert "session" not in json.loads(path.read_text())
    assert results.load(path).session is None


@pytest.mark.parametrize(
    ("session", "complaint"),
    [
        ([], "'session' is not an object"),
        ({"planned": "t::a"}, "session.planned is not a list of test ids"),
        ({"crashed": [{"case": "seed"}]}, "session.crashed is not a list of objects with a 'test'"),
    ],
)
def test_a_malformed_session_record_is_named_with_the_fix(
    tmp_path: Path, session: object, complaint: str
) -> None:
    path = tmp_path / "results.json"
    results.write(path, Results(runs=[record()]))
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "session": session}))
    with pytest.raises(ResultsError) as error:
        results.load(path)
    assert complaint in str(error.value) and "regenerate it with" in str(error.value)


def test_merging_files_keeps_what_any_of_them_lacks() -> None:
    first = progress(TESTS[:2], TESTS[:1], [], finished=True, ended="")
    second = progress(TESTS[2:], [], [ABORT], finished=False, ended=STILL_RUNNING)
    together = merged([first, None, second])
    assert together is not None
    assert together.planned == TESTS and together.missing == [TESTS[1]] and together.crashed == [ABORT]
    assert not together.finished and together.ended == STILL_RUNNING
    assert merged([None, None]) is None
    one = Results(runs=[record(dtype="float16")], session=first)
    other = Results(runs=[record(dtype="float64")], session=second)
    assert results.merge([one, other]).session == together


def test_the_gate_fails_a_run_the_new_session_crashed_in_or_did_not_reach() -> None:
    old = Results(runs=[record(dtype=dtype) for dtype in ("float16", "float32", "float64")])
    old.session = progress(TESTS, TESTS, [], finished=True, ended="")
    new = Results(
        runs=[record(dtype="float16")],
        session=progress(TESTS, TESTS[:1], [ABORT], finished=False, ended=STILL_RUNNING),
    )
    verdict = compare_results(old, new)
    rows = {row.dtype: row for row in verdict.rows}
    assert rows["float16"].verdict == PASS
    assert rows["float32"].verdict == FAIL
    assert rows["float32"].reasons == [f"not run: the new session ended before {TESTS[1]} finished"]
    assert rows["float64"].verdict == FAIL
    assert rows["float64"].reasons == [
        f"crashed in the new session: SIGABRT (Fatal Python error: Aborted), in {TESTS[2]}"
    ]
    assert not verdict.passed
    assert [w for w in verdict.warnings if w.startswith("the new results:")] == [
        f"the new results: not a whole session ({STILL_RUNNING}): 1 of 3 planned tests have no result: "
        f"{TESTS[1]}",
        "the new results: 1 run(s) crashed, their process killed: seed [float64] (SIGABRT)",
    ]


def test_without_a_session_record_a_run_only_in_the_old_file_is_removed_as_before() -> None:
    old = Results(runs=[record(dtype="float16"), record(dtype="float32")])
    verdict = compare_results(old, Results(runs=[record(dtype="float16")]))
    assert [row.verdict for row in verdict.rows] == [PASS, REMOVED] and verdict.passed


def test_the_cached_run_texts_render_the_file_json_dumps_would() -> None:
    """The plugin rewrites the file after each test from cached run texts: byte for byte the file
    that rendering the whole document at once gives."""
    from dataclasses import asdict

    state = progress(TESTS, TESTS[:1], [ABORT], finished=False, ended=STILL_RUNNING)
    runs = [
        record(dtype="float32", anatomy={"steps": [1, 2]}),
        record(dtype="float16", final_loss=float("nan")),
    ]
    written = Results(runs=runs, machine={"id": "m"}, created="now", session=state)
    whole = {
        "schema": written.schema,
        "created": "now",
        "machine": {"id": "m"},
        "versions": written.versions,
        # a run's own machine is written only where it has one (a merged file's)
        "runs": [
            {k: v for k, v in asdict(run).items() if k != "machine" or v}
            for run in sorted(runs, key=lambda r: (r.case, r.dtype))
        ],
        "session": state.to_json(),
    }
    expected = json.dumps(whole, indent=1, allow_nan=True) + "\n"
    cache: dict[int, str] = {}
    assert written.to_json(cache) == expected
    assert len(cache) == 2 and written.to_json(cache) == expected  # from the cache: the same
    empty = {"schema": written.schema, "created": "now", "machine": {}, "versions": {}, "runs": []}
    assert Results(runs=[], machine={}, created="now").to_json() == json.dumps(empty, indent=1) + "\n"
