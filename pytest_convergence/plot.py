"""A picture of one run: the loss on a log scale with its events, and the weights' paths.

matplotlib is imported here only, when a plot is asked for; it is an optional dependency
(``pip install 'pytest-convergence[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConvergenceError

if TYPE_CHECKING:
    from .results import RunRecord
    from .run import Run

SHOWN_WEIGHTS = 8
EVENT_LABELS = {
    "first_zero_step": "loss reaches 0",
    "stall_step": "weights stop changing",
    "first_nonfinite_step": "first NaN/Inf",
    "cycle_start_step": "cycle starts",
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ConvergenceError(
            f"--plot needs matplotlib: pip install 'pytest-convergence[plot]' ({error})"
        ) from None
    return plt


def plot_comparison(old: RunRecord, new: RunRecord, old_label: str, new_label: str, path: Path) -> None:
    """One case and dtype before and after an upgrade: both checkpointed loss histories overlaid.

    The picture a reviewer of a gate needs: where the curves part, and whether they end apart.
    Losses of exactly 0 are drawn at the bottom edge, since a log scale cannot show them.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 4))
    floors = [v for r in (old, new) for v in r.checkpoint_losses if v > 0 and np.isfinite(v)]
    floor = min(floors, default=1e-30) / 2
    for record, label, style in ((old, old_label, "-"), (new, new_label, "--")):
        losses = np.asarray(record.checkpoint_losses, np.float64)
        shown = np.where(losses > 0, losses, floor)
        axis.plot(
            record.checkpoint_steps,
            shown,
            style,
            lw=1.6,
            label=f"{label}: {record.outcome}, final {record.final_loss:.4g} (loss in {record.loss_dtype})",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (log)")
    axis.set_title(f"{new.case} [{new.dtype}]")
    axis.legend(loc="best", fontsize=8)
    axis.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_run(run: Run, path: Path) -> None:
    plt = _pyplot()
    steps = np.arange(1, run.steps + 1)
    trace = np.asarray(run.extra.get("weight_trace", np.zeros((0, 0))))
    rows = 2 if trace.size else 1
    figure, axes = plt.subplots(rows, 1, figsize=(9, 3.6 * rows), sharex=True, squeeze=False)
    loss_axis = axes[0][0]
    positive = np.where(run.loss > 0, run.loss, np.nan)
    loss_axis.plot(steps, positive, lw=1.2, color="tab:blue", label=f"loss ({run.loss_dtype})")
    zero = run.loss == 0
    if zero.any():
        floor = np.nanmin(positive) if np.isfinite(np.nanmin(positive)) else 1e-30
        loss_axis.plot(
            steps[zero], np.full(zero.sum(), floor), "v", ms=3, color="tab:red", label="loss exactly 0"
        )
    loss_axis.set_yscale("log")
    loss_axis.set_xscale("log")
    loss_axis.set_ylabel("loss (log)")
    diagnosis = run.diagnosis
    for key, label in EVENT_LABELS.items():
        step = diagnosis.evidence.get(key)
        if step:
            loss_axis.axvline(step, color="tab:red", ls="--", lw=1)
            loss_axis.annotate(
                f"{label}\nstep {step}",
                (step, 0.95),
                xycoords=("data", "axes fraction"),
                ha="left",
                va="top",
                fontsize=8,
                color="tab:red",
            )
    loss_axis.set_title(f"{run.case} in {run.dtype}: {diagnosis.outcome.value}", fontsize=11)
    loss_axis.legend(loc="lower left", fontsize=8)
    loss_axis.grid(True, which="major", alpha=0.3)
    if trace.size:
        names = list(run.extra.get("weight_trace_names", []))
        shown = np.argsort(-np.abs(trace[-1]))[:SHOWN_WEIGHTS]
        weight_axis = axes[1][0]
        for index in shown:
            weight_axis.plot(
                steps, trace[:, index], lw=1, label=names[index] if index < len(names) else str(index)
            )
        weight_axis.set_ylabel(f"weights ({run.variable_dtype})")
        weight_axis.set_xlabel("step (log)")
        weight_axis.legend(loc="best", fontsize=7, ncol=2)
        weight_axis.grid(True, alpha=0.3)
    else:
        loss_axis.set_xlabel("step (log)")
    figure.text(0.01, 0.005, diagnosis.describe(run.dtype)[:160], fontsize=7, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
