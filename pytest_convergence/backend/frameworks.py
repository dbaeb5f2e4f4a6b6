"""The one place TensorFlow is imported, quietly and on first use, and what a run records of it.

Everything in ``backend/`` reaches TensorFlow and Keras through :func:`import_keras`, so the rest of
the package (and ``pytest`` without ``--convergence``) never pays for ``import tensorflow``.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

from ..errors import TensorFlowMissingError
from . import keras_adapter

INSTALL_HINT = (
    "pytest-convergence trains with TensorFlow, which is not installed here; "
    "install it with: pip install 'pytest-convergence[tensorflow]' "
    "(or 'pytest-convergence[tensorflow-cpu]' for the CPU-only wheel)"
)


def import_keras() -> tuple[Any, keras_adapter.Flavour]:
    """Import TensorFlow and Keras on first use, quietly, with an actionable error if missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as error:
        raise TensorFlowMissingError(f"{INSTALL_HINT} ({error})") from error
    return tf, keras_adapter.load(tf)


def import_tensorflow() -> tuple[Any, Any]:
    """TensorFlow and the Keras module ``tf.keras`` means here (Keras 2 or 3)."""
    tf, flavour = import_keras()
    return tf, flavour.keras


def enable_op_determinism() -> None:
    """Make TensorFlow use deterministic kernels, or raise where an op has none.

    Off by default: on CPU every op these engines use is already deterministic (the
    ``--convergence-repeat`` check shows it), and the switch is process-wide. Switch it on
    (ini ``convergence_op_determinism = true``) on GPUs, where some kernels are not.
    """
    tf, _ = import_tensorflow()
    tf.config.experimental.enable_op_determinism()


def framework_versions() -> dict[str, str]:
    """Versions a run depends on; recorded in every run so results say what produced them."""
    from ..fingerprint import fingerprint, summary

    tf, flavour = import_keras()
    description = fingerprint()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        **flavour.describe(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "machine": summary(description),
        "fingerprint": description["id"],
    }
