"""The verdict as text: the terminal table with its explanations (``format_table``, what
``pytest-convergence compare`` and ``pytest --convergence-baseline`` print) and the markdown summary
for a CI job or a pull request (``markdown``). Reads a :class:`.verdict_data.Verdict`; computes
nothing.
"""

from __future__ import annotations

from .. import tables
from .mechanism import Mechanism
from .results import RunRecord
from .verdict_data import FAIL, HEAVIER, PASS, SLOWER, Row, Verdict

HEADERS = ("case", "dtype", "outcome old -> new", "final loss old -> new", "parts at", "speed", "verdict")


def _cells(row: Row) -> tuple[str, ...]:
    outcome = f"{_get(row.old, 'outcome')} -> {_get(row.new, 'outcome')}"
    loss = f"{_loss(row.old)} -> {_loss(row.new)}"
    parting = "-" if row.parting_step is None else str(row.parting_step)
    return (row.case, row.dtype, outcome, loss, parting, speed_cell(row), row.verdict)


def speed_cell(row: Row) -> str:
    """The speed column: new/old steps per CPU second, or why it was not compared."""
    if row.speed_note.startswith("not compared"):
        return "not compared"
    if row.speed_ratio is None:
        return "-"
    return f"{row.speed_ratio:.2f}x" + (" (not judged)" if row.speed_note else "")


def explanation_lines(row: Row) -> list[str]:
    """What a reviewer reads under the table for one row: why it failed or was flagged, then what
    ran differently, each on a line of its own kind."""
    lines = []
    if row.reasons:
        kind = "SLOWER (speed only, a warning)" if row.verdict == SLOWER else row.verdict
        lines.append(f"{kind}: {row.case} [{row.dtype}]: {'; '.join(row.reasons)}")
    if row.memory_warning:
        lines.append(f"HEAVIER (memory, a warning): {row.label}: {row.memory_warning}")
    if row.mechanism is not None:
        lines.append(f"why: {row.label}: {mechanism_sentence(row.mechanism)}")
    lines += [f"note: {row.case} [{row.dtype}]: {note}" for note in row.notes]
    return lines


def mechanism_sentence(mechanism: Mechanism) -> str:
    """The case's sentence, with what its replay showed."""
    sentence = mechanism.sentence
    for further in mechanism.also:
        if further.sentence.startswith("also:"):  # shown by its own evidence, not by a replay
            sentence += f"; {further.sentence}"
    if not mechanism.confirmation:
        return sentence
    return f"{sentence}. {mechanism.confirmation}"


def changed_count(verdict: Verdict) -> int:
    """Cases with a mechanism (a case with several is counted once)."""
    return sum(1 for row in verdict.rows if row.mechanism is not None)


def mechanism_lines(verdict: Verdict) -> list[str]:
    """The mechanisms, grouped: one numbered line each, its cases after it."""
    groups = verdict.mechanisms
    if not groups:
        return []
    lines = [f"mechanisms: {len(groups)} explain the {changed_count(verdict)} changed cases"]
    for number, (_, title, labels) in enumerate(groups, 1):
        lines.append(f"  {number}. {title} ({len(labels)}): {', '.join(labels)}")
    return lines


def format_table(verdict: Verdict) -> list[str]:
    lines = [f"convergence gate: {verdict.title}"]
    if verdict.tf32:
        lines.append(f"first: {verdict.tf32}")
    lines += tables.format_table(HEADERS, [_cells(r) for r in verdict.rows])
    for row in verdict.rows:
        lines += explanation_lines(row)
    lines += mechanism_lines(verdict)
    lines += [f"warning: {w}" for w in verdict.warnings]
    lines.append(f"verdict: {'PASS' if verdict.passed else 'FAIL'} ({count_line(verdict)})")
    return lines


def count_line(verdict: Verdict) -> str:
    failed = len(verdict.failed_rows)
    slower = sum(r.verdict == SLOWER for r in verdict.rows)
    text = f"{failed} of {len(verdict.rows)} failed"
    text += f", {slower} slower (speed warnings)" if slower else ""
    heavier = sum(bool(r.memory_warning) for r in verdict.rows)
    return text + (f", {heavier} heavier (memory warnings)" if heavier else "")


BADGES = {FAIL: "❌ FAIL", PASS: "✅ pass", SLOWER: "⚠️ slower (speed)", HEAVIER: "⚠️ heavier (memory)"}


def markdown(verdict: Verdict) -> str:
    """A summary fit for a CI job summary or a pull-request comment."""
    mark = "✅ pass" if verdict.passed else "❌ FAIL"
    lines = [f"## Convergence gate: {mark}", "", f"**{verdict.title}** ({count_line(verdict)})", ""]
    if verdict.tf32:
        lines += [f"> **{verdict.tf32}**", ""]
    groups = verdict.mechanisms
    if groups:
        lines += [f"### Mechanisms: {len(groups)} explain {changed_count(verdict)} changed cases", ""]
        for number, (_, title, labels) in enumerate(groups, 1):
            lines.append(f"{number}. **{title}** ({len(labels)}): {', '.join(labels)}")
        lines.append("")
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    for row in verdict.rows:
        cells = list(_cells(row))
        cells[-1] = BADGES.get(row.verdict, row.verdict)
        lines.append("| " + " | ".join(cells) + " |")
    numerical = [r for r in verdict.rows if r.reasons and r.verdict != SLOWER]
    if numerical:
        lines += ["", "### Why", ""]
        lines += [f"- **{r.case} [{r.dtype}]** ({r.verdict}): {'; '.join(r.reasons)}" for r in numerical]
    explained = [(r, r.mechanism) for r in verdict.rows if r.mechanism is not None]
    if explained:
        lines += ["", "### First differences", ""]
        lines += [f"- **{r.label}** ({r.verdict}): {mechanism_sentence(m)}" for r, m in explained]
    slower = [r for r in verdict.rows if r.verdict == SLOWER]
    if slower:
        lines += ["", "### Speed (warnings, not failures)", ""]
        lines += [f"- **{r.case} [{r.dtype}]**: {'; '.join(r.reasons)}" for r in slower]
    heavier = [r for r in verdict.rows if r.memory_warning]
    if heavier:
        lines += ["", "### Memory (warnings, not failures)", ""]
        lines += [f"- **{r.label}**: {r.memory_warning}" for r in heavier]
    noted = [r for r in verdict.rows if r.notes]
    if noted:
        lines += ["", "### What ran differently", ""]
        lines += [f"- **{r.case} [{r.dtype}]**: {'; '.join(r.notes)}" for r in noted]
    if verdict.warnings:
        lines += ["", "### Warnings", "", *[f"- {w}" for w in verdict.warnings]]
    return "\n".join(lines) + "\n"


def _get(record: RunRecord | None, name: str) -> str:
    return "-" if record is None else str(getattr(record, name))


def _loss(record: RunRecord | None) -> str:
    return "-" if record is None else f"{record.final_loss:.4g}"
