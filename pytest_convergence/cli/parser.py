"""The command line's parser: ``build_parser`` assembles it from one function per command, each
adding its subparser, its arguments, their defaults and their help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..outcome import DEFAULT_ENGINE, ENGINES
from .arguments import non_negative

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

DESCRIPTION = """\
Explain a training run, and gate a TensorFlow upgrade, from the command line.
Training a suite is pytest's job: pytest --convergence [--convergence-results=FILE]."""
EPILOG = "'pytest-convergence COMMAND --help' describes a command's arguments and their defaults."


def build_parser() -> argparse.ArgumentParser:
    """Every command, argument and default of the command line, with its help."""
    parser = argparse.ArgumentParser(
        prog="pytest-convergence",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    from .bisect import add_bisect
    from .history import add_history

    for add in (
        add_explain,
        add_compare,
        add_replay_plan,
        add_replay,
        add_merge,
        add_gate,
        add_bisect,
        add_history,
        add_kernels,
    ):
        add(commands)
    return parser


def add_explain(commands: Commands) -> None:
    """``explain SPEC|TEST``: train one spec file's or Python test's case in one dtype and explain it."""
    from ..dtypes import DTYPES

    explain = commands.add_parser(
        "explain",
        help="SPEC|TEST: train one spec file's or Python test's case in one dtype and explain what the "
        "training did and why",
        description="Train one case once, in one dtype, and print what the training did and why: the "
        "outcome (stalled, oscillating, diverged...), its evidence, and, for a spec, whether its "
        "expectation for that dtype holds. The case comes from a spec file, or from a Python test "
        "named by its pytest node id: pytest runs the test in this process with --convergence until "
        "it calls convergence_train(case), takes that first case and stops the test there (the test's "
        "own checks, run.expect and snapshots, are left to pytest); the case is then trained here as "
        "a spec's is. Exit code: 0 trained (whatever the outcome), 2 the spec, the test or an "
        "argument cannot be used.",
        epilog="examples: pytest-convergence explain fixtures/seed-default.convergence.toml --dtype "
        "float16; pytest-convergence explain tests/test_convergence.py::test_seed --dtype float16",
    )
    explain.add_argument(
        "spec",
        type=Path,
        metavar="SPEC|TEST",
        help="a spec file (*.convergence.toml), or a Python test's node id (path.py::test_name, "
        "optionally with its [dtype]; a path.py alone takes its first convergence test)",
    )
    explain.add_argument(
        "--dtype",
        default=None,
        help=f"the dtype to train in, one of: {', '.join(DTYPES)} (default: the spec's first dtype, or "
        "the dtype the test's first instance trains)",
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
        help="train N optimizer steps instead of the case's budget (default: its steps or epochs)",
    )
    explain.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the loss curve (log scale) with its events and the weights' paths into this "
        "PNG; needs matplotlib: pip install 'pytest-convergence[plot]' (default: no plot)",
    )
    explain.add_argument(
        "--tf32",
        choices=("on", "off"),
        default=None,
        help="pin TF32 for float32 matmuls on NVIDIA GPUs before training, as pytest's "
        "--convergence-tf32 does: off computes them in float32, as a CPU does (default: the "
        "framework's own)",
    )


def add_compare(commands: Commands) -> None:
    """``compare OLD NEW``: the upgrade gate on two results files, with its thresholds."""
    from ..gate.verdict import Thresholds

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
        type=non_negative,
        default=defaults.final_loss,
        metavar="R",
        help="a run fails when its final loss grew by more than R relative to the old one "
        "(0.1: by 10%%) (default: %(default)s)",
    )
    compare.add_argument(
        "--steps-threshold",
        type=non_negative,
        default=defaults.steps_to_target,
        metavar="R",
        help="a run fails when it needs more than (1 + R) times the old number of steps to reach its "
        "target loss, or never reaches it (default: %(default)s)",
    )
    compare.add_argument(
        "--slowdown-threshold",
        type=non_negative,
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
        "--memory",
        choices=("warn", "fail", "off"),
        default=defaults.memory,
        help="what a run whose training took more memory does: warn (a 'heavier' warning that "
        "passes), fail, or off; judged on 3 peaks a side beyond 5%%, their spread and 1 MiB "
        "(default: %(default)s)",
    )
    compare.add_argument(
        "--min-time",
        type=non_negative,
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


def add_replay_plan(commands: Commands) -> None:
    """``replay-plan OLD NEW``: plan a round of the gate's replays."""
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


def add_replay(commands: Commands) -> None:
    """``replay PLAN``: run a replay plan's runs in a pytest session."""
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


def add_merge(commands: Commands) -> None:
    """``merge OUTPUT INPUT...``: join the results files of several jobs."""
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


def add_gate(commands: Commands) -> None:
    """``gate OLD NEW``: the upgrade gate end to end, in two virtual environments."""
    from ..gate import upgrade

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


def add_kernels(commands: Commands) -> None:
    """``kernels -- PYTEST_ARGS``: the suite once per kernel variant, each with its results file."""
    kernels = commands.add_parser(
        "kernels",
        help="-- PYTEST_ARGS: train the suite with other CPUs' real kernels (oneDNN capped to older "
        "instruction sets), one pytest session per variant, each writing its results file",
        description="Run 'pytest --convergence PYTEST_ARGS' once per kernel variant "
        "(--convergence-kernels: oneDNN capped to an older CPU's instruction sets, TensorFlow's oneDNN "
        "rewrites as such a CPU runs them), each session writing OUT/VARIANT.json and OUT/VARIANT.log. "
        "Each session checks every expectation and snapshot, so a failing variant is a CPU the suite "
        "fails on; the results files feed --convergence-calibrate-with. Exit code: 0 every variant "
        "passed, 1 one failed, 2 a variant this CPU cannot run.",
        epilog="example: pytest-convergence kernels --out .kernels -- fixtures -n 2",
    )
    kernels.add_argument(
        "--variants",
        default="auto",
        help="comma-separated variants (sse41, avx, avx2, avx512_core, ..., optionally /rewrites or "
        "/no-rewrites); auto: every older level this CPU can be capped to, and its own level with the "
        "rewrites flipped (default: auto)",
    )
    kernels.add_argument(
        "--out",
        type=Path,
        default=Path(".kernels"),
        help="where the results files and logs go (default: .kernels)",
    )
    kernels.add_argument(
        "--python",
        default=sys.executable,
        help="the Python whose pytest runs the sessions (default: this one)",
    )
    kernels.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest, after --")
