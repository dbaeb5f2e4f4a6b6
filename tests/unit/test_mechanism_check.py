"""Mechanism sentences are checked like diagnoses (issue 26): every stated stage, step, weight,
class and setting re-derived from the two anatomies and configurations, no sentence naming the
plugin's own machinery; and the committed gates' verdicts checked from their text alone."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from test_anatomy import (  # the anatomy tests' records and anatomies
    BCE,
    anatomy,
    confirmed_by,
    from_stage,
    parted,
    record,
    results,
)

from pytest_convergence.anatomy import Anatomy
from pytest_convergence.gate.localise import GRADIENTS, INITIALISATION, LOSS, OUTPUT, UPDATE
from pytest_convergence.gate.mechanism import Mechanism, configuration, explain
from pytest_convergence.gate.mechanism_check import (
    MechanismFactWarning,
    check_mechanism,
    check_verdict_text,
)
from pytest_convergence.gate.verdict import compare_results

DOCS = Path(__file__).resolve().parents[2] / "docs"
VERDICTS = sorted([*DOCS.glob("gate-*/verdict.md"), *DOCS.glob("bisect-*/**/verdict*.md")])
"""Every committed gate's verdict: the gates' own, and a bisection's (its gate, each step's)."""
PINNED = (
    "pytest_convergence.backend.keras_adapter.Flavour.pin_loss_dtype.<locals>.PinnedDtypeLoss "
    '{"name": "binary_crossentropy", "reduction": "sum_over_batch_size"}'
)


def check(old_made: Anatomy, new_made: Anatomy, parting: int = 1) -> tuple[Mechanism, list[str]]:
    old, new = record(old_made), record(new_made)
    mechanism = explain(old, new, parting)
    return mechanism, check_mechanism(mechanism, old, new, old_anatomy=old_made, new_anatomy=new_made)


@pytest.mark.parametrize(
    ("stage", "step"), [(INITIALISATION, 1), (OUTPUT, 2), (LOSS, 1), (GRADIENTS, 2), (UPDATE, 3)]
)
def test_every_stage_the_gate_names_holds_on_its_anatomies(stage: str, step: int) -> None:
    mechanism, problems = check(anatomy(), from_stage(anatomy(), stage, step), step)
    assert mechanism.localisation is not None and mechanism.localisation.stage == stage
    assert problems == []


def test_an_output_stated_without_numbers_is_checked_without_them() -> None:
    """Dropout draws other random numbers: its sentence states no output sum (a real gate's
    replay said so of tfkeras-vector, and the check took the missing numbers for wrong ones)."""
    base, new = anatomy(), from_stage(anatomy(), OUTPUT, 1)
    mechanism = explain(record(base), record(new), 1)
    words = dataclasses.replace(
        mechanism, sentence=mechanism.sentence.split(" (output sum")[0].split(" (sum")[0]
    )
    assert check_mechanism(words, record(base), record(new), old_anatomy=base, new_anatomy=new) == []


def test_a_stated_step_weight_or_number_the_anatomies_do_not_show_is_found() -> None:
    base, new = anatomy(), from_stage(anatomy(), GRADIENTS, 2, column=1)
    old_record, new_record = record(base), record(new)
    mechanism = explain(old_record, new_record, 2)
    assert mechanism.localisation is not None and mechanism.localisation.weight == "dense/bias"
    for wrong in (
        dataclasses.replace(mechanism.localisation, step=1),  # the gradients were equal at step 1
        dataclasses.replace(mechanism.localisation, weight="dense/kernel"),  # its gradient was equal
        dataclasses.replace(mechanism.localisation, stage=UPDATE),  # the gradients differed first
    ):
        lied = dataclasses.replace(mechanism, localisation=wrong)
        assert check_mechanism(lied, old_record, new_record, old_anatomy=base, new_anatomy=new)
    numbers = dataclasses.replace(mechanism, sentence=mechanism.sentence.replace("(sum ", "(sum 9"))
    assert any(
        "gradient sum" in p
        for p in check_mechanism(numbers, old_record, new_record, old_anatomy=base, new_anatomy=new)
    )


def test_a_stated_class_or_setting_the_configurations_do_not_show_is_found() -> None:
    old, new = record(), record(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    mechanism = explain(old, new, 1)
    assert check_mechanism(mechanism, old, new) == []
    for sentence, named in (
        ("... the loss is computed in float16 now (float32 before)", "loss dtype"),
        ("... BinaryCrossentropy computes it now (BinaryCrossentropy before)", "loss class"),
        ("... the shuffle gives a new order every epoch now (off before)", "shuffling"),
        ("... the optimizer is Adam now (RMSprop before)", "optimizer"),
        ("... RMSprop's settings changed (rho 0.9 -> 0.8)", "rho"),
        ("... a float64 model's loss is computed in float64 now (float32 before)", "float64 model"),
    ):
        problems = check_mechanism(dataclasses.replace(mechanism, sentence=sentence), old, new)
        assert any(named in p for p in problems), (sentence, problems)


def test_a_sentence_naming_the_plugins_machinery_is_found() -> None:
    old, new = record(), record(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    mechanism = explain(old, new, 1)
    mechanism.confirmation = "Replay: ... PinnedDtypeLoss computes it now (BinaryCrossentropy before)"
    assert check_mechanism(mechanism, old, new) == [
        "names the plugin's own machinery (PinnedDtypeLoss), not what the upgrade changed"
    ]


def test_a_pinning_wrapper_recorded_by_an_older_version_is_no_loss_class() -> None:
    """Results files written before the recorder named the user's loss hold the wrapper's class:
    it is not the user's, so no configuration compares it."""
    old = record()
    new = record(from_stage(anatomy(), LOSS, 1), loss_ran=PINNED)
    new.anatomy["configuration"]["loss"] = PINNED.split(" ")[0]
    assert configuration(new)["loss"] == ""
    mechanism = explain(old, new, 1)
    assert mechanism.key == "loss-arithmetic" and "Pinned" not in mechanism.sentence
    assert check_mechanism(mechanism, old, new) == []


def test_a_loss_class_moved_to_another_module_is_no_other_class() -> None:
    """Keras 2's keras.losses.BinaryCrossentropy is Keras 3's keras.losses.losses.BinaryCrossentropy."""
    old = record(loss_ran=f"keras.src.losses.BinaryCrossentropy {json.dumps(BCE)}")
    old.anatomy["configuration"]["loss"] = "keras.src.losses.BinaryCrossentropy"
    mechanism = explain(old, record(from_stage(anatomy(), LOSS, 1)), 1)
    assert mechanism.key == "loss-arithmetic"
    assert "computes it now" not in mechanism.sentence


def test_the_issue_s_replay_says_it_could_not_pin_the_loss_back_and_names_no_wrapper(tmp_path: Path) -> None:
    """Issue 26: a float64 loss pinned back by the replay still parts at the loss; the replay's
    run (written before the fix) recorded the wrapper as its loss. The verdict named it: 'Another
    loss class computes the loss ... PinnedDtypeLoss computes it now (BinaryCrossentropy before)'."""
    old = record(dtype="float64", loss_dtype="float64")
    new = parted(from_stage(anatomy(), LOSS, 1), dtype="float64", loss_dtype="float32")
    replayed = parted(
        anatomy(), dtype="float64", loss_dtype="float64", loss_ran=PINNED, set_back={"loss_dtype": "float64"}
    )
    replayed_anatomy = from_stage(anatomy(), LOSS, 1)
    replayed_anatomy.configuration["loss"] = PINNED.split(" ")[0]
    evidence = confirmed_by(tmp_path, replayed)
    evidence.confirmations = {("seed", "float64"): replayed}
    evidence.old_anatomies[("seed", "float64")] = anatomy()
    evidence.confirm_anatomies[("seed", "float64")] = replayed_anatomy
    with warnings.catch_warnings():
        warnings.simplefilter("error", MechanismFactWarning)
        verdict = compare_results(results(old), results(new), replays=evidence)
    mechanism = verdict.rows[0].mechanism
    assert mechanism is not None and mechanism.confirmed is False
    assert [m.key for m in mechanism.all] == ["loss-dtype-narrower:float64->float32"]
    assert mechanism.confirmation.startswith(
        "Replay: with the loss dtype set back to float64, the histories still part (from step 1, as "
        "before): the loss at step 1 still differs, with equal weights, batch and output ("
    )
    assert mechanism.confirmation.endswith(
        "computed in float64 on both sides: the replay pins the dtype around the new version's own loss, "
        "which need not compute as the old version's did, so it cannot confirm more"
    )
    words = " ".join([mechanism.sentence, mechanism.confirmation, *(t for _, t, _ in verdict.mechanisms)])
    assert "Pinned" not in words and "computes it now" not in words
    assert mechanism.fact_problems == [] and verdict.warnings == []


def test_a_false_sentence_is_never_shown_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_convergence.gate.verdict as verdict_module

    original = verdict_module.explain

    def lying(*args: Any, **kwargs: Any) -> Mechanism:
        mechanism = original(*args, **kwargs)
        mechanism.sentence += ": PinnedDtypeLoss computes it now (BinaryCrossentropy before)"
        return mechanism

    monkeypatch.setattr(verdict_module, "explain", lying)
    old, new = record(), parted(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    with pytest.warns(MechanismFactWarning, match="states what its records do not show"):
        verdict = compare_results(results(old), results(new))
    mechanism = verdict.rows[0].mechanism
    assert mechanism is not None and mechanism.sentence.endswith(
        "[fact check: not all of this holds, see the warnings]"
    )
    assert len(verdict.warnings) == 1 and "seed [float32]: the mechanism states" in verdict.warnings[0]
    assert "machinery (PinnedDtypeLoss)" in verdict.warnings[0] and "loss class" in verdict.warnings[0]


# ------------------------------------------------------------------------------ committed verdicts
def test_every_committed_gate_verdict_s_mechanisms_hold_on_its_own_text() -> None:
    assert VERDICTS, f"no docs/gate-*/verdict.md under {DOCS}"
    checked = 0
    for path in VERDICTS:
        text = path.read_text(encoding="utf-8")
        assert check_verdict_text(text) == [], path
        checked += "### Mechanisms:" in text
    assert checked >= 2  # the committed gates that name mechanisms


def test_the_text_check_finds_what_the_issue_found_and_miscounts() -> None:
    text = (DOCS / "gate-2.15.1-to-2.21.0" / "verdict.md").read_text(encoding="utf-8")
    assert check_verdict_text(text) == []
    label = "seed-default [float64]"
    issue = text.replace(
        "### Mechanisms: 15 explain 57 changed cases\n\n",
        "### Mechanisms: 16 explain 57 changed cases\n\n"
        f"16. **Another loss class computes the loss** (1): {label}\n",
    ).replace(
        "a float64 model's loss is computed in float32 now (float64 before)\n",
        "a float64 model's loss is computed in float32 now (float64 before); "
        "PinnedDtypeLoss computes it now (BinaryCrossentropy before)\n",
        1,
    )
    problems = check_verdict_text(issue)
    assert "names the plugin's own machinery: PinnedDtypeLoss" in problems
    miscounted = text.replace("(22): linear-regression [float64]", "(21): linear-regression [float64]")
    assert any("22 listed" in p or "21 cases stated" in p for p in check_verdict_text(miscounted))
    unknown = text.replace(
        "**Loss scaling: the optimizer receives the gradients at another scale**",
        "**PinnedDtypeLoss's magic**",
    )
    assert any("cannot name" in p for p in check_verdict_text(unknown))
    same = text.replace("(0.241567814 -> 0.241567835)", "(0.241567814 -> 0.241567814)", 1)
    assert check_verdict_text(same) == []  # a number's own digits are not a setting
    wrong_model = text.replace("a float64 model's loss", "a float16 model's loss", 1)
    assert any("says a float16 model" in p for p in check_verdict_text(wrong_model))
