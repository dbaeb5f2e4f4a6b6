"""A run: one training of one case in one dtype with one engine, and what it recorded.

Everything here is numpy and plain Python, so the diagnosis, the assertions, snapshots and
reports work on a run without TensorFlow (and would work for another framework unchanged).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .case import Expectation
    from .diagnosis import Diagnosis


@dataclass(eq=False)
class Run:
    """The record of one training.

    ``loss`` holds the loss of every optimizer step exactly as Keras's loss tracker received it
    (in ``loss_dtype``, widened to float64 for storage). ``weights_changed`` and ``update_size``
    say, per step, whether any trainable weight moved and by how much at most: this is what
    tells a stall (nothing moves) from a plateau (weights move, the loss does not).
    """

    case: str
    dtype: str
    engine: str
    seed: int
    loss: np.ndarray
    loss_dtype: str
    variable_dtype: str
    compute_dtype: str
    weights_changed: np.ndarray
    update_size: np.ndarray
    initial_weights: dict[str, np.ndarray]
    final_weights: dict[str, np.ndarray]
    final_gradients: dict[str, np.ndarray]
    epoch_metrics: dict[str, list[float]]
    steps_per_epoch: int
    target_loss: float | None
    wall_time: float
    trace_time: float
    versions: dict[str, str]
    optimizer: str = ""
    expectation: Expectation | None = None
    snapshot_tolerance: Any = None
    step_logs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """``train_step``'s logs after every step (running means within an epoch), one column a name."""
    log_names: list[str] = field(default_factory=list)
    intended_update: dict[str, np.ndarray] | None = None
    """The update the optimizer means to make next, computed in float64 (diagnosis evidence)."""
    update_in_variable_dtype: dict[str, np.ndarray] | None = None
    """The same update as the variables' dtype can express it: 0 where its arithmetic underflows."""
    weight_trace: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """The first few flattened weights after every step, for ``explain``'s plot (else empty)."""
    weight_trace_names: list[str] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    """Every timing of this run when it was trained more than once; the gate uses the fastest."""

    @property
    def steps(self) -> int:
        return int(self.loss.shape[0])

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_time if self.wall_time > 0 else float("inf")

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @functools.cached_property
    def diagnosis(self) -> Diagnosis:
        from .diagnosis import diagnose

        return diagnose(self)

    @property
    def outcome(self) -> str:
        return self.diagnosis.outcome.value

    @property
    def converged(self) -> bool:
        """Whether the final loss is at or below the case's target (False without a target)."""
        if self.target_loss is None:
            return False
        return bool(np.isfinite(self.final_loss) and self.final_loss <= self.target_loss)

    def steps_to(self, target: float) -> int | None:
        """First step (1-based) whose loss is at or below ``target``; None if never."""
        hits = np.flatnonzero(self.loss <= target)
        return int(hits[0]) + 1 if hits.size else None

    @property
    def steps_to_target(self) -> int | None:
        return None if self.target_loss is None else self.steps_to(self.target_loss)

    def expect(self, **expectation: Any) -> Run:
        """Assert what this run must achieve; fails with a message explaining why it did not.

        Keywords are those of :class:`Expectation` (``converged``, ``outcome``,
        ``final_loss_below``, ``steps_to_target_at_most``). Returns the run for chaining.
        """
        __tracebackhide__ = True
        from .case import Expectation
        from .expectations import check_expectation

        check_expectation(self, Expectation.from_kwargs(expectation))
        return self

    def check_declared_expectation(self) -> Run:
        """Assert the expectation the case declared for this dtype, if any."""
        __tracebackhide__ = True
        from .expectations import check_expectation

        if self.expectation is not None:
            check_expectation(self, self.expectation)
        return self

    def __repr__(self) -> str:
        return (
            f"Run(case={self.case!r}, dtype={self.dtype!r}, engine={self.engine!r}, "
            f"steps={self.steps}, final_loss={self.final_loss:.6g}, outcome={self.outcome!r})"
        )
