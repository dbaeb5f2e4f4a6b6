"""The ``fit`` engine: plain ``model.fit``, the slow reference the other engines are held to.

A callback records, after every batch, the step's loss (through :class:`LossCapture`'s variable),
whether any weight moved and by how much, and ``train_step``'s logs; History gives the per-epoch
metrics as users read them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..case import Case
from .batches import fit_arguments
from .callbacks import effects_callback
from .capture import LossCapture
from .keras_adapter import Flavour
from .record import StepRecord


def execute_fit(
    flavour: Flavour,
    model: Any,
    case: Case,
    capture: LossCapture,
    pinned_loss_dtype: str | None,
    callbacks: list[Any] | None = None,
) -> StepRecord:
    """Train with ``model.fit`` for the case's steps and record every step.

    ``callbacks`` (the run's own, :func:`.callbacks.make_callbacks`) go to ``fit`` before the
    recorders, which then see what they did; a callback that stops training early leaves a
    record of the steps that ran.
    """
    keras = flavour.keras
    steps = case.total_steps
    capture.into_variable()
    trainables = model.trainable_weights
    losses = np.empty(steps, np.float64)
    changed = np.zeros(steps, bool)
    updates = np.zeros(steps, np.float64)
    step_logs: list[list[float]] = []
    names: list[str] = []
    state: dict[str, Any] = {"step": 0, "previous": [np.array(w.numpy()) for w in trainables]}

    sync_state = getattr(model, "jax_state_sync", None)

    class Recorder(keras.callbacks.Callback):  # type: ignore[name-defined]
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            step = state["step"]
            losses[step] = capture.latest()
            if sync_state is not None:  # JAX's fit holds the weights outside the variables
                sync_state()
            now = [np.array(w.numpy()) for w in trainables]
            deltas = [
                np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0)
                for a, b in zip(now, state["previous"])
            ]
            updates[step] = max(deltas, default=0.0)
            changed[step] = any(
                not np.array_equal(a, b, equal_nan=False) for a, b in zip(now, state["previous"])
            )
            state["previous"] = now
            logs = logs or {}
            if not names:
                names.extend(sorted(logs))
            step_logs.append([float(logs[name]) for name in names])
            state["step"] = step + 1
            if state["step"] >= steps:
                model.stop_training = True

    effects_recorder, effects = effects_callback(flavour, callbacks) if callbacks else (None, None)
    history = model.fit(
        # x, y, batch_size, shuffle, weights, steps_per_epoch, validation: as the case gives them
        **fit_arguments(flavour, model, case),
        epochs=case.total_epochs,
        verbose=0,
        callbacks=[*callbacks, effects_recorder, Recorder()] if callbacks else [Recorder()],
    )
    ran = state["step"]
    record = StepRecord(
        loss=losses[:ran],
        weights_changed=changed[:ran],
        update_size=updates[:ran],
        step_logs=np.array(step_logs, np.float64).reshape(ran, len(names)),
        log_names=names,
        loss_dtype=pinned_loss_dtype or capture.loss_dtype(),
        callback_effects=effects,
    )
    record.epoch_metrics = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return record
