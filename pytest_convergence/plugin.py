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
    from .case import Case
    from .run import Run
    from .summary import SummaryRow

MARKER = "convergence"
DTYPE_FIXTURE = "convergence_dtype"
MARKER_KEYWORDS = ("dtypes", "engine")
SKIP_REASON = (
    "convergence tests train models: run them with `pytest --convergence` "
    "(or set `convergence = true` in the pytest ini)"
)

ROWS_KEY = pytest.StashKey[list["SummaryRow"]]()
ITEM_RUNS_KEY = pytest.StashKey[list["Run"]]()


@dataclass(frozen=True)
class Settings:
    """The session's switches, from the command line over the ini file."""

    enabled: bool
    dtypes: tuple[str, ...] | None
    engine: str | None
    default_engine: str
    default_dtypes: tuple[str, ...]


SETTINGS_KEY = pytest.StashKey[Settings]()


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
    parser.addini("convergence", type="bool", default=False, help="always run convergence tests.")
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
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistSummary(config), "convergence-xdist")


def _read_settings(config: pytest.Config) -> Settings:
    try:
        option = config.getoption("--convergence-dtypes")
        dtypes = tuple(parse_dtype_list(option, where="--convergence-dtypes")) if option else None
        defaults = tuple(
            parse_dtype_list(config.getini("convergence_dtypes"), where="ini convergence_dtypes")
        )
    except CaseError as error:
        raise pytest.UsageError(str(error)) from None
    default_engine = str(config.getini("convergence_engine")).strip() or DEFAULT_ENGINE
    if default_engine not in ENGINES:
        raise pytest.UsageError(
            f"ini convergence_engine: unknown engine {default_engine!r}; "
            f"valid engines are: {', '.join(ENGINES)}"
        )
    enabled = config.getoption("--convergence")
    return Settings(
        enabled=bool(enabled if enabled is not None else config.getini("convergence")),
        dtypes=dtypes,
        engine=config.getoption("--convergence-engine"),
        default_engine=default_engine,
        default_dtypes=defaults,
    )


def marker_options(
    marker: pytest.Mark, defaults: tuple[str, ...], where: str
) -> tuple[list[str], str | None]:
    """Validate a ``convergence`` marker: its dtypes (in order) and engine."""
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
    return dtypes, engine


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or DTYPE_FIXTURE not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS_KEY]
    try:
        dtypes, _ = marker_options(marker, settings.default_dtypes, f"{metafunc.definition.name}")
    except CaseError as error:
        pytest.fail(str(error), pytrace=False)
    metafunc.parametrize(DTYPE_FIXTURE, dtypes, ids=dtypes, scope="function")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    settings = config.stash[SETTINGS_KEY]
    keep: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    skip = pytest.mark.skip(reason=SKIP_REASON)
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


def _item_dtype(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(DTYPE_FIXTURE) if callspec is not None else None


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


@pytest.fixture
def convergence_train(request: pytest.FixtureRequest, convergence_dtype: str) -> Callable[..., Run]:
    """Train a case in this test's dtype and return the :class:`Run`.

    Engine, most specific first: the ``engine=`` argument, ``--convergence-engine``, the marker's
    ``engine``, the case's ``engine``, the ini's ``convergence_engine`` (default ``loop``).
    """
    settings = request.config.stash[SETTINGS_KEY]
    if not settings.enabled:
        pytest.skip(SKIP_REASON)
    marker = request.node.get_closest_marker(MARKER)
    marker_engine = None
    if marker is not None:
        marker_engine = marker_options(marker, settings.default_dtypes, request.node.name)[1]
    runs = request.node.stash.setdefault(ITEM_RUNS_KEY, [])

    def train_case(case: Case, dtype: str | None = None, engine: str | None = None) -> Run:
        __tracebackhide__ = True
        from .engine import train

        chosen = engine or settings.engine or marker_engine or case.engine or settings.default_engine
        problem = None
        try:
            run = train(case, dtype or convergence_dtype, chosen)
        except ConvergenceError as error:
            problem = str(error)
        if problem is not None:  # failed outside the handler, so no chained traceback is shown
            pytest.fail(problem, pytrace=False)
        runs.append(run)
        return run

    return train_case


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        runs = item.stash.get(ITEM_RUNS_KEY, [])
        if runs:
            from .summary import SummaryRow

            status = "passed" if report.passed else "failed"
            item.config.stash[ROWS_KEY].extend(SummaryRow.from_run(run, status) for run in runs)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS_KEY, [])
    if not rows:
        return
    from .summary import format_table

    terminalreporter.write_sep("=", "convergence summary")
    for line in format_table(rows):
        terminalreporter.write_line(line)


class XdistSummary:
    """Under pytest-xdist, workers send their summary rows to the controller, which prints them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["convergence_rows"] = [asdict(row) for row in self.config.stash[ROWS_KEY]]

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        from .summary import SummaryRow

        rows = getattr(node, "workeroutput", {}).get("convergence_rows", [])
        self.config.stash[ROWS_KEY].extend(SummaryRow(**row) for row in rows)
