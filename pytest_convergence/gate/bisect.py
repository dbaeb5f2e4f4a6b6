"""The bisection as data: which configuration to probe next, and what the probes found.

A gate names, for each changed case, its mechanism; a bisection finds the release that brought
it. Along a line of configurations (:mod:`.releases`: index 0 is the gate's old side, the last its
new side) every changed case is searched on its own, and probes are shared: a probe trains, in one
configuration, every case that wants that configuration next, so the cases of one mechanism, which
change together, cost one probe per halving (``ceil(log2(n))`` probes for ``n`` steps).

Each case is searched for two things (asv's ``find`` searches one): the first configuration whose
run no longer matches the old side's, and the first whose run matches the new side's. Where a
case changes in one step the two are the same configuration, found by the same probes; where a
probe matches neither side the case changes in two steps (or more), and both are found.

What "matches" means is the gate's own rule (:func:`classify`): bit for bit first, then the
tolerances the gate judges with. A probe within tolerance of both sides cannot say which it
follows; the case is then reported as borderline at that configuration, not forced one way. A case
whose probes contradict an order (new-like before old-like) is reported as unstable.

Nothing here trains or reads files: :mod:`.bisect_run` drives the probes, :mod:`.bisect_report`
renders the findings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .results import RunRecord
from .verdict import Thresholds, _compare_pair

Key = tuple[str, str]
OLD, NEW, NEITHER, BOTH, MISSING = "old", "new", "neither", "both", "missing"
"""What a probe's run is like: the old side's, the new side's, neither (a step in between), both
(within tolerance of each: undecidable), or missing (the probe did not train it)."""
MATCHING = Thresholds(speed="off", memory="off")
"""The gate's thresholds without speed and memory: a bisection follows training dynamics."""
BORDERLINE_PROBES = 2
"""Runs within tolerance of both sides, where the step could be, after which a case stops."""
FAILING_PROBES = 2
"""Configurations, where the step could be, whose sessions recorded no run of a case (its run
failed there: a setting that release refuses, say), after which the case stops: its runs fail
across a stretch of releases, and stepping around each would cost a probe apiece."""
IGNORED_REASONS = ("snapshot:",)
"""Reasons that say nothing of the dynamics: a probe's run never matches the old side's snapshot
file the way the old side's own run did."""


def classify(old: RunRecord, new: RunRecord, probe: RunRecord | None) -> tuple[str, str]:
    """Whose run the probe's is like, and why in a few words."""
    if probe is None:
        return MISSING, "not trained"
    if identical(probe, new):
        return NEW, "bit for bit the new side's"
    if identical(probe, old):
        return OLD, "bit for bit the old side's"
    like_old, why_old = _within(old, probe)
    like_new, why_new = _within(new, probe)
    if like_old and like_new:
        return BOTH, "within the gate's tolerance of both sides"
    if like_old:
        return OLD, "within the gate's tolerance of the old side's"
    if like_new:
        return NEW, "within the gate's tolerance of the new side's"
    return NEITHER, f"against the old side: {why_old}; against the new: {why_new}"


def identical(first: RunRecord, second: RunRecord) -> bool:
    """The same checkpointed losses, final weights and outcome, bit for bit."""
    return (
        first.outcome == second.outcome
        and len(first.checkpoint_losses) == len(second.checkpoint_losses)
        and bool(
            np.array_equal(
                np.asarray(first.checkpoint_losses, np.float64),
                np.asarray(second.checkpoint_losses, np.float64),
                equal_nan=True,
            )
        )
        and first.final_weights == second.final_weights
    )


def _within(reference: RunRecord, probe: RunRecord) -> tuple[bool, str]:
    """Whether the gate would pass the probe against the reference, both ways round (the gate's
    thresholds on final loss and steps to target only look one way)."""
    reasons: list[str] = []
    for before, after in ((reference, probe), (probe, reference)):
        row = _compare_pair(before, after, MATCHING, "", [])
        reasons += [r for r in row.reasons if not r.startswith(IGNORED_REASONS) and r not in reasons]
    return not reasons, "; ".join(reasons[:2])


@dataclass
class Search:
    """One case's search along a line of ``size`` configurations (0: old side, size-1: new side).

    ``states`` holds what each probed index found. Two predicates are searched: *left*, the first
    index not like the old side; *right*, the first index like the new side.
    """

    key: Key
    size: int
    states: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states.setdefault(0, OLD)
        self.states.setdefault(self.size - 1, NEW)

    def observe(self, index: int, state: str, reason: str = "") -> None:
        self.states[index] = state
        self.reasons[index] = reason

    # -- verdicts on the search so far --
    @property
    def borderline(self) -> int | None:
        """The first index within tolerance of both sides that lies where the step could be: once
        two do, no release is named for the case (a run like both sides says nothing of the order,
        and probing every configuration around it would cost a probe each). One that lies outside
        the step, once the step is found, changes nothing."""
        lows, highs = zip(self.interval("left"), self.interval("right"))
        low, high = min(lows), max(highs)
        inside = sorted(i for i, s in self.states.items() if s == BOTH and low < i < high)
        if len(inside) >= BORDERLINE_PROBES or (inside and self._nothing_else_around()):
            return inside[0]
        return None

    def _nothing_else_around(self) -> bool:
        """Whether nothing but runs like both sides (or configurations that could not decide)
        remain where the step could be."""
        for predicate in ("left", "right"):
            low, high = self.interval(predicate)
            if any(self.states.get(i) not in (BOTH, MISSING) for i in range(low + 1, high)):
                return False
        return True

    @property
    def contradiction(self) -> tuple[int, int] | None:
        """Two indexes probed out of order (a new-like run before an old-like one), if any."""
        probed = sorted((i, s) for i, s in self.states.items() if s in (OLD, NEW, NEITHER))
        for i, first in probed:
            for j, second in probed:
                if i < j and first in (NEW, NEITHER) and second == OLD:
                    return i, j
                if i < j and first == NEW and second == NEITHER:
                    return i, j
        return None

    def interval(self, predicate: str) -> tuple[int, int]:
        """(last index known false, first index known true) of ``left`` or ``right``."""
        true = {NEW, NEITHER} if predicate == "left" else {NEW}
        known = {i: s in true for i, s in self.states.items() if s in (OLD, NEW, NEITHER)}
        low = max((i for i, t in known.items() if not t), default=0)
        high = min((i for i, t in known.items() if t and i > low), default=self.size - 1)
        return low, high

    @property
    def failing(self) -> list[int]:
        """Where the step could be, the indexes whose sessions recorded no run of the case."""
        lows, highs = zip(self.interval("left"), self.interval("right"))
        low, high = min(lows), max(highs)
        return sorted(i for i, s in self.states.items() if s == MISSING and low < i < high)

    def wanted(self, skipped: set[int]) -> int | None:
        """The index this case wants probed next; None when it is decided (or cannot go on)."""
        if self.borderline is not None or self.contradiction is not None:
            return None
        if len(self.failing) >= FAILING_PROBES:
            return None
        for predicate in ("left", "right"):
            low, high = self.interval(predicate)
            candidates = [
                i
                for i in range(low + 1, high)
                if i not in skipped and self.states.get(i) not in (MISSING, BOTH)
            ]
            if candidates:
                middle = (low + high) / 2
                return min(candidates, key=lambda i: (abs(i - middle), i))
        return None

    def undecided_because(self, index: int, skipped: dict[int, str]) -> str:
        """Why a configuration inside a step could not decide it, in a few words."""
        if index in skipped:
            return skipped[index]
        state = self.states.get(index)
        if state == MISSING:
            return "its session recorded no run of this case (it failed there)"
        if len(self.failing) >= FAILING_PROBES:
            return f"not probed: the case stopped after its runs failed in {len(self.failing)} configurations"
        if state == BOTH:
            return "its run was within the gate's tolerance of both sides"
        return "not probed"

    def steps(self) -> list[tuple[int, int]]:
        """Where the case changed: (last index before, first index after) for each step, one when
        the first unlike-old configuration is also the first like-new one, two otherwise. An
        interval wider than one configuration means those between could not be probed."""
        left, right = self.interval("left"), self.interval("right")
        return [left] if left == right else [left, right]


@dataclass
class Plan:
    """Every changed case's search, and the configurations that could not be used."""

    size: int
    searches: dict[Key, Search]
    skipped: dict[int, str] = field(default_factory=dict)
    """Indexes that cannot be probed (their environment would not install, or trained nothing), and why."""
    probes: list[int] = field(default_factory=list)
    """The indexes probed so far, in order."""

    @classmethod
    def start(cls, size: int, keys: list[Key]) -> Plan:
        if size < 2:
            raise ValueError("a line of configurations has at least the two sides")
        return cls(size, {key: Search(key, size) for key in keys})

    def next_probe(self) -> tuple[int, list[Key]] | None:
        """The index most cases want next, and those cases (None when every case is decided)."""
        skipped = set(self.skipped)
        wanted: dict[int, list[Key]] = {}
        for key, search in self.searches.items():
            index = search.wanted(skipped)
            if index is not None:
                wanted.setdefault(index, []).append(key)
        if not wanted:
            return None
        counts = Counter({index: len(keys) for index, keys in wanted.items()})
        index = max(counts, key=lambda i: (counts[i], -i))
        return index, sorted(wanted[index])

    def record(self, index: int, states: dict[Key, tuple[str, str]]) -> None:
        if index not in self.probes:
            self.probes.append(index)
        for key, (state, reason) in states.items():
            if key in self.searches:
                self.searches[key].observe(index, state, reason)

    def remaining(self) -> int:
        """An upper bound on the probes still to come: the widest open interval's halvings."""
        widths = [
            high - low
            for search in self.searches.values()
            if search.wanted(set(self.skipped)) is not None
            for low, high in (search.interval("left"), search.interval("right"))
        ]
        return int(np.ceil(np.log2(max(widths)))) if widths else 0
