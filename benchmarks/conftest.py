"""Collects each engine's time per step and prints the speed-ups side by side after the run."""

from __future__ import annotations

import pytest

PER_STEP_KEY = pytest.StashKey[dict[str, float]]()


@pytest.fixture
def per_step_times(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.config.stash.setdefault(PER_STEP_KEY, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    times = config.stash.get(PER_STEP_KEY, {})
    if not times:
        return
    terminalreporter.write_sep("=", "engine speed on the seed case (median time per step)")
    reference = times.get("fit")
    for engine, seconds in sorted(times.items(), key=lambda item: -item[1]):
        ratio = f"{reference / seconds:10,.0f}x faster than fit" if reference else ""
        terminalreporter.write_line(
            f"{engine:5} {seconds * 1e6:12.2f} us/step {1 / seconds:14,.0f} steps/s   {ratio}"
        )
