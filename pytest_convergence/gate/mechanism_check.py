"""Every claim a mechanism sentence makes, re-derived from the two records it was read from.

:mod:`.mechanism` names why a case changed, from the anatomies (:mod:`.localise`) and the
configurations the two sides recorded. This module checks its words the plainest way, as the
diagnosis's fact check (:mod:`..diagnosis.fact_check`) checks a diagnosis against its history:
the stated stage and step (every stage before it equal on both sides, the stated one differing,
at every step before it nothing differing), the weight and layer named (the first that differs),
the numbers beside them (the anatomies' own), each class and setting named as a cause (the two
configurations' values, and that they differ), and that no sentence names the plugin's own
machinery (the wrapper that pins a loss's dtype for a replay, the plugin's modules).

:func:`check_verdict_text` checks what can be checked of a verdict's markdown alone (the committed
``docs/gate-*/verdict.md``, whose results files are not committed): no machinery named, every group
title one the gate can name, the groups' counts, every case in a group and in the first
differences, and the sentences' settings against the case's own notes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ..config_diff import same_setting, split_ran
from .localise import BATCH, GRADIENTS, INITIALISATION, LOSS, OUTPUT, UPDATE, WEIGHTS
from .mechanism import MACHINERY, Mechanism, _pair, _short_class, configuration

if TYPE_CHECKING:
    from ..anatomy import Anatomy
    from .localise import Localisation
    from .results import RunRecord


class MechanismFactWarning(UserWarning):
    """A mechanism sentence stated what its records do not show (a bug to report)."""


def check_mechanism(
    mechanism: Mechanism,
    old: RunRecord,
    new: RunRecord,
    *,
    old_anatomy: Anatomy | None = None,
    new_anatomy: Anatomy | None = None,
) -> list[str]:
    """The claims of ``mechanism`` (and of the further mechanisms it found in the same two records)
    that do not hold, in words; empty when every one does. Cheap: a few comparisons per step up to
    the stated one."""
    problems: list[str] = []
    for one in mechanism.all:
        problems += _machinery(one)
    found = mechanism.localisation
    sentence = mechanism.sentence
    if found is not None and found.found and old_anatomy is not None and new_anatomy is not None:
        problems += _stage(found, sentence, old_anatomy, new_anatomy)
    problems += _causes(sentence, old, new, found)
    for further in mechanism.also:
        if further.sentence.startswith("also: the batch at step") and old_anatomy and new_anatomy:
            problems += _other_samples(further.sentence, old_anatomy, new_anatomy)
    return problems


def check_mechanism_words(mechanism: Mechanism) -> list[str]:
    """What needs no records: no sentence of ``mechanism``, its replay's words included, names the
    plugin's own machinery."""
    return [problem for one in mechanism.all for problem in _machinery(one)]


def machinery_named(text: str) -> list[str]:
    """The names of the plugin's machinery that ``text`` holds."""
    return [name for name in MACHINERY if name in text]


def _machinery(mechanism: Mechanism) -> list[str]:
    named = sorted(
        {
            name
            for text in (mechanism.title, mechanism.sentence, mechanism.confirmation)
            for name in machinery_named(text)
        }
    )
    return (
        [f"names the plugin's own machinery ({', '.join(named)}), not what the upgrade changed"]
        if named
        else []
    )


def _same(a: object, b: object) -> bool:
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype.kind == "f" and y.dtype.kind == "f":
        return bool(np.all((x == y) | (np.isnan(x) & np.isnan(y))))
    return bool(np.array_equal(x, y))


def _first_row(a: np.ndarray, b: np.ndarray, count: int) -> int | None:
    for index in range(count):
        if not _same(a[index], b[index]):
            return index
    return None


def _stage(found: Localisation, sentence: str, old: Anatomy, new: Anatomy) -> list[str]:
    """The stated step and stage, re-derived from the two anatomies element by element."""
    problems: list[str] = []
    step, stage = found.step or 0, found.stage
    first, last = max(old.first_step, new.first_step), min(old.last_step, new.last_step)
    if not first <= step <= last:
        return [f"step {step} is not a step both anatomies hold ({first}-{last})"]
    count = min(len(old.weights), len(new.weights))
    for earlier in range(first, step):
        i, j = earlier - old.first_step, earlier - new.first_step
        for name in ("batch_set", "output_set", "loss"):
            if not _same(getattr(old, name)[i], getattr(new, name)[j]):
                problems.append(
                    f"the {name.split('_')[0]} already differs at step {earlier}, before step {step}"
                )
        for name in ("weights_before", "gradients", "weights_after"):
            if _first_row(getattr(old, name)[i], getattr(new, name)[j], count) is not None:
                problems.append(
                    f"the {name.replace('_', ' ')} already differ at step {earlier}, before step {step}"
                )
    if problems:
        return problems[:1]
    i, j = step - old.first_step, step - new.first_step
    weights_differ = _first_row(old.weights_before[i], new.weights_before[j], count)
    samples_differ = not _same(old.batch_set[i], new.batch_set[j])
    order_differs = not _same(old.batch[i], new.batch[j])
    outputs = ("output_set", "layer_sets") if order_differs else ("output", "layer_outputs")
    output_differs = not _same(getattr(old, outputs[0])[i], getattr(new, outputs[0])[j])
    layer = None
    if old.layers and old.layers == new.layers and len(getattr(old, outputs[1])):
        index = _first_row(getattr(old, outputs[1])[i], getattr(new, outputs[1])[j], len(old.layers))
        layer = None if index is None else old.layers[index]
    loss_differs = not _same(old.loss[i], new.loss[j])
    gradient = _first_row(old.gradients[i], new.gradients[j], count)
    update = _first_row(old.weights_after[i], new.weights_after[j], count)
    names = new.weights[:count]

    def expect(holds: bool, claim: str) -> None:
        if not holds:
            problems.append(f"{stage} at step {step}: {claim} does not hold")

    if stage == INITIALISATION:
        expect(step == 1 and weights_differ is not None, "the initial weights differ")
        if weights_differ is not None:
            expect(found.weight == names[weights_differ], f"{found.weight} is the first weight that differs")
        return problems
    expect(weights_differ is None or stage == WEIGHTS, "equal starting weights")
    if stage == WEIGHTS:
        expect(
            weights_differ is not None and found.weight == names[weights_differ],
            f"{found.weight} differs first",
        )
        return problems
    if stage == BATCH:
        expect(samples_differ or (order_differs and (loss_differs or gradient is not None)), "another batch")
        return problems
    expect(not samples_differ, "the same samples in the batch")
    if stage == OUTPUT:
        expect(output_differs or layer is not None, "another output")
        if found.layer is not None:
            expect(found.layer == layer, f"{found.layer} is the first layer whose output differs")
            expect(found.layer in sentence, f"the sentence names {found.layer}")
        if "sum " in sentence:  # a layer's random draws are stated without numbers
            problems += _values(sentence, old.output_sum[i], new.output_sum[j], "output sum")
        return problems
    expect(not output_differs and layer is None, "an equal output")
    if stage == LOSS:
        expect(loss_differs, "another loss")
        problems += _values(sentence, old.loss[i], new.loss[j], "loss")
        return problems
    expect(not loss_differs, "an equal loss")
    if stage == GRADIENTS:
        expect(
            gradient is not None and found.weight == names[gradient],
            f"the gradient of {found.weight} differs first",
        )
        if gradient is not None:
            problems += _values(
                sentence, old.gradient_sums[i][gradient], new.gradient_sums[j][gradient], "gradient sum"
            )
        return problems
    expect(stage == UPDATE, "a stage the gate knows")
    expect(gradient is None, "equal gradients")
    expect(
        update is not None and found.weight == names[update], f"the update of {found.weight} differs first"
    )
    return problems


def _values(sentence: str, old: float, new: float, what: str) -> list[str]:
    shown = _pair(float(old), float(new))
    if re.search(rf"(?<![\w.+-]){re.escape(shown)}(?![\w.])", sentence):
        return []
    return [f"the {what} is {shown} on the two sides, not as the sentence says"]


def _other_samples(sentence: str, old: Anatomy, new: Anatomy) -> list[str]:
    match = re.match(r"also: the batch at step (\d+) holds other samples", sentence)
    if match is None:
        return []
    step = int(match.group(1))
    if not (old.first_step <= step <= old.last_step and new.first_step <= step <= new.last_step):
        return [f"the batch at step {step}: a step the anatomies do not both hold"]
    if _same(old.batch_set[step - old.first_step], new.batch_set[step - new.first_step]):
        return [f"the batch at step {step} holds the same samples on both sides"]
    return []


def _causes(sentence: str, old: RunRecord, new: RunRecord, found: Localisation | None) -> list[str]:
    """Every class and setting the sentence names as a cause, against the two configurations."""
    before, after = configuration(old), configuration(new)
    problems: list[str] = []

    def setting(name: str, was: str, now: str) -> None:
        if (before.get(name, ""), after.get(name, "")) != (was, now) or was == now:
            problems.append(
                f"says {name} {was} before, {now} now; the records say {before.get(name) or '?'} -> "
                f"{after.get(name) or '?'}"
            )

    head = sentence.split(" (caveat:", 1)[0]
    for match in re.finditer(r"loss is computed in (\w+) now \((\w+) before\)", head):
        setting("loss dtype", match.group(2), match.group(1))
    for match in re.finditer(r"a (\w+) model's loss", head):
        if match.group(1) != old.dtype:
            problems.append(f"says a {match.group(1)} model; the case trains in {old.dtype}")
    for match in re.finditer(r"the shuffle gives (.+?) now \((.+?) before\)", head):
        setting("shuffling", match.group(2), match.group(1))
    for match in re.finditer(r"the (dtype policy|output dtype) is (\S+) now \((\S+) before\)", head):
        setting(match.group(1), match.group(3), match.group(2))
    optimizers = _short_class(before.get("optimizer", "")), _short_class(after.get("optimizer", ""))
    losses = _short_class(before.get("loss", "")), _short_class(after.get("loss", ""))
    for match in re.finditer(r"the optimizer is (\w+) now \((\w+) before\)", head):
        if (match.group(2), match.group(1)) != optimizers or optimizers[0] == optimizers[1]:
            problems.append(
                f"says the optimizer {match.group(2)} -> {match.group(1)}; the records say {optimizers}"
            )
    for match in re.finditer(r"(\w+) computes it now \((\w+) before\)", head):
        if (match.group(2), match.group(1)) != losses or losses[0] == losses[1]:
            problems.append(
                f"says the loss class {match.group(2)} -> {match.group(1)}; the records say {losses}"
            )
    stage = found.stage if found is not None else None
    for match in re.finditer(r"(\w+)'s arithmetic changed", head):
        named = match.group(1)
        if stage == UPDATE and (named != optimizers[1] or optimizers[0] not in ("", named)):
            problems.append(
                f"names {named}'s update; the records say the optimizer {optimizers[0]} -> {optimizers[1]}"
            )
        if stage == OUTPUT and found is not None and found.layer and not found.layer.endswith(f"({named})"):
            problems.append(f"names {named}'s forward pass; the first differing layer is {found.layer}")
    if "(the legacy optimizer before)" in head and "legacy" not in before.get("optimizer", ""):
        problems.append("says the legacy optimizer before; the old record's optimizer is not legacy")
    for match in re.finditer(r"the loss's arithmetic changed \(still (\w+)\)", head):
        if not before["loss dtype"] == after["loss dtype"] == match.group(1):
            problems.append(
                f"says still {match.group(1)}; the loss dtypes are "
                f"{before['loss dtype']} -> {after['loss dtype']}"
            )
    for match in re.finditer(r"(\w+)'s settings changed \((.+?)\)(?:$| \()", head):
        ran = (
            (old.optimizer_ran, new.optimizer_ran)
            if match.group(1) == optimizers[1]
            else (old.loss_ran, new.loss_ran)
        )
        problems += _settings(match.group(2), *ran)
    if re.search(r"2\^\d+ apart", head) and "on" not in (
        before.get("loss scaling"),
        after.get("loss scaling"),
    ):
        problems.append("names a loss scale; neither side scales its loss")
    return problems


def _settings(stated: str, before: str, after: str) -> list[str]:
    """Each ``key old -> new`` stated: a key both configs hold, with values that differ."""
    _, old = split_ran(before)
    _, new = split_ran(after)
    if old is None or new is None:
        return [f"names settings ({stated}); the records hold no config to compare"]
    problems = []
    for key in re.findall(r"(?:^|, )([A-Za-z_][A-Za-z_0-9]*) ", stated):
        if key not in old or key not in new:
            problems.append(f"names the setting {key}, which one side's config does not hold")
        elif same_setting(old[key], new[key]):
            problems.append(f"names the setting {key}, which is the same on both sides")
    return problems


TITLES = (
    r"The initial weights differ: the same seed draws other values",
    r"Shuffling: .+ before, .+ now",
    r"The batches are drawn in another order \(same shuffling setting\)",
    r"The (dtype policy|output dtype) changed: \S+ now \(\S+ before\)",
    r"\w+ draws other random numbers \(same seed\)",
    r"\w+'s forward pass computes differently \(same weights, same input\)",
    r"The forward pass computes differently \(same weights, same batch\)",
    r"The loss is computed in \w+ now, in \w+ before: (the loss loses precision|a \w+ model loses precision "
    r"in its loss)",
    r"The loss is computed in \w+ now, in (the output's dtype|a narrower dtype) before",
    r"Another loss class computes the loss",
    r"\w+'s settings changed",
    r"The loss is computed differently \(same class, config and dtype\)",
    r"Loss scaling: the optimizer receives the gradients at another scale",
    r"The gradients are computed differently \(same loss\)",
    r"Another optimizer class updates the weights",
    r"\w+'s update is computed differently \(same gradients, other weights\)",
    r"Not localised",
)
"""Every group title :mod:`.mechanism` writes (the narrower loss dtype's in its earlier words too)."""


def check_verdict_text(markdown: str) -> list[str]:
    """What a verdict's markdown states of its mechanisms that its own text contradicts."""
    problems = [f"names the plugin's own machinery: {name}" for name in machinery_named(markdown)]
    sections = _sections(markdown)
    table = _table(markdown)
    firsts = _bullets(sections.get("First differences", []))
    notes = dict(_bullets(sections.get("What ran differently", [])))
    heading = next((h for h in sections if h.startswith("Mechanisms:")), None)
    if heading is None:
        return problems + (["first differences listed without a Mechanisms section"] if firsts else [])
    match = re.fullmatch(r"Mechanisms: (\d+) explain (\d+) changed cases", heading)
    if match is None:
        return [*problems, f"a Mechanisms heading the gate does not write: {heading!r}"]
    groups = [line for line in sections[heading] if re.match(r"\d+\. ", line)]
    if int(match.group(1)) != len(groups):
        problems.append(f"{match.group(1)} mechanisms stated, {len(groups)} listed")
    if int(match.group(2)) != len(firsts):
        problems.append(f"{match.group(2)} changed cases stated, {len(firsts)} with a first difference")
    cases = {label for label, _ in firsts}
    grouped: set[str] = set()
    for line in groups:
        item = re.fullmatch(r"\d+\. \*\*(.+)\*\* \((\d+)\): (.+)", line)
        if item is None:
            problems.append(f"a mechanism line the gate does not write: {line!r}")
            continue
        title, count, labels = item.group(1), int(item.group(2)), _labels(item.group(3))
        if not any(re.fullmatch(pattern, title) for pattern in TITLES):
            problems.append(f"a mechanism the gate cannot name: {title!r}")
        if count != len(labels) or len(set(labels)) != len(labels):
            problems.append(
                f"{title}: {count} cases stated, {len(labels)} listed ({len(set(labels))} distinct)"
            )
        for label in labels:
            grouped.add(label)
            if label not in cases:
                problems.append(f"{title}: {label} has no first difference")
            problems += _title_against_notes(title, label, notes.get(label, ""))
    problems += [f"{label}: a changed case in no mechanism" for label in sorted(cases - grouped)]
    for label, text in firsts:
        problems += _sentence_against_text(label, text, table.get(label), notes.get(label, ""))
    return problems


def _sections(markdown: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:].strip(), [])
        elif line.strip():
            current.append(line.strip())
    return sections


def _table(markdown: str) -> dict[str, list[str]]:
    """The verdict table's rows by label (``case [dtype]``): the cells after the two first."""
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 7 and cells[0] != "case":
            rows[f"{cells[0]} [{cells[1]}]"] = cells[2:]
    return rows


def _bullets(lines: list[str]) -> list[tuple[str, str]]:
    """``- **case [dtype]** (verdict): text`` and ``- **case [dtype]**: text`` as (label, text)."""
    found = []
    for line in lines:
        match = re.match(r"- \*\*(.+?\])\*\*(?: \([^)]*\))?: (.*)", line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def _labels(text: str) -> list[str]:
    return [label.strip() for label in re.findall(r"[^,\[]+\[[^\]]+\]", text)]


def _title_against_notes(title: str, label: str, notes: str) -> list[str]:
    """A group that names a setting's change: the case's notes list that change."""
    shuffling = re.fullmatch(r"Shuffling: (.+) before, (.+) now", title)
    if shuffling and f"shuffling {shuffling.group(1)} -> {shuffling.group(2)}" not in notes:
        return [f"{label}: grouped under '{title}', its notes list no such shuffling change"]
    dtype = re.match(r"The loss is computed in (\w+) now, in (\w+) before", title)
    if dtype and f"loss dtype {dtype.group(2)} -> {dtype.group(1)}" not in notes:
        return [f"{label}: grouped under '{title}', its notes list no such loss dtype change"]
    return []


def _sentence_against_text(label: str, text: str, row: list[str] | None, notes: str) -> list[str]:
    problems = []
    if not text.startswith(("first difference: ", "not localised: ")):
        problems.append(f"{label}: a sentence the gate does not write: {text[:60]!r}")
    if row is None:
        return [*problems, f"{label}: a first difference for a case the table does not list"]
    dtype = label.rsplit("[", 1)[-1].rstrip("]")
    parts_at = row[2]
    first = re.match(r"first difference: [^:]*?at step (\d+)", text)
    if first and parts_at.isdigit() and int(first.group(1)) > int(parts_at):
        problems.append(
            f"{label}: first difference at step {first.group(1)}, after the histories part ({parts_at})"
        )
    earlier = re.search(r"the histories still part \(from step \d+, step (\d+) before\)", text)
    if earlier and earlier.group(1) != parts_at:
        problems.append(f"{label}: the replay says step {earlier.group(1)} before; the table says {parts_at}")
    head = text.split(". Replay: ", 1)[0].split(". Confirmed by replay: ", 1)[0]
    for model in re.findall(r"a (\w+) model's loss", text):
        if model != dtype:
            problems.append(f"{label}: says a {model} model")
    for now, before in re.findall(r"the loss is computed in (\w+) now \((\w+) before\)", head) + re.findall(
        r"model's loss is computed in (\w+) now \((\w+) before\)", head
    ):
        if now == before or f"loss dtype {before} -> {now}" not in notes:
            problems.append(f"{label}: says the loss dtype {before} -> {now}; its notes do not")
    for now, before in re.findall(r"the shuffle gives (.+?) now \((.+?) before\)", head):
        if now == before or f"shuffling {before} -> {now}" not in notes:
            problems.append(f"{label}: says the shuffling {before} -> {now}; its notes do not")
    for now, before in re.findall(
        r"(?:the optimizer is|:) (\w+)(?: computes it)? now \((\w+) before\)", text
    ):
        if now == before:
            problems.append(f"{label}: names {now} now and {before} before: the same class")
    for key, was, now in re.findall(r"(?:\(|, )([A-Za-z_]\w*) (\S+) -> (\S+?)(?=[,)])", text):
        if key not in ("sum",) and was == now:
            problems.append(f"{label}: says {key} {was} -> {now}: no change")
    return problems
