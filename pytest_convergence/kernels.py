"""Other CPUs' real kernels, run on this one: oneDNN's instruction-set cap and TensorFlow's rewrites.

A float32 history's last bits follow the kernels oneDNN picks from the CPU's instruction sets, and
whether TensorFlow's oneDNN graph rewrites run (on by default only on CPUs with AVX512_VNNI,
AVX512_BF16, AVX_VNNI or AMX). Both can be set on one machine before TensorFlow is imported:
``ONEDNN_MAX_CPU_ISA`` caps the instruction sets oneDNN may use, ``TF_ENABLE_ONEDNN_OPTS`` turns
the rewrites on or off. A capped run computes with the very kernels an older CPU runs: another
machine, not a simulation (docs/machines.md measures what each moved in the catalogue).

A *variant* names a kind of CPU, ``avx2`` for one: the cap, and the rewrites as TensorFlow would
decide on such a CPU (off below AVX512_VNNI). ``avx2/rewrites`` and ``avx2/no-rewrites`` say it
explicitly, ``/flip`` the other way from TensorFlow's choice. ``native`` is this CPU as it is, and
``native/flip`` this CPU with the rewrites the other way. TensorFlow-free: the plugin sets the environment in
``pytest_configure``, before any import of TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConvergenceError

LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("sse41", frozenset({"sse4_1"})),
    ("avx", frozenset({"avx"})),
    ("avx2", frozenset({"avx2", "fma"})),
    ("avx512_core", frozenset({"avx512f", "avx512bw", "avx512vl"})),
    ("avx512_core_vnni", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_vnni"})),
    ("avx512_core_bf16", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"})),
    ("avx512_core_amx", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile"})),
)
"""oneDNN's x86 instruction-set levels, oldest first, with the CPU flags (``/proc/cpuinfo``) each
needs; the name in capitals is ``ONEDNN_MAX_CPU_ISA``'s value."""
REWRITES_FROM = "avx512_core_vnni"
"""TensorFlow's default turns the oneDNN rewrites on from this level (``DefaultOneDnnPolicy``)."""
FLOAT16 = ("float16", "mixed_float16")
BFLOAT16 = ("bfloat16", "mixed_bfloat16")
BFLOAT16_FROM = "avx512_core"
"""With the rewrites on, TensorFlow sends half-precision work to oneDNN's kernels for the CPU it
reads (not the cap); capped, oneDNN lacks them and the process aborts. Measured on an Intel Xeon with
AVX-512 and AMX: float16 and mixed_float16 under every cap below it (avx512_core, avx512_core_bf16:
25 runs of the catalogue); bfloat16 runs from avx512_core (oneDNN's bfloat16 kernels start there) and
aborted under AVX2 (the issue's AMD EPYC). A cap artefact: a real CPU of that level runs them in
Eigen, as a capped run without the rewrites does (docs/machines.md)."""
NATIVE = "native"
ENVIRONMENT = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")
"""The settings a variant owns: a session under a variant sets both or clears them."""


@dataclass(frozen=True)
class Variant:
    """One kind of CPU's kernels: a oneDNN cap (None: this CPU's own) and the rewrites."""

    name: str
    cap: str | None
    rewrites: bool | None
    """True/False: set; None: as TensorFlow decides on this CPU (``native``)."""
    below_native: bool = True
    """The cap is below this CPU's own level (a cap at its level changes no kernel)."""

    def environment(self) -> dict[str, str]:
        """The variables to set before TensorFlow is imported (``native`` sets none)."""
        env: dict[str, str] = {}
        if self.cap is not None:
            env["ONEDNN_MAX_CPU_ISA"] = self.cap.upper()
        if self.rewrites is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = "1" if self.rewrites else "0"
        return env

    def cannot_run(self, dtype: str) -> str | None:
        """Why this variant cannot train ``dtype`` on this machine, or None when it can."""
        if self.cap is None or not (self.below_native and self.rewrites):
            return None
        if dtype in FLOAT16 or (dtype in BFLOAT16 and _rank(self.cap) < _rank(BFLOAT16_FROM)):
            return (
                f"the {self.name} kernel variant cannot run {dtype} here: with TensorFlow's oneDNN "
                "rewrites on, the capped oneDNN has no half-precision kernel for what TensorFlow sends "
                "it, and the process aborts; the same level without the rewrites runs it, as a real "
                "CPU of that level does"
            )
        return None


def _rank(level: str) -> int:
    return [name for name, _ in LEVELS].index(level)


def native_level(flags: set[str] | frozenset[str]) -> str | None:
    """The highest oneDNN level this CPU's flags allow, or None (not x86, or flags unknown)."""
    allowed = [name for name, needs in LEVELS if needs <= flags]
    return allowed[-1] if allowed else None


def parse(text: str, flags: set[str] | frozenset[str]) -> Variant:
    """A variant from its name (``avx2``, ``avx2/rewrites``, ``native``), checked against this CPU."""
    name = text.strip().lower()
    level, _, rewrites_text = name.partition("/")
    if rewrites_text not in ("", "rewrites", "no-rewrites", "flip"):
        raise ConvergenceError(
            f"--convergence-kernels: unknown rewrites setting {rewrites_text!r} in {text!r}\n"
            "  fix: name a level, optionally followed by /rewrites, /no-rewrites or /flip (the other way "
            "from what TensorFlow does on such a CPU): avx2/no-rewrites, native/flip"
        )
    explicit = None if rewrites_text in ("", "flip") else rewrites_text == "rewrites"
    top = native_level(flags)
    if level == NATIVE:
        if rewrites_text == "flip":
            explicit = not (top is not None and _rank(top) >= _rank(REWRITES_FROM))
        return Variant(name, None, explicit)
    known = [n for n, _ in LEVELS]
    if level not in known:
        raise ConvergenceError(
            f"--convergence-kernels: unknown kernel variant {text!r}\n"
            f"  fix: one of {NATIVE}, {', '.join(known)} (optionally /rewrites, /no-rewrites or /flip); "
            f"this CPU allows: {', '.join(allowed(flags)) or 'none'}"
        )
    if top is None or _rank(level) > _rank(top):
        raise ConvergenceError(
            f"--convergence-kernels: {level} is above this CPU's {top or 'unknown'} instruction sets: "
            "oneDNN cannot use instructions the CPU lacks\n"
            f"  fix: one of {', '.join(allowed(flags)) or NATIVE}"
        )
    as_such_a_cpu = _rank(level) >= _rank(REWRITES_FROM)
    rewrites = (
        explicit
        if explicit is not None
        else (not as_such_a_cpu if rewrites_text == "flip" else as_such_a_cpu)
    )
    return Variant(name, level, rewrites, below_native=_rank(level) < _rank(top))


def allowed(flags: set[str] | frozenset[str]) -> list[str]:
    """Every level this CPU can be capped to, oldest first."""
    top = native_level(flags)
    return [] if top is None else [name for name, _ in LEVELS[: _rank(top) + 1]]


def others(flags: set[str] | frozenset[str]) -> list[str]:
    """Other CPUs' variants this CPU can run, most different first: each older level below its
    own, the oldest first, then this CPU's own level with the rewrites flipped."""
    top = native_level(flags)
    if top is None:
        return []
    below = allowed(flags)[:-1]
    flipped = f"{top}/no-rewrites" if _rank(top) >= _rank(REWRITES_FROM) else f"{top}/rewrites"
    return [*below, flipped]


def current() -> Variant | None:
    """The variant this process was started under (``PYTEST_CONVERGENCE_KERNELS``), if any."""
    name = os.environ.get("PYTEST_CONVERGENCE_KERNELS")
    if not name:
        return None
    from .fingerprint import cpu_description

    return parse(name, frozenset(cpu_description()["isa"]))


def apply(variant: Variant, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Set the variant's environment (and its name, for pytest-xdist's workers and the records);
    refused once TensorFlow is imported, since oneDNN reads the cap once."""
    import sys

    wanted = variant.environment()
    changes = {k for k in ENVIRONMENT if environ.get(k) != wanted.get(k)}
    if changes and "tensorflow" in sys.modules:
        raise ConvergenceError(
            f"--convergence-kernels={variant.name}: TensorFlow is already imported in this process, and "
            "oneDNN reads its instruction-set cap once\n  fix: start a fresh process (pytest in a new "
            "shell; pytester.runpytest_subprocess in a test)"
        )
    for key in ENVIRONMENT:
        if key in wanted:
            environ[key] = wanted[key]
        else:
            environ.pop(key, None)
    environ["PYTEST_CONVERGENCE_KERNELS"] = variant.name
