"""How many steps one call of a compiled loop runs: calls of about half a second, sized as they run.

A Ctrl-C is held during a call and raised between two (:mod:`.interrupts`). The loop engines
(:mod:`.loop`) and the step anatomy (:mod:`.anatomy`) cut their steps into calls here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from .interrupts import HeldInterrupt

SECONDS_PER_CALL = 0.5
"""About how long one call of the compiled loop runs: a Ctrl-C is acted on between two calls, so
this bounds how long it waits. Per call the loop costs about a millisecond, so the split is free."""
FIRST_CALL_STEPS = 32
"""Steps of the first call, before the time of a step is known; each later call grows by at most
:data:`MAX_GROWTH` times towards :data:`SECONDS_PER_CALL`."""
MAX_GROWTH = 8


class Pace:
    """Cuts a stretch of steps into calls of about :data:`SECONDS_PER_CALL`, measured as they run."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.steps = min(FIRST_CALL_STEPS, most)

    def parts(self, first: int, last: int, interrupt: HeldInterrupt) -> Iterator[tuple[int, int]]:
        """``[first, last)`` in parts; before each, a held Ctrl-C is raised."""
        while first < last:
            interrupt.raise_if_received()
            end = min(first + self.steps, last)
            started = time.perf_counter()
            yield first, end
            self.took(end - first, time.perf_counter() - started)
            first = end
        interrupt.raise_if_received()

    def took(self, steps: int, seconds: float) -> None:
        """Size the next call from this one: ``steps`` ran in ``seconds``."""
        if steps < self.steps:
            return  # the end of a stretch (a pause, an epoch): too short to say much
        wanted = steps * SECONDS_PER_CALL / seconds if seconds > 0 else float("inf")
        self.steps = max(1, int(min(wanted, steps * MAX_GROWTH, self.most)))
