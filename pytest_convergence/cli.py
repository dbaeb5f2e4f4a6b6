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
from .outcome import DEFAULT_ENGINE, ENGINES

if TYPE_CHECKING:
    from .gate.verdict import Verdict

TRACED_WEIGHTS = 64


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-convergence", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="train one spec in one dtype and explain the run")
    explain.add_argument("spec", type=Path, help="a *.convergence.toml file")
    explain.add_argument("--dtype", default=None, help="dtype to train in (default: the spec's first)")
    explain.add_argument("--engine", default=DEFAULT_ENGINE, choices=ENGINES)
    explain.add_argument("--steps", type=int, default=None, help="override the spec's step budget")
    explain.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write the loss curve here")
    compare = commands.add_parser("compare", help="the upgrade gate: compare two results files")
    compare.add_argument("old", type=Path, help="results of the old framework (--convergence-results)")
    compare.add_argument("new", type=Path, help="results of the new framework")
    compare.add_argument("--markdown", type=Path, help="also write a markdown summary (CI job summary)")
    compare.add_argument("--html", type=Path, help="also write a self-contained HTML report")
    from .gate.verdict import Thresholds

    defaults = Thresholds()
    compare.add_argument("--final-loss-threshold", type=float, default=defaults.final_loss, metavar="R")
    compare.add_argument("--steps-threshold", type=float, default=defaults.steps_to_target, metavar="R")
    compare.add_argument(
        "--slowdown-threshold",
        type=float,
        default=defaults.slowdown,
        metavar="R",
        help=f"a run is slower when its CPU time per step grew by more than R beyond both sides' "
        f"spread (default {defaults.slowdown})",
    )
    compare.add_argument(
        "--speed",
        choices=("warn", "fail", "off"),
        default=defaults.speed,
        help="what a slower run does: warn (default; a 'slower' verdict), fail, or off",
    )
    compare.add_argument(
        "--min-time",
        type=float,
        default=defaults.min_time,
        metavar="S",
        help=f"runs under S CPU seconds are too short to time: not compared (default {defaults.min_time})",
    )
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
    from .gate import upgrade

    gate = commands.add_parser(
        "gate",
        help="the upgrade gate end to end: train the suite under two TensorFlow versions, each in "
        "its own virtual environment, and compare them",
        description="Train the suite under TensorFlow OLD and NEW, each in a virtual environment with "
        "pytest-convergence installed from its own metadata, in sessions alternating old and new; "
        "merge each side's sessions and compare them. Exit code: 0 pass, 1 fail, 2 no verdict.",
    )
    gate.add_argument("old", help="the old TensorFlow version, e.g. 2.19.0")
    gate.add_argument("new", help="the new TensorFlow version, e.g. 2.21.0")
    gate.add_argument(
        "--suite", default=upgrade.DEFAULT_SUITE, help="what each session trains (default: %(default)s)"
    )
    gate.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="results, session logs, verdict.txt, verdict.md and report.html (default: gate-OLD-to-NEW)",
    )
    gate.add_argument(
        "--repeat",
        type=int,
        default=upgrade.DEFAULT_REPEAT,
        metavar="N",
        help="sessions per version, alternating old and new; their histories must be bit-identical "
        "and the gate compares the fastest timing (default: %(default)s)",
    )
    gate.add_argument(
        "--package",
        default=upgrade.DEFAULT_PACKAGE,
        help="the TensorFlow distribution pinned to OLD and NEW (default: %(default)s)",
    )
    for side in ("old", "new"):
        gate.add_argument(
            f"--keras-{side}",
            metavar="VERSION",
            help=f"also pin keras==VERSION on the {side} side (default: what pip picks)",
        )
    for side in ("old", "new"):
        gate.add_argument(
            f"--venv-{side}",
            type=Path,
            metavar="DIR",
            help=f"train the {side} side in this existing environment, installing nothing into it "
            f"(default: WORK_DIR/venv-PACKAGE-{side.upper()}, made once)",
        )
    for side in ("old", "new"):
        gate.add_argument(
            f"--results-{side}",
            type=Path,
            metavar="FILE",
            help=f"use this results file for the {side} side instead of training it (default: train)",
        )
    gate.add_argument(
        "--plot",
        action="append",
        default=[],
        metavar="CASE[DTYPE]",
        help="also draw this case's old and new loss curves into OUT/CASE-DTYPE.png, e.g. "
        "'spirals[float64]' (repeatable; default: none)",
    )
    gate.add_argument(
        "--work-dir",
        type=Path,
        default=upgrade.DEFAULT_WORK_DIR,
        metavar="DIR",
        help="environments, session results and their logs (default: %(default)s)",
    )
    gate.add_argument(
        "--constraints",
        type=Path,
        metavar="FILE",
        help="install both environments under this pip constraints file (looked up here, then in "
        "pytest-convergence's source directory), less its TensorFlow and Keras pins (default: none)",
    )
    gate.add_argument(
        "--dry-run", action="store_true", help="print every command it would run, one per line; run none"
    )
    arguments = parser.parse_args(argv)
    handlers = {"explain": _explain, "compare": _compare, "merge": _merge, "gate": _gate}
    try:
        return handlers[arguments.command](arguments)
    except ConvergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _explain(arguments: argparse.Namespace) -> int:
    from .backend import train
    from .dtypes import dtype_info
    from .spec.loader import load_spec

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
        from .gate.plot import plot_run

        plot_run(run, arguments.plot)
        print(f"plot: {arguments.plot}")
    return 0


def _compare(arguments: argparse.Namespace) -> int:
    from .gate import results
    from .gate.verdict import Thresholds, compare_results, format_table, markdown

    old, new = results.load(arguments.old), results.load(arguments.new)
    thresholds = Thresholds(
        final_loss=arguments.final_loss_threshold,
        steps_to_target=arguments.steps_threshold,
        slowdown=arguments.slowdown_threshold,
        speed=arguments.speed,
        min_time=arguments.min_time,
    )
    verdict = compare_results(old, new, thresholds)
    for line in format_table(verdict):
        print(line)
    if arguments.markdown:
        from .files import atomic_write_text

        atomic_write_text(arguments.markdown, markdown(verdict))
    if arguments.html:
        from .gate.report import write_report

        write_report(arguments.html, verdict, old, new)
        print(f"report: {arguments.html}")
    for name, png in arguments.plot:
        _plot_pair(verdict, name, Path(png))
    return 0 if verdict.passed else 1


def _merge(arguments: argparse.Namespace) -> int:
    from .gate import results

    parts = [results.load(path) for path in arguments.inputs]
    combine = results.merge_repeats if arguments.repeats else results.merge
    merged = combine(parts, [str(path) for path in arguments.inputs])
    results.write(arguments.output, merged)
    print(f"{arguments.output}: {len(merged.runs)} runs from {len(parts)} files")
    return 0


def _gate(arguments: argparse.Namespace) -> int:
    from .gate import upgrade

    options = upgrade.Options(
        old=arguments.old,
        new=arguments.new,
        suite=arguments.suite,
        out=arguments.out,
        repeat=arguments.repeat,
        package=arguments.package,
        keras_old=arguments.keras_old,
        keras_new=arguments.keras_new,
        venv_old=arguments.venv_old,
        venv_new=arguments.venv_new,
        results_old=arguments.results_old,
        results_new=arguments.results_new,
        plots=tuple(arguments.plot),
        work_dir=arguments.work_dir,
        constraints=arguments.constraints,
    )
    return upgrade.gate(options, dry_run=arguments.dry_run)


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
        from .expectations import unmet

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


def _plot_pair(verdict: Verdict, name: str, path: Path) -> None:
    from .gate.plot import plot_comparison
    from .gate.verdict import describe_versions

    rows = {f"{row.case}[{row.dtype}]": row for row in verdict.rows}
    row = rows.get(name.replace(" ", ""))
    if row is None or row.old is None or row.new is None:
        known = ", ".join(sorted(k for k, r in rows.items() if r.old is not None and r.new is not None))
        raise ConvergenceError(f"--plot {name}: no such case and dtype in both results; try one of: {known}")
    old, new = describe_versions(verdict.old_versions), describe_versions(verdict.new_versions)
    plot_comparison(row, old, new, path)
    print(f"plot: {path}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
