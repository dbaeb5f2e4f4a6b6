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
    return "; ".join(parts)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The numeric fields two fingerprints disagree on, in words (empty: the same machine)."""
    lines = []
    for key in NUMERIC_KEYS:
        if key in old and key in new and old[key] != new[key]:
            lines.append(f"{key.replace('_', ' ')}: {_show(old[key])} -> {_show(new[key])}")
    return lines


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)
