"""A picture of one run: the loss on a log scale with its events, and the weights' paths.

matplotlib is imported here only, when a plot is asked for; it is an optional dependency
(``pip install 'pytest-convergence[plot]'``).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConvergenceError
from ..files import atomic_write_bytes
from .verdict_data import RENAMED, Row

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..run import Run
    from .results import RunRecord

SHOWN_WEIGHTS = 8
OLD_STYLE: dict[str, Any] = {"color": "tab:blue", "lw": 2.4, "alpha": 0.55}
NEW_STYLE: dict[str, Any] = {"color": "tab:orange", "lw": 1.2, "alpha": 1.0}
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


def plot_comparison(row: Row, old_label: str, new_label: str, path: Path) -> None:
    """One case and dtype before and after an upgrade, drawn as the HTML report draws it, larger.

    The picture a reviewer of a gate needs: where the curves part, and whether they end apart.
    """
    _pyplot()  # the clear error when matplotlib is missing
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4), dpi=110)
    axes = figure.add_subplot()
    draw_pair(axes, row, old_label=old_label, new_label=new_label)
    axes.set_title(f"{row.case} [{row.dtype}]")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(Path(path), buffer.getvalue())


def draw_pair(axes: Axes, row: Row, *, old_label: str = "old", new_label: str = "new") -> None:
    """Old and new losses of one verdict row at their checkpoints, log-log, on ``axes``: the one
    drawing of an old-against-new comparison, for the HTML report and ``compare --plot``.

    Losses of exactly 0 are drawn as markers at the bottom edge (a log scale cannot show them),
    a NaN as an x where the curve stops; the target and the parting step as lines.
    """
    curves = []
    if row.verdict == RENAMED:
        old_name = row.old.case if row.old is not None else "?"
        curves.append((row.new, f"{new_label} (renamed from {old_name}, same history)", NEW_STYLE))
    else:
        if row.old is not None:
            curves.append((row.old, old_label, OLD_STYLE))
        if row.new is not None:
            curves.append((row.new, new_label, NEW_STYLE))
    series = [_series(record) for record, _, _ in curves if record is not None]
    positive = np.concatenate([losses[losses > 0] for _, losses in series] or [np.zeros(0)])
    target = _target(row)
    floor = float(positive.min()) / 2 if positive.size else (target or 1.0) / 10
    plotted = False
    for (record, label, style), (steps, losses) in zip(curves, series):
        assert record is not None
        described = f"{label}: {record.outcome}"
        bad = ~np.isfinite(losses)
        shown = np.isfinite(losses) & (losses > 0)
        if bad.any():
            first_bad = int(np.argmax(bad))
            described += f", NaN/Inf from step {int(steps[first_bad])}"
        text: str | None = described
        if shown.any():
            axes.plot(steps[shown], losses[shown], label=_m(described), **style)
            text = None
            plotted = True
            before = np.flatnonzero(shown[: first_bad if bad.any() else 0])
            if before.size:
                # Where the curve stops: an x at the first non-finite step, at the last finite loss.
                axes.plot(steps[first_bad], losses[before[-1]], "x", ms=7, mew=1.5, color=style["color"])
        zero = losses == 0
        if zero.any():
            axes.plot(
                steps[zero],
                np.full(int(zero.sum()), floor),
                "v",
                ms=5 if style is OLD_STYLE else 3,
                color=style["color"],
                alpha=style["alpha"],
                label=_m(text or f"{label}: loss exactly 0"),
            )
            text = None
            plotted = True
        if text is not None:
            axes.plot([], [], label=_m(text), **style)
    if not plotted:
        axes.text(0.5, 0.5, "no finite loss to plot", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
    if target is not None and plotted:
        axes.axhline(target, color="dimgray", ls=":", lw=1, label=_m(f"target {target:.3g}"))
    if row.parting_step is not None:
        axes.axvline(
            row.parting_step, color="tab:red", ls="--", lw=1, label=f"parts at step {row.parting_step}"
        )
    if plotted:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.set_xlabel("step (log)", fontsize=8)
    axes.set_ylabel("loss (log)", fontsize=8)
    axes.tick_params(which="both", labelsize=7)
    axes.grid(True, which="major", alpha=0.3)
    _legend(axes)
    _legend(axes)


def _legend(axes: Axes) -> None:
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(handles, labels, loc="best", fontsize=7, framealpha=0.85)


def _series(record: RunRecord) -> tuple[np.ndarray, np.ndarray]:
    steps = np.asarray(record.checkpoint_steps, dtype=np.float64)
    losses = np.asarray(
        [math.nan if value is None else value for value in record.checkpoint_losses], dtype=np.float64
    )
    count = min(steps.size, losses.size)
    steps, losses = steps[:count], losses[:count]
    keep = steps > 0
    return steps[keep], losses[keep]


def _target(row: Row) -> float | None:
    for record in (row.new, row.old):
        if record is not None and record.target_loss is not None:
            value = float(record.target_loss)
            if math.isfinite(value) and value > 0:
                return value
    return None


def _m(text: str) -> str:
    """matplotlib reads ``$...$`` as math; a case name's dollar signs are text."""
    return text.replace("$", r"\$")


def plot_run(run: Run, path: Path) -> None:
    plt = _pyplot()
    history = run.history
    steps = np.arange(1, history.steps + 1)
    trace = np.asarray(history.weight_trace)
    rows = 2 if trace.size else 1
    figure, axes = plt.subplots(rows, 1, figsize=(9, 3.6 * rows), sharex=True, squeeze=False)
    loss_axis = axes[0][0]
    positive = np.where(history.loss > 0, history.loss, np.nan)
    loss_axis.plot(steps, positive, lw=1.2, color="tab:blue", label=f"loss ({history.loss_dtype})")
    zero = history.loss == 0
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
        names = list(history.weight_trace_names)
        shown = np.argsort(-np.abs(trace[-1]))[:SHOWN_WEIGHTS]
        weight_axis = axes[1][0]
        for index in shown:
            weight_axis.plot(
                steps, trace[:, index], lw=1, label=names[index] if index < len(names) else str(index)
            )
        weight_axis.set_ylabel(f"weights ({history.variable_dtype})")
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
