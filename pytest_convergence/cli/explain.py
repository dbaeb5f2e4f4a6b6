"""``pytest-convergence explain SPEC``: train one spec file's case once, in one dtype, and print
what the training did and why (the diagnosis and its evidence); ``--plot`` draws it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConvergenceError

TRACED_WEIGHTS = 64


def run_explain(arguments: argparse.Namespace) -> int:
    from ..backend import train
    from ..dtypes import dtype_info
    from ..spec.loader import load_spec

    spec = load_spec(arguments.spec)
    dtype = arguments.dtype or spec.dtypes[0]
    dtype_info(dtype, where="--dtype")
    if arguments.plot is not None:  # before training: a bad path costs seconds, not the training
        _check_plot_path(arguments.plot)
    if dtype not in spec.dtypes:  # explain explores: train it anyway, and say so
        print(
            f"note: {arguments.spec} lists dtypes {', '.join(spec.dtypes)}, not {dtype}; training "
            f"{dtype} anyway, as asked (no expectation of the spec applies to it)",
            file=sys.stderr,
        )
    case = spec.case.with_(steps=arguments.steps, epochs=None) if arguments.steps is not None else spec.case
    run = train(
        case, dtype, arguments.engine, trace_weights=TRACED_WEIGHTS if arguments.engine != "fit" else 0
    )
    for line in describe_run(run):
        print(line)
    if arguments.plot is not None:
        from ..gate.plot import plot_run

        plot_run(run, arguments.plot)
        print(f"plot: {arguments.plot}")
    return 0


def _check_plot_path(path: Path) -> None:
    """``explain --plot``: matplotlib installed and the picture writable, checked before training."""
    from ..files import unwritable
    from ..gate.plot import _pyplot

    problem = unwritable(path)
    if problem is not None:
        raise ConvergenceError(
            f"--plot {path}: cannot write the picture: {problem}; "
            "fix: give a .png file path in a directory you can write to"
        )
    _pyplot()  # the clear "pip install 'pytest-convergence[plot]'" error, before training


def describe_run(run: object) -> list[str]:
    """The explanation as lines of text: what ran, what happened, the evidence, the verdict."""
    from ..run import Run

    assert isinstance(run, Run)
    diagnosis = run.diagnosis
    lines = [
        f"{run.case} in {run.dtype} ({run.engine} engine): {run.steps:,} steps in {run.wall_time:.1f} s "
        f"({run.steps_per_second:,.0f} steps/s)",
        f"weights in {run.variable_dtype}, loss computed in {run.loss_dtype}; optimizer {run.optimizer}",
        f"final loss {run.final_loss:.6g}{_target(run)}",
        *([f"dtype mismatch (allowed by the case): {run.dtype_mismatch}"] if run.dtype_mismatch else []),
        "",
        diagnosis.describe(run.dtype),
        *[f"{title}: {text}" for title, text in diagnosis.story_parts()[1:]],
        "",
        "evidence:",
    ]
    for key, value in diagnosis.evidence.items():
        if key == "weights":  # one line per weight, not one long list of dicts
            lines.append("  weights:")
            lines += [
                "    " + ", ".join(f"{name}: {v}" for name, v in weight.items() if v is not None)
                for weight in value
            ]
        else:
            lines.append(f"  {key}: {value}")
    if run.expectation is not None:
        from ..diagnosis.expectations import unmet

        problems = unmet(run.history, run.expectation, run.diagnosis)
        lines.append("")
        lines.append("expectation: met" if not problems else "expectation: NOT met")
        lines += [f"  - {problem}" for problem in problems]
    return lines


def _target(run: object) -> str:
    from ..run import Run

    assert isinstance(run, Run)
    if run.target_loss is None:
        return ""
    first = run.steps_to_target
    verdict = "met" if run.converged else "missed"
    reached = f", first reached at step {first}" if first else ", never reached"
    return f"; target {run.target_loss:g} {verdict}{reached}"
