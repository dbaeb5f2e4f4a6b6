"""The gate's two replay rounds: planned from the verdict, written as replay plans, and run.

Round ``localise``: cases whose histories part after the steps their results files took apart
(or with no anatomy at all) are trained again on both sides, every step up to the parting one
taken apart, so the first differing stage is found wherever it is. Cases whose mechanism can be
set back (the loss dtype, the initial weights) are taken apart on the old side as well, for
round ``confirm``: the new version trains them again with that one thing set back to the old
version's, and the gate says whether the difference goes away, and if not, what differs next.

The files live in one directory (the gate's work directory)::

    localise-old.json, localise-new.json, confirm-new.json   replay plans (:mod:`..replay_plan`)
    anatomy-old/, anatomy-new/, anatomy-confirm/             whole-run anatomies, CASE[DTYPE].npz
    results-confirm.json                                      the confirming runs' results

What the replays left there is read back by :mod:`.replay_evidence`.
"""

from __future__ import annotations

from pathlib import Path

from ..replay_plan import Replay, ReplayPlan, anatomy_path
from . import results as results_file
from .mechanism import NOT_LOCALISED
from .replay_evidence import ReplayEvidence
from .results import Results, RunRecord
from .verdict import compare_results

CONFIRM_STEPS = 2000
"""Steps taken apart where a mechanism is confirmed: enough for the next difference of a case
that still parts once the first is set back, cheap for every catalogue model."""
BATCH_STEPS = 200
"""Steps taken apart where a case has several batches an epoch: enough for the first epochs of
every catalogue case, whose batches show a shuffle that differs from the second epoch on."""
ROUNDS = ("localise", "confirm")


def plan_round(round_name: str, old: Results, new: Results, directory: Path) -> dict[str, ReplayPlan]:
    """The replay plans of one round, by side (``old``, ``new``); a plan may hold no run."""
    directory = Path(directory)
    if round_name == "localise":
        verdict = compare_results(old, new)
        olds: list[Replay] = []
        news: list[Replay] = []
        for row in verdict.rows:
            mechanism, before, after = row.mechanism, row.old, row.new
            if mechanism is None or before is None or after is None:
                continue
            last = 0
            if mechanism.key == NOT_LOCALISED:
                last = row.parting_step or after.steps
            elif mechanism.key == "forward" and mechanism.localisation is not None:
                last = mechanism.localisation.step or 0  # results files without layer outputs
            if before.loss_kind == "epoch":  # several batches an epoch: see the next epochs' too
                last = max(last, min(before.steps, after.steps, BATCH_STEPS))
            old_last = max(last, min(before.steps, CONFIRM_STEPS)) if mechanism.set_back else last
            if old_last:
                olds.append(_replay(before, directory / "anatomy-old", old_last))
            if last:
                news.append(_replay(after, directory / "anatomy-new", last))
        return {"old": ReplayPlan(olds), "new": ReplayPlan(news)}
    if round_name == "confirm":
        evidence = ReplayEvidence.load(directory)
        verdict = compare_results(old, new, replays=_without_confirmations(evidence))
        confirms = []
        for row in verdict.rows:
            mechanism, before, after = row.mechanism, row.old, row.new
            if mechanism is None or before is None or after is None or not mechanism.set_back:
                continue
            set_back = dict(mechanism.set_back)
            if "initial_weights" in set_back:
                source = anatomy_path(directory / "anatomy-old", before.case, before.dtype)
                if not source.is_file():
                    continue
                set_back["initial_weights"] = str(source)
            confirms.append(
                _replay(after, directory / "anatomy-confirm", min(after.steps, CONFIRM_STEPS), set_back)
            )
        return {"new": ReplayPlan(confirms)}
    raise ValueError(f"unknown replay round {round_name!r}: one of {', '.join(ROUNDS)}")


def _without_confirmations(evidence: ReplayEvidence) -> ReplayEvidence:
    return ReplayEvidence(evidence.directory, evidence.old_anatomies, evidence.new_anatomies)


def _replay(record: RunRecord, directory: Path, last: int, set_back: dict[str, str] | None = None) -> Replay:
    return Replay(
        case=record.case,
        dtype=record.dtype,
        directory=directory,
        test=record.test,
        last_step=int(last),
        set_back=set_back or {},
    )


def plan_path(directory: Path, round_name: str, side: str) -> Path:
    return Path(directory) / f"{round_name}-{side}.json"


def write_round(round_name: str, old_path: Path, new_path: Path, directory: Path) -> dict[str, int]:
    """Plan a round from two results files and write its plans; how many runs each replays."""
    old, new = results_file.load(old_path), results_file.load(new_path)
    plans = plan_round(round_name, old, new, directory)
    for side, plan in plans.items():
        plan.write(plan_path(directory, round_name, side))
    return {side: len(plan.runs) for side, plan in plans.items()}


def run_replay(plan: Path, python: str, *, results: Path | None = None, log: Path | None = None) -> int:
    """One pytest session of ``python`` over the plan's tests; nothing when it has none."""
    import subprocess
    import sys

    from ..errors import ConvergenceError
    from ..replay_plan import load_plan

    tests = load_plan(plan).tests
    if not tests:
        print(f"{plan}: nothing to replay")
        return 0
    argv = [python, "-m", "pytest", *tests, "--convergence", "-q", "-p", "no:cacheprovider"]
    argv += ["--snapshot-warn-unused", f"--convergence-replay={Path(plan).resolve()}"]
    if results is not None:
        Path(results).unlink(missing_ok=True)
        argv.append(f"--convergence-results={results}")
    print(f"{plan}: replaying {len(tests)} runs with {python}", file=sys.stderr)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as stream:
            status = subprocess.run(argv, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode
    else:
        status = subprocess.run(argv, check=False).returncode
    if status in (2, 3, 4, 5) or (results is not None and not Path(results).is_file()):
        where = f" (see {log})" if log is not None else ""
        raise ConvergenceError(f"{plan}: the replay session ended with exit code {status}{where}")
    return 0
