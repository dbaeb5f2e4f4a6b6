"""What the gate's replays left in their directory, read back: the longer anatomies of both sides,
the confirming runs, and what a confirming run says about a row's mechanism.

The files (written by the rounds of :mod:`.replay_rounds`)::

    anatomy-old/, anatomy-new/, anatomy-confirm/             whole-run anatomies, CASE[DTYPE].npz
    results-confirm.json                                      the confirming runs' results
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..anatomy import Anatomy
from . import results as results_file
from .localise import LOSS
from .mechanism import NOT_LOCALISED, Mechanism, _pair, explain, plugin_machinery
from .mechanism_check import check_mechanism
from .results import RunRecord
from .verdict_data import Row

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

    def confirm(self, mechanism: Mechanism, row: Row) -> None:
        """Fill in what the replay with the mechanism's setting set back showed."""
        assert row.old is not None
        key = (row.case, row.dtype)
        replayed = self.confirmations.get(key)
        if replayed is None or not replayed.set_back:
            return
        assert row.new is not None
        if plugin_machinery(replayed.loss_ran):  # written before the recorder named the user's loss:
            replayed = replace(replayed, loss_ran=row.new.loss_ran)  # the case's own, its dtype set back
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
        old_anatomy, new_anatomy = self.old_anatomies.get(key), self.confirm_anatomies.get(key)
        rest = explain(row.old, replayed, parting, old_anatomy=old_anatomy, new_anatomy=new_anatomy)
        mechanism.fact_problems += [
            f"the replay's next difference: {problem}"
            for problem in check_mechanism(
                rest, row.old, replayed, old_anatomy=old_anatomy, new_anatomy=new_anatomy
            )
        ]
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
        inexact = _not_set_back_exactly(rest, row.old, replayed)
        if inexact:
            mechanism.confirmation = (
                f"Replay: {what}, the histories still part (from step {parting}{earlier}): {inexact}"
            )
            return
        mechanism.confirmation = (
            f"Replay: {what}, the histories still part (from step {parting}{earlier}); next {rest.sentence}"
        )
        if rest.key != NOT_LOCALISED:  # masked by the first one, found once it was set back
            known = {one.key for one in mechanism.all}
            mechanism.also += [one for one in rest.all if one.key not in known]


def _not_set_back_exactly(rest: Mechanism, old: RunRecord, replayed: RunRecord) -> str:
    """Where a replay that pinned the loss dtype back still parts at the loss itself, the words
    that say it could not set the loss back exactly; empty otherwise.

    The replay pins the dtype by wrapping the new version's own loss: a loss value that still
    differs with equal weights, batch and output may be the loss's own arithmetic, or its pinning,
    and the replay cannot tell which. It never names what it added (the wrapper) as the upgrade's
    change. (A gradient that differs under an equal loss is the backward pass's, as without a
    replay: the next mechanism.)"""
    found = rest.localisation
    if "loss_dtype" not in replayed.set_back or found is None or found.stage != LOSS:
        return ""
    dtypes = (
        f"computed in {old.loss_dtype} on both sides"
        if old.loss_dtype == replayed.loss_dtype
        else f"computed in {replayed.loss_dtype} in the replay, {old.loss_dtype} before"
    )
    return (
        f"the loss at step {found.step} still differs, with equal weights, batch and output "
        f"({_pair(found.old_value, found.new_value)}), {dtypes}: the replay pins the dtype around the new "
        "version's own loss, which need not compute as the old version's did, so it cannot confirm more"
    )


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
