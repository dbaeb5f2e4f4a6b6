"""A bisection's findings, per mechanism: the release that brought it, in words, markdown and HTML.

Each mechanism of the gate's verdict lists its cases; each case's search (:class:`.bisect.Search`)
says where it changed. The cases of a mechanism that changed at the same configurations form one
finding ("appeared in TensorFlow 2.16.1 (Keras 3.0.5)"); a mechanism whose cases changed at other
configurations shows each group; a case that changed twice shows both steps; a borderline or
unstable case is said to be so, with the configuration where that was seen.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .bisect import Key, Search
from .bisect_run import Bisection

Step = tuple[int, int]


@dataclass
class Finding:
    """One mechanism: its cases grouped by where they changed."""

    key: str
    title: str
    cases: list[Key]
    by_steps: dict[tuple[Step, ...], list[Key]] = field(default_factory=dict)
    borderline: dict[Key, int] = field(default_factory=dict)
    unstable: dict[Key, tuple[int, int]] = field(default_factory=dict)


def findings(bisection: Bisection) -> list[Finding]:
    rows = {f"{row.case} [{row.dtype}]": (row.case, row.dtype) for row in bisection.verdict.rows}
    found = []
    for key, title, labels in bisection.verdict.mechanisms:
        cases = [rows[label] for label in labels if label in rows and rows[label] in bisection.plan.searches]
        finding = Finding(key, title, cases)
        for case in cases:
            search: Search = bisection.plan.searches[case]
            if search.borderline is not None:
                finding.borderline[case] = search.borderline
            elif search.contradiction is not None:
                finding.unstable[case] = search.contradiction
            else:
                finding.by_steps.setdefault(tuple(search.steps()), []).append(case)
        found.append(finding)
    return found


def step_verdicts(bisection: Bisection, directory: Path) -> dict[Step, Path]:
    """The gate's verdict between each step's two neighbours, on that step's cases, as markdown:
    what the release did to them, in the gate's own words. Step -> the file."""
    from ..files import atomic_write_text
    from .results import Results
    from .verdict import compare_results
    from .verdict_text import markdown as verdict_markdown

    results = {0: bisection.old, len(bisection.path) - 1: bisection.new, **bisection.probed}
    cases: dict[Step, set[Key]] = {}
    for finding in findings(bisection):
        for steps, keys in finding.by_steps.items():
            for step in steps:
                cases.setdefault(step, set()).update(keys)
    written: dict[Step, Path] = {}
    for (before, after), step_cases in sorted(cases.items()):
        if before not in results or after not in results:
            continue
        old, new = (
            Results([run for run in results[i].runs if run.key in step_cases], machine=results[i].machine)
            for i in (before, after)
        )
        path = directory / f"verdict-{bisection.path[before].name}-to-{bisection.path[after].name}.md"
        atomic_write_text(path, verdict_markdown(compare_results(old, new)))
        written[(before, after)] = path
    return written


class Words:
    """How configurations, their results files and each step's verdict are named in a report."""

    def __init__(
        self,
        bisection: Bisection,
        links: Mapping[int, Path] | None = None,
        base: Path | None = None,
        verdicts: Mapping[Step, Path] | None = None,
    ):
        self.bisection = bisection
        self.links = dict(links or {})
        self.base = base
        self.verdicts = dict(verdicts or {})

    def relative(self, path: Path) -> str:
        if self.base is not None:
            try:
                return str(path.resolve().relative_to(self.base.resolve()))
            except ValueError:
                return str(path)
        return str(path)

    def configuration(self, index: int) -> str:
        configuration = self.bisection.path[index]
        results = {0: self.bisection.old, len(self.bisection.path) - 1: self.bisection.new}.get(index)
        results = results or self.bisection.probed.get(index)
        keras = results.versions.get("keras") if results is not None else None
        return configuration.describe(keras)

    def short(self, index: int) -> str:
        """``2.16.1 + Keras 3.0.0``, ``2.16.1 + tf-keras 2.16.0``, ``2.15.1 (Keras 2.15.0)``."""
        configuration = self.bisection.path[index]
        if configuration.by_hand:
            return configuration.name
        if configuration.legacy_keras:
            return f"TF {configuration.tensorflow} + tf-keras {configuration.keras}"
        if configuration.keras:
            return f"TF {configuration.tensorflow} + Keras {configuration.keras}"
        return self.configuration(index).replace("TensorFlow", "TF")

    def short_steps(self, steps: tuple[Step, ...]) -> str:
        """Where a group of runs changed, in a table cell: each step's release, "then" between two."""
        words = []
        for before, after in steps:
            if after - before == 1:
                words.append(self.short(after))
            else:
                between = after - before - 1
                words.append(
                    f"after {self.short(before)}, by {self.short(after)} ({between} between undecided)"
                )
        return ", then ".join(words)

    def link(self, index: int) -> str | None:
        path = self.links.get(index)
        return None if path is None else self.relative(path)

    def references(self, steps: tuple[Step, ...]) -> list[tuple[str, str | None]]:
        """What a step's reader opens: each neighbouring configuration once (its results file's
        link, if kept), then the gate's verdict across each step: (name, link or None)."""
        neighbours = {self.configuration(i): self.link(i) for step in steps for i in step}
        verdicts = [("the gate between them", v) for v in map(self.verdict, steps) if v]
        return [*neighbours.items(), *verdicts]

    def verdict(self, step: Step) -> str | None:
        path = self.verdicts.get(step)
        return None if path is None else self.relative(path)

    def step(self, step: Step, cases: Sequence[Key] = ()) -> str:
        before, after = step
        if after - before == 1:
            return f"appeared in {self.configuration(after)} (after {self.configuration(before)})"
        plan = self.bisection.plan
        search = plan.searches.get(cases[0]) if cases else None
        unprobed = [
            f"{self.bisection.path[i].name}: "
            + (search.undecided_because(i, plan.skipped) if search else plan.skipped.get(i, "not probed"))
            for i in range(before + 1, after)
        ]
        return (
            f"appeared after {self.configuration(before)}, by {self.configuration(after)}; "
            f"{_configurations(after - before - 1)} between could not decide it ({'; '.join(unprobed[:3])}"
            f"{'...' if len(unprobed) > 3 else ''})"
        )

    def steps(self, steps: tuple[Step, ...], cases: Sequence[Key] = ()) -> str:
        if len(steps) == 1:
            return self.step(steps[0], cases)
        first, second = steps
        return (
            f"changed in two steps: {self.step(first, cases)}, to a run like neither side's; then "
            f"{self.step(second, cases)}, to the new side's"
        )


def _between(bisection: Bisection) -> str:
    """The configurations between the two sides: all of them where few, else the first and last."""
    names = [c.name for c in bisection.path[1:-1]]
    if not names:
        return "none between"
    if len(names) <= 8:
        return ", ".join(names)
    return f"{names[0]} to {names[-1]}, {len(names)} between the two sides"


def _configurations(count: int) -> str:
    return f"{count} configuration" if count == 1 else f"{count} configurations"


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _labels(cases: list[Key]) -> str:
    return ", ".join(f"{case} [{dtype}]" for case, dtype in cases)


def headline(finding: Finding, words: Words) -> str:
    """The one line a team reads: the release (or releases) where the mechanism's runs changed,
    the most runs first; "then" joins the two steps of runs that changed twice."""
    groups = sorted(finding.by_steps.items(), key=lambda item: (-len(item[1]), item[0]))
    if len(groups) == 1 and not finding.borderline and not finding.unstable:
        where = words.short_steps(groups[0][0])
        return where if where.startswith("after ") else f"appeared in {where}"
    parts = [f"{_runs(len(cases))}: {words.short_steps(steps)}" for steps, cases in groups]
    if finding.borderline:
        parts.append(f"{len(finding.borderline)} borderline")
    if finding.unstable:
        parts.append(f"{len(finding.unstable)} unstable")
    return "; ".join(parts)


def text(
    bisection: Bisection, links: Mapping[int, Path] | None = None, verdicts: Mapping[Step, Path] | None = None
) -> str:
    """The terminal's report."""
    words = Words(bisection, links, verdicts=verdicts)
    lines = [
        f"bisect {words.configuration(0)} -> {words.configuration(len(bisection.path) - 1)}: "
        f"{len(bisection.plan.probes)} probes along {len(bisection.path)} configurations, "
        f"{len(bisection.plan.searches)} changed runs",
    ]
    for finding in findings(bisection):
        lines += ["", f"{finding.title} ({_runs(len(finding.cases))})", f"  {headline(finding, words)}"]
        for steps, cases in finding.by_steps.items():
            lines.append(f"  - {words.steps(steps, cases)}: {_labels(cases)}")
            for before, after in steps:
                for index in (before, after):
                    link = words.link(index)
                    if link:
                        lines.append(f"    {words.configuration(index)}: {link}")
                verdict = words.verdict((before, after))
                if verdict:
                    lines.append(f"    the gate between them: {verdict}")
        lines += _doubtful_lines(finding, words, "  ")
    skipped = bisection.plan.skipped
    if skipped:
        lines += ["", "configurations that could not be used:"]
        lines += [f"  {bisection.path[i].name}: {why}" for i, why in sorted(skipped.items())]
    return "\n".join(lines) + "\n"


def _doubtful_lines(finding: Finding, words: Words, indent: str) -> list[str]:
    lines = []
    for case, index in finding.borderline.items():
        lines.append(
            f"{indent}borderline: {_labels([case])} at {words.configuration(index)} ran within the gate's "
            "tolerance of both sides, so no release can be named for it"
        )
    for case, (first, second) in finding.unstable.items():
        states = words.bisection.plan.searches[case].states
        lines.append(
            f"{indent}unstable: {_labels([case])} ran like {_side(states[first])} at "
            f"{words.configuration(first)} but like {_side(states[second])} at a later "
            f"{words.configuration(second)}: not one step in release order"
        )
    return lines


def _side(state: str) -> str:
    return {"old": "the old side", "new": "the new side", "neither": "neither side"}.get(state, state)


def markdown(
    bisection: Bisection,
    links: Mapping[int, Path] | None = None,
    base: Path | None = None,
    verdicts: Mapping[Step, Path] | None = None,
) -> str:
    """The report for a CI job summary: one table row per mechanism, then each one's cases."""
    words = Words(bisection, links, base, verdicts)
    last = len(bisection.path) - 1
    lines = [
        f"# Which release did it: {words.configuration(0)} -> {words.configuration(last)}",
        "",
        f"{len(bisection.plan.probes)} probes along {len(bisection.path)} configurations "
        f"({_between(bisection)}), "
        f"{len(bisection.plan.searches)} changed runs.",
        "",
        "| mechanism | runs | where it appeared |",
        "| --- | --- | --- |",
    ]
    found = findings(bisection)
    for finding in found:
        lines.append(f"| {_cell(finding.title)} | {len(finding.cases)} | {_cell(headline(finding, words))} |")
    for finding in found:
        lines += ["", f"## {finding.title}", "", headline(finding, words) + ".", ""]
        for steps, cases in finding.by_steps.items():
            results = ", ".join(
                f"[{name}]({link})" if link else name for name, link in words.references(steps)
            )
            lines.append(f"- {words.steps(steps, cases)}: {_labels(cases)} (results: {results})")
        lines += _doubtful_lines(finding, words, "- ")
    if bisection.plan.skipped:
        lines += ["", "## Configurations that could not be used", ""]
        lines += [f"- {bisection.path[i].name}: {why}" for i, why in sorted(bisection.plan.skipped.items())]
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def page(
    bisection: Bisection,
    links: Mapping[int, Path] | None = None,
    base: Path | None = None,
    verdicts: Mapping[Step, Path] | None = None,
) -> str:
    """A self-contained HTML page: a table of mechanisms, then a section per mechanism."""
    words = Words(bisection, links, base, verdicts)
    last = len(bisection.path) - 1
    title = f"Which release did it: {words.configuration(0)} -> {words.configuration(last)}"
    found = findings(bisection)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "section{margin-top:1.5em}.doubt{color:#a15c00}.line li.step{font-weight:bold}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(bisection.plan.probes)} probes along {len(bisection.path)} configurations, "
        f"{len(bisection.plan.searches)} changed runs.</p>",
        '<table id="mechanisms"><tr><th>mechanism</th><th>runs</th><th>where it appeared</th></tr>',
    ]
    for n, finding in enumerate(found):
        out.append(
            f'<tr><td><a href="#m{n}">{html.escape(finding.title)}</a></td><td>{len(finding.cases)}</td>'
            f"<td>{html.escape(headline(finding, words))}</td></tr>"
        )
    out.append("</table>")
    for n, finding in enumerate(found):
        out += [f'<section id="m{n}" class="mechanism">', f"<h2>{html.escape(finding.title)}</h2>"]
        out.append(f"<p>{html.escape(headline(finding, words))}.</p><ul>")
        for steps, cases in finding.by_steps.items():
            anchors = [
                f'<a href="{html.escape(link)}">{html.escape(name)}</a>' if link else html.escape(name)
                for name, link in words.references(steps)
            ]
            out.append(
                f"<li>{html.escape(words.steps(steps, cases))}: {html.escape(_labels(cases))} "
                f"(results: {', '.join(dict.fromkeys(anchors))})</li>"
            )
        out += [f'<li class="doubt">{html.escape(line)}</li>' for line in _doubtful_lines(finding, words, "")]
        out += ["</ul>", "</section>"]
    out.append('<section><h2>The line of configurations</h2><ol start="0" class="line">')
    for index, configuration in enumerate(bisection.path):
        state = "the old side" if index == 0 else "the new side" if index == last else ""
        if index in bisection.plan.skipped:
            state = f"could not be used: {bisection.plan.skipped[index]}"
        elif index in bisection.plan.probes:
            state = "probed"
        out.append(f"<li>{html.escape(configuration.name)} <small>{html.escape(state)}</small></li>")
    out += ["</ol></section>", "</body></html>"]
    return "\n".join(out) + "\n"
