"""The plugin's own ``tf.function``\\ s, traced without TensorFlow's retracing warning.

Every run builds a new model, so each function the plugin traces for it (the probes, the training
loop) is traced once per run by design. TensorFlow counts traces by the Python code they come
from, not by the ``tf.function`` object, so from the fifth run of a session on it logs "N out of
the last N calls to <function ...> triggered tf.function retracing" for each of them, and a
failing test's report carries those lines as if the user's code retraced. This silences exactly
that warning for exactly the functions made here; the user's own functions, and every other
warning, still speak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OMIT_WARNING_ATTRIBUTE = "_omit_frequent_tracing_warning"
"""The attribute of TensorFlow's ``Function`` (2.15 to 2.21) its frequent-tracing detector reads;
where a TensorFlow lacks it, the function is traced as usual, warning included."""


def quiet_function(tf: Any, function: Callable[..., Any], **options: Any) -> Any:
    """``tf.function(function, **options)``, without the frequent-retracing warning."""
    traced = tf.function(function, **options)
    if hasattr(traced, OMIT_WARNING_ATTRIBUTE):
        setattr(traced, OMIT_WARNING_ATTRIBUTE, True)
    return traced
