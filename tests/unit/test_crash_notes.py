"""What a crashed pytest-xdist worker leaves and how the controller reads it (plugin/crash.py), and
when ``--convergence-isolate`` runs the session in a worker (plugin/isolate.py). No TensorFlow,
no worker: the notes are files, the crash is text."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from pytest_convergence.plugin.crash import (
    RunWatch,
    cause,
    fault_path,
    note_path,
    python_stack,
    read_crash,
    stderr_path,
    tail,
)
from pytest_convergence.plugin.isolate import Request, decide

FAULT = """\
Fatal Python error: Aborted

Thread 0x00007f01 (most recent call first):
  File "/venv/site-packages/execnet/gateway_base.py", line 534 in read
  File "/usr/lib/python3.11/threading.py", line 975 in run

Current thread 0x00007f02 (most recent call first):
  <no Python frame>

Thread 0x00007f03 (most recent call first):
  File "/venv/site-packages/tensorflow/python/eager/execute.py", line 53 in quick_execute
  File "/venv/site-packages/tensorflow/python/eager/context.py", line 1688 in call_function
  File "/venv/site-packages/keras/src/trainers/trainer.py", line 12 in train_step
  File "/project/test_user.py", line 11 in build
  File "/venv/site-packages/pytest_convergence/plugin/session.py", line 201 in train
  File "/venv/site-packages/_pytest/python.py", line 166 in pytest_pyfunc_call

Extension modules: numpy._core._multiarray_umath (total: 1)
"""


def test_the_signal_comes_from_the_exit_status_or_faulthandlers_line() -> None:
    assert cause(FAULT, -6) == ("SIGABRT", "Fatal Python error: Aborted")
    assert cause(FAULT, None) == ("SIGABRT", "Fatal Python error: Aborted")
    assert cause("Fatal Python error: Segmentation fault\n", None) == (
        "SIGSEGV",
        "Fatal Python error: Segmentation fault",
    )
    killed = cause("", -signal.SIGKILL)
    assert killed[0] == "SIGKILL" and "out-of-memory killer" in killed[1]
    assert cause("", 3) == ("exit status 3", "")
    assert cause("", None) == ("", "")


def test_the_stack_is_the_test_threads_above_the_runner_with_framework_frames_folded() -> None:
    assert python_stack(FAULT, 8) == [
        'File "/venv/site-packages/tensorflow/python/eager/execute.py", line 53 in quick_execute',
        "(and 1 more frame in tensorflow)",
        'File "/venv/site-packages/keras/src/trainers/trainer.py", line 12 in train_step',
        'File "/project/test_user.py", line 11 in build',
    ]
    assert python_stack(FAULT, 2) == python_stack(FAULT, 8)[:2]
    assert python_stack("", 8) == []


def test_the_tail_keeps_the_last_lines_that_say_something() -> None:
    text = "first\n\n" + "".join(f"line {i}\n" for i in range(20)) + "x" * 400 + "\n\n"
    lines = tail(text, 3)
    assert lines[:2] == ["line 18", "line 19"]
    assert len(lines[2]) == 300 and lines[2].endswith("...")


def test_a_crash_inside_a_run_is_read_from_the_note_the_log_and_the_fault_file(tmp_path: Path) -> None:
    test = "test_user.py::test_seed[float64]"
    note = {"test": test, "case": "seed", "dtype": "float64", "engine": "loop", "steps": 1500}
    note_path(tmp_path, "gw1").write_text(json.dumps(note))
    stderr_path(tmp_path, "gw1").write_text(
        "I tensorflow ... starting\nterminate called after 'dnnl::error'\n"
    )
    fault_path(tmp_path, "gw1").write_text(FAULT)
    crash = read_crash(tmp_path, "gw1", test, -6)
    assert crash.in_run and (crash.case, crash.dtype, crash.engine, crash.steps) == (
        "seed",
        "float64",
        "loop",
        1500,
    )
    message = crash.message().splitlines()
    assert message[0] == (
        "seed [float64] crashed: the process training it (engine loop, 1,500 steps) was killed by SIGABRT "
        "(Fatal Python error: Aborted)"
    )
    assert "    | terminate called after 'dnnl::error'" in message
    assert '    File "/project/test_user.py", line 11 in build' in message


def test_a_crash_outside_a_run_names_the_test_and_ignores_another_tests_note(tmp_path: Path) -> None:
    note = {"test": "test_user.py::test_other", "case": "other", "dtype": "float32", "engine": "loop"}
    note_path(tmp_path, "gw0").write_text(json.dumps(note))
    stderr_path(tmp_path, "gw0").write_text("the other run's output\n")
    crash = read_crash(tmp_path, "gw0", "test_user.py::test_plain", None)
    assert not crash.in_run and crash.stderr == [] and crash.signal == ""
    assert crash.message().startswith(
        "test_user.py::test_plain crashed outside a training run: its process was killed by an unknown cause"
    )


def test_a_watched_run_leaves_its_note_meanwhile_and_gives_its_stderr_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    watch = RunWatch(tmp_path, "gw0")
    with watch.run("t::test", "seed", "float16", "loop", 20):
        assert json.loads(note_path(tmp_path, "gw0").read_text())["dtype"] == "float16"
        os.write(2, b"native code speaks\n")
        assert stderr_path(tmp_path, "gw0").read_text() == "native code speaks\n"
    assert not note_path(tmp_path, "gw0").exists()
    assert capfd.readouterr().err == "native code speaks\n"  # copied back to the fd 2 of before


def request(**changes: object) -> Request:
    values: dict[str, object] = dict(
        wanted=True, from_ini=False, trains=True, xdist=True, numprocesses=None, distributed=False
    )
    values.update(changes)
    return Request(**values)  # type: ignore[arg-type]


def test_isolation_is_asked_for_and_needed_only_without_workers() -> None:
    assert decide(request())
    assert not decide(request(wanted=False))
    assert not decide(request(trains=False))  # nothing trains, nothing crashes
    assert not decide(request(numprocesses=2))  # -n 2: every test already runs in a worker
    assert not decide(request(numprocesses=0))  # -n 0: workers turned off, e.g. for --pdb
    assert not decide(request(distributed=True))
    assert not decide(request(wanted=False, xdist=False, pdb=True))  # not asked: never refused


@pytest.mark.parametrize(
    ("changes", "said", "fix"),
    [
        ({"xdist": False}, "pytest-xdist is not installed", "fix: pip install pytest-xdist, or drop"),
        ({"pdb": True}, "--pdb cannot work there", "fix: add -n 0"),
        ({"trace": True}, "--trace cannot work there", "fix: add -n 0"),
        ({"no_capture": True}, "-s cannot work there", "or drop -s"),
        (
            {"xdist": False, "from_ini": True},
            "convergence_isolate = true in the ini",
            "-o convergence_isolate=false",
        ),
    ],
)
def test_isolation_that_cannot_work_is_refused_with_the_fix(
    changes: dict[str, object], said: str, fix: str
) -> None:
    with pytest.raises(pytest.UsageError) as error:
        decide(request(**changes))
    assert said in str(error.value) and fix in str(error.value)
