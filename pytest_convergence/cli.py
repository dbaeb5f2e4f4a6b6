"""The ``pytest-convergence`` command: explain one run of a spec file.

    pytest-convergence explain fixtures/seed-default.convergence.toml --dtype float32 --plot loss.png

It trains the case once in one dtype and prints what the training did and why (the diagnosis and
its evidence), which is the question the project grew from: "why does my model not converge in
float32?". ``--plot`` draws the loss curve (log scale) with its events and the weights' paths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConvergenceError

if TYPE_CHECKING:
    from .gate import Verdict

TRACED_WEIGHTS = 64


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-convergence", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="train one spec in one dtype and explain the run")
    explain.add_argument("spec", type=Path, help="a *.convergence.toml file")
    explain.add_argument("--dtype", default=None, help="dtype to train in (default: the spec's first)")
    explain.add_argument("--engine", default="loop", choices=("loop", "xla", "fit"))
    explain.add_argument("--steps", type=int, default=None, help="override the spec's step budget")
    explain.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write the loss curve here")
    compare = commands.add_parser("compare", help="the upgrade gate: compare two results files")
    compare.add_argument("old", type=Path, help="results of the old framework (--convergence-results)")
    compare.add_argument("new", type=Path, help="results of the new framework")
    compare.add_argument("--markdown", type=Path, help="also write a markdown summary (CI job summary)")
    compare.add_argument("--html", type=Path, help="also write a self-contained HTML report")
    compare.add_argument("--final-loss-threshold", type=float, default=0.10, metavar="R")
    compare.add_argument("--steps-threshold", type=float, default=0.10, metavar="R")
    compare.add_argument("--slowdown-threshold", type=float, default=0.25, metavar="R")
    compare.add_argument(
        "--plot",
        nargs=2,
        action="append",
        default=[],
        metavar=("CASE[DTYPE]", "PNG"),
        help="also draw one case's old and new loss curves overlaid, e.g. 'seed-default[float16]' "
        "seed.png (repeatable)",
    )
    merge = commands.add_parser("merge", help="merge results files of several jobs into one")
    merge.add_argument("output", type=Path)
    merge.add_argument("inputs", type=Path, nargs="+")
    merge.add_argument(
        "--repeats",
        action="store_true",
        help="the inputs are the same suite trained in separate sessions: check the histories are "
        "bit-identical and pool the timings (the gate then compares the fastest)",
    )
    arguments = parser.parse_args(argv)
    handlers = {"explain": _explain, "compare": _compare, "merge": _merge}
    try:
        return handlers[arguments.command](arguments)
    except ConvergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _explain(arguments: argparse.Namespace) -> int:
    from .dtypes import dtype_info
    from .engine import train
    from .spec import load_spec

    spec = load_spec(arguments.spec)
    dtype = arguments.dtype or spec.dtypes[0]
    dtype_info(dtype, where="--dtype")
    case = spec.case.with_(steps=arguments.steps, epochs=None) if arguments.steps is not None else spec.case
    run = train(
        case, dtype, arguments.engine, trace_weights=TRACED_WEIGHTS if arguments.engine != "fit" else 0
    )
    for line in describe_run(run):
        print(line)
    if arguments.plot is not None:
        from .plot import plot_run

        plot_run(run, arguments.plot)
        print(f"plot: {arguments.plot}")
    return 0


def _compare(arguments: argparse.Namespace) -> int:
    from . import results
    from .gate import Thresholds, compare_results, format_table, markdown

    old, new = results.load(arguments.old), results.load(arguments.new)
    thresholds = Thresholds(
        final_loss=arguments.final_loss_threshold,
        steps_to_target=arguments.steps_threshold,
        slowdown=arguments.slowdown_threshold,
    )
    verdict = compare_results(old, new, thresholds)
    for line in format_table(verdict):
        print(line)
    if arguments.markdown:
        from .snapshot import atomic_write_text

        atomic_write_text(arguments.markdown, markdown(verdict))
    if arguments.html:
        from .report import write_report

        write_report(arguments.html, verdict, old, new)
        print(f"report: {arguments.html}")
    for name, png in arguments.plot:
        _plot_pair(verdict, name, Path(png))
    return 0 if verdict.passed else 1


def _merge(arguments: argparse.Namespace) -> int:
    from . import results

    parts = [results.load(path) for path in arguments.inputs]
    combine = results.merge_repeats if arguments.repeats else results.merge
    merged = combine(parts, [str(path) for path in arguments.inputs])
    results.write(arguments.output, merged)
    print(f"{arguments.output}: {len(merged.runs)} runs from {len(parts)} files")
    return 0


def describe_run(run: object) -> list[str]:
    """The explanation as lines of text: what ran, what happened, the evidence, the verdict."""
    from .run import Run

    assert isinstance(run, Run)
    diagnosis = run.diagnosis
    lines = [
        f"{run.case} in {run.dtype} ({run.engine} engine): {run.steps:,} steps in {run.wall_time:.1f} s "
        f"({run.steps_per_second:,.0f} steps/s)",
        f"weights in {run.variable_dtype}, loss computed in {run.loss_dtype}; optimizer {run.optimizer}",
        f"final loss {run.final_loss:.6g}{_target(run)}",
        "",
        diagnosis.describe(run.dtype),
        "",
        "evidence:",
    ]
    lines += [f"  {key}: {value}" for key, value in diagnosis.evidence.items()]
    if run.expectation is not None:
        from .checks import unmet

        problems = unmet(run, run.expectation)
        lines.append("")
        lines.append("expectation: met" if not problems else "expectation: NOT met")
        lines += [f"  - {problem}" for problem in problems]
    return lines


def _target(run: object) -> str:
    from .run import Run

    assert isinstance(run, Run)
    if run.target_loss is None:
        return ""
    first = run.steps_to_target
    verdict = "met" if run.converged else "missed"
    reached = f", first reached at step {first}" if first else ", never reached"
    return f"; target {run.target_loss:g} {verdict}{reached}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


def _plot_pair(verdict: Verdict, name: str, path: Path) -> None:
    from .gate import describe_versions
    from .plot import plot_comparison

    rows = {f"{row.case}[{row.dtype}]": row for row in verdict.rows}
    row = rows.get(name.replace(" ", ""))
    if row is None or row.old is None or row.new is None:
        known = ", ".join(sorted(k for k, r in rows.items() if r.old is not None and r.new is not None))
        raise ConvergenceError(f"--plot {name}: no such case and dtype in both results; try one of: {known}")
    old, new = describe_versions(verdict.old_versions), describe_versions(verdict.new_versions)
    plot_comparison(row.old, row.new, old, new, path)
    print(f"plot: {path}")
