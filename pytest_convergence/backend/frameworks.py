"""The one place TensorFlow is imported, quietly and on first use, and what a run records of it.

Everything in ``backend/`` reaches TensorFlow and Keras through :func:`import_keras`, so the rest of
the package (and ``pytest`` without ``--convergence``) never pays for ``import tensorflow``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import sys
from typing import Any

import numpy as np

from ..errors import TensorFlowMissingError
from ..fingerprint import fingerprint, run_quietly, summary
from . import keras_adapter

INSTALL_HINT = (
    "pytest-convergence trains with TensorFlow, which is not installed here; "
    "install it with: pip install 'pytest-convergence[tensorflow]' "
    "(or 'pytest-convergence[tensorflow-cpu]' for the CPU-only wheel)"
)


def import_keras() -> tuple[Any, keras_adapter.Flavour]:
    """Import TensorFlow and Keras on first use, quietly, with an actionable error if missing.

    On Keras 3's JAX or PyTorch backend (``KERAS_BACKEND``), Keras alone: TensorFlow is returned
    when installed (Keras itself loads it for ``tf.data``), else None."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..backends import configured

    if configured() != "tensorflow":
        return _import_portable_keras()
    try:
        import tensorflow as tf
    except ImportError as error:
        raise TensorFlowMissingError(f"{INSTALL_HINT} ({error})") from error
    return tf, keras_adapter.load(tf)


def _import_portable_keras() -> tuple[Any, keras_adapter.Flavour]:
    from ..backends import MODULE, configured, not_installed
    from . import portable

    backend = configured()
    if backend in MODULE and not importlib.util.find_spec(MODULE[backend]):
        raise TensorFlowMissingError(str(not_installed(backend, "KERAS_BACKEND")))
    if backend == "jax":
        exact_jax_dtypes()
    try:
        import keras
    except ImportError as error:
        raise TensorFlowMissingError(
            f"KERAS_BACKEND={backend} needs Keras 3: pip install 'pytest-convergence[{backend}]' ({error})"
        ) from error
    if int(keras.__version__.split(".")[0]) < 3:
        raise TensorFlowMissingError(
            f"KERAS_BACKEND={backend} needs Keras 3, and Keras {keras.__version__} is installed: "
            "pip install 'keras>=3'"
        )
    return sys.modules.get("tensorflow"), portable.load(keras)


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


NO_EXCESS_PRECISION = "--xla_allow_excess_precision=false"


def exact_jax_dtypes() -> None:
    """Make XLA round every float16 and bfloat16 result to its dtype, before JAX starts its backend.

    XLA's default (``xla_allow_excess_precision``) lets it skip a rounding where a value stays in
    float32 inside a fusion, and where it does differs between compilations: measured on
    seed-default in bfloat16, the scanned loop saw weight changes of 0.003 that the bfloat16
    weights never made (fit: stalled, loop: plateau) until this was set; with it both stall. A
    flag set by the user in ``XLA_FLAGS`` is left as it is."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_allow_excess_precision" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {NO_EXCESS_PRECISION}".strip()


def framework_versions() -> dict[str, str]:
    """Versions a run depends on; recorded in every run so results say what produced them."""
    tf, flavour = import_keras()
    description = machine_fingerprint()
    frameworks = {"tensorflow": tf.__version__} if tf is not None and not flavour.portable else {}
    backend = flavour.backend()
    if backend != "tensorflow":
        frameworks[backend] = str(sys.modules[backend].__version__)
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        **frameworks,
        **flavour.describe(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "machine": summary(description),
        "fingerprint": description["id"],
    }


def onednn_state() -> str:
    """Whether TensorFlow's oneDNN graph rewrites run, as TensorFlow itself decided.

    Not a guess from the platform: on Linux x86 TensorFlow turns them on by default only for CPUs
    with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (``DefaultOneDnnPolicy``), and that choice moves
    every float32 history (docs/machine-settings.md). Float32 matmuls reach oneDNN's sgemm through
    Eigen either way, unless ``TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=0``.
    """
    enabled: bool | None = None
    with contextlib.suppress(Exception):  # a private module: absent in some builds
        from tensorflow.python.util import _pywrap_util_port

        enabled = bool(_pywrap_util_port.IsMklEnabled())
    state = "unknown" if enabled is None else "rewrites on" if enabled else "rewrites off"
    settings = [
        f"{name}={os.environ[name]}"
        for name in (
            "TF_ENABLE_ONEDNN_OPTS",
            "ONEDNN_MAX_CPU_ISA",
            "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL",
        )
        if name in os.environ
    ]
    return state + (f" ({', '.join(settings)})" if settings else "")


def framework_description() -> dict[str, Any]:
    """TensorFlow's build and threading as this process runs it; empty before TensorFlow is imported.

    Read only when TensorFlow is already loaded, so that a session that trained nothing (or the
    plugin switched off) never pays for the import.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return {}
    build: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # a build without the record: say nothing rather than guess
        build = dict(tf.sysconfig.get_build_info())
    threading = tf.config.threading
    description: dict[str, Any] = {
        "intra_op_threads": threading.get_intra_op_parallelism_threads(),  # 0: one per core
        "inter_op_threads": threading.get_inter_op_parallelism_threads(),
        "onednn": onednn_state(),
        "xla_flags": os.environ.get("TF_XLA_FLAGS", ""),
        "cuda_build": (
            f"CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')}"
            if build.get("is_cuda_build")
            else "no"
        ),
        "gpus": _gpus(tf),
    }
    return description


def _gpus(tf: Any) -> list[str]:
    try:
        devices = tf.config.list_physical_devices("GPU")
    except Exception:
        return []
    names = []
    for device in devices:
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception:
            details = {}
        capability = details.get("compute_capability")
        name = details.get("device_name", device.name)
        names.append(f"{name} (compute {'.'.join(map(str, capability))})" if capability else str(name))
    if names:
        driver = run_quietly(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        if driver:
            names = [f"{name}, driver {driver.splitlines()[0]}" for name in names]
    return names


def machine_fingerprint(backend: str | None = None) -> dict[str, Any]:
    """This process's fingerprint with TensorFlow's part (:mod:`..fingerprint`) and the precision
    state of ``backend`` (None: the one Keras runs here) as :func:`.precision.describe` reads it:
    TF32, determinism, the accelerator (nothing where that framework is not imported)."""
    from .precision import describe

    return fingerprint({**framework_description(), **describe(backend)})
