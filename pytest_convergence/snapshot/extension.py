"""The syrupy extension for loss histories, and the ``convergence_snapshot`` assertion around it.

syrupy compares text exactly; loss histories need tolerance. The extension stores a run as the
readable text of :mod:`.trajectory` (one file per test and dtype), and decides a match by parsing
both texts and comparing them under the tolerance the new run carries in its header
(:mod:`.compare`). Everything else is syrupy's own workflow: ``--snapshot-update`` writes and
removes, unused snapshots are reported, ``--snapshot-warn-unused`` works.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from ..errors import SnapshotMismatchError
from ..files import atomic_write_text
from ..tolerance import Tolerance
from .compare import CHANGES_PREFIX, compare
from .format import SnapshotFormatError, Trajectory, render_run

if TYPE_CHECKING:
    from syrupy.assertion import SnapshotAssertion
    from syrupy.data import SnapshotCollection

    from ..run import Run

UPDATE_HINT = "pytest --convergence --snapshot-update"


class SnapshotText(str):
    """A rendered run, marked so the extension knows it was made by us.

    ``rewrite`` asks ``--snapshot-update`` to write it although it matches: its calibration
    changed, which lives in the header that comparisons do not otherwise read.
    """

    rewrite: bool = False


class ConvergenceSnapshotExtension(SingleFileSnapshotExtension):
    """One ``.convergence.txt`` file per test and dtype, compared with a dtype-aware tolerance."""

    _write_mode = WriteMode.TEXT
    file_extension = "convergence.txt"
    backends: tuple[str, ...] = ("tensorflow",)
    """The Keras backends this session trains on (set by the plugin): another backend's snapshots
    (``case[jax-float16]`` in a TensorFlow session) are not this session's to judge or delete."""

    def discover_snapshots(self, **kwargs: Any) -> Any:
        """syrupy's discovery, without the snapshots of backends this session does not train on:
        they are neither reported unused nor deleted by ``--snapshot-update``, while this
        session's own unused snapshots still are."""
        discovered = super().discover_snapshots(**kwargs)
        kept = type(discovered)()
        for collection in discovered:
            if snapshot_backend(Path(str(collection.location)).name) in self.backends:
                kept.add(collection)
        return kept

    def serialize(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, SnapshotText):
            return data  # with its ``rewrite`` mark
        if isinstance(data, str):
            return str(data)
        raise TypeError(
            f"a convergence snapshot stores a Run, got {type(data).__name__}: "
            "write `assert run == convergence_snapshot`"
        )

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        if getattr(serialized_data, "rewrite", False):
            return False  # updating with a new calibration: write it
        try:
            old = Trajectory.parse(str(snapshot_data))
        except SnapshotFormatError:
            return False  # unreadable: not a match, so --snapshot-update rewrites it
        new = Trajectory.parse(str(serialized_data))
        return compare(old, new, new.effective_tolerance).ok

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        new = Trajectory.parse(str(serialized_data))
        title = f"{new.header.get('case', '?')} [{new.header.get('dtype', '?')}]"
        if not str(snapshot_data):
            yield f"{title}: no snapshot stored yet; create it with {UPDATE_HINT}"
            return
        try:
            old = Trajectory.parse(str(snapshot_data))
        except SnapshotFormatError as error:
            yield f"{title}: the stored snapshot cannot be read ({error}); rewrite it with {UPDATE_HINT}"
            return
        yield from compare(old, new, new.effective_tolerance).lines(title)
        yield f"  accept the new history with {UPDATE_HINT}, after reviewing it"

    @classmethod
    def write_snapshot_collection(
        cls, *, snapshot_collection: SnapshotCollection, name_order: dict[str, int] | None = None
    ) -> None:
        """Write to a temporary file beside the target, then rename: never a half-written snapshot."""
        data = next(iter(snapshot_collection)).data
        atomic_write_text(Path(snapshot_collection.location), str(data))


_OTHER_BACKEND_LABEL = re.compile(r"\[(?:.*-)?(jax|torch)-(?:mixed_)?b?float\d+(?:-[^\]]*)?\]")


def snapshot_backend(filename: str) -> str:
    """The backend a snapshot file's test ran on, read from its id (``seed[jax-float16]``):
    TensorFlow's ids carry none (:func:`..backends.label`)."""
    found = _OTHER_BACKEND_LABEL.search(filename)
    return found.group(1) if found else "tensorflow"


def _write_problem(location: Path) -> str | None:
    """Why ``--snapshot-update`` could not write this snapshot (a read-only directory...), if so."""
    from ..files import unwritable

    problem = unwritable(location)
    if problem is None:
        return None
    return (
        f"{location}: cannot write the snapshot: {problem}\n"
        f"  fix: make {location.parent} writable (or run without --snapshot-update to compare only)"
    )


class ConvergenceSnapshot:
    """What the ``convergence_snapshot`` fixture returns: ``assert run == convergence_snapshot``.

    Before comparing, the stored file is checked: a snapshot that cannot be read fails the test
    with the file, what is wrong and the fix, instead of an opaque mismatch.
    """

    def __init__(
        self,
        assertion: SnapshotAssertion,
        *,
        tolerance_for: Callable[[Run], Tolerance],
        updating: bool,
        test_name: str,
        on_mismatch: Callable[[list[str]], None] | None = None,
        platform_exact: bool = False,
    ) -> None:
        self._platform_exact = platform_exact
        self._on_mismatch = on_mismatch
        self._assertion = assertion
        self._tolerance_for = tolerance_for
        self._updating = updating
        self._test_name = test_name

    def __eq__(self, other: object) -> bool:
        """Compare; on a mismatch raise the whole report rather than return False.

        pytest cuts an assertion's explanation to 8 lines unless run with ``-vv``; the report is
        read top-down (what changed since the snapshot first, then the outcome, the events, where
        the histories part), so it is raised whole as the assertion's message.
        """
        __tracebackhide__ = True
        from ..run import Run

        if not isinstance(other, Run):
            return NotImplemented
        if not self._matches(other):
            raise SnapshotMismatchError("\n".join(self.failure_lines()))
        return True

    __hash__ = None  # type: ignore[assignment]

    def assert_match(self, run: Run) -> None:
        """Like ``assert run == convergence_snapshot``, with the readable report as the message."""
        __tracebackhide__ = True
        if not self._matches(run):
            raise SnapshotMismatchError("\n".join(self.failure_lines()))

    def failure_lines(self) -> list[str]:
        return [str(line) for line in self._assertion.get_assert_diff()]

    def _matches(self, run: Run) -> bool:
        __tracebackhide__ = True
        with run.timing.phase("snapshot"):
            return self._compare(run)

    def _compare(self, run: Run) -> bool:
        __tracebackhide__ = True
        location = self._location()  # before the assertion, which moves syrupy's index on
        stored, problem = self._read_stored()
        if self._updating:
            problem = _write_problem(location)  # clear, instead of syrupy's PermissionError traceback
        if not run.calibrated_tolerance and stored is not None and "calibrated" in stored.header:
            run.calibrated_tolerance = stored.header["calibrated"]  # measured once, kept on updates
        elif run.calibration_adds and stored is not None and "calibrated" in stored.header:
            # other kernels' runs measured alone add to what the stored calibration measured
            kept = Tolerance.from_text(stored.header["calibrated"])
            run.calibrated_tolerance = kept.widened(Tolerance.from_text(run.calibrated_tolerance)).to_text()
        text = SnapshotText(render_run(run, self._tolerance_for(run), self._test_name))
        text.rewrite = (
            self._updating
            and stored is not None
            and stored.header.get("calibrated", "") != run.calibrated_tolerance
        )
        matched = bool(self._assertion == text)  # recorded by syrupy either way: failed, not unused
        if problem is not None:
            if self._on_mismatch is not None:
                self._on_mismatch(problem.splitlines())
            pytest.fail(problem, pytrace=False)
        if not matched and self._on_mismatch is not None:
            # for the results file, so the gate sees it; without the header's differences, which
            # the gate names itself from the two records (versions, what ran, configuration)
            self._on_mismatch(
                [line for line in self.failure_lines() if not line.lstrip().startswith(CHANGES_PREFIX)]
            )
        if matched and self._platform_exact:
            self._check_platform(run, text, location)
        return matched

    def _check_platform(self, run: Run, text: str, location: Path) -> None:
        """The bit-exact golden of this machine (:mod:`.platform`): written when updating, else
        compared when this machine has one."""
        __tracebackhide__ = True
        from . import platform

        path = platform.platform_path(location, run.versions.get("fingerprint", "unknown"))
        if self._updating:
            platform.write(path, text)
            return
        lines = platform.mismatch(path, text)
        if lines is not None:
            if self._on_mismatch is not None:
                self._on_mismatch(lines)
            raise SnapshotMismatchError("\n".join(lines))

    def _location(self) -> Path:
        assertion = self._assertion
        return Path(
            assertion.extension.get_location(test_location=assertion.test_location, index=assertion.index)
        )

    def _read_stored(self) -> tuple[Trajectory | None, str | None]:
        """The stored snapshot, or what is wrong with its file and the fix; (None, None) if none."""
        path = self._location()
        if not path.exists():
            return None, None
        try:
            return Trajectory.parse(path.read_text(encoding="utf-8")), None
        except (SnapshotFormatError, UnicodeDecodeError) as error:
            problem = (
                f"not a pytest-convergence snapshot: not UTF-8 text (byte {error.start}: {error.reason})"
                if isinstance(error, UnicodeDecodeError)
                else str(error)
            )
            return None, (
                f"{path}: {problem}\n  fix: {UPDATE_HINT} rewrites it from this run "
                "(review the new file before committing it)"
            )

    def __repr__(self) -> str:
        return f"convergence_snapshot({self._test_name})"
