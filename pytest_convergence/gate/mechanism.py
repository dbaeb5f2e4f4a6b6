"""Why a case changed: the first differing stage of a step, read with what ran differently.

:mod:`.localise` says *where* two versions first differ (the loss at step 1, with equal weights,
batch and output); the configuration each side recorded says what changed there (the loss was
computed in float16, now in float32). Together they name a mechanism: one sentence per changed
case, and a key that groups cases, so a reviewer reads four mechanisms, not 27 failures.

The sentence never claims more than the records show. The stage is measured, exactly (digests);
the cause beside it is the configuration difference that acts at that stage, or, where none
does, the stage's own words ("RMSprop's arithmetic changed": equal gradients, other weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..anatomy import Anatomy
from ..config_diff import setting_differences, shared_config_changes, split_ran
from .localise import BATCH, GRADIENTS, INITIALISATION, LOSS, OUTPUT, UPDATE, WEIGHTS, Localisation, localise

if TYPE_CHECKING:
    from .results import RunRecord

NOT_LOCALISED = "not-localised"

PRECISION = {"float64": 53, "float32": 24, "bfloat16": 8, "float16": 11}
SETTINGS_SHOWN = ("loss dtype", "output dtype", "dtype policy", "loss scaling", "shuffling", "jit_compile")
"""The configuration settings listed beside a changed case (classes and configs of the optimizer
and loss are the verdict's own notes)."""


@dataclass
class Mechanism:
    """What changed a case: its group (``key``, ``title``) and its own sentence."""

    key: str
    title: str
    sentence: str
    localisation: Localisation | None = None
    set_back: dict[str, str] = field(default_factory=dict)
    """What a replay could set back to confirm it (``loss_dtype``: the old one...)."""
    confirmation: str = ""
    """What the replay that set it back showed, in words (empty: none ran)."""
    confirmed: bool | None = None
    also: list[Mechanism] = field(default_factory=list)
    """Further mechanisms of the same case, each shown by its own evidence: batches that differ
    whatever the weights did (the data pipeline does not depend on them), or the difference a
    replay found once the first mechanism was set back."""
    fact_problems: list[str] = field(default_factory=list)
    """What the mechanism fact check (:mod:`.mechanism_check`) found its words state and its
    records do not show; empty when every claim holds."""

    @property
    def all(self) -> list[Mechanism]:
        """This mechanism and every further one, each once (by key)."""
        seen: dict[str, Mechanism] = {self.key: self}
        for other in self.also:
            seen.setdefault(other.key, other)
        return list(seen.values())


MACHINERY = ("PinnedDtypeLoss", "pytest_convergence", "<locals>")
"""What names the plugin's own machinery (the wrapper that pins a loss's dtype, the plugin's
modules): never a user's class or an upgrade's change, so never a mechanism's words."""


def plugin_machinery(text: str) -> bool:
    """Whether ``text`` names the plugin's own machinery (:data:`MACHINERY`)."""
    return any(name in text for name in MACHINERY)


def configuration(record: RunRecord) -> dict[str, str]:
    """What ran for one record: its anatomy's settings, with the loss dtype and classes.

    A class the plugin's own machinery ran in the user's stead (a loss pinned to its dtype, in a
    results file written before the recorder named the user's loss it wraps) is not known: left
    empty, never compared as the user's class."""
    settings = dict(record.anatomy.get("configuration", {})) if record.anatomy else {}
    settings["loss dtype"] = record.loss_dtype
    settings.setdefault("optimizer", _class_of(record.optimizer_ran))
    settings.setdefault("loss", _class_of(record.loss_ran))
    for name in ("optimizer", "loss"):
        if plugin_machinery(settings.get(name, "")):
            settings[name] = ""
    return settings


def configuration_differences(old: RunRecord, new: RunRecord) -> dict[str, tuple[str, str]]:
    """The settings recorded on both sides whose values differ: name -> (old, new)."""
    return setting_differences(configuration(old), configuration(new))


def difference_notes(old: RunRecord, new: RunRecord) -> list[str]:
    """The configuration differences the verdict lists beside a case, one line."""
    changed = configuration_differences(old, new)
    shown = [f"{name} {a} -> {b}" for name, (a, b) in changed.items() if name in SETTINGS_SHOWN]
    return [f"configuration: {'; '.join(shown)}"] if shown else []


def anatomy_of(record: RunRecord) -> Anatomy | None:
    if not record.anatomy:
        return None
    try:
        return Anatomy.from_json(record.anatomy)
    except (KeyError, ValueError, TypeError):
        return None


def explain(
    old: RunRecord,
    new: RunRecord,
    parting_step: int | None,
    *,
    old_anatomy: Anatomy | None = None,
    new_anatomy: Anatomy | None = None,
) -> Mechanism:
    """The mechanism of one changed case, from the two records (and longer anatomies, a replay's,
    where the gate has them)."""
    old_anatomy = old_anatomy or anatomy_of(old)
    new_anatomy = new_anatomy or anatomy_of(new)
    if old_anatomy is None or new_anatomy is None:
        side = (
            "either side"
            if old_anatomy is None and new_anatomy is None
            else ("the old side" if old_anatomy is None else "the new side")
        )
        return Mechanism(
            NOT_LOCALISED,
            "Not localised",
            f"not localised: no step anatomy recorded on {side} (results files record none unless "
            "written with --convergence-anatomy=N); the gate's replay takes changed cases apart "
            "(pytest-convergence gate, or replay-plan and replay)",
        )
    found = localise(old_anatomy, new_anatomy)
    changed = configuration_differences(old, new)
    mechanism = _from_stage(found, changed, old, new, parting_step)
    if found.stage != BATCH:
        batches = _batch_sequence(old_anatomy, new_anatomy, changed)
        if batches is not None:
            mechanism.also.append(batches)
    if found.reordered_since is not None and found.stage != BATCH:
        mechanism.sentence += (
            f" (the batches hold their samples in another order from step {found.reordered_since}, "
            "which changed no number before this)"
        )
    if found.caveat:
        mechanism.sentence += f" (caveat: {found.caveat})"
    return mechanism


def _from_stage(
    found: Localisation,
    changed: dict[str, tuple[str, str]],
    old: RunRecord,
    new: RunRecord,
    parting_step: int | None,
) -> Mechanism:
    step, weight = found.step, found.weight
    if not found.found:
        where = f"at step {parting_step}" if parting_step is not None else "later"
        return Mechanism(
            NOT_LOCALISED,
            "Not localised",
            f"not localised: {found.compared} are bit-identical on both sides and the histories part "
            f"{where}; the gate's replay takes every step up to it apart",
            localisation=found,
        )
    if found.stage == INITIALISATION:
        return Mechanism(
            "initialisation",
            "The initial weights differ: the same seed draws other values",
            f"first difference: the initial weights of {weight}, before any step: the same seed "
            "draws other initial values now",
            localisation=found,
            set_back={"initial_weights": "old"},
        )
    if found.stage == BATCH:
        what = f"the batch at step {step}, with equal weights"
        if found.reordered:
            what = (
                f"the batch at step {step} holds the same samples in another order, which rounds the "
                f"{found.reordered} differently ({_pair(found.old_value, found.new_value)})"
            )
        if "shuffling" in changed:
            before, after = changed["shuffling"]
            return Mechanism(
                f"batch:{before}->{after}",
                f"Shuffling: {before} before, {after} now",
                f"first difference: {what}: the shuffle gives {after} now ({before} before)",
                localisation=found,
            )
        return Mechanism(
            "batch",
            "The batches are drawn in another order (same shuffling setting)",
            f"first difference: {what}: the data pipeline draws another batch now",
            localisation=found,
        )
    if found.stage == WEIGHTS:
        return Mechanism(
            NOT_LOCALISED,
            "Not localised",
            f"not localised: the weights entering step {step} already differ ({weight} first); the "
            f"difference began before the compared {found.compared}",
            localisation=found,
        )
    if found.stage == OUTPUT:
        for name in ("dtype policy", "output dtype"):
            if name in changed:
                before, after = changed[name]
                return Mechanism(
                    f"{name}:{before}->{after}",
                    f"The {name} changed: {after} now ({before} before)",
                    f"first difference: the model's output at step {step}, with equal weights and "
                    f"batch: the {name} is {after} now ({before} before)",
                    localisation=found,
                )
        if found.layer is not None:
            layer_class = found.layer.rsplit("(", 1)[-1].rstrip(")")
            if _draws_random_numbers(layer_class):
                return Mechanism(
                    f"random:{layer_class}",
                    f"{layer_class} draws other random numbers (same seed)",
                    f"first difference: the output of {found.layer} at step {step}, with equal weights, "
                    f"batch and layers before it: {layer_class} draws other random numbers from the same "
                    "seed now",
                    localisation=found,
                )
            return Mechanism(
                f"forward:{layer_class}",
                f"{layer_class}'s forward pass computes differently (same weights, same input)",
                f"first difference: the output of {found.layer} at step {step}, with equal weights, batch "
                f"and layers before it (output sum {_pair(found.old_value, found.new_value)}): "
                f"{layer_class}'s arithmetic changed",
                localisation=found,
            )
        return Mechanism(
            "forward",
            "The forward pass computes differently (same weights, same batch)",
            f"first difference: the model's output at step {step}, with equal weights and batch "
            f"(sum {_pair(found.old_value, found.new_value)}): a layer's arithmetic "
            "changed",
            localisation=found,
        )
    if found.stage == LOSS:
        return _loss_mechanism(found, changed, old, new)
    if found.stage == GRADIENTS:
        if "loss dtype" in changed:  # the loss's value rounded alike, its gradient did not
            return _loss_mechanism(found, changed, old, new)
        scale = _scale_between(found.old_value, found.new_value)
        if scale is not None and "on" in (
            configuration(old).get("loss scaling"),
            configuration(new).get("loss scaling"),
        ):
            more = "scaled" if abs(found.new_value or 0) > abs(found.old_value or 0) else "unscaled"
            return Mechanism(
                "loss-scaling",
                "Loss scaling: the optimizer receives the gradients at another scale",
                f"first difference: the gradient of {weight} at step {step}, with equal loss "
                f"(sum {_pair(found.old_value, found.new_value)}, 2^{scale} apart): the optimizer receives "
                f"the gradients {more} by the loss scale now",
                localisation=found,
            )
        return Mechanism(
            "gradients",
            "The gradients are computed differently (same loss)",
            f"first difference: the gradient of {weight} at step {step}, with equal loss "
            f"(sum {_pair(found.old_value, found.new_value)}): the backward pass "
            "computes differently now",
            localisation=found,
        )
    assert found.stage == UPDATE
    before_class, after_class = (
        configuration(old).get("optimizer", ""),
        configuration(new).get("optimizer", ""),
    )
    optimizer = _short_class(after_class) or "the optimizer"
    where = f"first difference: the optimizer's update of {weight} at step {step} (gradients equal)"
    if _short_class(before_class) and _short_class(before_class) != optimizer:
        return Mechanism(
            "optimizer-class",
            "Another optimizer class updates the weights",
            f"{where}: the optimizer is {optimizer} now ({_short_class(before_class)} before)",
            localisation=found,
        )
    changed_config = shared_config_changes(old.optimizer_ran, new.optimizer_ran)
    if changed_config:
        return Mechanism(
            f"optimizer-config:{optimizer}",
            f"{optimizer}'s settings changed",
            f"{where}: {optimizer}'s settings changed ({changed_config})",
            localisation=found,
        )
    legacy = "legacy" in before_class and "legacy" not in after_class
    return Mechanism(
        f"optimizer:{optimizer}",
        f"{optimizer}'s update is computed differently (same gradients, other weights)",
        f"{where}: {optimizer}'s arithmetic changed" + (" (the legacy optimizer before)" if legacy else ""),
        localisation=found,
    )


def _draws_random_numbers(layer_class: str) -> bool:
    """Dropout, noise and random augmentation layers: a difference there is their draws."""
    return "Dropout" in layer_class or "Noise" in layer_class or layer_class.startswith("Random")


def _scale_between(old: float | None, new: float | None) -> int | None:
    """The power of two that ``new / old`` is (within float16's rounding), if it is one: two
    gradients a loss scale apart."""
    import math

    if not old or not new or not math.isfinite(old) or not math.isfinite(new) or (old > 0) != (new > 0):
        return None
    exponent = math.log2(abs(new / old))
    nearest = round(exponent)
    return abs(nearest) if nearest != 0 and abs(exponent - nearest) < 0.01 else None


def _batch_sequence(old: Anatomy, new: Anatomy, changed: dict[str, tuple[str, str]]) -> Mechanism | None:
    """Batches that hold other samples at some step both anatomies hold, after the first
    difference too: a data pipeline draws its batches whatever the weights do, so this is a
    mechanism of its own (Keras 2 draws a new order every epoch, Keras 3 the same one)."""
    first, last = max(old.first_step, new.first_step), min(old.last_step, new.last_step)
    for step in range(first, last + 1):
        i, j = step - old.first_step, step - new.first_step
        if old.batch_set[i] != new.batch_set[j]:
            before, after = changed.get("shuffling", ("", ""))
            cause = (
                f"the shuffle gives {after} now ({before} before)"
                if before
                else "the data pipeline draws other batches now"
            )
            key = f"batch:{before}->{after}" if before else "batch"
            title = (
                f"Shuffling: {before} before, {after} now"
                if before
                else "The batches are drawn in another order (same shuffling setting)"
            )
            return Mechanism(key, title, f"also: the batch at step {step} holds other samples: {cause}")
    return None


def _loss_mechanism(
    found: Localisation, changed: dict[str, tuple[str, str]], old: RunRecord, new: RunRecord
) -> Mechanism:
    step = found.step
    values = _pair(found.old_value, found.new_value)
    where = f"the loss at step {step}, with equal weights, batch and output ({values})"
    if found.stage == GRADIENTS:
        where = (
            f"the gradient of {found.weight} at step {step}, with equal weights, batch and output and "
            f"a loss that rounds to the same value ({values}, the gradient's sum)"
        )
    if "loss dtype" in changed:
        before, after = changed["loss dtype"]
        if PRECISION.get(after, 0) < PRECISION.get(before, 0):
            return Mechanism(
                f"loss-dtype-narrower:{before}->{after}",
                f"The loss is computed in {after} now, in {before} before: the loss loses precision",
                f"first difference: {where}: a {old.dtype} model's loss is computed in {after} now "
                f"({before} before)",
                localisation=found,
                set_back={"loss_dtype": before},
            )
        was_output = configuration(old).get("output dtype") == before
        return Mechanism(
            f"loss-dtype-wider:{after}:{'output' if was_output else 'other'}",
            f"The loss is computed in {after} now, in the output's dtype before"
            if was_output
            else f"The loss is computed in {after} now, in a narrower dtype before",
            f"first difference: {where}: the loss is computed in {after} now ({before} before)",
            localisation=found,
            set_back={"loss_dtype": before},
        )
    before, after = (_short_class(name) for name in changed.get("loss", ("", "")))
    if before and after and before != after:  # one class moved to another module is no other class
        return Mechanism(
            "loss-class",
            "Another loss class computes the loss",
            f"first difference: {where}: {after} computes it now ({before} before)",
            localisation=found,
        )
    changed_config = ""
    if not plugin_machinery(old.loss_ran + new.loss_ran):  # the loss dtype is a setting of its own
        changed_config = shared_config_changes(_without_dtype(old.loss_ran), _without_dtype(new.loss_ran))
    if changed_config:
        loss = after or "the loss"
        return Mechanism(
            f"loss-config:{loss}",
            f"{loss}'s settings changed",
            f"first difference: {where}: {loss}'s settings changed ({changed_config})",
            localisation=found,
        )
    return Mechanism(
        "loss-arithmetic",
        "The loss is computed differently (same class, config and dtype)",
        f"first difference: {where}: the loss's arithmetic changed (still {new.loss_dtype})",
        localisation=found,
    )


def _without_dtype(ran: str) -> str:
    """A ``loss_ran`` text without its config's ``dtype`` (the loss dtype, a setting of its own)."""
    import json

    path, config = split_ran(ran)
    if config is None or "dtype" not in config:
        return ran
    return f"{path} {json.dumps({k: v for k, v in config.items() if k != 'dtype'}, sort_keys=True)}"


def _class_of(ran: str) -> str:
    """The class path of an ``optimizer_ran``/``loss_ran`` text (``path {config}``)."""
    path = ran.split(" ", 1)[0] if ran else ""
    return path + (" (legacy)" if ".legacy." in path else "")


def _short_class(path: str) -> str:
    return path.split(" ", 1)[0].rsplit(".", 1)[-1]


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:.9g}"


def _pair(old: float | None, new: float | None) -> str:
    """``old -> new`` with as many digits as tell them apart (a float64 ulp needs 17)."""
    if old is None or new is None:
        return f"{_number(old)} -> {_number(new)}"
    for digits in (9, 12, 17):
        before, after = f"{old:.{digits}g}", f"{new:.{digits}g}"
        if before != after:
            break
    return f"{before} -> {after}"


def group(mechanisms: list[tuple[str, Mechanism]]) -> list[tuple[str, str, list[str]]]:
    """(key, title, the cases' labels) per mechanism, the largest group first, unlocalised last.

    A case is listed under each of its mechanisms (its first difference and every further one
    shown by its own evidence), so a mechanism that a first difference masks is still found."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for label, mechanism in mechanisms:
        for one in mechanism.all:
            groups.setdefault(one.key, (one.title, []))[1].append(label)
    ordered = sorted(groups.items(), key=lambda item: (item[0] == NOT_LOCALISED, -len(item[1][1]), item[0]))
    return [(key, title, labels) for key, (title, labels) in ordered]
