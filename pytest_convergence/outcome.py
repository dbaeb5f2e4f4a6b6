"""The vocabulary of what a training run did, shared by the diagnosis, messages and reports."""

from __future__ import annotations

from enum import Enum


class Outcome(str, Enum):
    """What a run's history shows, apart from whether it met its target.

    The values are the words users write in expectations and read in reports.
    """

    REACHED_ZERO = "reached-zero"
    STALLED = "stalled"
    OSCILLATING = "oscillating"
    PLATEAU = "plateau"
    DIVERGED = "diverged"
    DESCENDING = "descending"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Outcome, *, where: str = "outcome") -> Outcome:
        from .errors import CaseError

        if isinstance(value, Outcome):
            return value
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(o.value for o in cls)
            hint = ""
            if value == "converged":
                hint = "'converged' is not an outcome but whether the target was met: use converged=True"
            raise CaseError(
                f"unknown outcome {value!r}; valid outcomes are: {valid}", field=where, fix=hint or None
            ) from None


ENGINES: tuple[str, ...] = ("loop", "xla", "fit")
DEFAULT_ENGINE = "loop"


def check_engine(
    engine: str, *, case: str | None = None, dtype: str | None = None, field: str = "engine"
) -> str:
    """The one place an engine name is validated; the error lists the valid ones."""
    from .errors import CaseError

    if engine not in ENGINES:
        raise CaseError(
            f"unknown engine {engine!r}; valid engines are: {', '.join(ENGINES)}",
            case=case,
            dtype=dtype,
            field=field,
        )
    return engine


def choose_engine(*choices: str | None, default: str = DEFAULT_ENGINE) -> str:
    """The first engine named, most specific first; the precedence chain is written once, here.

    The plugin passes: the ``engine=`` argument of the call, ``--convergence-engine``, the
    marker's ``engine``, the case's ``engine``; the ini's ``convergence_engine`` is the default.
    """
    return next((choice for choice in choices if choice), default)
