"""Errors a user can act on.

Every problem with a user's input is reported as one of these, naming what was being trained
(the case, the dtype) and the field at fault, with the fix where one is known. They are raised
before TensorFlow gets a chance to fail deep inside a graph, so the user never has to read a
TensorFlow traceback to learn that a learning rate was misspelt.
"""

from __future__ import annotations


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


class ExpectationFailed(AssertionError):
    """A run did not meet what its case expected of it; the message says what and why."""
