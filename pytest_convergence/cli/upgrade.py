"""``pytest-convergence gate OLD NEW`` (the upgrade gate end to end, each side trained in its own
virtual environment) and the replays it runs: ``replay-plan`` and ``replay``."""

from __future__ import annotations

import argparse


def run_gate(arguments: argparse.Namespace) -> int:
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


def run_replay_plan(arguments: argparse.Namespace) -> int:
    from ..gate.replay_rounds import plan_path, write_round

    counts = write_round(arguments.round, arguments.old, arguments.new, arguments.dir)
    for side, count in counts.items():
        print(f"{plan_path(arguments.dir, arguments.round, side)}: {count} runs to replay on the {side} side")
    return 0


def run_replay(arguments: argparse.Namespace) -> int:
    from ..gate import replay_rounds

    return replay_rounds.run_replay(
        arguments.plan, arguments.python, results=arguments.results, log=arguments.log
    )
