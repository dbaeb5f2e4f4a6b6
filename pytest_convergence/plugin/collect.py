"""pytest nodes for spec files: one file collector, one test item per dtype.

A spec file is collected like a test module (pytest's "Working with non-python tests"): a broken
spec is a collection error for that file only, shown as one line naming the file and the field,
while every other test still runs. Each item trains its case in one dtype with the same options,
summary, expectations and snapshots as a Python test using ``convergence_train``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..errors import ConvergenceError, ExpectationFailed
from .options import NO_MARKER
from .session import ITEM_RUNS_KEY, session_of

if TYPE_CHECKING:
    from ..spec.loader import Spec


class SpecFile(pytest.File):
    """A ``*.convergence.toml`` file."""

    def collect(self) -> Iterator[SpecItem]:
        from ..spec.keras_check import check_with_keras
        from ..spec.loader import SpecError, load_spec

        session = session_of(self.config)
        try:
            spec = load_spec(self.path)
            if session.settings.enabled:
                check_with_keras(spec)
        except SpecError:
            session.spec_errors += 1
            raise
        from ..backends import label

        for backend in session.settings.backends:
            for dtype in spec.dtypes:
                yield SpecItem.from_parent(
                    self,
                    name=f"{spec.case.name}[{label(backend, dtype)}]",
                    spec=spec,
                    dtype=dtype,
                    backend=backend,
                )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, ConvergenceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class SpecItem(pytest.Item):
    """One spec trained in one dtype."""

    def __init__(self, *, spec: Spec, dtype: str, backend: str = "tensorflow", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.convergence_dtype = dtype
        self.convergence_backend = backend
        self.add_marker(pytest.mark.convergence(dtypes=spec.dtypes))
        # syrupy locates snapshots through the test function; a spec has none, so it gets a
        # stand-in named after the case, in a "module" named after the file.
        stand_in = _stand_in(spec.case.name, self.path.stem)
        self.obj = stand_in

    def runtest(self) -> None:
        session = session_of(self.config)
        if not session.settings.enabled:
            pytest.skip("run with --convergence")
        expected = self.spec.case.expectation(self.convergence_dtype, self.convergence_backend)
        if expected is not None and expected.raises is not None:
            session.train_expecting_refusal(
                self.spec.case, self.convergence_dtype, expected.raises, NO_MARKER
            )
            return
        run = session.train(self.spec.case, self.convergence_dtype, None, NO_MARKER)
        self.stash.setdefault(ITEM_RUNS_KEY, []).append(run)
        expectation_report = run.expectation_failure()
        if expectation_report:
            # no snapshot compared or written (not even by --snapshot-update): a reviewed snapshot
            # is of a run that met its expectations, as a Python test's run.expect(...) stops
            # before its snapshot assertion
            raise ExpectationFailed(expectation_report)
        snapshot_report = session.snapshot_problem(self, NO_MARKER, run)
        if snapshot_report:
            raise ExpectationFailed(snapshot_report)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (ConvergenceError, AssertionError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int, str]:
        return self.path, 0, self.name


def _stand_in(name: str, module: str) -> Any:
    def stand_in() -> None:
        """Stands for a spec file's case where syrupy expects a test function."""

    stand_in.__name__ = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    stand_in.__module__ = module
    return stand_in
