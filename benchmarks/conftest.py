"""Collects each engine's time per step and prints the speed-ups side by side after the run."""

from __future__ import annotations

import pytest

PER_STEP_KEY = pytest.StashKey[dict[str, float]]()
END_TO_END_KEY = pytest.StashKey[dict[tuple[int, str], float]]()
CALLBACKS_KEY = pytest.StashKey[dict[tuple[str, str], float]]()


@pytest.fixture
def callback_times(request: pytest.FixtureRequest) -> dict[tuple[str, str], float]:
    return request.config.stash.setdefault(CALLBACKS_KEY, {})


@pytest.fixture
def end_to_end_times(request: pytest.FixtureRequest) -> dict[tuple[int, str], float]:
    return request.config.stash.setdefault(END_TO_END_KEY, {})


@pytest.fixture
def per_step_times(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.config.stash.setdefault(PER_STEP_KEY, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    _end_to_end_summary(terminalreporter, config.stash.get(END_TO_END_KEY, {}))
    _callbacks_summary(terminalreporter, config.stash.get(CALLBACKS_KEY, {}))
    times = config.stash.get(PER_STEP_KEY, {})
    if not times:
        return
    from pytest_convergence.backends import configured

    terminalreporter.write_sep(
        "=", f"engine speed on the seed case, {configured()} backend (median time per step)"
    )
    reference = times.get("fit")
    for engine, seconds in sorted(times.items(), key=lambda item: -item[1]):
        ratio = f"{reference / seconds:10,.0f}x faster than fit" if reference else ""
        terminalreporter.write_line(
            f"{engine:5} {seconds * 1e6:12.2f} us/step {1 / seconds:14,.0f} steps/s   {ratio}"
        )


def _end_to_end_summary(terminalreporter, times: dict[tuple[int, str], float]) -> None:
    if not times:
        return
    terminalreporter.write_sep("=", "end to end on nlp-sentiment, validation each epoch (median seconds)")
    for epochs in sorted({epochs for epochs, _ in times}):
        reference = times.get((epochs, "fit"))
        for (count, engine), seconds in sorted(times.items()):
            if count == epochs:
                ratio = f"{reference / seconds:6.2f}x fit's speed" if reference else ""
                terminalreporter.write_line(f"{epochs:4} epochs  {engine:5} {seconds:8.2f} s   {ratio}")


def _callbacks_summary(terminalreporter, times: dict[tuple[str, str], float]) -> None:
    if not times:
        return
    terminalreporter.write_sep("=", "callbacks on a small model, 8 batches an epoch (median time per epoch)")
    for (engine, callbacks), seconds in sorted(times.items()):
        fit = times.get(("fit", callbacks))
        bare = times.get((engine, "none"))
        against_fit = f"{fit / seconds:8.1f}x fit's speed" if fit and engine != "fit" else " " * 20
        against_bare = (
            f"{seconds / bare:6.2f}x the time without callbacks" if bare and callbacks != "none" else ""
        )
        name = "no callback" if callbacks == "none" else f"{callbacks} callback"
        terminalreporter.write_line(
            f"{engine:5} {name:15} {seconds * 1e3:9.3f} ms/epoch  {against_fit}  {against_bare}"
        )
