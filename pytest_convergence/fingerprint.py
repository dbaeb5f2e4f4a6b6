"""What a history's last bits and a run's speed depend on, beyond the framework's version.

Two machines with the same TensorFlow wheel can give histories that part in the last place: on
the catalogue, an Intel CPU with AVX-512 and an AMD EPYC with AVX2 agreed bit for bit in float16
and float64 and parted in float32, bfloat16 and mixed_float16, where TensorFlow hands matmuls to
oneDNN, whose kernels are chosen at run time from the CPU's instruction sets (docs/machine-settings.md).
``platform.processor()`` says ``x86_64`` for both, so the fingerprint reads the CPU itself: vendor,
model, the instruction sets that pick kernels, cores and threads, how TensorFlow was built and
configured (oneDNN, XLA, CUDA) and the GPU when there is one. Results and snapshot headers carry
it; the gate compares speed only between equal fingerprints and says when numbers come from
machines that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from typing import Any

KERNEL_ISA = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "asimdhp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)
"""Instruction sets whose presence makes oneDNN, Eigen or XLA pick another kernel (x86 and Arm)."""

NUMERIC_KEYS = (
    "cpu_vendor",
    "cpu_model",
    "isa",
    "cpus",
    "intra_op_threads",
    "inter_op_threads",
    "onednn",
    "xla_flags",
    "cuda_build",
    "gpus",
)
"""The fields the fingerprint's id hashes: what changes a history's bits or a run's speed. The
node name and the Python patch version do not, so two CI runners of one type share an id."""

TF32_ON, TF32_OFF = "on", "off"
TF32_CPU = "off (cpu: no TF32)"
"""The TF32 state of a process that computes on the CPU, whatever its framework's setting."""
PRECISION_KEYS = ("tf32", "keras_backend", "accelerator", "determinism")
"""The Keras backend's precision state (``backend/precision.py``): which framework, which device,
whether float32 matmuls run in TF32, whether kernels are deterministic. Each changes a history's
bits; each is hashed where it differs from a CPU TensorFlow process's (:data:`PRECISION_DEFAULTS`),
so every fingerprint recorded before these fields existed (CPU TensorFlow) keeps its id, and a GPU
run with TF32 on gets another id than one with TF32 off. ``tf32_setting`` (the framework's own
switches, verbatim) is recorded, not hashed: on a CPU it changes nothing."""
PRECISION_DEFAULTS = {
    "tf32": TF32_CPU,
    "keras_backend": "tensorflow",
    "accelerator": "cpu",
    "determinism": "off",
}
TF32_MOVE = 3e-4
"""How far TF32 moves a float32 matmul, relative: the median over random matmuls (2x1 to
256-deep) with their inputs rounded to a 10-bit mantissa as TF32 rounds them (numpy, 2.9e-4 to
4.5e-4)."""
TF32_DTYPES = ("float32",)
"""The dtypes whose matmuls TF32 computes: a mixed policy computes in float16 or bfloat16."""


@lru_cache(maxsize=1)
def cpu_description() -> dict[str, Any]:
    """Vendor, model and kernel-relevant instruction sets, read from the operating system."""
    vendor, model = "", ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value
                elif key in ("model name", "Model") and not model:
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if not model and sys.platform == "darwin":
        model = run_quietly(["sysctl", "-n", "machdep.cpu.brand_string"])
        vendor = vendor or ("Apple" if "Apple" in model else "")
    return {
        "cpu_vendor": vendor or platform.machine(),
        "cpu_model": model or platform.processor() or platform.machine(),
        "isa": [name for name in KERNEL_ISA if name in flags],
        "cpus": os.cpu_count() or 0,
        "usable_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 0,
    }


def run_quietly(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fingerprint(framework: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CPU, the framework's build and threads (``framework``: the backend's
    ``framework_description()``, absent where nothing trained), the node and system for people,
    and ``id``: a hash of the numeric fields."""
    description: dict[str, Any] = {
        "node": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        **cpu_description(),
        **(framework or {}),
    }
    description["id"] = fingerprint_id(description)
    return description


def fingerprint_id(description: dict[str, Any]) -> str:
    numeric = {key: description.get(key) for key in NUMERIC_KEYS}
    numeric.update(
        (key, description[key])
        for key in PRECISION_KEYS
        if key in description and description[key] != PRECISION_DEFAULTS[key]
    )
    return hashlib.sha256(json.dumps(numeric, sort_keys=True).encode()).hexdigest()[:12]


def summary(description: dict[str, Any]) -> str:
    """One line for a snapshot header or a report: which CPU, which kernels, which threads."""
    isa = " ".join(description.get("isa", [])) or "no listed ISA extensions"
    parts = [
        f"{description.get('cpu_model', '?')} ({description.get('cpu_vendor', '?')})",
        isa,
        f"{description.get('cpus', '?')} cpus",
    ]
    if "intra_op_threads" in description:
        threads = description["intra_op_threads"] or "default"
        parts.append(f"intra-op threads {threads}")
        parts.append(f"oneDNN {description.get('onednn', '?')}")
        if description.get("xla_flags"):
            parts.append(f"TF_XLA_FLAGS={description['xla_flags']}")
        if description.get("cuda_build") not in (None, "no"):
            parts.append(str(description["cuda_build"]))
        parts += list(description.get("gpus", []))
    return "; ".join(parts + precision_parts(description))


def precision_parts(description: dict[str, Any]) -> list[str]:
    """The precision fields that differ from a CPU TensorFlow process's, as parts of
    :func:`summary` (``keras backend jax``, the GPU, ``TF32 on``, ``determinism on (...)``): a CPU
    TensorFlow run's line stays as it was before they were recorded."""
    parts = []
    backend = description.get("keras_backend", PRECISION_DEFAULTS["keras_backend"])
    if backend != PRECISION_DEFAULTS["keras_backend"]:
        parts.append(f"keras backend {backend}")
    accelerator = str(description.get("accelerator", "cpu"))
    gpus = [str(gpu) for gpu in description.get("gpus", [])]
    if accelerator != "cpu" and not any(gpu.startswith(accelerator) for gpu in gpus):
        parts.append(accelerator)
    if description.get("tf32", TF32_CPU) != TF32_CPU:
        parts.append(f"TF32 {description['tf32']}")
    if description.get("determinism", "off") != "off":
        parts.append(f"determinism {description['determinism']}")
    return parts


def tf32_state(description: dict[str, Any]) -> str | None:
    """A fingerprint's TF32 state: recorded, or :data:`TF32_CPU` for a TensorFlow fingerprint
    from before it was recorded that lists no GPU; None where it cannot be known (a GPU's, or a
    file of several machines)."""
    if "tf32" in description:
        return str(description["tf32"])
    if description.get("gpus") == [] and "merged" not in description:
        return TF32_CPU
    return None


def tf32_in_summary(line: str) -> str | None:
    """The TF32 state a :func:`summary` line (a run's ``machine``) shows: its ``TF32 ...`` part;
    :data:`TF32_CPU` where it shows none and describes a CPU (TensorFlow's threads and no GPU, or
    another backend); None where it cannot tell (empty, or a GPU's line from before TF32 was
    recorded)."""
    parts = line.split("; ") if line else []
    for part in parts:
        if part.startswith("TF32 "):
            return part[len("TF32 ") :]
    described = any(p.startswith(("intra-op threads", "keras backend ")) for p in parts)
    return TF32_CPU if described and "(compute " not in line else None


def run_tf32(machine_line: str, machine: dict[str, Any]) -> str | None:
    """One run's TF32 state: its own ``machine`` line's where it names one (a session may train
    several backends, each with its own), else its results file's fingerprint's, else what its
    line implies."""
    parts = machine_line.split("; ") if machine_line else []
    named = next((p[len("TF32 ") :] for p in parts if p.startswith("TF32 ")), None)
    return named or tf32_state(machine) or tf32_in_summary(machine_line)


def tf32_differs(old: str | None, new: str | None) -> bool:
    """Whether two TF32 states compute float32 matmuls differently: one has TF32 on and the other
    not (``off`` on a GPU and a CPU's compute alike)."""
    if old is None or new is None or old == new:
        return False
    return old.startswith(TF32_ON) != new.startswith(TF32_ON) or TF32_ON in (old, new)


def tf32_difference(old: str | None, new: str | None) -> str | None:
    """The sentence that names a TF32 difference first (None: none): what it does to a float32
    history and how to compare without it."""
    if not tf32_differs(old, new):
        return None
    return (
        f"TF32 differs: {new} (new) vs {old} (old): {tf32_effect()}; train both sides with "
        "--convergence-tf32=off to compare float32 histories"
    )


def tf32_effect() -> str:
    """What TF32 does to a float32 history, in words."""
    from .tolerance import DEFAULT_RTOL

    return (
        f"float32 matmuls on the GPU round their inputs to a 10-bit mantissa, ~{_power(TF32_MOVE)} "
        f"relative per matmul, above float32's default rtol {_power(DEFAULT_RTOL['float32'])}"
    )


def _power(value: float) -> str:
    """``3e-4``, not ``3e-04`` or ``0.0003``."""
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The numeric fields two fingerprints disagree on, in words (empty: the same machine); the
    precision fields first, TF32 first of all (a fingerprint recorded before them: as a CPU
    TensorFlow process's where :func:`tf32_state` can tell)."""
    lines = []
    before, after = tf32_state(old), tf32_state(new)
    if before is not None and after is not None and before != after:
        lines.append(f"TF32 {before} -> {after}")
    for key in PRECISION_KEYS[1:]:
        a, b = _precision_value(old, key), _precision_value(new, key)
        if a is not None and b is not None and a != b:
            lines.append(f"{key.replace('_', ' ')}: {_show(a)} -> {_show(b)}")
    for key in NUMERIC_KEYS:
        if key in old and key in new and old[key] != new[key]:
            lines.append(f"{key.replace('_', ' ')}: {_show(old[key])} -> {_show(new[key])}")
    return lines


def _precision_value(description: dict[str, Any], key: str) -> Any:
    """A precision field, or a CPU TensorFlow process's value for a fingerprint recorded before
    the field existed; None where it cannot be known."""
    if key in description:
        return description[key]
    if "tf32" not in description and tf32_state(description) == TF32_CPU:
        return PRECISION_DEFAULTS[key]
    return None


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)
