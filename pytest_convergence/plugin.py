"""pytest hooks and fixtures: options, the marker, dtype parametrization, skipping, the summary.

This module is loaded on every pytest run of a project that installs the plugin, so it imports
neither numpy nor TensorFlow: the engine is imported inside the fixture body, when a convergence
test actually trains. ``python -X importtime -m pytest --co`` shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pytest

from .dtypes import DEFAULT_DTYPES, DTYPES, parse_dtype_list
from .errors import CaseError, ConvergenceError
from .outcome import DEFAULT_ENGINE, ENGINES

if TYPE_CHECKING:
    from .calibrate import Calibration
    from .case import Case
    from .results import RunRecord
    from .run import Run
    from .snapshot import ConvergenceSnapshot
    from .summary import SummaryRow
    from .tolerance import Tolerance

MARKER = "convergence"
DTYPE_FIXTURE = "convergence_dtype"
MARKER_KEYWORDS = ("dtypes", "engine", "tolerance")
SKIP_REASON = (
    "convergence tests train models: run them with `pytest --convergence` "
    "(or set `convergence = true` in the pytest ini)"
)

ROWS_KEY = pytest.StashKey[list["SummaryRow"]]()
CALIBRATIONS_KEY = pytest.StashKey[list["Calibration"]]()
RECORDS_KEY = pytest.StashKey[list["RunRecord"]]()
GATE_KEY = pytest.StashKey[list[str]]()
ITEM_RUNS_KEY = pytest.StashKey[list["Run"]]()


@dataclass(frozen=True)
class Settings:
    """The session's switches, from the command line over the ini file."""

    enabled: bool
    dtypes: tuple[str, ...] | None
    engine: str | None
    default_engine: str
    default_dtypes: tuple[str, ...]
    repeat: int = 1
    calibrate: int = 0
    exact: bool = False
    ini_rtol: tuple[tuple[str, float], ...] = ()
    op_determinism: bool = False


@dataclass(frozen=True)
class MarkerOptions:
    """A validated ``@pytest.mark.convergence(...)``."""

    dtypes: list[str]
    engine: str | None
    tolerance: Any


SETTINGS_KEY = pytest.StashKey[Settings]()
SPEC_ERRORS_KEY = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("convergence", "training convergence (pytest-convergence)")
    group.addoption(
        "--convergence",
        action="store_true",
        default=None,
        help="train the models of convergence tests (they are skipped otherwise).",
    )
    group.addoption(
        "--convergence-dtypes",
        metavar="LIST",
        default=None,
        help=f"comma-separated dtypes to run, narrowing each test's own list; one of: {', '.join(DTYPES)}.",
    )
    group.addoption(
        "--convergence-engine",
        choices=ENGINES,
        default=None,
        help="train every run with this engine, over markers and cases: loop (default, bit-identical "
        "to model.fit), xla (jit_compile, fastest), fit (model.fit itself).",
    )
    group.addoption(
        "--convergence-repeat",
        type=int,
        metavar="N",
        default=1,
        help="train every run N times and fail, naming the first differing step, unless the "
        "histories are bit-identical.",
    )
    group.addoption(
        "--convergence-calibrate",
        type=int,
        metavar="N",
        default=0,
        help="train every run N times with other seeds and permuted data, and recommend a snapshot "
        "tolerance that accepts all of them (printed at the end).",
    )
    group.addoption(
        "--convergence-results",
        metavar="PATH",
        default=None,
        help="write every run of the session to this JSON results file (the upgrade gate's input).",
    )
    group.addoption(
        "--convergence-baseline",
        metavar="PATH",
        default=None,
        help="compare this session's runs with a results file of the old framework and fail the "
        "session if the gate fails (outcome, history, final loss, steps to target, speed).",
    )
    group.addoption(
        "--convergence-exact",
        action="store_true",
        default=False,
        help="compare loss-history snapshots bit for bit (for reruns on the same versions).",
    )
    parser.addini("convergence", type="bool", default=False, help="always run convergence tests.")
    parser.addini(
        "convergence_spec_patterns",
        type="linelist",
        default=["*.convergence.toml"],
        help="file name patterns of spec files to collect.",
    )
    parser.addini(
        "convergence_op_determinism",
        type="bool",
        default=False,
        help="call tf.config.experimental.enable_op_determinism() before training (for GPUs).",
    )
    parser.addini(
        "convergence_rtol",
        default="",
        help="snapshot rtol per dtype, e.g. 'float16=0.02 float32=1e-5', or one number for all.",
    )
    parser.addini(
        "convergence_engine",
        default=DEFAULT_ENGINE,
        help=f"engine for runs that name none ({', '.join(ENGINES)}).",
    )
    parser.addini(
        "convergence_dtypes",
        default=",".join(DEFAULT_DTYPES),
        help="dtypes of a convergence marker that names none (comma-separated).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(dtypes=[...], engine=None): a convergence test, run once per dtype "
        "with --convergence; engine: loop, xla or fit.",
    )
    config.stash[SETTINGS_KEY] = _read_settings(config)
    config.stash[ROWS_KEY] = []
    config.stash[CALIBRATIONS_KEY] = []
    config.stash[SPEC_ERRORS_KEY] = 0
    config.stash[RECORDS_KEY] = []
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistSummary(config), "convergence-xdist")
    if config.pluginmanager.hasplugin("benchmark"):
        from .benchmark import MachineInfo

        config.pluginmanager.register(MachineInfo(), "convergence-benchmark")


def _read_settings(config: pytest.Config) -> Settings:
    from .tolerance import parse_ini_rtol

    try:
        option = config.getoption("--convergence-dtypes")
        dtypes = tuple(parse_dtype_list(option, where="--convergence-dtypes")) if option else None
        defaults = tuple(
            parse_dtype_list(config.getini("convergence_dtypes"), where="ini convergence_dtypes")
        )
        ini_rtol = tuple(parse_ini_rtol(str(config.getini("convergence_rtol"))).items())
    except CaseError as error:
        raise pytest.UsageError(str(error)) from None
    default_engine = str(config.getini("convergence_engine")).strip() or DEFAULT_ENGINE
    if default_engine not in ENGINES:
        raise pytest.UsageError(
            f"ini convergence_engine: unknown engine {default_engine!r}; "
            f"valid engines are: {', '.join(ENGINES)}"
        )
    repeat = config.getoption("--convergence-repeat")
    calibrate = config.getoption("--convergence-calibrate")
    if repeat < 1:
        raise pytest.UsageError(f"--convergence-repeat must be at least 1, got {repeat}")
    if calibrate < 0 or calibrate == 1:
        raise pytest.UsageError(
            f"--convergence-calibrate needs at least 2 runs to measure a spread, got {calibrate}"
        )
    enabled = config.getoption("--convergence")
    return Settings(
        enabled=bool(enabled if enabled is not None else config.getini("convergence")),
        dtypes=dtypes,
        engine=config.getoption("--convergence-engine"),
        default_engine=default_engine,
        default_dtypes=defaults,
        repeat=repeat,
        calibrate=calibrate,
        exact=config.getoption("--convergence-exact"),
        ini_rtol=ini_rtol,
        op_determinism=bool(config.getini("convergence_op_determinism")),
    )


def marker_options(marker: pytest.Mark, defaults: tuple[str, ...], where: str) -> MarkerOptions:
    """Validate a ``convergence`` marker: its dtypes (in order), engine and snapshot tolerance."""
    if marker.args:
        raise CaseError(
            "the convergence marker takes keywords only",
            field=where,
            fix='write @pytest.mark.convergence(dtypes=["float16", "float32"])',
        )
    unknown = sorted(set(marker.kwargs) - set(MARKER_KEYWORDS))
    if unknown:
        raise CaseError(
            f"unknown keyword(s) {', '.join(unknown)} in @pytest.mark.convergence; "
            f"valid keywords are: {', '.join(MARKER_KEYWORDS)}",
            field=where,
        )
    dtypes = parse_dtype_list(marker.kwargs.get("dtypes", list(defaults)), where=f"{where} dtypes")
    engine = marker.kwargs.get("engine")
    if engine is not None and engine not in ENGINES:
        raise CaseError(
            f"unknown engine {engine!r}; valid engines are: {', '.join(ENGINES)}", field=f"{where} engine"
        )
    tolerance = marker.kwargs.get("tolerance")
    if tolerance is not None:
        from .tolerance import resolve

        for dtype in dtypes:
            resolve(dtype, marker=tolerance)
    return MarkerOptions(dtypes=dtypes, engine=engine, tolerance=tolerance)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or DTYPE_FIXTURE not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    try:
        dtypes = marker_options(marker, settings.default_dtypes, metafunc.definition.name).dtypes
    except CaseError as error:
        pytest.fail(str(error), pytrace=False)
    metafunc.parametrize(DTYPE_FIXTURE, dtypes, ids=dtypes, scope="function")


@pytest.hookimpl(trylast=True)  # after syrupy has recorded what was collected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[SETTINGS_KEY]
    keep: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    skip = pytest.mark.skip(reason=SKIP_REASON)
    _tell_syrupy_about_spec_items(config, items)
    for item in items:
        if item.get_closest_marker(MARKER) is None:
            keep.append(item)
            continue
        dtype = _item_dtype(item)
        if settings.dtypes is not None and dtype is not None and dtype not in settings.dtypes:
            deselected.append(item)
            continue
        if not settings.enabled:
            item.add_marker(skip)
        keep.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


def _tell_syrupy_about_spec_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """syrupy tracks only ``pytest.Function`` items when it decides which snapshots are unused;
    spec items are registered the same way (collected now; selected unless deselected later), so a
    deselected or skipped dtype's snapshot is not reported unused or deleted. syrupy keeps no public
    API for this; without these attributes, nothing is registered and unused reports may be noisy."""
    session = getattr(config, "_syrupy", None)
    collected = getattr(session, "_collected_items", None)
    selected = getattr(session, "_selected_items", None)
    if not isinstance(collected, dict) or not isinstance(selected, dict):
        return
    from syrupy.session import ItemStatus

    settings = config.stash[SETTINGS_KEY]
    for item in items:
        if getattr(item, "spec", None) is None or not hasattr(item, "convergence_dtype"):
            continue
        collected[item.nodeid] = item
        if settings.dtypes is None or item.convergence_dtype in settings.dtypes:
            selected[item.nodeid] = ItemStatus.NOT_RUN


def _item_dtype(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        return callspec.params.get(DTYPE_FIXTURE)
    return getattr(item, "convergence_dtype", None)  # spec items


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """A broken spec file is a collection error for that file only: when every collection error
    comes from a spec file, the rest of the suite still runs (and the session still fails)."""
    spec_errors = session.config.stash.get(SPEC_ERRORS_KEY, 0)
    if spec_errors and session.testsfailed == spec_errors:
        session.config.option.continue_on_collection_errors = True


def pytest_collect_file(file_path: Any, parent: pytest.Collector) -> pytest.Collector | None:
    """Spec files (``*.convergence.toml`` by default) are collected like test modules."""
    import fnmatch

    patterns = parent.config.getini("convergence_spec_patterns") or ["*.convergence.toml"]
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in patterns):
        from .collect import SpecFile

        return SpecFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def convergence_dtype(request: pytest.FixtureRequest) -> str:
    """The dtype this test instance trains in, from ``@pytest.mark.convergence(dtypes=...)``."""
    param = getattr(request, "param", None)
    if param is None:
        pytest.fail(
            f"{request.node.name} uses {DTYPE_FIXTURE} but has no @pytest.mark.convergence(dtypes=[...])",
            pytrace=False,
        )
    return str(param)


def _marker(request: pytest.FixtureRequest) -> MarkerOptions:
    settings = request.config.stash[SETTINGS_KEY]
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return MarkerOptions(dtypes=[], engine=None, tolerance=None)
    return marker_options(marker, settings.default_dtypes, request.node.name)


class TrainingHelpers:
    """What a convergence test needs from the session, for Python tests and spec items alike:
    training with the session's checks, the snapshot tolerance, and the snapshot assertion."""

    def __init__(self, node: pytest.Item, marker: MarkerOptions) -> None:
        self.node = node
        self.config = node.config
        self.settings = node.config.stash[SETTINGS_KEY]
        self.marker = marker

    @classmethod
    def for_item(cls, item: pytest.Item, marker_tolerance: Any = None) -> TrainingHelpers:
        return cls(item, MarkerOptions(dtypes=[], engine=None, tolerance=marker_tolerance))

    def tolerance_for(self, run: Run) -> Tolerance:
        from .tolerance import resolve

        return resolve(
            run.dtype,
            ini_rtol=dict(self.settings.ini_rtol),
            case=run.snapshot_tolerance,
            marker=self.marker.tolerance,
            exact=self.settings.exact,
            case_name=run.case,
        )

    def train(self, case: Case, dtype: str, engine: str | None) -> Run:
        """Train with ``--convergence-repeat`` / ``--convergence-calibrate``; a user's mistake fails
        the test with one clear line."""
        __tracebackhide__ = True
        from .runner import TrainingRequest, train_with_checks

        settings = self.settings
        chosen = engine or settings.engine or self.marker.engine or case.engine or settings.default_engine
        checks = TrainingRequest(
            repeat=settings.repeat, calibrate=settings.calibrate, op_determinism=settings.op_determinism
        )

        def current(run: Run) -> tuple[float, float]:
            tolerance = self.tolerance_for(run)
            return tolerance.rtol, tolerance.miss_fraction

        problem = None
        try:
            run, calibration = train_with_checks(case, dtype, chosen, checks, current_rtol=current)
        except ConvergenceError as error:
            problem = str(error)
        if problem is not None:  # failed outside the handler, so no chained traceback is shown
            pytest.fail(problem, pytrace=False)
        if calibration is not None:
            self.config.stash[CALIBRATIONS_KEY].append(calibration)
        return run

    def snapshot(self, assertion: Any = None) -> ConvergenceSnapshot:
        """The snapshot assertion of this test (from syrupy's fixture when there is one)."""
        from .snapshot import ConvergenceSnapshot, ConvergenceSnapshotExtension

        if assertion is None:
            from syrupy.assertion import SnapshotAssertion
            from syrupy.location import PyTestLocation

            assertion = SnapshotAssertion(
                update_snapshots=self.config.option.update_snapshots,
                update_new_snapshots_only=getattr(self.config.option, "update_new_snapshots_only", False),
                extension_class=ConvergenceSnapshotExtension,
                test_location=PyTestLocation(self.node),
                session=self.config._syrupy,  # type: ignore[attr-defined]
            )
        else:
            assertion = assertion.use_extension(ConvergenceSnapshotExtension)
        return ConvergenceSnapshot(
            assertion,
            tolerance_for=self.tolerance_for,
            updating=bool(self.config.option.update_snapshots),
            test_name=self.node.nodeid,
        )

    def snapshot_problem(self, run: Run) -> str | None:
        """The snapshot report if ``run`` does not match its snapshot, else None."""
        from .snapshot import SnapshotMismatchError

        try:
            self.snapshot().assert_match(run)
        except SnapshotMismatchError as mismatch:
            return str(mismatch)
        return None


@pytest.fixture
def convergence_train(request: pytest.FixtureRequest, convergence_dtype: str) -> Callable[..., Run]:
    """Train a case in this test's dtype and return the :class:`Run`.

    Engine, most specific first: the ``engine=`` argument, ``--convergence-engine``, the marker's
    ``engine``, the case's ``engine``, the ini's ``convergence_engine`` (default ``loop``).
    ``--convergence-repeat`` and ``--convergence-calibrate`` add their reruns here.
    """
    settings = request.config.stash[SETTINGS_KEY]
    if not settings.enabled:
        pytest.skip(SKIP_REASON)
    helpers = TrainingHelpers(request.node, _marker(request))
    runs = request.node.stash.setdefault(ITEM_RUNS_KEY, [])

    def train_case(case: Case, dtype: str | None = None, engine: str | None = None) -> Run:
        __tracebackhide__ = True
        run = helpers.train(case, dtype or convergence_dtype, engine)
        runs.append(run)
        return run

    return train_case


@pytest.fixture
def convergence_snapshot(request: pytest.FixtureRequest, snapshot: Any) -> ConvergenceSnapshot:
    """``assert run == convergence_snapshot``: the run's loss history against its stored snapshot,
    one file per test and dtype, compared with a dtype-aware tolerance."""
    return TrainingHelpers(request.node, _marker(request)).snapshot(snapshot)


@pytest.fixture
def convergence_benchmark(request: pytest.FixtureRequest, convergence_dtype: str) -> Callable[..., Run]:
    """Measure a case's training speed with pytest-benchmark (pedantic rounds, steps per second
    and framework versions in ``extra_info``); returns the run, so it can be checked too."""
    settings = request.config.stash[SETTINGS_KEY]
    if not settings.enabled:
        pytest.skip(SKIP_REASON)
    benchmark = request.getfixturevalue("benchmark")
    marker = _marker(request)
    runs = request.node.stash.setdefault(ITEM_RUNS_KEY, [])

    def measure_case(case: Case, dtype: str | None = None, engine: str | None = None, rounds: int = 3) -> Run:
        from .benchmark import measure

        chosen = engine or settings.engine or marker.engine or case.engine or settings.default_engine
        run = measure(benchmark, case, dtype or convergence_dtype, chosen, rounds=rounds)
        runs.append(run)
        return run

    return measure_case


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """Show the snapshot report, not two object reprs, when ``run == convergence_snapshot`` fails."""
    if op != "==":
        return None
    for side in (left, right):
        if type(side).__name__ == "ConvergenceSnapshot" and hasattr(side, "failure_lines"):
            return ["run == convergence_snapshot", *side.failure_lines()]
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        runs = item.stash.get(ITEM_RUNS_KEY, [])
        if runs:
            from .summary import SummaryRow

            status = "passed" if report.passed else "failed"
            item.config.stash[ROWS_KEY].extend(SummaryRow.from_run(run, status) for run in runs)
            if _wants_results(item.config):
                from .results import RunRecord

                helpers = TrainingHelpers(item, _item_marker(item))
                item.config.stash[RECORDS_KEY].extend(
                    RunRecord.from_run(
                        run, test=item.nodeid, status=status, tolerance=helpers.tolerance_for(run).to_text()
                    )
                    for run in runs
                )
    return report


def _wants_results(config: pytest.Config) -> bool:
    return bool(config.getoption("--convergence-results") or config.getoption("--convergence-baseline"))


def _item_marker(item: pytest.Item) -> MarkerOptions:
    settings = item.config.stash[SETTINGS_KEY]
    marker = item.get_closest_marker(MARKER)
    if marker is None or not isinstance(item, pytest.Function):
        return MarkerOptions(dtypes=[], engine=None, tolerance=None)
    return marker_options(marker, settings.default_dtypes, item.name)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the results file and run the gate, on the controller only (workers send theirs)."""
    config = session.config
    if getattr(config, "workerinput", None) is not None or not _wants_results(config):
        return
    from . import results
    from .errors import ConvergenceError

    current = results.Results(runs=list(config.stash[RECORDS_KEY]))
    path = config.getoption("--convergence-results")
    if path:
        results.write(config.rootpath / path, current)
    baseline = config.getoption("--convergence-baseline")
    if baseline:
        from .gate import compare_results, format_table

        try:
            verdict = compare_results(results.load(config.rootpath / baseline), current)
        except ConvergenceError as error:
            config.stash[GATE_KEY] = [f"error: {error}"]
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        config.stash[GATE_KEY] = format_table(verdict)
        if not verdict.passed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS_KEY, [])
    if rows:
        from .summary import format_table

        terminalreporter.write_sep("=", "convergence summary")
        for line in format_table(rows):
            terminalreporter.write_line(line)
    gate = config.stash.get(GATE_KEY, [])
    if gate:
        terminalreporter.write_sep("=", "convergence gate")
        for line in gate:
            terminalreporter.write_line(line)
    calibrations = config.stash.get(CALIBRATIONS_KEY, [])
    if calibrations:
        from .calibrate import format_table as calibration_table

        terminalreporter.write_sep("=", "convergence calibration (tolerance from data)")
        for line in calibration_table(calibrations):
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            "spread: relative difference of each checkpoint from the first run (median, largest); "
            "recommended rtol: 2x the smallest rtol under which every rerun matches its snapshot "
            "(final loss, all but miss_fraction of the checkpoints, weights). Set it per case "
            "(snapshot_tolerance), per marker (tolerance=...) or in the ini (convergence_rtol)."
        )


class XdistSummary:
    """Under pytest-xdist, workers send their summary rows to the controller, which prints them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["convergence_rows"] = [asdict(row) for row in self.config.stash[ROWS_KEY]]
            workeroutput["convergence_records"] = [asdict(r) for r in self.config.stash[RECORDS_KEY]]
            workeroutput["convergence_calibrations"] = [
                asdict(calibration) for calibration in self.config.stash[CALIBRATIONS_KEY]
            ]

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        from .calibrate import Calibration
        from .results import RunRecord
        from .summary import SummaryRow

        output = getattr(node, "workeroutput", {})
        self.config.stash[ROWS_KEY].extend(SummaryRow(**row) for row in output.get("convergence_rows", []))
        self.config.stash[RECORDS_KEY].extend(RunRecord(**r) for r in output.get("convergence_records", []))
        self.config.stash[CALIBRATIONS_KEY].extend(
            Calibration(**{**c, "outcomes": tuple(c["outcomes"])})
            for c in output.get("convergence_calibrations", [])
        )
