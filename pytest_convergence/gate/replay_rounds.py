"""The gate's two replay rounds, planned from the verdict, and what they showed.

Round ``localise``: cases whose histories part after the steps their results files took apart
(or with no anatomy at all) are trained again on both sides, every step up to the parting one
taken apart, so the first differing stage is found wherever it is. Cases whose mechanism can be
set back (the loss dtype, the initial weights) are taken apart on the old side as well, for
round ``confirm``: the new version trains them again with that one thing set back to the old
version's, and the gate says whether the difference goes away, and if not, what differs next.

The files live in one directory (the gate's work directory)::

    localise-old.json, localise-new.json, confirm-new.json   replay plans (:mod:`..replay`)
    anatomy-old/, anatomy-new/, anatomy-confirm/             whole-run anatomies, CASE[DTYPE].npz
    results-confirm.json                                      the confirming runs' results
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..anatomy import Anatomy
from ..replay_plan import Replay, ReplayPlan, anatomy_path
from . import results as results_file
from .mechanism import NOT_LOCALISED, Mechanism, explain
from .results import Results, RunRecord

CONFIRM_STEPS = 2000
"""Steps taken apart where a mechanism is confirmed: enough for the next difference of a case
that still parts once the first is set back, cheap for every catalogue model."""
BATCH_STEPS = 200
"""Steps taken apart where a case has several batches an epoch: enough for the first epochs of
every catalogue case, whose batches show a shuffle that differs from the second epoch on."""
ROUNDS = ("localise", "confirm")

Key = tuple[str, str]


@dataclass
class ReplayEvidence:
    """What the replays left in ``directory``: longer anatomies and the confirming runs."""

    directory: Path
    old_anatomies: dict[Key, Anatomy] = field(default_factory=dict)
    new_anatomies: dict[Key, Anatomy] = field(default_factory=dict)
    confirm_anatomies: dict[Key, Anatomy] = field(default_factory=dict)
    confirmations: dict[Key, RunRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> ReplayEvidence:
        directory = Path(directory)
        if not directory.is_dir():
            from ..errors import ConvergenceError

            raise ConvergenceError(
                f"--replays {directory}: no such directory; give the directory the gate's replays "
                "wrote (pytest-convergence replay-plan --dir), or leave --replays out"
            )
        evidence = cls(directory)
        for name, anatomies in (
            ("anatomy-old", evidence.old_anatomies),
            ("anatomy-new", evidence.new_anatomies),
            ("anatomy-confirm", evidence.confirm_anatomies),
        ):
            for path in sorted((directory / name).glob("*.npz")):
                key = _key(path)
                if key is not None:
                    anatomies[key] = Anatomy.load(path)
        confirmed = directory / "results-confirm.json"
        if confirmed.is_file():
            evidence.confirmations = results_file.load(confirmed).by_key()
        return evidence

    def confirm(self, mechanism: Mechanism, row: object) -> None:
        """Fill in what the replay with the mechanism's setting set back showed."""
        from .verdict import Row

        assert isinstance(row, Row) and row.old is not None
        key = (row.case, row.dtype)
        replayed = self.confirmations.get(key)
        if replayed is None or not replayed.set_back:
            return
        what = _set_back_words(replayed.set_back)
        parting = _first_difference(row.old, replayed)
        if parting is None:
            mechanism.confirmed = True
            mechanism.confirmation = (
                f"Confirmed by replay: {what}, the new version trains bit for bit as the old one "
                f"({len(replayed.checkpoint_steps)} checkpoints and the final weights equal)"
            )
            return
        mechanism.confirmed = False
        rest = explain(
            row.old,
            replayed,
            parting,
            old_anatomy=self.old_anatomies.get(key),
            new_anatomy=self.confirm_anatomies.get(key),
        )
        earlier = f", step {row.parting_step} before" if row.parting_step is not None else ""
        if row.parting_step == parting:
            earlier = ", as before"
        if rest.localisation is not None and rest.localisation.stage == "initialisation":
            mechanism.confirmed = False
            mechanism.confirmation = (
                f"Replay: the old version's initial weights, set on the new version, still do not "
                f"digest the same ({rest.localisation.weight}): the new version holds them otherwise "
                "(another dtype or layout), so this replay cannot confirm more"
            )
            return
        mechanism.confirmation = (
            f"Replay: {what}, the histories still part (from step {parting}{earlier}); next {rest.sentence}"
        )
        if rest.key != NOT_LOCALISED:
            mechanism.also += rest.all  # masked by the first one, found once it was set back


def _key(path: Path) -> Key | None:
    stem = path.name[: -len(".npz")]
    if not stem.endswith("]") or "[" not in stem:
        return None
    case, _, dtype = stem[:-1].rpartition("[")
    return case, dtype


def _set_back_words(set_back: dict[str, str]) -> str:
    words = []
    if "loss_dtype" in set_back:
        words.append(f"with the loss dtype set back to {set_back['loss_dtype']}")
    if "initial_weights" in set_back:
        words.append("with the old version's initial weights")
    return " and ".join(words) or "replayed"


def _first_difference(old: RunRecord, new: RunRecord) -> int | None:
    """The first checkpoint where two runs' losses differ bitwise (or the last step, when only
    their final weights do); None when they are the same run."""
    steps, i, j = np.intersect1d(old.checkpoint_steps, new.checkpoint_steps, return_indices=True)
    a = np.asarray(old.checkpoint_losses, np.float64)[i]
    b = np.asarray(new.checkpoint_losses, np.float64)[j]
    differs = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if differs.any():
        return int(steps[np.argmax(differs)])
    if old.final_weights != new.final_weights or len(steps) != len(old.checkpoint_steps):
        return int(old.steps)
    return None


# ------------------------------------------------------------------------------ planning
def plan_round(round_name: str, old: Results, new: Results, directory: Path) -> dict[str, ReplayPlan]:
    """The replay plans of one round, by side (``old``, ``new``); a plan may hold no run."""
    from .verdict import compare_results

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
