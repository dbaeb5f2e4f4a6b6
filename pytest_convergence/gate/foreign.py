"""Runs of the same cases trained elsewhere, read back from their results files for calibration.

``pytest-convergence kernels`` (or a CI job on another machine) writes one results file per kernel
variant; ``--convergence-calibrate-with`` hands them to the calibration, which measures each run's
spread, event moves and outcomes across those real kernels beside its one-ulp reruns. A record is
turned into the trajectory its snapshot would hold, so the spread is what a snapshot comparison
on that machine would need.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from ..diagnosis.margins import alternatives_in
from ..errors import ResultsError
from ..snapshot.calibrate import ForeignRun
from ..snapshot.format import EVENT_KEYS, Trajectory
from .results import RunRecord, load

SUMMARY_KIND = "norm mean min max"


def trajectory_of(record: RunRecord) -> Trajectory:
    """The snapshot content of a recorded run (its header aside)."""
    evidence = record.evidence
    events = {k: int(v) for k, v in evidence.items() if k in EVENT_KEYS and v is not None}
    if record.target_loss is not None:
        events["steps_to_target"] = -1 if record.steps_to_target is None else int(record.steps_to_target)
    weights: dict[str, tuple[str, np.ndarray]] = {}
    for key, values in record.final_weights.items():
        kind = SUMMARY_KIND if key.endswith(" " + SUMMARY_KIND) else "values"
        weights[key.removesuffix(" " + kind)] = (kind, np.asarray(values, np.float64))
    return Trajectory(
        header={},
        outcome=record.outcome,
        borderline=tuple(o for o in alternatives_in(evidence) if o != record.outcome),
        events=events,
        final_loss=float(record.final_loss),
        weights=weights,
        steps=np.asarray(record.checkpoint_steps, np.int64),
        losses=np.asarray(record.checkpoint_losses, np.float64),
        loss_dtype=record.loss_dtype,
        weight_dtype=record.variable_dtype,
    )


def foreign_runs(patterns: str, rootpath: Path) -> dict[tuple[str, str], list[ForeignRun]]:
    """Every finished run of the results files ``patterns`` names (comma-separated paths or
    globs, relative to ``rootpath``), by case and dtype; each file's name is its variant."""
    found: dict[tuple[str, str], list[ForeignRun]] = {}
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        paths = sorted(glob.glob(str(rootpath / pattern))) or [str(rootpath / pattern)]
        for path in map(Path, paths):
            if not path.is_file():
                raise ResultsError(
                    f"--convergence-calibrate-with: no results file matches {pattern!r}\n  fix: write one "
                    "per kernel variant first (pytest-convergence kernels --out DIR -- ...), then name "
                    f"DIR/*.json; paths are relative to {rootpath}"
                )
            for record in load(path).runs:
                # a failed test's run counts too: another variant failing its snapshot is the point
                if record.checkpoint_steps and record.status != "crashed":
                    margins = {
                        m["rule"]: float(m["value"])
                        for m in record.evidence.get("margins") or []
                        if isinstance(m, dict) and isinstance(m.get("value"), (int, float))
                    }
                    found.setdefault(record.key, []).append(
                        ForeignRun(path.stem, trajectory_of(record), margins)
                    )
    return found
