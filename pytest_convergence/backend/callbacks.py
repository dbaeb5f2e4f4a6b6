"""A case's Keras callbacks: made fresh for each run, and driven as ``fit`` drives them.

Both engines call them through Keras's own ``CallbackList``, built with the arguments ``fit``
gives it (a ``History`` added, no progress bar, ``epochs`` and ``steps`` per epoch), so each
callback's ``model`` and ``params`` are what ``fit`` sets. ``fit`` takes the list as it is;
the ``loop`` engine runs the compiled loop for one epoch between two epoch hooks, or for one
step between two batch hooks when a callback overrides one (slower: a call of the loop a step).

An :class:`Effects` callback, last in the list, records what the callbacks did, the same way
under both engines: the learning rate each epoch trained with, and whether a callback set the
weights back to an earlier epoch's (``EarlyStopping(restore_best_weights=True)``).
"""

from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..case import CALLBACK_FIX, Case
from ..errors import CaseError, first_line
from .keras_adapter import Flavour

BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")
IMPORTABLE_CONFIG = ("schedule",)
"""Config keys whose string value names an importable function (a spec file's
``LearningRateScheduler`` schedule: ``"package.module:function"``)."""


def make_callbacks(flavour: Flavour, case: Case, dtype: str) -> list[Any]:
    """Fresh callback objects for one run of ``case``: a factory called, a dict built, an object
    deep-copied (its counters and best weights start as the user gave them, in every dtype)."""
    keras = flavour.keras
    made = []
    for index, entry in enumerate(case.callbacks):
        where = f"callbacks[{index}]"
        try:
            if isinstance(entry, str):
                callback = _resolve(keras, entry, case, dtype, where)()
            elif isinstance(entry, Mapping):
                config = {
                    key: _resolve(keras, value, case, dtype, f"{where}.config.{key}", module=None)
                    if key in IMPORTABLE_CONFIG and isinstance(value, str)
                    else value
                    for key, value in dict(entry.get("config") or {}).items()
                }
                callback = _resolve(keras, entry["class_name"], case, dtype, where)(**config)
            elif callable(entry):
                callback = entry()
            else:
                callback = copy.deepcopy(entry)
        except CaseError:
            raise
        except Exception as error:
            raise CaseError(
                f"the callback could not be made: {type(error).__name__}: {first_line(error)}",
                case=case.name,
                dtype=dtype,
                field=where,
                fix="give a zero-argument factory (a class or a lambda) that returns a fresh callback "
                "for each run; each dtype's run needs its own callback",
            ) from None
        if not isinstance(callback, keras.callbacks.Callback):
            raise CaseError(
                f"expected a keras.callbacks.Callback, got {type(callback).__name__}",
                case=case.name,
                dtype=dtype,
                field=where,
                fix=CALLBACK_FIX,
            )
        made.append(callback)
    return made


def _resolve(keras: Any, name: str, case: Case, dtype: str, where: str, module: Any = "keras") -> Any:
    """``"package.module:Name"`` imported, or a class of ``keras.callbacks`` by name."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise CaseError(
                f"cannot import {name!r}: {first_line(error)}",
                case=case.name,
                dtype=dtype,
                field=where,
                fix="name an importable object as package.module:Name, with its package on the path",
            ) from None
    found = getattr(keras.callbacks, name, None) if module else None
    if not isinstance(found, type):
        known = [n for n in dir(keras.callbacks) if isinstance(getattr(keras.callbacks, n), type)]
        close = difflib.get_close_matches(name, known, n=1)
        raise CaseError(
            f"Keras has no callback class {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            case=case.name,
            dtype=dtype,
            field=where,
            fix='for your own callback give "package.module:Name", or use a Python case',
        )
    return found


def overrides_batch_hooks(flavour: Flavour, callback: Any) -> bool:
    """Whether ``fit`` would call this callback after every batch (Keras 2 asks the callback)."""
    asks = getattr(callback, "_implements_train_batch_hooks", None)
    if callable(asks):
        return bool(asks())
    base = flavour.keras.callbacks.Callback
    return any(getattr(type(callback), hook, None) is not getattr(base, hook) for hook in BATCH_HOOKS)


@dataclass
class CallbackEffects:
    """What a run's callbacks did, read back by the engine for the History."""

    learning_rate: list[float] = field(default_factory=list)
    """The learning rate each epoch trained with (read after every ``on_epoch_begin``)."""
    epochs_begun: int = 0
    restored_epoch: int | None = None
    """The epoch (1-based) whose weights a callback set back at the end, when not the last one."""
    stop_reason: str = ""


def effects_callback(flavour: Flavour, user_callbacks: list[Any]) -> tuple[Any, CallbackEffects]:
    """The recording callback (last in the list) and the record it fills."""
    keras = flavour.keras
    effects = CallbackEffects()

    class Effects(keras.callbacks.Callback):  # type: ignore[name-defined]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            effects.epochs_begun = epoch + 1
            effects.learning_rate.append(_learning_rate(self.model))

        def on_train_end(self, logs: Any = None) -> None:
            for callback in user_callbacks:
                epoch = _restored_epoch(self.model, callback)
                if epoch is not None and epoch != effects.epochs_begun:
                    effects.restored_epoch = epoch
                if getattr(callback, "stopped_epoch", 0) and not effects.stop_reason:
                    monitor = getattr(callback, "monitor", "")
                    effects.stop_reason = f"{type(callback).__name__}" + (f" on {monitor}" if monitor else "")

    return Effects(), effects


def _learning_rate(model: Any) -> float:
    try:
        return float(np.asarray(model.optimizer.learning_rate))
    except Exception:  # a schedule object (Keras 2) or no optimizer: not a number per epoch
        return float("nan")


def _restored_epoch(model: Any, callback: Any) -> int | None:
    """The 1-based epoch whose weights the model holds, when ``callback`` kept best weights and the
    model holds exactly them (``EarlyStopping(restore_best_weights=True)`` in either Keras)."""
    best = getattr(callback, "best_weights", None)
    if not getattr(callback, "restore_best_weights", False) or best is None:
        return None
    now = model.get_weights()
    if len(now) != len(best) or not all(np.array_equal(a, b) for a, b in zip(now, best)):
        return None
    epoch = getattr(callback, "best_epoch", None)
    return int(epoch) + 1 if epoch is not None else None


class CallbackDriver:
    """Keras's ``CallbackList`` of a run's callbacks, made as ``fit`` makes it, for the loop engine."""

    def __init__(self, flavour: Flavour, model: Any, case: Case, callbacks: list[Any]) -> None:
        self.model = model
        recorder, self.effects = effects_callback(flavour, callbacks)
        self.list = flavour.keras.callbacks.CallbackList(
            [*callbacks, recorder],
            add_history=True,
            add_progbar=False,
            model=model,
            verbose=0,
            epochs=case.total_epochs,
            steps=case.batches_per_epoch,
        )
        self.batch_level = any(overrides_batch_hooks(flavour, c) for c in callbacks)
        """Whether a callback wants every batch: then the loop runs one step per call."""

    def history(self) -> dict[str, list[float]]:
        """History's record, as ``fit`` returns it (with what callbacks added: ``learning_rate``)."""
        found = [c for c in self.list.callbacks if type(c).__name__ == "History"]
        recorded = found[0].history if found else {}
        return {key: [float(v) for v in values] for key, values in recorded.items()}


def callback_fields(record: Any, case: Case) -> dict[str, Any]:
    """The History fields that say what the callbacks did (none without callbacks)."""
    effects: CallbackEffects | None = record.callback_effects
    if effects is None:
        return {}
    ran = int(record.loss.shape[0])
    stopped = None
    reason = ""
    if ran < case.total_steps:
        stopped = -(-ran // case.batches_per_epoch)
        reason = effects.stop_reason
        if not reason:
            reason = (
                "TerminateOnNaN" if not np.isfinite(record.loss[-1]) else "a callback (model.stop_training)"
            )
    return {
        "learning_rate": np.asarray(effects.learning_rate, np.float64),
        "stopped_epoch": stopped,
        "stop_reason": reason,
        "restored_epoch": effects.restored_epoch,
        "callbacks": [_describe(entry) for entry in case.callbacks],
    }


def _describe(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        return str(entry["class_name"])
    if isinstance(entry, type) or callable(entry):
        return getattr(entry, "__name__", type(entry).__name__)
    return type(entry).__name__
