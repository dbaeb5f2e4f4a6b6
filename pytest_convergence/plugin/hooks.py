"""The pytest entry point: hooks and fixtures that wire pytest to the convergence session.

This module is loaded on every pytest run of a project that installs the plugin, so it imports
neither numpy nor TensorFlow: the engine is imported inside the fixture body, when a convergence
test actually trains. ``python -X importtime -m pytest --co`` shows it. The logic lives in
:mod:`.options` (switches and the marker) and :mod:`.session` (what a session does).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import CaseError, ConvergenceError
from .options import (
    DTYPE_FIXTURE,
    MARKER,
    NO_MARKER,
    SKIP_REASON,
    MarkerOptions,
    add_options,
    item_backend,
    item_dtype,
    item_marker,
    marker_options,
    read_settings,
)
from .session import (
    ITEM_RUNS_KEY,
    PAYLOAD,
    SESSION_KEY,
    SNAPSHOT_PROBLEMS_KEY,
    ConvergenceSession,
    session_of,
)

if TYPE_CHECKING:
    from ..case import Case
    from ..run import Run
    from ..snapshot.extension import ConvergenceSnapshot


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``--convergence-isolate``: the session runs in one pytest-xdist worker (:mod:`.isolate`)."""
    from .isolate import isolate

    isolate(config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(dtypes=[...], engine=None, backends=None): a convergence test, run once per dtype "
        "(and Keras backend) with --convergence; engine: loop, xla or fit; backends: the ones it can "
        "train on (default: any).",
    )
    convergence = ConvergenceSession(
        settings=read_settings(config),
        results_path=config.getoption("--convergence-results"),
        baseline_path=config.getoption("--convergence-baseline"),
    )
    config.stash[SESSION_KEY] = convergence
    if convergence.settings.backends != ("tensorflow",):  # another backend's snapshots are not ours
        from ..snapshot.extension import ConvergenceSnapshotExtension

        ConvergenceSnapshotExtension.backends = convergence.settings.backends
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        convergence.worker = True
        from .crash import CRASH_DIR

        if workerinput.get(CRASH_DIR):
            from .crash import RunWatch

            convergence.watch = RunWatch(Path(workerinput[CRASH_DIR]), str(workerinput["workerid"]))
    if convergence.settings.kernels is not None:
        _use_kernels(config, convergence.settings.kernels)
    if convergence.settings.calibrate_with:
        from ..gate.foreign import foreign_runs

        try:
            convergence.foreign = foreign_runs(convergence.settings.calibrate_with, config.rootpath)
        except ConvergenceError as error:
            raise pytest.UsageError(str(error)) from None
    if convergence.settings.replay:  # every process trains from it, pytest-xdist's workers too
        from ..replay_plan import load_plan

        try:
            convergence.replay_plan = load_plan(config.rootpath / convergence.settings.replay)
        except ConvergenceError as error:
            raise pytest.UsageError(f"--convergence-replay: {error}") from None
    if getattr(config, "workerinput", None) is None:  # the controller checks, once
        try:
            convergence.check_inputs(config.rootpath)
        except ConvergenceError as error:
            raise pytest.UsageError(str(error)) from None
    config.pluginmanager.register(DtypeSelection(), DTYPE_SELECTION)
    config.pluginmanager.register(Reports(config), REPORTS)
    if config.pluginmanager.hasplugin("xdist"):
        from .relay import XdistRelay

        config.pluginmanager.register(XdistRelay(config), "convergence-xdist")
    if config.pluginmanager.hasplugin("benchmark"):
        from .benchmark import MachineInfo

        config.pluginmanager.register(MachineInfo(), "convergence-benchmark")


def _use_kernels(config: pytest.Config, name: str) -> None:
    """Set another CPU's kernels before TensorFlow is imported (pytest-xdist's workers inherit
    the environment), or, for ``list``, print the variants this CPU allows and stop."""
    from .. import kernels
    from ..fingerprint import cpu_description

    flags = set(cpu_description()["isa"])
    if name.strip().lower() == "list":
        top = kernels.native_level(flags)
        lines = [f"this CPU: {top or 'no oneDNN x86 level'}; kernel variants it can run:"]
        lines += [
            f"  {variant}"
            for variant in [kernels.NATIVE, *kernels.allowed(flags), *kernels.others(flags)[-1:]]
        ]
        pytest.exit("\n".join(lines), returncode=0)
    try:
        kernels.apply(kernels.parse(name, flags))
    except ConvergenceError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or DTYPE_FIXTURE not in metafunc.fixturenames:
        return
    settings = session_of(metafunc.config).settings
    try:
        options = marker_options(marker, settings.default_dtypes, metafunc.definition.name)
    except CaseError as error:
        problem = str(error)
    else:
        problem = ""
    if problem:  # failed outside the except block: pytest would print the message twice, chained
        pytest.fail(problem, pytrace=False)
    from ..backends import BackendDtype, label

    params = []
    for backend in settings.backends:
        marks = []
        if options.backends is not None and backend not in options.backends:
            only = ", ".join(options.backends)
            marks.append(pytest.mark.skip(reason=f"trains on {only} only (its marker's backends)"))
        for dtype in options.dtypes:
            params.append(pytest.param(BackendDtype(dtype, backend), id=label(backend, dtype), marks=marks))
    metafunc.parametrize(DTYPE_FIXTURE, params, scope="function")


@pytest.hookimpl(tryfirst=True)  # before -k, -m and our own deselection, as syrupy collects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """syrupy tracks only ``pytest.Function`` items when it decides which snapshots are unused;
    spec items are registered as collected here and as selected at ``pytest_collection_finish``,
    so a deselected dtype's snapshot is neither reported unused nor deleted."""
    from ..snapshot import syrupy_compat

    syrupy_compat.register_collected(config, [item for item in items if _is_spec_item(item)])


def pytest_collection_finish(session: pytest.Session) -> None:
    from ..snapshot import syrupy_compat

    syrupy_compat.register_selected(session.config, [item for item in session.items if _is_spec_item(item)])
    config = session.config
    convergence = session_of(config)
    if convergence.settings.enabled and convergence.wants_results:  # what a results file may lack
        convergence.plan([item.nodeid for item in session.items if item.get_closest_marker(MARKER)])
    if getattr(config, "workerinput", None) is not None or config.option.collectonly:
        return  # xdist workers meet it at the write, with the same message
    try:  # before the first test trains, not as a PermissionError inside an assertion
        session_of(config).check_snapshot_directories(session.items, syrupy_compat.updating(config))
    except ConvergenceError as error:
        raise pytest.UsageError(str(error)) from None


def _other_backends_snapshots_kept(session: pytest.Session) -> None:
    """An xdist controller asserts nothing itself, so syrupy looks for unused snapshots there with
    its default extension, which takes another backend's snapshots (``case[jax-float16]`` in a
    TensorFlow session) for unknown, unused ones and would delete them under --snapshot-update.
    Where such snapshots lie beside this session's, the controller leaves unused snapshots alone
    (a session without -n still reports its own)."""
    config = session.config
    if getattr(config, "workerinput", None) is not None or not getattr(config.option, "numprocesses", None):
        return
    from ..snapshot.extension import snapshot_backend

    backends = session_of(config).settings.backends
    roots = [Path(arg.split("::")[0]) for arg in config.args] or [config.rootpath]
    for root in roots:
        folder = root if root.is_dir() else root.parent
        for path in folder.glob("**/__snapshots__/**/*.convergence.txt"):
            if snapshot_backend(path.name) not in backends:
                config.option.disable_unused_snapshots = True
                return


def _is_spec_item(item: pytest.Item) -> bool:
    return getattr(item, "spec", None) is not None and item_dtype(item) is not None


DTYPE_SELECTION = "convergence-dtype-selection"


class DtypeSelection:
    """``--convergence-dtypes`` deselection and the skip without ``--convergence``; a plugin object
    of its own so that it runs last, after syrupy and the registration above have seen every item."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        settings = session_of(config).settings
        keep: list[pytest.Item] = []
        deselected: list[pytest.Item] = []
        skip = pytest.mark.skip(reason=SKIP_REASON)
        for item in items:
            if item.get_closest_marker(MARKER) is None:
                keep.append(item)
                continue
            dtype = item_dtype(item)
            if settings.dtypes is not None and dtype is not None and dtype not in settings.dtypes:
                deselected.append(item)
                continue
            if not settings.enabled:
                item.add_marker(skip)
            keep.append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """A broken spec file is a collection error for that file only: when every collection error
    comes from a spec file, the rest of the suite still runs (and the session still fails)."""
    spec_errors = session_of(session.config).spec_errors
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


SNAPSHOT_FOLDERS = ("__snapshots__", "__snapshots_platform__")


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Snapshot files are data, not tests. Their names match pytest's default ``--doctest-glob``
    (``test*.txt``), so its doctest plugin would read every one of them on every run, and a
    damaged one (not UTF-8) would stop even a plain ``pytest`` with a ``UnicodeDecodeError``
    from inside pathlib; the snapshot's own comparison reports it with its fix instead."""
    if collection_path.name.endswith((".convergence.txt", ".exact.txt")) and any(
        part in SNAPSHOT_FOLDERS for part in collection_path.parts
    ):
        return True
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
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return NO_MARKER
    return marker_options(marker, session_of(request.config).settings.default_dtypes, request.node.name)


@pytest.fixture
def convergence_train(request: pytest.FixtureRequest, convergence_dtype: str) -> Callable[..., Run]:
    """Train a case in this test's dtype and return the :class:`Run`.

    Engine, most specific first: the ``engine=`` argument, ``--convergence-engine``, the marker's
    ``engine``, the case's ``engine``, the ini's ``convergence_engine`` (default ``loop``).
    ``--convergence-repeat`` and ``--convergence-calibrate`` add their reruns here.
    """
    session = session_of(request.config)
    if not session.settings.enabled:
        pytest.skip(SKIP_REASON)
    marker = _marker(request)
    runs = request.node.stash.setdefault(ITEM_RUNS_KEY, [])

    def train_case(case: Case, dtype: str | None = None, engine: str | None = None) -> Run:
        __tracebackhide__ = True
        run = session.train(case, dtype or convergence_dtype, engine, marker)
        runs.append(run)
        return run

    return train_case


@pytest.fixture
def convergence_snapshot(request: pytest.FixtureRequest) -> ConvergenceSnapshot:
    """``assert run == convergence_snapshot``: the run's loss history against its stored snapshot,
    one file per test and dtype, compared with a dtype-aware tolerance.

    Made with the convergence extension directly, not from syrupy's ``snapshot`` fixture: that one
    registers an assertion of syrupy's default extension, whose discovery then took another
    backend's snapshot files (``case[jax-float32]``) for unknown unused ones in a session that
    has a Python test, failing it."""
    return session_of(request.config).snapshot(request.node, _marker(request))


@pytest.fixture
def convergence_benchmark(request: pytest.FixtureRequest, convergence_dtype: str) -> Callable[..., Run]:
    """Measure a case's training speed with pytest-benchmark (pedantic rounds, steps per second
    and framework versions in ``extra_info``); returns the run, so it can be checked too."""
    session = session_of(request.config)
    if not session.settings.enabled:
        pytest.skip(SKIP_REASON)
    benchmark = request.getfixturevalue("benchmark")
    marker = _marker(request)
    runs = request.node.stash.setdefault(ITEM_RUNS_KEY, [])

    def measure_case(case: Case, dtype: str | None = None, engine: str | None = None, rounds: int = 3) -> Run:
        from .benchmark import measure

        chosen = session.engine_for(case, marker, engine)
        with session.watching(case, dtype or convergence_dtype, chosen):
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


FAILED_KEY = pytest.StashKey[bool]()
"""A convergence test that trained and failed: syrupy must not remove its stored snapshots."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "teardown" and item.stash.get(FAILED_KEY, False):
        from ..snapshot import syrupy_compat

        syrupy_compat.keep_snapshots_of(item.config, item.nodeid)  # a failed run's snapshot stays
    session = session_of(item.config)
    if report.when == "call":
        runs = item.stash.get(ITEM_RUNS_KEY, [])
        item.stash[FAILED_KEY] = bool(runs) and report.failed
        if runs:
            status = "passed" if report.passed else "failed"
            session.record(
                item.nodeid,
                runs,
                status,
                item_marker(item, session.settings.default_dtypes),
                item.stash.get(SNAPSHOT_PROBLEMS_KEY, []),
            )
    if session.worker:
        sent = session.outbox()
        if sent is not None:  # a list of its own: the report's is the item's, shared by its phases
            report.user_properties = [*report.user_properties, (PAYLOAD, sent)]
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The test this process runs now: a crash note names it (:mod:`.crash`)."""
    session_of(item.config).current_test = item.nodeid
    session_of(item.config).current_backend = item_backend(item)


REPORTS = "convergence-reports"


class Reports:
    """Reads each test's reports on the controller (or in a session without pytest-xdist): takes
    what a worker sent with the report and, when a planned test has finished, rewrites the
    results file, so a session that dies later leaves this test's runs on disk."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)  # before junitxml and others read the user properties
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = session_of(self.config)
        if session.worker:
            return  # its reports are on their way to the controller, payload and all
        sent = [str(value) for name, value in report.user_properties if name == PAYLOAD]
        if sent:
            report.user_properties = [(n, v) for n, v in report.user_properties if n != PAYLOAD]
            for payload in sent:
                session.take(payload)
        if report.when == "teardown":
            session.test_finished(report.nodeid, self.config.rootpath)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.pluginmanager.register(SessionEnd(session.config), SESSION_END)
    watch = session_of(session.config).watch
    if watch is not None:  # after pytest's faulthandler plugin set its own, at configure
        watch.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    convergence = config.stash.get(SESSION_KEY, None)
    if convergence is not None and convergence.watch is not None:
        convergence.watch.stop()


SESSION_END = "convergence-session-end"


class SessionEnd:
    """A session that did not run to its end deletes nothing and replaces nothing.

    Its wrappers run around every plain implementation: the test loop's tells whether the tests ran
    to their end (a Ctrl-C, ``-x`` or ``pytest.exit`` comes through it as an exception); the
    session end's decides before syrupy's ``pytest_sessionfinish``, which would delete the
    snapshots of the tests that did not run as unused, and before ours, which writes the results.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self) -> Generator[None, object, object]:
        convergence = session_of(self.config)
        try:
            result = yield
        except BaseException as error:
            convergence.unfinished = convergence.unfinished or _stopped_by(error)
            raise
        convergence.ran_to_end = True
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        convergence = session_of(self.config)
        if convergence.settings.enabled:
            _other_backends_snapshots_kept(session)
        if not convergence.ran_to_end or convergence.unfinished is not None:
            from ..snapshot import syrupy_compat

            kept = convergence.settings.enabled and syrupy_compat.keep_unused_snapshots(self.config)
            how = "was interrupted" if session.exitstatus == pytest.ExitCode.INTERRUPTED else "stopped"
            reason = convergence.unfinished or f"{how} before its tests ran"
            convergence.keep_files(reason, snapshots_kept=kept)
            if session.exitstatus == pytest.ExitCode.INTERRUPTED:
                _forget_the_handled_interrupt()
        return (yield)


def _forget_the_handled_interrupt() -> None:
    """Let the process end with pytest's exit code 2 after a Ctrl-C, not killed by SIGINT.

    CPython (3.11 to 3.13 at least) remembers a ``KeyboardInterrupt`` that left an ``exec`` of a
    string, as making a dataclass does while a module is first imported, and at exit kills the
    process with SIGINT although pytest handled the interrupt (exit -2, 130 in a shell). The next
    ``exec`` of a string resets what it remembers; measured: 2 of 4 interrupts right after a test
    wrote its snapshot landed there.
    """
    exec("")


def _stopped_by(error: BaseException) -> str:
    if isinstance(error, (pytest.Session.Interrupted, pytest.Session.Failed)):
        return f"stopped early ({error})"
    if isinstance(error, pytest.exit.Exception):
        return f"was ended by pytest.exit ({error})"
    if isinstance(error, KeyboardInterrupt):
        return "was interrupted (KeyboardInterrupt)"
    return f"was ended by {type(error).__name__}"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the results file and run the gate, on the controller only (workers send theirs)."""
    config = session.config
    if getattr(config, "workerinput", None) is not None:
        return
    asked = session_of(config).finish(config.rootpath)
    if asked == pytest.ExitCode.USAGE_ERROR or (
        asked is not None and session.exitstatus == pytest.ExitCode.OK
    ):
        session.exitstatus = asked


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    convergence = config.stash.get(SESSION_KEY, None)
    if convergence is None:
        return
    if convergence.rows:
        from .summary import engine_notes, format_stories, format_table

        simulated = convergence.settings.simulate
        title = "convergence summary" + (
            f" (trained as another machine: --convergence-simulate-machine={simulated})"
            if simulated is not None
            else ""
        )
        terminalreporter.write_sep("=", title)
        for line in format_table(convergence.rows):
            terminalreporter.write_line(line)
        for line in engine_notes(convergence.rows):
            terminalreporter.write_line(line)
        if convergence.settings.timing:
            from .summary import format_timing

            terminalreporter.write_sep("=", "convergence timing (seconds per phase)")
            for line in format_timing(convergence.rows):
                terminalreporter.write_line(line)
        stories = format_stories(convergence.rows) if convergence.settings.explain else []
        if stories:
            terminalreporter.write_sep("=", "convergence explanations")
            for line in stories:
                terminalreporter.write_line(line)
    if convergence.kept_line:
        terminalreporter.write_line(convergence.kept_line)
    if convergence.gate_lines:
        terminalreporter.write_sep("=", "convergence gate")
        for line in convergence.gate_lines:
            terminalreporter.write_line(line)
    if convergence.gate_failures:
        # pytest's last line counts what is in ``stats``: "6 passed, 1 failing in the convergence gate"
        terminalreporter.stats.setdefault(GATE_FAILED, []).extend([GATE_FAILED] * convergence.gate_failures)
    if convergence.calibrations:
        from ..snapshot.calibrate import MARGIN
        from ..snapshot.calibrate import format_table as calibration_table

        terminalreporter.write_sep("=", "convergence calibration (tolerance from data)")
        for line in calibration_table(convergence.calibrations):
            terminalreporter.write_line(line)
        terminalreporter.write_line(
            "spread: relative difference of each checkpoint from the first run (median, largest); "
            f"recommended rtol: {MARGIN:g}x the smallest rtol under which every rerun matches its snapshot "
            "(final loss, all but miss_fraction of the checkpoints, weights). Set it per case "
            "(snapshot_tolerance), per marker (tolerance=...) or in the ini (convergence_rtol)."
        )


GATE_FAILED = "failing in the convergence gate"
