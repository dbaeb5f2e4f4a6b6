"""Errors a user can act on.

Every problem with a user's input is reported as one of these, naming what was being trained
(the case, the dtype) and the field at fault, with the fix where one is known. They are raised
before TensorFlow gets a chance to fail deep inside a graph, so the user never has to read a
TensorFlow traceback to learn that a learning rate was misspelt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class ConvergenceError(Exception):
    """Base of every error the plugin raises on purpose."""


class CaseError(ConvergenceError, ValueError):
    """A case (or its training in one dtype) cannot be run as declared."""

    def __init__(
        self,
        message: str,
        *,
        case: str | None = None,
        dtype: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.case = case
        self.dtype = dtype
        self.field = field
        self.fix = fix
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.case:
            where.append(f"case {self.case!r}")
        if self.dtype:
            where.append(f"dtype {self.dtype}")
        if self.field:
            where.append(f"field {self.field!r}")
        text = (", ".join(where) + ": " if where else "") + self.detail
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class TensorFlowMissingError(ConvergenceError, ImportError):
    """TensorFlow is an optional extra; say how to install it instead of a bare ImportError."""


class KerasVersionError(ConvergenceError):
    """A private Keras API the engines rely on is missing or changed in this Keras version.

    Kept apart from :class:`CaseError`: the user's case is fine, this Keras is one the plugin does
    not know, and the fix is a supported version (or a bug report), not a change to the data.
    """

    def __init__(self, api: str, keras_version: str, error: BaseException | None = None) -> None:
        self.api = api
        self.keras_version = keras_version
        cause = f" ({type(error).__name__}: {error})" if error is not None else ""
        super().__init__(
            f"unsupported Keras version {keras_version}: pytest-convergence relies on Keras's {api}, "
            f"which is missing or changed here{cause}\n  fix: use a Keras that pytest-convergence "
            "supports (Keras 2 on TensorFlow 2.12-2.15 or tf-keras, Keras 3.0-3.15), or report this "
            "version as an issue"
        )


class ExpectationFailed(ConvergenceError, AssertionError):
    """A run did not meet what its case expected of it; the message says what and why."""


class ReplayError(ConvergenceError):
    """A replay plan that cannot be used."""


class SpecError(ConvergenceError):
    """A spec file that cannot be used: names the file, the field path and what was expected."""

    def __init__(self, path: Path, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        self.message = message
        where = f"{path}" + (f": {field}" if field else "")
        super().__init__(f"{where}: {message}")


class SchemaViolation(ConvergenceError, ValueError):
    """Where a spec document breaks the schema; the loader turns it into a SpecError naming the file."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path or '(top level)'}: {message}")


class SnapshotMismatchError(ConvergenceError, AssertionError):
    """A run's loss history is outside the tolerance of its stored snapshot (or there is none)."""


class SnapshotFormatError(ConvergenceError, ValueError):
    """A snapshot text that cannot be read: hand-edited, truncated, or of another format version."""


class ResultsError(ConvergenceError):
    """A results file that cannot be used, with the file and what to do."""


class GateError(ConvergenceError):
    """The gate could not reach a verdict: a command failed, or a session left no results."""


class NotDeterministicError(ConvergenceError, AssertionError):
    """Two trainings of the same case, seed, version and machine gave different histories."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The informative part of a framework's error message, on one line.

    Keras wraps errors raised inside a layer as "Exception encountered when calling X.call()",
    with the cause on the following lines; TensorFlow appends node listings. Keep the cause, and
    the layer it names: "in layer 'dense': ...".
    """
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in plain.strip().splitlines()]
    kept: list[str] = []
    where = ""
    for line in lines:
        if line.startswith(("Arguments received", "Registered devices", "Registered kernels", "[[")):
            break
        if line.startswith("Exception encountered"):
            named = re.search(r"layer '([^']+)'", line) or re.search(r"calling (\w+)\.call\(\)", line)
            if named and not where:
                where = f"in layer {named.group(1)!r}: "
            cause = re.match(r"Exception encountered: (.+)", line)  # a deserialisation's cause
            if cause:
                kept.append(cause.group(1))
            continue
        if line:
            kept.append(line)
    text = where + (" ".join(kept) or type(error).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."
