"""What one execution of a training produced, as numpy arrays, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .callbacks import CallbackEffects


@dataclass
class StepRecord:
    """Per-step loss and updates, ``train_step``'s logs, and the per-epoch metrics (as History)."""

    loss: np.ndarray
    weights_changed: np.ndarray
    update_size: np.ndarray
    step_logs: np.ndarray
    log_names: list[str]
    loss_dtype: str
    epoch_metrics: dict[str, list[float]] = field(default_factory=dict)
    weight_trace: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """The first few flattened weights after every step (``explain``'s plot), or empty."""
    tensor_update: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Per step (rows) and trainable weight (columns): its largest change. Empty for ``fit``."""
    tensor_checksum: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Per step and trainable weight: the sum of its values in float64 (its cycles show here)."""
    gradient_zero: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    """Per step and trainable weight: whether its gradient was exactly 0 everywhere."""
    callback_effects: CallbackEffects | None = None
    """What the case's callbacks did (None without callbacks)."""


def epoch_metrics(record: StepRecord, batches_per_epoch: int) -> dict[str, list[float]]:
    """Per-epoch metrics as ``model.fit``'s History has them: the running values at each epoch's end."""
    steps = record.loss.shape[0]
    ends = list(range(batches_per_epoch - 1, steps, batches_per_epoch))
    if not ends or ends[-1] != steps - 1:
        ends.append(steps - 1)
    return {
        name: [float(record.step_logs[end, column]) for end in ends]
        for column, name in enumerate(record.log_names)
    }
