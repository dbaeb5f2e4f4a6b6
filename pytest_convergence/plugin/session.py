"""One session object under one stash key: what a convergence session accumulates and decides.

pytest-benchmark and syrupy each hand their session to one object (``BenchmarkSession``,
``SnapshotSession``); so does this plugin. The hooks and fixtures only wire pytest to it; what it
does (choose the engine, resolve the snapshot tolerance, train with the session's checks, record
results, run the gate) is reachable from a test without pytest's machinery.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import ConvergenceError
from ..outcome import choose_engine
from .options import MarkerOptions, Settings

if TYPE_CHECKING:
    from ..case import Case
    from ..gate.progress import CrashedRun
    from ..gate.results import Results, RunRecord
    from ..replay_plan import ReplayPlan
    from ..run import Run
    from ..snapshot.calibrate import Calibration, ForeignRun
    from ..snapshot.extension import ConvergenceSnapshot
    from ..tolerance import Tolerance
    from .crash import RunWatch
    from .summary import SummaryRow

ITEM_RUNS_KEY = pytest.StashKey[list["Run"]]()
"""The runs one test item trained, for the summary and the results file."""
SNAPSHOT_PROBLEMS_KEY = pytest.StashKey[list[str]]()
"""Why one test item's run did not match its snapshot, for the results file and the gate."""


@dataclass
class ConvergenceSession:
    """The state of one pytest session, stored on ``config.stash[SESSION_KEY]``."""

    settings: Settings
    rows: list[SummaryRow] = field(default_factory=list)
    calibrations: list[Calibration] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)
    gate_lines: list[str] = field(default_factory=list)
    spec_errors: int = 0
    results_path: str | None = None
    baseline_path: str | None = None
    gate_failures: int = 0
    machine: dict[str, Any] = field(default_factory=dict)
    """A worker's fingerprint, where the controller itself trained nothing (pytest-xdist)."""
    ran_to_end: bool = False
    """The test loop returned (every selected test ran), set by the plugin."""
    unfinished: str | None = None
    """Why the session did not run to its end (Ctrl-C, ``pytest.exit``, ``-x``), if so: then it
    deletes nothing and replaces nothing (:meth:`keep_files`)."""
    kept_line: str | None = None
    """What an unfinished session kept, and why: one terminal line."""
    foreign: dict[tuple[str, str], list[ForeignRun]] = field(default_factory=dict)
    """Other kernels' or machines' runs of each case and dtype, for calibration
    (``--convergence-calibrate-with``)."""
    replay_plan: ReplayPlan | None = None
    """A gate's replay plan (``--convergence-replay``), read before any test trains."""
    planned: list[str] = field(default_factory=list)
    """The convergence tests the session selected (node ids): a results file written before the
    session ends names those it has no result for."""
    done: set[str] = field(default_factory=set)
    """The planned tests that finished (their teardown reported), whatever their outcome."""
    crashed: list[CrashedRun] = field(default_factory=list)
    """Runs whose pytest-xdist worker died under them (:mod:`.crash`)."""
    written: bool = False
    """The results file was rewritten in this session (after a finished test)."""
    current_test: str = ""
    current_backend: str = "tensorflow"
    """The Keras backend the test in progress trains on (:func:`.options.item_backend`)."""
    """The node id of the test running in this process (``pytest_runtest_logstart``)."""
    watch: RunWatch | None = None
    """On a pytest-xdist worker: what it leaves for the controller in case it crashes."""
    worker: bool = False
    """This process is a pytest-xdist worker: it sends what it records with each report."""
    _sent_plan: bool = False
    _prepared: set[str | None] = field(default_factory=set)
    """The backends :meth:`prepare_backend` set up in this process."""
    _sent_machine: bool = False
    _own_machine: dict[str, Any] | None = None
    _records_written: int = 0
    _texts: dict[int, str] = field(default_factory=dict)
    """Each recorded run's JSON text, by ``id``: the results file is rewritten after every test."""

    @property
    def wants_results(self) -> bool:
        return bool(self.results_path or self.baseline_path)

    # ------------------------------------------------------------------------ before training
    def check_inputs(self, rootpath: Path) -> None:
        """What can be checked before any test trains: the baseline is a readable results file,
        the results file can be written and is not the baseline (written first, it would be
        compared with itself: every change a PASS). Raises :class:`ConvergenceError` naming the
        option, the file and the fix."""
        from ..files import unwritable
        from ..gate import results

        both = self.results_path and self.baseline_path
        if both and results.same_file(rootpath / str(self.results_path), rootpath / str(self.baseline_path)):
            raise ConvergenceError(
                f"--convergence-results and --convergence-baseline name the same file "
                f"({self.baseline_path}): the results would overwrite the baseline before the gate "
                "reads it, and every run would be compared with itself\n  fix: write the results "
                "elsewhere, e.g. --convergence-results=new.json, and keep the baseline as it is"
            )
        if self.baseline_path:
            try:
                results.check_baseline(rootpath / self.baseline_path)
            except ConvergenceError as error:
                raise ConvergenceError(f"--convergence-baseline: {error}") from None
        if self.results_path:
            problem = unwritable(rootpath / self.results_path)
            if problem is not None:
                raise ConvergenceError(
                    f"--convergence-results={self.results_path}: cannot write the results file: "
                    f"{problem}\n  fix: give a file path in a directory you can write to, e.g. "
                    "--convergence-results=results.json"
                )

    def check_snapshot_directories(self, items: list[pytest.Item], updating: bool) -> None:
        """Under ``--snapshot-update``, every selected convergence test's snapshot directory can be
        written, before the first test trains (not a PermissionError inside an assertion minutes
        later). Raises :class:`ConvergenceError` naming the directory and the fix."""
        if not (updating and self.settings.enabled):
            return
        from ..files import unwritable
        from ..snapshot import syrupy_compat

        checked: set[Path] = set()
        for item in items:
            snapshots = getattr(item, "spec", None) is not None or "convergence_snapshot" in getattr(
                item, "fixturenames", ()
            )
            if not snapshots or item.get_closest_marker("convergence") is None:
                continue
            directory = syrupy_compat.snapshot_directory(item)
            if directory in checked:
                continue
            checked.add(directory)
            problem = unwritable(directory / ".convergence.txt")
            if problem is not None:
                raise ConvergenceError(
                    f"--snapshot-update: cannot write the snapshots of {item.nodeid}: {problem}\n"
                    f"  fix: make {directory} writable (or run without --snapshot-update to compare only)"
                )

    # ------------------------------------------------------------------------------ training
    def engine_for(self, case: Case, marker: MarkerOptions, requested: str | None = None) -> str:
        settings = self.settings
        return choose_engine(
            requested, settings.engine, marker.engine, case.engine, default=settings.default_engine
        )

    def tolerance_for(self, run: Run, marker: MarkerOptions) -> Tolerance:
        from ..tolerance import resolve

        return resolve(
            run.dtype,
            ini_rtol=dict(self.settings.ini_rtol),
            case=run.snapshot_tolerance,
            marker=marker.tolerance,
            exact=self.settings.exact,
            case_name=run.case,
        )

    def train(self, case: Case, dtype: str, engine: str | None, marker: MarkerOptions) -> Run:
        """Train with ``--convergence-repeat`` / ``--convergence-calibrate``; a user's mistake fails
        the test with one clear line."""
        __tracebackhide__ = True
        from .training import AnatomyOnly, TrainingRequest, train_with_checks

        settings = self.settings
        replay = None
        if self.replay_plan is not None:
            replay = self.replay_plan.find(case.name, dtype)
            if replay is None:
                pytest.skip(f"{case.name} [{dtype}] is not in the replay plan {settings.replay}")
        from ..kernels import current as kernel_variant

        variant = kernel_variant()
        refused = variant.cannot_run(dtype) if variant is not None else None
        if refused:
            pytest.skip(f"{case.name} [{dtype}]: {refused}")
        checks = TrainingRequest(
            repeat=settings.repeat,
            calibrate=settings.calibrate,
            op_determinism=settings.op_determinism,
            simulate=settings.simulate,
            anatomy_steps=settings.anatomy_steps if self.wants_results else 0,
            replay=replay,
            foreign=tuple(self.foreign.get((case.name, dtype), ())),
            variant=variant.name if variant is not None else "native",
            backend=self.current_backend,
        )

        def current(run: Run) -> tuple[float, float]:
            tolerance = self.tolerance_for(run, marker)
            return tolerance.rtol, tolerance.miss_fraction

        problem = None
        chosen = self.engine_for(case, marker, engine)
        try:
            self.prepare_backend()
            with self.watching(case, dtype, chosen):
                trained = train_with_checks(case, dtype, chosen, checks, current_rtol=current)
        except ConvergenceError as error:
            problem = str(error)
        if problem is not None:  # failed outside the handler, so no chained traceback is shown
            from .summary import SummaryRow

            self.rows.append(
                SummaryRow.failed_to_train(
                    case.name, dtype, chosen, case.total_steps, backend=self.current_backend
                )
            )
            pytest.fail(problem, pytrace=False)
        if isinstance(trained, AnatomyOnly):
            pytest.skip(trained.message)
        run, calibration = trained
        if calibration is not None:
            self.calibrations.append(calibration)
        return run

    def prepare_backend(self, backend: str | None = None) -> None:
        """The session's framework settings, applied in this process once per backend before it
        first trains (None: the backend Keras runs here): TF32 pinned on or off
        (``--convergence-tf32``, :func:`..backend.precision.pin_tf32`). Nothing is imported when
        nothing is pinned."""
        if self.settings.tf32 is None or backend in self._prepared:
            return
        from ..backend.precision import pin_tf32

        pin_tf32(backend, self.settings.tf32)
        self._prepared.add(backend)

    @contextmanager
    def watching(self, case: Case, dtype: str, engine: str) -> Iterator[None]:
        """Around one training: on a pytest-xdist worker, the note and stderr log that let the
        controller report this run if a native crash kills the process (:mod:`.crash`)."""
        if self.watch is None:
            yield
            return
        with self.watch.run(self.current_test, case.name, dtype, engine, case.total_steps):
            yield

    def train_expecting_refusal(self, case: Case, dtype: str, text: str, marker: MarkerOptions) -> str:
        """Train a dtype that Keras cannot train: pass if the training fails with ``text`` in its
        error (the summary row says ``refused``), fail if it trains or fails otherwise."""
        __tracebackhide__ = True
        from .summary import SummaryRow
        from .training import AnatomyOnly, TrainingRequest, train_with_checks

        chosen = self.engine_for(case, marker)
        problem = None
        try:
            self.prepare_backend()
            with self.watching(case, dtype, chosen):
                trained = train_with_checks(
                    case,
                    dtype,
                    chosen,
                    TrainingRequest(backend=self.current_backend),
                    current_rtol=lambda _: (0.0, 0.0),
                )
            assert not isinstance(trained, AnatomyOnly), "no replay was asked for"
            run, _ = trained
        except ConvergenceError as error:
            message = str(error)
            if text in message:
                self.rows.append(
                    SummaryRow.failed_to_train(
                        case.name, dtype, chosen, case.total_steps, "refused", self.current_backend
                    )
                )
                return message
            self.rows.append(
                SummaryRow.failed_to_train(
                    case.name, dtype, chosen, case.total_steps, backend=self.current_backend
                )
            )
            problem = f"expected an error containing {text!r}, got another:\n{message}"
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        self.rows.append(SummaryRow.from_run(run, "failed", explain=self.settings.explain))
        pytest.fail(
            f"{case.name} [{dtype}]: expected the training to fail with an error containing {text!r} "
            f"(Keras cannot train this dtype), but it trained: final loss {run.final_loss:.6g}, "
            f"outcome {run.outcome}; update the spec's expectation",
            pytrace=False,
        )

    def snapshot(
        self, node: pytest.Item, marker: MarkerOptions, assertion: Any = None
    ) -> ConvergenceSnapshot:
        """The snapshot assertion of this test (from syrupy's fixture when there is one)."""
        from ..snapshot import syrupy_compat
        from ..snapshot.extension import ConvergenceSnapshot, ConvergenceSnapshotExtension

        if assertion is None:
            assertion = syrupy_compat.assertion_for(node, ConvergenceSnapshotExtension)
        else:
            assertion = assertion.use_extension(ConvergenceSnapshotExtension)

        def remember(lines: list[str]) -> None:
            node.stash.setdefault(SNAPSHOT_PROBLEMS_KEY, []).extend(lines)

        return ConvergenceSnapshot(
            assertion,
            tolerance_for=lambda run: self.tolerance_for(run, marker),
            updating=syrupy_compat.updating(node.config),
            test_name=node.nodeid,
            on_mismatch=remember,
            platform_exact=self.settings.platform_snapshots,
        )

    def snapshot_problem(self, node: pytest.Item, marker: MarkerOptions, run: Run) -> str | None:
        """The snapshot report if ``run`` does not match its snapshot, else None."""
        from ..snapshot.extension import SnapshotMismatchError

        try:
            self.snapshot(node, marker).assert_match(run)
        except SnapshotMismatchError as mismatch:
            return str(mismatch)
        return None

    # ----------------------------------------------------------------------------- recording
    def record(
        self,
        nodeid: str,
        runs: list[Run],
        status: str,
        marker: MarkerOptions,
        snapshot_problems: list[str] | None = None,
    ) -> None:
        """A finished test's runs: a summary row each, and a results record when asked for."""
        from .summary import SummaryRow

        explain = self.settings.explain
        if self.wants_results:
            from ..gate.results import RunRecord
            from ..tolerance import Tolerance

            for run in runs:
                with run.timing.phase("results"):
                    tolerance = self.tolerance_for(run, marker)
                    if run.calibrated_tolerance:
                        tolerance = tolerance.widened(Tolerance.from_text(run.calibrated_tolerance))
                    record = RunRecord.from_run(
                        run,
                        test=nodeid,
                        status=status,
                        tolerance=tolerance.to_text(),
                        snapshot_problems=snapshot_problems or [],
                    )
                record.phases = dict(run.timing.phases)  # with its own cost
                self.records.append(record)
        self.rows.extend(SummaryRow.from_run(run, status, explain=explain) for run in runs)

    def keep_files(self, reason: str, *, snapshots_kept: bool) -> None:
        """The session stopped early (``reason``): :meth:`finish` runs no gate (the gate would
        call every run the session did not reach missing) and, where no test finished, leaves the
        results file as it was; where some did, the file already holds them (it is rewritten as
        each test finishes) and names the tests it has no result for. ``snapshots_kept``: syrupy
        was kept from deleting the snapshots of the tests that did not run
        (``syrupy_compat.keep_unused_snapshots``)."""
        self.unfinished = self.unfinished or reason
        kept = []
        if snapshots_kept:
            kept.append("deleted no snapshot (those of tests that did not run are kept)")
        if self.results_path and self.written:
            missing = len(self.planned) - len(self.done)
            kept.append(
                f"wrote the {len(self.records)} run(s) that finished to {self.results_path}, marked "
                f"unfinished: it names the {missing} planned test(s) that have no result"
            )
        elif self.results_path:
            kept.append(f"did not write {self.results_path} (the file there is unchanged)")
        if self.baseline_path:
            kept.append("ran no gate")
        if kept:
            self.kept_line = f"convergence: the session {self.unfinished}, so it " + ", ".join(kept)

    def finish(self, rootpath: Path) -> pytest.ExitCode | None:
        """Write the results file and run the gate; the exit code the gate asks for, if any.
        A session that did not run to its end runs no gate, and rewrites the results file only
        if it already did (:meth:`keep_files`)."""
        if not self.wants_results:
            return None
        if self.unfinished is not None:
            if self.results_path and self.written:
                self._write(rootpath, self.results(finished=False, ended=f"the session {self.unfinished}"))
            return None
        current = self.results(finished=True, ended="", machine=_trained_machine())
        if self.results_path:
            self._write(rootpath, current)
        if not self.baseline_path:
            return None
        from ..gate import results
        from ..gate.verdict import Thresholds, compare_results
        from ..gate.verdict_text import format_table

        try:
            verdict = compare_results(
                results.load(rootpath / self.baseline_path),
                current,
                Thresholds(speed=self.settings.speed, min_time=self.settings.speed_min_time),
            )
        except ConvergenceError as error:
            self.gate_lines = [f"error: {error}"]
            return pytest.ExitCode.USAGE_ERROR
        self.gate_lines = format_table(verdict)
        self.gate_failures = len(verdict.failed_rows)
        return None if verdict.passed else pytest.ExitCode.TESTS_FAILED

    # ------------------------------------------------------------------------------ progress
    def plan(self, tests: list[str]) -> None:
        """The convergence tests this session will run (the first list given wins: every
        pytest-xdist worker collects the same)."""
        if not self.planned:
            self.planned = list(tests)

    def test_finished(self, test: str, rootpath: Path) -> None:
        """A planned test finished (passed, failed or skipped): if it recorded runs, the results
        file is rewritten, so a session that dies later leaves them on disk. A test without runs
        rewrites nothing: a session that stops before any run finished leaves the file as it was."""
        if test not in self.planned or test in self.done:
            return
        self.done.add(test)
        if len(self.records) > self._records_written:
            self.write_progress(rootpath)

    def test_crashed(self, crashed: CrashedRun, row: SummaryRow | None, rootpath: Path) -> None:
        """A test's process died (:mod:`.crash`): its summary row, and the results file names it."""
        if row is not None:
            self.rows.append(row)
        self.crashed.append(crashed)
        self.write_progress(rootpath)

    def write_progress(self, rootpath: Path) -> None:
        """Rewrite the results file with every run so far, marked unfinished (the last write, at the
        session's end, marks it finished): atomic, so a crash leaves the old file or the new one."""
        if self.results_path and self.planned:
            self._write(rootpath, self.results(finished=False, ended=STILL_RUNNING))

    def results(self, *, finished: bool, ended: str, machine: dict[str, Any] | None = None) -> Results:
        """The results file's content now: the runs, the machine that trained them, the progress."""
        from ..gate import results
        from ..gate.progress import progress

        session = progress(self.planned, self.done, self.crashed, finished=finished, ended=ended)
        current = results.Results(runs=list(self.records), session=session if self.planned else None)
        trained = machine or self._machine_so_far()
        if trained:  # the processes that trained: this one, or pytest-xdist's workers
            current.machine = trained
        return current

    def _machine_so_far(self) -> dict[str, Any]:
        if self.machine:
            return dict(self.machine)
        if self._own_machine is None:
            self._own_machine = _trained_machine() or None
        return dict(self._own_machine or {})

    def _write(self, rootpath: Path, current: Results) -> None:
        from ..gate import results

        results.write(rootpath / str(self.results_path), current, self._texts)
        self.written = True
        self._records_written = len(current.runs)

    # -------------------------------------------------------------------------------- xdist
    def outbox(self) -> str | None:
        """What a pytest-xdist worker sends with a test's report: the rows, records and
        calibrations recorded since the last report (then forgotten here), the planned tests and
        the machine once. Sent as the test finishes, not at the worker's end, so a worker that
        crashes loses only the test it was running. JSON text: plain to every reader."""
        payload: dict[str, Any] = {}
        if self.planned and not self._sent_plan:
            payload["planned"], self._sent_plan = self.planned, True
        if self.rows:
            payload["rows"] = [asdict(row) for row in self.rows]
        if self.records:
            payload["records"] = [asdict(record) for record in self.records]
        if self.calibrations:
            payload["calibrations"] = [asdict(calibration) for calibration in self.calibrations]
        if (self.rows or self.records) and not self._sent_machine:
            payload["machine"], self._sent_machine = _trained_machine(), True
        self.rows, self.records, self.calibrations = [], [], []
        return json.dumps(payload, default=_plain) if payload else None

    def take(self, sent: str) -> None:
        """Take what a worker sent (:meth:`outbox`), on the controller."""
        from ..gate.results import RunRecord
        from ..snapshot.calibrate import Calibration
        from .summary import SummaryRow

        payload = json.loads(sent)
        if payload.get("planned"):
            self.plan(payload["planned"])
        if payload.get("machine"):
            self.machine = payload["machine"]
        self.rows.extend(SummaryRow(**row) for row in payload.get("rows", []))
        self.records.extend(RunRecord(**record) for record in payload.get("records", []))
        self.calibrations.extend(
            Calibration(**{**c, "outcomes": tuple(c["outcomes"])}) for c in payload.get("calibrations", [])
        )

    def worker_stopped_early(self, why: str | None) -> None:
        """A worker's session did not run to its end (Ctrl-C, ``-x``): the controller's does not."""
        if why:
            self.unfinished = self.unfinished or f"{why} on a worker"


STILL_RUNNING = "written while the session ran; it then died, or still runs"
"""The ``ended`` of every results file written before the session's end."""
PAYLOAD = "pytest-convergence"
"""The name of a report's user property that carries what a pytest-xdist worker recorded."""


def _plain(value: Any) -> Any:
    """numpy scalars (a row's final loss can be one) as JSON numbers."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _trained_machine() -> dict[str, Any]:
    """This process's fingerprint if it trained (TensorFlow loaded), else nothing."""
    import sys

    if "tensorflow" not in sys.modules:
        return {}
    from ..backend.frameworks import machine_fingerprint

    return machine_fingerprint()


SESSION_KEY = pytest.StashKey[ConvergenceSession]()


def session_of(config: pytest.Config) -> ConvergenceSession:
    """The convergence session of this pytest session."""
    return config.stash[SESSION_KEY]
