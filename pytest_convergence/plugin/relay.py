"""pytest-xdist: what the controller does for the convergence session, and what a worker tells it
outside a test's report.

Each finished test's summary rows, results records and calibrations travel with that test's report
(:meth:`.session.ConvergenceSession.outbox`, read back in the controller's
``pytest_runtest_logreport``), so a worker that dies loses only the test it was running. This
module adds the rest: the directory where workers leave their crash notes, the crashed test's
report (xdist's ``pytest_handlecrashitem``: case, dtype, signal, the last lines TensorFlow printed)
and a worker's "I stopped early" at its session's end. Registered only when pytest-xdist is loaded,
since its hooks exist only then.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .crash import CRASH_DIR, exit_status, read_crash
from .session import session_of


class XdistRelay:
    """The controller's and the workers' side of a distributed convergence session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.directory: Path | None = None

    # --------------------------------------------------------------------------- controller
    def pytest_configure_node(self, node: Any) -> None:
        """Every worker (a restarted one too) learns where to leave its crash notes, in a session
        that trains (others keep pytest's own crash output: nothing of theirs is a run)."""
        if not session_of(self.config).settings.enabled:
            return
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="pytest-convergence-workers-"))
        node.workerinput[CRASH_DIR] = str(self.directory)

    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """A worker died running ``crashitem``: the report says which run, how and with what last
        words; the run gets a summary row, and the results file names it."""
        from ..gate.progress import CrashedRun
        from .summary import SummaryRow

        if self.directory is None:
            return
        node = getattr(report, "node", None)
        worker = str(getattr(node, "workerinput", {}).get("workerid", "")) or "?"
        crash = read_crash(self.directory, worker, crashitem, exit_status(node))
        report.longrepr = crash.message()
        path, _, name = crashitem.partition("::")
        report.location = (path, None, name or path)  # the FAILURES header names the test
        row = None
        if crash.in_run:
            row = SummaryRow.failed_to_train(crash.case, crash.dtype, crash.engine, crash.steps, "crashed")
        crashed = CrashedRun(
            test=crashitem,
            case=crash.case,
            dtype=crash.dtype,
            engine=crash.engine,
            signal=crash.signal,
            detail=crash.detail,
        )
        session_of(self.config).test_crashed(crashed, row, self.config.rootpath)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        session_of(self.config).worker_stopped_early(output.get(UNFINISHED))

    def pytest_unconfigure(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    # ------------------------------------------------------------------------------- worker
    def pytest_sessionfinish(self) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[UNFINISHED] = session_of(self.config).unfinished


UNFINISHED = "convergence_unfinished"
"""The ``workeroutput`` key of why a worker's session did not run to its end (None: it did)."""
