"""A run: one training of one case in one dtype with one engine, and what it recorded.

Everything here is numpy and plain Python, so the diagnosis, the assertions, snapshots and
reports work on a run without TensorFlow (and would work for another framework unchanged).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .anatomy import Anatomy
    from .case import Expectation
    from .diagnosis.rules import Diagnosis


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
    optimizer_ran: str = ""
    """The optimizer's class with its module path and its config (:func:`probes.what_ran`)."""
    loss_ran: str = ""
    """The loss's class (each output's) with its module path and its config."""
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
    tensor_names: list[str] = field(default_factory=list)
    """The trainable weights, in the order of the columns of the per-weight arrays below."""
    tensor_update: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Per step (rows) and trainable weight (columns): its largest change that step, in its own
    dtype. What tells "the kernel froze at step N, the bias still moves". Empty for ``fit``."""
    tensor_checksum: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Per step and trainable weight: the sum of its values in float64; a weight's cycle
    (its values repeating) shows as a cycle of its column. Empty for ``fit``."""
    gradient_zero: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    """Per step and trainable weight: whether the gradient the optimizer received was exactly 0
    everywhere. Empty for ``fit`` (and where the optimizer's variables could not be matched)."""
    output_evidence: dict[str, Any] = field(default_factory=dict)
    """Facts about the final model's outputs, probed after training (:func:`probes.output_evidence`):
    whether the loss's own gradient is 0 there (saturation), whether it underflows when cast to the
    outputs' dtype, the loss recomputed in float64 (an exact fit or a rounding)."""
    wall_times: list[float] = field(default_factory=list)
    """Every timing of this run when it was trained more than once; the gate uses the fastest."""
    cpu_time: float = math.nan
    """The process's CPU seconds while training (all threads): the gate's speed measure."""
    cpu_times: list[float] = field(default_factory=list)
    perturbation: str = ""
    """``simulate seed 1`` when trained as another machine might (``--convergence-simulate-machine``)."""
    calibrated_tolerance: str = ""
    """The tolerance calibration measured (this session's ``--convergence-calibrate``, or the one
    the run's snapshot carries), as :meth:`Tolerance.to_text`; widens the configured one."""
    dtype_mismatch: str = ""
    """Where the model did not train in ``dtype`` (a case with ``allow_dtype_mismatch``): which
    layers trained in what, in words; ``variable_dtype`` and ``compute_dtype`` then say what
    trained. Empty when every layer followed the dtype."""
    anatomy: Anatomy | None = None
    """Its first steps taken apart (:mod:`.anatomy`), when the session writes a results file:
    what the gate compares to name the first stage of a step that differs between versions."""
    set_back: dict[str, str] = field(default_factory=dict)
    """What a gate's replay set back to the old version's (``loss_dtype``, ``initial_weights``...)."""
    batch_plan: Any = field(default=None, repr=False)
    """The batches it trained on, drawn once (this process only): its anatomy reuses them, as
    drawing 100,000 epochs again would cost Keras 2 as much as the training."""
    model: Any = field(default=None, repr=False)
    """The trained Keras model, in this process only (never stored in snapshots or results):
    ``run.model.evaluate(x, y)`` or ``run.model.predict(x)`` without rebuilding it by hand."""

    @property
    def trained_dtype(self) -> str:
        """The dtype as it trained: ``dtype`` itself, or for a mismatch what the variables and
        computation really were (``float32``, ``mixed_float16``, ``float32/float16``)."""
        if not self.dtype_mismatch:
            return self.dtype
        from .dtypes import DTYPES

        for name, info in DTYPES.items():
            if (info.variable_dtype, info.compute_dtype) == (self.variable_dtype, self.compute_dtype):
                return name
        return f"{self.variable_dtype}/{self.compute_dtype}"

    @property
    def steps(self) -> int:
        return int(self.loss.shape[0])

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_time if self.wall_time > 0 else float("inf")

    @property
    def judged_on_epochs(self) -> bool:
        """Whether final loss, ``converged`` and steps-to-target read the epoch means (as
        ``fit``'s History has them): for runs of several batches an epoch. A single batch's loss
        says little about the model there (a last, partial batch can be exactly 0)."""
        return self.steps_per_epoch > 1 and len(self.epoch_metrics.get("loss", ())) > 0

    @property
    def epoch_loss(self) -> np.ndarray:
        """History's ``loss``: each epoch's mean of its batches' losses (the last epoch may be partial)."""
        return np.asarray(self.epoch_metrics.get("loss", []), dtype=np.float64)

    @property
    def final_loss(self) -> float:
        """The last epoch's mean loss for multi-batch runs, else the last step's loss."""
        return float(self.epoch_loss[-1]) if self.judged_on_epochs else float(self.loss[-1])

    @property
    def final_step_loss(self) -> float:
        """The loss of the very last optimizer step, whatever the batching."""
        return float(self.loss[-1])

    @property
    def final_loss_kind(self) -> str:
        """What :attr:`final_loss` is, in words: ``epoch mean`` or ``step``."""
        return "epoch mean" if self.judged_on_epochs else "step"

    def metric(self, name: str) -> float:
        """The final value of a metric History records (``val_accuracy``, ``loss``...).

        Raises ``KeyError`` naming the metrics this run recorded.
        """
        values = self.epoch_metrics.get(name)
        if not values:
            recorded = ", ".join(sorted(self.epoch_metrics)) or "none"
            raise KeyError(f"no metric {name!r} was recorded; this run recorded: {recorded}")
        return float(values[-1])

    @functools.cached_property
    def diagnosis(self) -> Diagnosis:
        from .diagnosis.rules import diagnose

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
        """First step (1-based) whose loss is at or below ``target``; None if never.

        For multi-batch runs, the last step of the first epoch whose mean is at or below it.
        """
        if self.judged_on_epochs:
            hits = np.flatnonzero(self.epoch_loss <= target)
            return min((int(hits[0]) + 1) * self.steps_per_epoch, self.steps) if hits.size else None
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
        from .diagnosis.expectations import check_expectation

        check_expectation(self, Expectation.from_kwargs(expectation))
        return self

    def check_declared_expectation(self) -> Run:
        """Assert the expectation the case declared for this dtype, if any."""
        __tracebackhide__ = True
        from .diagnosis.expectations import check_expectation

        if self.expectation is not None:
            check_expectation(self, self.expectation)
        return self

    def __repr__(self) -> str:
        return (
            f"Run(case={self.case!r}, dtype={self.dtype!r}, engine={self.engine!r}, "
            f"steps={self.steps}, final_loss={self.final_loss:.6g}, outcome={self.outcome!r})"
        )
