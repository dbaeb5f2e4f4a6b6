"""The ``pytest-convergence`` command: what ``pytest --convergence`` leaves to the command line.

    pytest-convergence explain fixtures/seed-default.convergence.toml --dtype float32 --plot loss.png
    pytest-convergence compare results-old.json results-new.json --html report.html
    pytest-convergence merge all.json job1.json job2.json
    pytest-convergence gate 2.19.0 2.21.0

``explain`` trains one spec file's case once in one dtype and prints what the training did and why
(the diagnosis and its evidence), which is the question the project grew from: "why does my model
not converge in float32?"; ``--plot`` draws the loss curve with its events and the weights' paths.
``compare`` is the upgrade gate on two results files, ``merge`` joins the results files of several
jobs, and ``gate`` runs the whole upgrade gate, training the suite under two TensorFlow versions.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConvergenceError
from ..outcome import DEFAULT_ENGINE, ENGINES

if TYPE_CHECKING:
    from ..gate.verdict_data import Verdict

TRACED_WEIGHTS = 64

DESCRIPTION = """\
Explain a training run, and gate a TensorFlow upgrade, from the command line.
Training a suite is pytest's job: pytest --convergence [--convergence-results=FILE]."""
EPILOG = "'pytest-convergence COMMAND --help' describes a command's arguments and their defaults."


def build_parser() -> argparse.ArgumentParser:
    """Every command, argument and default of the command line, with its help."""
    from ..dtypes import DTYPES
    from ..gate import upgrade
    from ..gate.verdict import Thresholds

    parser = argparse.ArgumentParser(
        prog="pytest-convergence",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    explain = commands.add_parser(
        "explain",
        help="SPEC: train one spec file's case in one dtype and explain what the training did and why",
        description="Train the case of one spec file once, in one dtype, and print what the training "
        "did and why: the outcome (stalled, oscillating, diverged...), its evidence, and whether the "
        "spec's expectation for that dtype holds. Exit code: 0 trained (whatever the outcome), "
        "2 the spec or an argument cannot be used.",
    )
    explain.add_argument("spec", type=Path, metavar="SPEC", help="a spec file (*.convergence.toml)")
    explain.add_argument(
        "--dtype",
        default=None,
        help=f"the dtype to train in, one of: {', '.join(DTYPES)} (default: the spec's first dtype)",
    )
    explain.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        choices=ENGINES,
        help="how to train: loop (one tf.function, bit-identical to model.fit), xla (the same with "
        "jit_compile), fit (model.fit itself) (default: %(default)s)",
    )
    explain.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="train N optimizer steps instead of the spec's budget (default: the spec's steps or epochs)",
    )
    explain.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the loss curve (log scale) with its events and the weights' paths into this "
        "PNG; needs matplotlib: pip install 'pytest-convergence[plot]' (default: no plot)",
    )
    defaults = Thresholds()
    compare = commands.add_parser(
        "compare",
        help="OLD NEW: the upgrade gate on two results files, the old framework's first; exit 0 pass, "
        "1 fail, 2 a file cannot be used",
        description="Compare the results file of the old framework (OLD) with the new framework's "
        "(NEW), run by run (case and dtype). A run fails when its outcome changed, its loss history "
        "or final weights left their tolerance, its expectation broke, its final loss or steps to "
        "target got worse beyond the thresholds, or (with --speed fail) it got slower. Exit code: "
        "0 pass, 1 fail, 2 a file or an argument cannot be used.",
        epilog="example: pytest-convergence compare results-2.19.0.json results-2.21.0.json "
        "--html report.html",
    )
    compare.add_argument(
        "old",
        type=Path,
        metavar="OLD",
        help="results of the old framework, as pytest --convergence --convergence-results=FILE wrote them",
    )
    compare.add_argument(
        "new", type=Path, metavar="NEW", help="results of the new framework, from the same suite"
    )
    compare.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write a markdown summary, e.g. for a CI job summary (default: none)",
    )
    compare.add_argument(
        "--html", type=Path, metavar="PATH", help="also write a self-contained HTML report (default: none)"
    )
    compare.add_argument(
        "--final-loss-threshold",
        type=_non_negative,
        default=defaults.final_loss,
        metavar="R",
        help="a run fails when its final loss grew by more than R relative to the old one "
        "(0.1: by 10%%) (default: %(default)s)",
    )
    compare.add_argument(
        "--steps-threshold",
        type=_non_negative,
        default=defaults.steps_to_target,
        metavar="R",
        help="a run fails when it needs more than (1 + R) times the old number of steps to reach its "
        "target loss, or never reaches it (default: %(default)s)",
    )
    compare.add_argument(
        "--slowdown-threshold",
        type=_non_negative,
        default=defaults.slowdown,
        metavar="R",
        help="a run is slower when its CPU time per step grew by more than R (0.25: by 25%%) and beyond "
        "both sides' spread (default: %(default)s)",
    )
    compare.add_argument(
        "--speed",
        choices=("warn", "fail", "off"),
        default=defaults.speed,
        help="what a slower run does: warn (a 'slower' verdict that passes), fail, or off "
        "(default: %(default)s)",
    )
    compare.add_argument(
        "--min-time",
        type=_non_negative,
        default=defaults.min_time,
        metavar="S",
        help="runs under S CPU seconds are too short to time: their speed is not compared "
        "(default: %(default)s)",
    )
    compare.add_argument(
        "--plot",
        nargs=2,
        action="append",
        default=[],
        metavar=("CASE[DTYPE]", "PNG"),
        help="also draw one case's old and new loss curves overlaid, e.g. 'seed-default[float16]' "
        "seed.png (repeatable; default: none)",
    )
    compare.add_argument(
        "--replays",
        type=Path,
        metavar="DIR",
        help="the directory of the gate's replays (pytest-convergence replay-plan and replay): "
        "longer anatomies to localise late differences, and confirming runs (default: none)",
    )
    replay_plan = commands.add_parser(
        "replay-plan",
        help="OLD NEW: plan a round of the gate's replays from two results files",
        description="Plan a round of replays into DIR: 'localise' takes apart, on both sides, every "
        "step up to where two histories part, for the cases whose recorded first steps are equal; "
        "'confirm' trains the new side again with the suspected mechanism's setting (the loss dtype, "
        "the initial weights) set back to the old side's. Writes ROUND-old.json and/or ROUND-new.json; "
        "run each with pytest-convergence replay. Exit code: 0 planned, 2 a file cannot be used.",
    )
    replay_plan.add_argument("old", type=Path, metavar="OLD", help="the old framework's results file")
    replay_plan.add_argument("new", type=Path, metavar="NEW", help="the new framework's results file")
    replay_plan.add_argument("--dir", type=Path, required=True, metavar="DIR", help="the replays' directory")
    replay_plan.add_argument("--round", choices=("localise", "confirm"), required=True)
    replay = commands.add_parser(
        "replay",
        help="PLAN: run a replay plan's runs in a pytest session of the given Python",
        description="Run the runs of a replay plan (pytest-convergence replay-plan) in one pytest "
        "session of PYTHON (an environment's interpreter), with --convergence-replay=PLAN. A plan "
        "without runs runs nothing. Exit code: 0 done, 2 the session left no results.",
    )
    replay.add_argument("plan", type=Path, metavar="PLAN", help="the replay plan")
    replay.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    replay.add_argument("--results", type=Path, metavar="FILE", help="the session's results file")
    replay.add_argument("--log", type=Path, metavar="FILE", help="the session's output (default: shown)")
    merge = commands.add_parser(
        "merge",
        help="OUTPUT INPUT...: merge the results files of several jobs into OUTPUT (the output first)",
        description="Merge the results files of several jobs of one environment (pytest-xdist "
        "workers, CI matrix jobs, suites split by hand) into OUTPUT. OUTPUT comes first, then the "
        "files to merge. Files of different TensorFlow or Keras versions are refused: compare them "
        "instead. Exit code: 0 written, 2 a file cannot be used.",
        epilog="example: pytest-convergence merge all.json job1.json job2.json",
    )
    merge.add_argument("output", type=Path, metavar="OUTPUT", help="the merged results file to write")
    merge.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="results files to merge, as --convergence-results wrote them",
    )
    merge.add_argument(
        "--repeats",
        action="store_true",
        help="the inputs are the same suite trained in separate sessions: check the histories are "
        "bit-identical and pool the timings, so the gate compares the fastest (default: off, the "
        "inputs hold different runs)",
    )
    gate = commands.add_parser(
        "gate",
        help="OLD NEW: the upgrade gate end to end: train the suite under TensorFlow OLD and NEW, each "
        "in its own virtual environment, and compare them",
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
        "--no-replay",
        action="store_true",
        help="do not replay changed cases (the replays take apart every step up to where two "
        "histories part, and confirm a mechanism by setting it back; default: replay)",
    )
    gate.add_argument(
        "--dry-run",
        action="store_true",
        help="print every command it would run, one per line; run none (default: off)",
    )
    return parser


def _non_negative(text: str) -> float:
    """A threshold or a time: a negative one would fail every run, or none, without a word."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    handlers = {
        "explain": _explain,
        "compare": _compare,
        "merge": _merge,
        "gate": _gate,
        "replay-plan": _replay_plan,
        "replay": _replay,
    }
    try:
        return handlers[arguments.command](arguments)
    except ConvergenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _explain(arguments: argparse.Namespace) -> int:
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


def _compare(arguments: argparse.Namespace) -> int:
    from ..gate import results
    from ..gate.verdict import Thresholds, compare_results
    from ..gate.verdict_text import format_table, markdown

    _check_not_the_same_file(arguments.old, arguments.new)
    old, new = results.load(arguments.old), results.load(arguments.new)
    if arguments.old.read_bytes() == arguments.new.read_bytes():
        print(
            f"warning: {arguments.old} and {arguments.new} have the same contents, so every run is "
            "compared with itself and passes; is one a copy of the other? Give the old framework's "
            "results first and the new framework's second",
            file=sys.stderr,
        )
    thresholds = Thresholds(
        final_loss=arguments.final_loss_threshold,
        steps_to_target=arguments.steps_threshold,
        slowdown=arguments.slowdown_threshold,
        speed=arguments.speed,
        min_time=arguments.min_time,
    )
    replays = None
    if arguments.replays is not None:
        from ..gate.replay_evidence import ReplayEvidence

        replays = ReplayEvidence.load(arguments.replays)
    verdict = compare_results(old, new, thresholds, replays=replays)
    for line in format_table(verdict):
        print(line)
    if arguments.markdown:
        from ..files import atomic_write_text

        atomic_write_text(arguments.markdown, markdown(verdict))
    if arguments.html:
        from ..gate.report import write_report

        write_report(arguments.html, verdict, old, new)
        print(f"report: {arguments.html}")
    for name, png in arguments.plot:
        _plot_pair(verdict, name, Path(png))
    return 0 if verdict.passed else 1


def _check_not_the_same_file(old: Path, new: Path) -> None:
    """``compare a.json a.json`` would compare every run with itself and pass: a false PASS."""
    try:
        same = os.path.samefile(old, new)
    except OSError:  # one is missing: loading it says so
        same = old.resolve() == new.resolve()
    if same:
        raise ConvergenceError(
            f"compare {old} {new}: OLD and NEW are the same file, so every run would be compared with "
            "itself and pass whatever changed\n  fix: give the old framework's results first and the "
            "new framework's second, e.g. pytest-convergence compare results-old.json results-new.json"
        )


def _check_merge_order(output: Path, inputs: Sequence[Path]) -> None:
    """merge writes its first argument: ``merge job1.json job2.json all.json`` (output last) would
    read a missing all.json, or overwrite job1.json; say what the order is instead."""
    resolved = {path.resolve() for path in inputs}
    if output.resolve() in resolved:
        raise ConvergenceError(
            f"merge: {output} is both the output (the first argument, which merge writes) and an input"
            f"\n  fix: name a new file first: pytest-convergence merge merged.json "
            f"{' '.join(map(str, inputs))}"
        )
    missing = [path for path in inputs if not path.exists()]
    if missing and output.is_file():
        first = missing[-1]
        rest = [output, *(path for path in inputs if path != first)]
        raise ConvergenceError(
            f"merge: {first} does not exist, and {output}, the first argument, is an existing file that "
            "merge would overwrite: merge takes the output first, then the files to merge"
            f"\n  fix: pytest-convergence merge {first} {' '.join(map(str, rest))}"
        )


def _merge(arguments: argparse.Namespace) -> int:
    from ..gate import results

    _check_merge_order(arguments.output, arguments.inputs)
    parts = [results.load(path) for path in arguments.inputs]
    combine = results.merge_repeats if arguments.repeats else results.merge
    merged = combine(parts, [str(path) for path in arguments.inputs])
    results.write(arguments.output, merged)
    print(f"{arguments.output}: {len(merged.runs)} runs from {len(parts)} files")
    return 0


def _replay_plan(arguments: argparse.Namespace) -> int:
    from ..gate.replay_rounds import plan_path, write_round

    counts = write_round(arguments.round, arguments.old, arguments.new, arguments.dir)
    for side, count in counts.items():
        print(f"{plan_path(arguments.dir, arguments.round, side)}: {count} runs to replay on the {side} side")
    return 0


def _replay(arguments: argparse.Namespace) -> int:
    from ..gate.replay_rounds import run_replay

    return run_replay(arguments.plan, arguments.python, results=arguments.results, log=arguments.log)


def _gate(arguments: argparse.Namespace) -> int:
    from ..gate import upgrade

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
        replay=not arguments.no_replay,
    )
    return upgrade.gate(options, dry_run=arguments.dry_run)


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


def _plot_pair(verdict: Verdict, name: str, path: Path) -> None:
    from ..gate.plot import plot_comparison
    from ..gate.verdict_data import describe_versions

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
