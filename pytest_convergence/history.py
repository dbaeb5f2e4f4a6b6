"""A history: the backend-neutral record of what one training did.

It holds what the diagnosis, the expectations, snapshots and the gate read: the loss of every
step, what moved per step and per weight, the weights and gradients at the end, the epoch metrics
and the probes' evidence. numpy and plain Python only, so every backend (TensorFlow today, JAX
and PyTorch next) fills the same record and everything after it works unchanged. Who trained it,
when and how fast is the :class:`~pytest_convergence.run.Run`'s, not the history's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False)
class History:
    """What one training did, step by step and at its end.

    ``loss`` holds the loss of every optimizer step exactly as Keras's loss tracker received it
    (in ``loss_dtype``, widened to float64 for storage). ``weights_changed`` and ``update_size``
    say, per step, whether any trainable weight moved and by how much at most: this is what
    tells a stall (nothing moves) from a plateau (weights move, the loss does not).
    """

    loss: np.ndarray
    loss_dtype: str
    variable_dtype: str
    compute_dtype: str
    weights_changed: np.ndarray
    update_size: np.ndarray
    initial_weights: dict[str, np.ndarray] = field(default_factory=dict)
    final_weights: dict[str, np.ndarray] = field(default_factory=dict)
    final_gradients: dict[str, np.ndarray] = field(default_factory=dict)
    epoch_metrics: dict[str, list[float]] = field(default_factory=dict)
    steps_per_epoch: int = 1
    target_loss: float | None = None
    """The case's target: what :attr:`converged` and :attr:`steps_to_target` measure against."""
    optimizer: str = ""
    """The optimizer, in words (class and learning rate), as a failed expectation names it."""
    dtype_mismatch: str = ""
    """Where the model did not train in the run's dtype (a case with ``allow_dtype_mismatch``):
    which layers trained in what, in words; ``variable_dtype`` and ``compute_dtype`` then say what
    trained. Empty when every layer followed the dtype."""
    step_logs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """``train_step``'s logs after every step (running means within an epoch), one column a name."""
    log_names: list[str] = field(default_factory=list)
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
    intended_update: dict[str, np.ndarray] | None = None
    """The update the optimizer means to make next, computed in float64 (diagnosis evidence)."""
    update_in_variable_dtype: dict[str, np.ndarray] | None = None
    """The same update as the variables' dtype can express it: 0 where its arithmetic underflows."""
    output_evidence: dict[str, Any] = field(default_factory=dict)
    """Facts about the final model's outputs, probed after training (:func:`probes.output_evidence`):
    whether the loss's own gradient is 0 there (saturation), whether it underflows when cast to the
    outputs' dtype, the loss recomputed in float64 (an exact fit or a rounding). Probed only where
    the diagnosis reads it (a loss ending at 0, final gradients all 0); empty elsewhere."""

    learning_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """The learning rate each epoch trained with, as the callbacks left it (read after every
    ``on_epoch_begin``); empty for a run without callbacks."""
    stopped_epoch: int | None = None
    """The epoch (1-based) a callback stopped training in, before the case's budget; None when the
    run trained every step it planned. The history then holds fewer steps than the case's."""
    stop_reason: str = ""
    """Which callback stopped training, in words (``EarlyStopping on val_loss``)."""
    restored_epoch: int | None = None
    """The epoch (1-based) whose weights a callback restored at the end
    (``EarlyStopping(restore_best_weights=True)``), when not the last: the final weights are that
    epoch's, not the last step's."""
    callbacks: list[str] = field(default_factory=list)
    """The case's callbacks, by name."""

    @property
    def learning_rate_changes(self) -> list[tuple[int, float, float]]:
        """``(epoch, before, after)`` (1-based epoch) wherever a callback changed the learning rate."""
        rates = self.learning_rate
        return [
            (index + 1, float(rates[index - 1]), float(rates[index]))
            for index in range(1, rates.shape[0])
            if rates[index] != rates[index - 1]
        ]

    @property
    def steps(self) -> int:
        return int(self.loss.shape[0])

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
