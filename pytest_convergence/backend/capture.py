"""The per-step loss, exactly as Keras's loss tracker receives it, captured without changing it.

``train_step`` reports the running mean over the epoch; the per-step loss is the value handed to
the tracker. One patch of ``tracker.update_state`` serves both engines: the traced loop takes the
tensor it traced, ``fit`` reads the value back through a float64 variable after each batch.
"""

from __future__ import annotations

from typing import Any

from .keras_adapter import Flavour


class LossCapture:
    """Installed once on a compiled model; adds no arithmetic to the step."""

    def __init__(self, flavour: Flavour, model: Any) -> None:
        tracker = flavour.loss_tracker(model)
        if tracker is None:
            raise flavour.unsupported("the compiled model's loss tracker")
        self.tensors: list[Any] = []
        """Every value the tracker was handed while tracing (the loop uses the last)."""
        self.variable: Any = None
        """When set (the ``fit`` engine), each step's loss is also assigned to it as float64."""
        self._tf = flavour.tf
        original = tracker.update_state

        def update_state(values: Any, *args: Any, **kwargs: Any) -> Any:
            self.tensors.append(values)
            if self.variable is not None:
                self.variable.assign(self._tf.cast(values, self._tf.float64))
            return original(values, *args, **kwargs)

        tracker.update_state = update_state

    def into_variable(self) -> Any:
        """A float64 variable that holds the latest step's loss from now on (for ``fit``)."""
        if self.variable is None:
            self.variable = self._tf.Variable(0.0, dtype=self._tf.float64, trainable=False)
        return self.variable

    def loss_dtype(self, default: str = "float32") -> str:
        """The dtype the loss was computed in, read from what the tracker received."""
        return str(self.tensors[-1].dtype.name) if self.tensors else default
