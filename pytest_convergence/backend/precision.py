"""TF32 and determinism as the Keras backend's framework runs them now: read for the fingerprint,
pinned for a session (``--convergence-tf32``).

On NVIDIA GPUs from Ampere on (compute capability 8.0), a framework may compute float32 matmuls
(and convolutions) in TF32: each input rounded to a 10-bit mantissa, products summed in float32.
That moves a float32 matmul by about 3e-4 relative (the median over random matmuls, inputs rounded
as TF32 rounds them, measured with numpy), three times float32's default snapshot rtol of 1e-4.
The three backends default differently: TensorFlow allows TF32
(``tf.config.experimental.tensor_float_32_execution_enabled()``), JAX's default matmul precision
uses it on such GPUs (``jax_default_matmul_precision`` None), PyTorch computes matmuls in float32
(``torch.backends.cuda.matmul.allow_tf32`` False) but convolutions in TF32
(``torch.backends.cudnn.allow_tf32`` True). ``NVIDIA_TF32_OVERRIDE=0`` turns it off under all three.

On a CPU TF32 does not apply: the setting is recorded (``tf32_setting``) and the state reads
:data:`..fingerprint.TF32_CPU`, so that a CPU run and a GPU run with TF32 on differ in the
fingerprint and two CPU runs do not, whatever their setting.

No function here imports a framework it was not asked to: :func:`describe` reads only frameworks
already imported (it returns nothing for one that is not), :func:`pin_tf32` imports the one it pins.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from typing import Any

from ..errors import TensorFlowMissingError
from ..fingerprint import TF32_CPU, TF32_OFF, TF32_ON

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends whose TF32 and determinism this module reads and pins."""
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
TF32_FIRST_COMPUTE = (8, 0)
"""The first compute capability with TF32 tensor cores (Ampere)."""
OFF_SETTING = {"jax": "highest"}
ON_SETTING = {"jax": "tensorfloat32"}
ENVIRONMENT = "PYTEST_CONVERGENCE_TF32"
"""Where :func:`pin_tf32` leaves what it pinned (``on``/``off``) for the processes this one starts
later (a backend's own process, :mod:`.elsewhere`), which pin it with
:func:`pin_from_environment` before their first training."""


def backend_name(backend: str | None = None) -> str:
    """``backend`` in Keras's spelling (``torch``, not ``pytorch``), or, when None, the backend
    Keras runs in this process: Keras's own answer once it is imported, else the one it will load
    (:func:`..backends.configured`: ``KERAS_BACKEND``, ``keras.json``, TensorFlow)."""
    from ..backends import ALIASES, configured

    if backend:
        name = backend.strip().lower()
        return ALIASES.get(name, name)
    keras = sys.modules.get("keras")
    with contextlib.suppress(Exception):  # a half-imported or Keras 2 module: fall through
        if keras is not None:
            return backend_name(str(keras.backend.backend()))
    return configured()


def describe(backend: str | None = None) -> dict[str, Any]:
    """The fingerprint's precision fields for ``backend`` (None: the one Keras runs) as its
    framework runs now: ``keras_backend``, ``accelerator`` (``cpu``, or the GPU's name and compute
    capability), ``tf32`` (``on``, ``off``, or why it does not apply), ``tf32_setting`` (the
    framework's own switches, verbatim), ``determinism`` (``off``, or ``on (...)`` naming the
    switch). Empty where the framework is not imported: reading it must not cost its import."""
    name = backend_name(backend)
    module = sys.modules.get(MODULES.get(name, ""))
    if module is None:
        return {}
    reader = {"tensorflow": _describe_tensorflow, "jax": _describe_jax, "torch": _describe_torch}[name]
    with warnings.catch_warnings():  # a deprecated switch read is not the user's warning
        warnings.simplefilter("ignore")
        return {"keras_backend": name, **reader(module)}


def pin_tf32(backend: str | None, on: bool) -> dict[str, Any]:
    """Switch TF32 on or off for this process's ``backend`` (None: the one Keras runs), importing
    its framework; returns :func:`describe` afterwards. A backend other than TensorFlow, JAX and
    PyTorch has no TF32 to pin: nothing is done. Call it before the first training: a function
    compiled before may keep the precision it was compiled with."""
    name = backend_name(backend)
    os.environ[ENVIRONMENT] = "on" if on else "off"
    if name not in BACKENDS:
        return {}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as frameworks.import_keras imports it
    try:
        module = importlib.import_module(MODULES[name])
    except ImportError as error:
        raise TensorFlowMissingError(
            f"cannot pin TF32 on the {name} backend: {name} is not installed here ({error}); "
            f"install it, or train on another backend"
        ) from error
    if name == "tensorflow":
        module.config.experimental.enable_tensor_float_32_execution(on)
    elif name == "jax":
        module.config.update("jax_default_matmul_precision", ON_SETTING["jax"] if on else OFF_SETTING["jax"])
    else:
        _pin_torch(module, on)
    return describe(name)


def pin_from_environment(backend: str | None = None) -> dict[str, Any]:
    """In a process a session started (a backend's own): pin TF32 as the session did
    (:data:`ENVIRONMENT`), before the first training; nothing where it pinned nothing."""
    value = os.environ.get(ENVIRONMENT, "").strip().lower()
    if value not in ("on", "off"):
        return {}
    return pin_tf32(backend, value == "on")


def _pin_torch(torch: Any, on: bool) -> None:
    """PyTorch's legacy switches, which both its APIs read back; where the new per-backend API
    (``fp32_precision``) was already set, PyTorch refuses a mix, so that one is used."""
    try:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
        torch.set_float32_matmul_precision("high" if on else "highest")
    except RuntimeError:  # "you have used mix of the legacy and new APIs"
        value = "tf32" if on else "ieee"
        torch.backends.cuda.matmul.fp32_precision = value
        torch.backends.cudnn.conv.fp32_precision = value
        torch.backends.cudnn.rnn.fp32_precision = value


# ----------------------------------------------------------------------------- readers
def _gpu_tf32(enabled: bool, compute: tuple[int, ...] | None) -> str:
    """The state on a GPU: TF32 needs Ampere or newer, and ``NVIDIA_TF32_OVERRIDE=0`` vetoes it."""
    if compute is not None and tuple(compute) < TF32_FIRST_COMPUTE:
        return f"{TF32_OFF} (GPU without TF32: compute {'.'.join(map(str, compute))})"
    if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
        return f"{TF32_OFF} (NVIDIA_TF32_OVERRIDE=0)" if enabled else TF32_OFF
    return TF32_ON if enabled else TF32_OFF


def _gpu_name(name: str, compute: tuple[int, ...] | None) -> str:
    return f"{name} (compute {'.'.join(map(str, compute))})" if compute else name


def _override() -> str:
    value = os.environ.get("NVIDIA_TF32_OVERRIDE")
    return f"; NVIDIA_TF32_OVERRIDE={value}" if value is not None else ""


def _describe_tensorflow(tf: Any) -> dict[str, Any]:
    enabled = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    accelerator, compute = "cpu", None
    with contextlib.suppress(Exception):
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            capability = details.get("compute_capability")
            compute = tuple(int(part) for part in capability) if capability else None
            accelerator = _gpu_name(str(details.get("device_name", gpus[0].name)), compute)
    determinism = []
    with contextlib.suppress(Exception):  # a private module, loaded with TensorFlow (2.9 on)
        if sys.modules["tensorflow.python.framework.config"].is_op_determinism_enabled():
            determinism.append("op determinism")
    if os.environ.get("TF_DETERMINISTIC_OPS", "").lower() in ("1", "true"):
        determinism.append(f"TF_DETERMINISTIC_OPS={os.environ['TF_DETERMINISTIC_OPS']}")
    return {
        "accelerator": accelerator,
        "tf32": TF32_CPU if accelerator == "cpu" else _gpu_tf32(enabled, compute),
        "tf32_setting": f"tensor_float_32_execution_enabled={enabled}{_override()}",
        "determinism": f"on ({', '.join(determinism)})" if determinism else "off",
    }


JAX_TF32 = {
    None: True,
    "default": True,
    "fastest": True,
    "bfloat16": True,
    "high": True,
    "tensorfloat32": True,
}
"""``jax_default_matmul_precision`` values under which XLA computes float32 dots in TF32 on an
Ampere or newer GPU (``bfloat16`` is DEFAULT's other name and ``high`` HIGH's, both TF32 there);
``highest``/``float32`` compute in float32, ``bfloat16_3x`` in three bfloat16 passes."""


def _describe_jax(jax: Any) -> dict[str, Any]:
    setting = jax.config.jax_default_matmul_precision
    accelerator, compute, platform = "cpu", None, "cpu"
    with contextlib.suppress(Exception):
        device = jax.devices()[0]
        platform = str(device.platform)
        if platform != "cpu":
            capability = getattr(device, "compute_capability", None)
            with contextlib.suppress(ValueError, TypeError):
                compute = tuple(int(part) for part in str(capability).split(".")) if capability else None
            accelerator = _gpu_name(str(getattr(device, "device_kind", platform)), compute)
    if platform == "cpu":
        tf32 = TF32_CPU
    elif platform in ("gpu", "cuda"):
        tf32 = _gpu_tf32(JAX_TF32.get(setting, False), compute)
        if setting == "bfloat16_3x":
            tf32 = f"{TF32_OFF} (bfloat16_3x: three bfloat16 passes)"
    else:  # a TPU computes float32 dots in bfloat16 passes, ROCm has no TF32 switch here
        tf32 = f"n/a ({platform})"
    flags = os.environ.get("XLA_FLAGS", "")
    deterministic = [
        flag for flag in flags.split() if "deterministic" in flag and not flag.endswith("=false")
    ]
    shown = "default" if setting is None else setting
    return {
        "accelerator": accelerator,
        "tf32": tf32,
        "tf32_setting": f"jax_default_matmul_precision={shown}{_override()}",
        "determinism": f"on (XLA_FLAGS {' '.join(deterministic)})" if deterministic else "off",
    }


def _torch_read(read: Any) -> Any:
    """One PyTorch switch, or None where PyTorch refuses to read it (a mix of its two APIs)."""
    try:
        return read()
    except RuntimeError:
        return None


def _describe_torch(torch: Any) -> dict[str, Any]:
    backends = torch.backends
    allowed = _torch_read(lambda: backends.cuda.matmul.allow_tf32)
    if allowed is None:  # set through the new API: read it there
        allowed = getattr(backends.cuda.matmul, "fp32_precision", "none") == "tf32"
    precision = _torch_read(torch.get_float32_matmul_precision)
    matmul = bool(allowed) or precision in ("high", "medium")
    conv = _torch_read(lambda: backends.cudnn.allow_tf32)
    if conv is None:
        conv = getattr(getattr(backends.cudnn, "conv", None), "fp32_precision", "none") == "tf32"
    conv = bool(conv)
    accelerator, compute, cuda = "cpu", None, False
    with contextlib.suppress(Exception):
        if torch.cuda.is_available():
            cuda = True
            capability = torch.cuda.get_device_capability(0)
            compute = tuple(int(part) for part in capability) if capability else None
            accelerator = _gpu_name(str(torch.cuda.get_device_name(0)), compute)
    if not cuda:
        tf32 = TF32_CPU
    elif getattr(torch.version, "hip", None):
        tf32 = "n/a (rocm)"
    else:
        tf32 = _gpu_tf32(matmul or conv, compute)
        if tf32 == TF32_ON and not matmul:
            tf32 = f"{TF32_ON} (convolutions only)"
        elif tf32 == TF32_ON and not conv:
            tf32 = f"{TF32_ON} (matmuls only)"
    determinism = []
    if _torch_read(torch.are_deterministic_algorithms_enabled):
        determinism.append("torch.use_deterministic_algorithms")
    if backends.cudnn.deterministic:
        determinism.append("cudnn.deterministic")
    state = f"on ({', '.join(determinism)})" if determinism else "off"
    if getattr(backends.cudnn, "benchmark", False):
        state += " (cudnn.benchmark: algorithms chosen by timing)"
    return {
        "accelerator": accelerator,
        "tf32": tf32,
        "tf32_setting": (
            f"cuda.matmul.allow_tf32={bool(allowed)}, float32_matmul_precision={precision}, "
            f"cudnn.allow_tf32={conv}{_override()}"
        ),
        "determinism": state,
    }
