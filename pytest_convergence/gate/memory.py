"""The gate's memory rule: a run whose training takes more memory than the old version's is
flagged, as a slower run is, with a warning kind of its own (``heavier``).

What is judged is what the training itself took: the host's peak resident memory above the memory
resident when training began (``host_growth_bytes``; the process's baseline, the framework
imported, dominates a small model's peak and moves with unrelated imports), and the GPU's peak
where both sides trained on one. A side is heavier when its median grew by more than the largest
of: ``growth`` of the old (5%, as Megatron-LM gates allocated bytes), the measured spread of both
sides' repeats (``--convergence-repeat=3``: with fewer than :data:`MIN_PEAKS` a side memory is
not judged, as speed is not), and ``floor`` bytes (1 MiB: allocator pages and the interpreter's
own noise). Compared only between equal machine fingerprints and numbers measured the same way
(:mod:`..backend.memory` records how).
"""

from __future__ import annotations

import numpy as np

from .results import RunRecord
from .verdict_data import FAIL, HEAVIER, PASS, Row

MIB = float(2**20)
GROWTH = 0.05
FLOOR = MIB
MIN_PEAKS = 3
"""Peaks needed on each side to know their spread, as the speed rule's timings: a single training's
growth moved by 2-14 MiB between repeats of one case here (the first training of a process takes
the most), so with fewer the rule cannot tell growth from noise."""
LIFETIME_ONLY = "ru_maxrss"
"""A host method that sees the process's lifetime peak only: its growth is a lower bound, not a
measure to compare."""


def judge(
    old: RunRecord,
    new: RunRecord,
    row: Row,
    *,
    other_machine: str,
    growth: float = GROWTH,
    floor: float = FLOOR,
    mode: str = "warn",
) -> str | None:
    """Judge the pair's memory and mark ``row``: ``warn`` sets its memory warning (and a passing
    row's verdict to ``heavier``), ``fail`` adds the reason and fails it, ``off`` does nothing.
    Returns the reason, or None where it did not grow beyond what the rule allows."""
    reason = heavier(old, new, row, other_machine=other_machine, growth=growth, floor=floor)
    if reason is None or mode == "off":
        return None
    if mode == "fail":
        row.reasons.append(reason)
        row.verdict = FAIL
    else:
        row.memory_warning = reason
        if row.verdict == PASS:
            row.verdict = HEAVIER
    return reason


def heavier(
    old: RunRecord,
    new: RunRecord,
    row: Row,
    *,
    other_machine: str,
    growth: float = GROWTH,
    floor: float = FLOOR,
) -> str | None:
    """The reason when the new run took more memory than the rule allows, else None; where it
    cannot be compared, ``row.memory_note`` says why. ``other_machine``: why the two runs' machines
    differ (as the speed rule has it), empty where they are one."""
    if other_machine:
        row.memory_note = f"not compared: {other_machine}"
        return None
    found = []
    if not old.host_growth_bytes or not new.host_growth_bytes:
        row.memory_note = "not compared: no peak memory recorded"
    elif old.memory_method != new.memory_method:
        row.memory_note = f"not compared: measured as {old.memory_method} / {new.memory_method}"
    elif old.memory_method == LIFETIME_ONLY:
        row.memory_note = "not compared: only the process's lifetime peak was measurable"
    elif min(len(old.host_growth_bytes), len(new.host_growth_bytes)) < MIN_PEAKS:
        needed = f"{MIN_PEAKS} peaks a side are needed (--convergence-repeat={MIN_PEAKS})"
        row.memory_note = f"not judged: {needed}"
    else:
        found.append(_grew("host peak growth", old.host_growth_bytes, new.host_growth_bytes, growth, floor))
    if (
        min(len(old.device_peak_bytes), len(new.device_peak_bytes)) >= MIN_PEAKS
        and old.device_memory_method == new.device_memory_method
    ):
        found.append(_grew("device peak", old.device_peak_bytes, new.device_peak_bytes, growth, floor))
    reasons = [reason for reason in found if reason]
    return "memory: " + "; ".join(reasons) if reasons else None


def _grew(label: str, old: list[float], new: list[float], growth: float, floor: float) -> str | None:
    """Whether the median of ``new`` exceeds that of ``old`` by more than the rule allows."""
    before, after = float(np.median(old)), float(np.median(new))
    spread = float(np.ptp(old) + np.ptp(new))
    allowed = {f"{growth:.0%}": growth * before, "the repeats' spread": spread, "the floor": floor}
    what, margin = max(allowed.items(), key=lambda item: item[1])
    if after - before <= margin:
        return None
    ratio = f", {after / before:.2f}x" if before > 0 else ""
    return (
        f"{label} {mib(before)} -> {mib(after)} (+{mib(after - before)}{ratio}; beyond {what}, {mib(margin)})"
    )


def mib(value: float) -> str:
    """Bytes as MiB, three significant digits (``12.3 MiB``)."""
    return f"{value / MIB:.3g} MiB"
