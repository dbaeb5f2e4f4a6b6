"""How far a loss history may move before a snapshot comparison fails, per dtype.

Loss histories span many orders of magnitude, so every value is compared *relative to itself*:
two values a and b agree when ``|a - b| <= rtol * max(|a|, |b|)``. Then 1e-30 against 2e-30 is a
100% difference, not "equal because both are tiny", and 0 only equals 0. NaN equals NaN (both
runs diverged), and nothing else.

The default ``rtol`` follows the dtype: runs in float16 or bfloat16 move by a percent from a
kernel change, float64 runs by far less. It can be set in the ini (``convergence_rtol``), per case
(``Case(snapshot_tolerance=...)``) and per marker (``@pytest.mark.convergence(tolerance=...)``),
each overriding the one before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .dtypes import DTYPES, dtype_info
from .errors import CaseError

DEFAULT_RTOL: dict[str, float] = {
    "float16": 1e-2,
    "bfloat16": 2e-2,
    "mixed_float16": 1e-2,
    "mixed_bfloat16": 2e-2,
    "float32": 1e-4,
    # Keras 3 computes losses in float32 even for a float64 model, so float64 histories are
    # compared a few float32 ulps wide; a float64 loss (a case that pins it) could go tighter.
    "float64": 1e-6,
}


@dataclass(frozen=True)
class Tolerance:
    """The comparison rules of one snapshot.

    ``rtol`` applies to losses and weights; an event step (the step a stall, a first zero or a
    first NaN happened) may move by ``event_rtol`` of itself or ``event_atol`` steps, whichever is
    larger; ``miss_fraction`` of the checkpoints may fall outside ``rtol`` (like Megatron-LM's
    golden values); ``exact`` demands bit-identical histories, for same-version reruns.
    """

    rtol: float
    event_rtol: float = 0.02
    event_atol: int = 2
    miss_fraction: float = 0.01
    exact: bool = False
    weight_rtol: float | None = None
    """The final weights' rtol when calibration measured one apart from the losses' (else ``rtol``)."""
    outcomes: tuple[str, ...] = ()
    """Outcomes calibration saw this run take under one-ulp perturbations: when there are several,
    the outcome is unstable, and a change among them is reported as such, not as a change."""
    divergence_unstable: bool = False
    """Calibration saw this run end in NaN under one perturbation and finite under another: whether
    (and where) it diverges is chaotic, so only the history before the first non-finite loss of
    either side is compared, and events and final values are shown, not compared."""
    variants: tuple[str, ...] = ()
    """What calibration measured across: this machine's kernels, the one-ulp reruns and other
    kernel variants or machines (``native``, ``ulp*2``, ``avx2``): shown, never compared."""

    def __post_init__(self) -> None:
        for name in ("rtol", "event_rtol", "miss_fraction"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise CaseError(f"must be a finite number >= 0, got {value!r}", field=f"tolerance.{name}")
        if self.miss_fraction >= 1:
            raise CaseError(f"must be below 1, got {self.miss_fraction!r}", field="tolerance.miss_fraction")
        if not isinstance(self.event_atol, int) or isinstance(self.event_atol, bool) or self.event_atol < 0:
            raise CaseError(
                f"must be a whole number of steps >= 0, got {self.event_atol!r}", field="tolerance.event_atol"
            )
        if not isinstance(self.exact, bool):
            raise CaseError(f"must be true or false, got {self.exact!r}", field="tolerance.exact")
        if isinstance(self.outcomes, str) or not all(isinstance(o, str) for o in self.outcomes):
            raise CaseError(
                f"must be a list of outcome words, got {self.outcomes!r}", field="tolerance.outcomes"
            )

    @property
    def weights_rtol(self) -> float:
        return self.rtol if self.weight_rtol is None else self.weight_rtol

    @property
    def measured_across(self) -> str:
        """Where calibration measured, for a message: the one-ulp reruns (a calibration that named
        nothing else), or each kind of run it measured across."""
        if not self.variants:
            return "under one-ulp perturbations"
        return "across " + ", ".join(self.variants)

    @property
    def unstable(self) -> bool:
        return len(self.outcomes) > 1

    def widened(self, other: Tolerance | None) -> Tolerance:
        """The looser of two tolerances, field by field: a configured one and a calibrated one."""
        if other is None:
            return self
        return replace(
            self,
            rtol=max(self.rtol, other.rtol),
            event_rtol=max(self.event_rtol, other.event_rtol),
            event_atol=max(self.event_atol, other.event_atol),
            miss_fraction=max(self.miss_fraction, other.miss_fraction),
            weight_rtol=None
            if self.weight_rtol is None and other.weight_rtol is None
            else max(self.weights_rtol, other.weights_rtol),
            outcomes=tuple(sorted({*self.outcomes, *other.outcomes})),
            divergence_unstable=self.divergence_unstable or other.divergence_unstable,
            variants=tuple(dict.fromkeys([*self.variants, *other.variants])),
        )

    def describe(self) -> str:
        if self.exact:
            return "exact (bit-identical)"
        weights = "and weights" if self.weight_rtol is None else f"({self.weight_rtol:g} for weights)"
        text = (
            f"rtol {self.rtol:g} for losses {weights}, event steps ±max({self.event_atol}, "
            f"{self.event_rtol:g}×step), {self.miss_fraction:.0%} of checkpoints may miss"
        )
        if self.unstable:
            text += f", outcome unstable ({' or '.join(self.outcomes)})"
        if self.divergence_unstable:
            text += ", divergence unstable (compared before the first NaN only)"
        return text

    def to_text(self) -> str:
        """One line the snapshot header carries and :meth:`from_text` reads back."""
        return (
            f"rtol={self.rtol!r} event_rtol={self.event_rtol!r} event_atol={self.event_atol} "
            f"miss_fraction={self.miss_fraction!r} exact={str(self.exact).lower()}"
            + (f" weight_rtol={self.weight_rtol!r}" if self.weight_rtol is not None else "")
            + (f" outcomes={'|'.join(self.outcomes)}" if self.outcomes else "")
            + (" divergence_unstable=true" if self.divergence_unstable else "")
            + (f" variants={'|'.join(self.variants)}" if self.variants else "")
        )

    @classmethod
    def from_text(cls, text: str) -> Tolerance:
        values: dict[str, Any] = {}
        for part in text.split():
            key, _, raw = part.partition("=")
            if key in ("exact", "divergence_unstable"):
                values[key] = raw == "true"
            elif key in ("outcomes", "variants"):
                values[key] = tuple(raw.split("|"))
            elif key == "event_atol":
                values[key] = int(raw)
            else:
                values[key] = float(raw)
        return cls(**values)


CALIBRATED_ONLY = ("outcomes", "weight_rtol", "divergence_unstable", "variants")
KEYS = tuple(f.name for f in fields(Tolerance) if f.name not in CALIBRATED_ONLY)
"""What a user sets; ``outcomes``, ``weight_rtol`` and ``divergence_unstable`` come from calibration only."""


def parse_overrides(value: Any, *, where: str, dtype: str) -> dict[str, Any]:
    """Overrides from a case, marker or ini: a number (``rtol``), or a dict of :class:`Tolerance`
    fields where ``rtol`` may itself be a number or a dict per dtype."""
    if value is None:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"rtol": float(value)}
    if not isinstance(value, Mapping):
        raise CaseError(
            f"a tolerance is a number (rtol) or a dict of {', '.join(KEYS)}; got {type(value).__name__}",
            field=where,
        )
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise CaseError(
            f"unknown tolerance key(s) {', '.join(unknown)}; valid keys are: {', '.join(KEYS)}", field=where
        )
    overrides = dict(value)
    rtol = overrides.get("rtol")
    if isinstance(rtol, Mapping):
        for name in rtol:
            dtype_info(name, where=f"{where}.rtol")
        if dtype in rtol:
            overrides["rtol"] = rtol[dtype]
        else:
            overrides.pop("rtol")
    return overrides


def parse_ini_rtol(text: str) -> dict[str, float]:
    """``convergence_rtol`` in the ini: ``float16=0.02 float32=1e-5`` (or one number for all)."""
    text = text.strip()
    if not text:
        return {}
    try:
        if "=" not in text:
            return dict.fromkeys(DTYPES, float(text))
        result: dict[str, float] = {}
        for part in text.replace(",", " ").split():
            name, equals, raw = part.partition("=")
            if not equals:
                raise ValueError(part)
            dtype_info(name.strip(), where="ini convergence_rtol")
            result[name.strip()] = float(raw)
        return result
    except CaseError:
        raise
    except ValueError:
        raise CaseError(
            f"cannot read {text!r}; write one number, or dtype=number pairs like 'float16=0.02 float32=1e-5'",
            field="ini convergence_rtol",
        ) from None


def resolve(
    dtype: str,
    *,
    ini_rtol: Mapping[str, float] | None = None,
    case: Any = None,
    marker: Any = None,
    exact: bool = False,
    case_name: str | None = None,
) -> Tolerance:
    """The tolerance of one snapshot: dtype default < ini < case < marker; ``exact`` on top."""
    dtype_info(dtype)
    tolerance = Tolerance(rtol=DEFAULT_RTOL[dtype])
    if ini_rtol and dtype in ini_rtol:
        tolerance = replace(tolerance, rtol=ini_rtol[dtype])
    for source, where in ((case, "snapshot_tolerance"), (marker, "@pytest.mark.convergence(tolerance=...)")):
        try:
            overrides = parse_overrides(source, where=where, dtype=dtype)
            tolerance = replace(tolerance, **overrides)
        except CaseError as error:
            raise CaseError(error.detail, case=case_name, dtype=dtype, field=error.field or where) from None
        except TypeError as error:
            raise CaseError(str(error), case=case_name, dtype=dtype, field=where) from None
    if exact:
        tolerance = replace(tolerance, exact=True)
    return tolerance
