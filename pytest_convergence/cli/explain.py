"""``pytest-convergence explain SPEC|TEST``: train one case once, in one dtype, and print what the
training did and why (the diagnosis and its evidence); ``--plot`` draws it.

The case comes from a spec file, or from a Python test named by its pytest node id
(``tests/test_x.py::test_seed``): the test is run in this process by pytest, with
``--convergence``, until it calls ``convergence_train(case)``; that first case is taken, the test
stops there, and the case is trained here exactly as a spec's is (the same ``--dtype``,
``--engine``, ``--steps``, traced weights and story). The test's own checks after training
(``run.expect``, snapshots) are pytest's to run, not explain's.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConvergenceError

if TYPE_CHECKING:
    from ..case import Case

TRACED_WEIGHTS = 64
TRAIN_FIXTURE = "convergence_train"
DTYPE_FIXTURE = "convergence_dtype"


def run_explain(arguments: argparse.Namespace) -> int:
    from ..backend import train
    from ..dtypes import dtype_info

    target = str(arguments.spec)
    if arguments.dtype is not None:  # before collecting or training: a typo costs nothing
        dtype_info(arguments.dtype, where="--dtype")
    if is_test_id(target):
        case, dtypes = case_of_test(target)
        what = "the test trains"
        no_expectation = "a Python test's run.expect(...) is its own; pytest runs it"
    else:
        from ..spec.loader import load_spec

        spec = load_spec(arguments.spec)
        case, dtypes = spec.case, tuple(spec.dtypes)
        what = "lists dtypes"
        no_expectation = "no expectation of the spec applies to it"
    dtype = arguments.dtype or dtypes[0]
    dtype_info(dtype, where="--dtype")
    if arguments.plot is not None:  # before training: a bad path costs seconds, not the training
        _check_plot_path(arguments.plot)
    if dtype not in dtypes:  # explain explores: train it anyway, and say so
        print(
            f"note: {target} {what} {', '.join(dtypes)}, not {dtype}; training {dtype} anyway, as asked "
            f"({no_expectation})",
            file=sys.stderr,
        )
    case = case.with_(steps=arguments.steps, epochs=None) if arguments.steps is not None else case
    if getattr(arguments, "tf32", None) is not None:
        from ..backend.precision import pin_tf32

        pin_tf32(None, arguments.tf32 == "on")
    run = train(
        case, dtype, arguments.engine, trace_weights=TRACED_WEIGHTS if arguments.engine != "fit" else 0
    )
    for line in describe_run(run):
        print(line)
    if arguments.plot is not None:
        from ..gate.plot import plot_run

        plot_run(run, arguments.plot)
        print(f"plot: {arguments.plot}")
    return 0


def is_test_id(target: str) -> bool:
    """A pytest node id (``path.py::test``) or a Python test file, rather than a spec file."""
    return "::" in target or target.endswith(".py")


class _CaseTaken(Exception):
    """Stops a test at its first ``convergence_train(case)``: the case is all explain needs."""


@dataclass
class _CaseCollector:
    """A pytest plugin for one in-process session: takes the first case a test trains with
    ``convergence_train`` (replacing the fixture's value just before the test body runs), stops
    the session there, and keeps what pytest said about the rest (collection errors, a test that
    failed or skipped before training) for the error message."""

    case: Case | None = None
    dtypes: tuple[str, ...] = ()
    ran: int = 0
    problems: list[str] = field(default_factory=list)

    def pytest_runtest_call(self, item: Any) -> None:
        self.ran += 1
        arguments = getattr(item, "funcargs", {})
        if TRAIN_FIXTURE not in arguments:
            return
        tested = str(arguments.get(DTYPE_FIXTURE) or "")

        def take(case: Case, dtype: str | None = None, engine: str | None = None) -> None:
            self.case = case
            self.dtypes = tuple(dict.fromkeys(d for d in (dtype or tested, *_marker_dtypes(item)) if d))
            item.session.shouldstop = "explain took the case"
            raise _CaseTaken

        arguments[TRAIN_FIXTURE] = take

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.problems.append(_first_line(report.longreprtext) or f"{report.nodeid} cannot be collected")

    def pytest_runtest_logreport(self, report: Any) -> None:
        if self.case is None and report.outcome in ("failed", "skipped") and report.when != "teardown":
            text = report.longreprtext
            if report.skipped and isinstance(report.longrepr, tuple):
                text = str(report.longrepr[2])
            self.problems.append(f"{report.nodeid} {report.outcome} before training: {_last_line(text)}")


def case_of_test(node_id: str) -> tuple[Case, tuple[str, ...]]:
    """The first case the test ``node_id`` trains, and the dtypes the test trains it in (the
    first: the one its first instance trains)."""
    import contextlib
    import importlib.util
    import io

    import pytest

    collector = _CaseCollector()
    options = [
        "--convergence",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-o",
        "console_output_style=classic",
    ]
    if importlib.util.find_spec("xdist") is not None:
        options += ["-n", "0"]  # in this process, whatever the ini's addopts ask for
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = pytest.main([node_id, *options], plugins=[collector])
    if collector.case is not None:
        return collector.case, collector.dtypes
    if collector.problems:
        reason = collector.problems[0]
    elif code == pytest.ExitCode.NO_TESTS_COLLECTED or not collector.ran:
        reason = _last_line(output.getvalue()) or "pytest collected no test"
        reason = f"no test found ({reason})"
    else:
        reason = f"the test trained no case with {TRAIN_FIXTURE}(case)"
    raise ConvergenceError(
        f"{node_id}: {reason}; fix: name a test that calls {TRAIN_FIXTURE}(case) (pytest's node id: "
        "path.py::test_name, as pytest --collect-only -q lists it), or a spec file"
    )


def _marker_dtypes(item: Any) -> tuple[str, ...]:
    marker = item.get_closest_marker("convergence")
    dtypes = marker.kwargs.get("dtypes") if marker is not None else None
    return tuple(str(d) for d in dtypes) if isinstance(dtypes, (list, tuple)) else ()


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("=")]
    return lines[-1] if lines else ""


def _check_plot_path(path: Path) -> None:
    """``explain --plot``: matplotlib installed and the picture writable, checked before training."""
    from ..files import unwritable
    from ..gate.plot import _pyplot

    problem = unwritable(path)
    if problem is not None:
        raise ConvergenceError(
            f"--plot {path}: cannot write the picture: {problem}; "
            "fix: give a .png file path in a directory you can write to"
        )
    _pyplot()  # the clear "pip install 'pytest-convergence[plot]'" error, before training


def describe_run(run: object) -> list[str]:
    """The explanation as lines of text: what ran, what happened, the evidence, the verdict."""
    from ..run import Run

    assert isinstance(run, Run)
    diagnosis = run.diagnosis
    lines = [
        f"{run.case} in {run.dtype} ({run.engine} engine): {run.steps:,} steps in {run.wall_time:.1f} s "
        f"({run.steps_per_second:,.0f} steps/s)",
        f"weights in {run.variable_dtype}, loss computed in {run.loss_dtype}; optimizer {run.optimizer}",
        f"final loss {run.final_loss:.6g}{_target(run)}",
        *tf32_lines(run.dtype, run.versions.get("machine", "")),
        *([f"dtype mismatch (allowed by the case): {run.dtype_mismatch}"] if run.dtype_mismatch else []),
        "",
        diagnosis.describe(run.dtype),
        *[f"{title}: {text}" for title, text in diagnosis.story_parts()[1:]],
        "",
        "evidence:",
    ]
    for key, value in diagnosis.evidence.items():
        if key == "weights":  # one line per weight, not one long list of dicts
            lines.append("  weights:")
            lines += [
                "    " + ", ".join(f"{name}: {v}" for name, v in weight.items() if v is not None)
                for weight in value
            ]
        else:
            lines.append(f"  {key}: {value}")
    if run.expectation is not None:
        from ..diagnosis.expectations import unmet

        problems = unmet(run.history, run.expectation, run.diagnosis)
        lines.append("")
        lines.append("expectation: met" if not problems else "expectation: NOT met")
        lines += [f"  - {problem}" for problem in problems]
    return lines


def tf32_lines(dtype: str, machine: str) -> list[str]:
    """What TF32 did to a float32 run that trained with it on (``machine``: the run's machine
    line, :func:`..fingerprint.summary`): its history leaves a snapshot or baseline trained
    without it (a CPU's) by more than float32's default rtol. Empty otherwise."""
    from ..fingerprint import TF32_DTYPES, TF32_ON, tf32_effect, tf32_in_summary

    state = tf32_in_summary(machine)
    if dtype not in TF32_DTYPES or state is None or not state.startswith(TF32_ON):
        return []
    return [
        f"TF32 {state}: {tf32_effect()}; this history leaves a snapshot or baseline trained without "
        "TF32 (on a CPU, or with it off) by about that much; to compare with one, train with TF32 off "
        "(explain --tf32=off, pytest --convergence-tf32=off)"
    ]


def _target(run: object) -> str:
    from ..run import Run

    assert isinstance(run, Run)
    if run.target_loss is None:
        return ""
    first = run.steps_to_target
    verdict = "met" if run.converged else "missed"
    reached = f", first reached at step {first}" if first else ", never reached"
    return f"; target {run.target_loss:g} {verdict}{reached}"
