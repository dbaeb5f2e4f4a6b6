"""The only place TensorFlow and Keras are imported: the Keras 2/3 adapter, building, batches, the
``loop``, ``xla`` and ``fit`` engines and the probes. Importing this package imports neither; the
first :func:`train` (or :func:`import_keras`) does."""

from __future__ import annotations

from .engine import Training, train
from .frameworks import enable_op_determinism, framework_versions, import_keras, import_tensorflow

__all__ = [
    "Training",
    "enable_op_determinism",
    "framework_versions",
    "import_keras",
    "import_tensorflow",
    "train",
]
