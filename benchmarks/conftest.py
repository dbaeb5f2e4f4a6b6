"""Collects each benchmark's times and prints them side by side after the run, with issue 25's
end-to-end targets and a verdict on each (no assertion on time: the machines are shared).

``--bench-long`` adds the long end-to-end benchmarks (nlp-sentiment at 300 epochs, ``xla`` on the
digits convnet). The catalogue benchmark (test_catalogue_speed.py, two catalogue sessions, minutes
each) runs by default; ``./dev bench -k "not catalogue"`` leaves it out.
"""

from __future__ import annotations

import math

import pytest

PER_STEP_KEY = pytest.StashKey[dict[str, float]]()
END_TO_END_KEY = pytest.StashKey[dict[tuple[str, int, str], tuple[float, dict[str, float]]]]()
"""(case label, epochs, engine) -> (median seconds end to end, phases of the median round)."""
CALLBACKS_KEY = pytest.StashKey[dict[tuple[str, str], float]]()
CATALOGUE_KEY = pytest.StashKey[dict[str, dict]]()
RERUN_KEY = pytest.StashKey[dict[tuple[str, str], float]]()
"""session ("plain" or "results") -> its wall seconds, return code, phase totals and run count."""

END_TO_END_TARGETS = {("digits convnet", 20): 3.0, ("nlp-sentiment", 3): 1.5}
"""(case label, epochs) -> the least speed-up of ``loop`` over ``fit``, end to end (issue 25)."""
CATALOGUE_SECONDS = 120.0
"""The catalogue serially, on this machine kind (issue 25)."""
RESULTS_RATIO = 1.2
"""A results-writing session against one without, at most (issue 25)."""
TRAINING_PHASES = ("build", "trace", "train")  # as pytest_convergence.run, without importing it here


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-long",
        action="store_true",
        help="also run the long benchmarks: nlp-sentiment at 300 epochs, xla on the digits convnet",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench_long: a long benchmark, run with --bench-long only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--bench-long"):
        return
    skip = pytest.mark.skip(reason="a long benchmark: run it with --bench-long")
    for item in items:
        if item.get_closest_marker("bench_long"):
            item.add_marker(skip)


@pytest.fixture
def callback_times(request: pytest.FixtureRequest) -> dict[tuple[str, str], float]:
    return request.config.stash.setdefault(CALLBACKS_KEY, {})


@pytest.fixture
def end_to_end_times(
    request: pytest.FixtureRequest,
) -> dict[tuple[str, int, str], tuple[float, dict[str, float]]]:
    return request.config.stash.setdefault(END_TO_END_KEY, {})


@pytest.fixture
def per_step_times(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.config.stash.setdefault(PER_STEP_KEY, {})


@pytest.fixture
def rerun_times(request: pytest.FixtureRequest) -> dict[tuple[str, str], float]:
    return request.config.stash.setdefault(RERUN_KEY, {})


@pytest.fixture
def catalogue_sessions(request: pytest.FixtureRequest) -> dict[str, dict]:
    return request.config.stash.setdefault(CATALOGUE_KEY, {})


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    end_to_end = config.stash.get(END_TO_END_KEY, {})
    catalogue = config.stash.get(CATALOGUE_KEY, {})
    _end_to_end_summary(terminalreporter, end_to_end)
    _catalogue_summary(terminalreporter, catalogue)
    _targets_summary(terminalreporter, end_to_end, catalogue)
    _callbacks_summary(terminalreporter, config.stash.get(CALLBACKS_KEY, {}))
    _rerun_summary(terminalreporter, config.stash.get(RERUN_KEY, {}))
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


def split(phases: dict[str, float]) -> str:
    """build, trace, train and other (every other phase) of one run, in seconds."""
    other = sum(v for k, v in phases.items() if k not in TRAINING_PHASES)
    parts = [f"{name} {phases.get(name, 0.0):6.2f}" for name in TRAINING_PHASES]
    return "  ".join([*parts, f"other {other:5.2f}"])


def _end_to_end_summary(
    terminalreporter, times: dict[tuple[str, int, str], tuple[float, dict[str, float]]]
) -> None:
    if not times:
        return
    terminalreporter.write_sep(
        "=", "end to end, validation each epoch (median seconds; phases of the median round)"
    )
    order = {"fit": 0, "loop": 1, "xla": 2}
    for (label, epochs, engine), (seconds, phases) in sorted(
        times.items(), key=lambda item: (item[0][0], item[0][1], order.get(item[0][2], 9))
    ):
        reference = times.get((label, epochs, "fit"))
        ratio = f"{reference[0] / seconds:5.2f}x fit" if reference and engine != "fit" else " " * 9
        terminalreporter.write_line(
            f"{label:15} {epochs:4} epochs  {engine:5} {seconds:7.2f} s  {ratio}   {split(phases)}"
        )


def _verdict_ratio(ratio: float, target: float) -> str:
    if ratio >= target:
        return "met"
    return f"missed (loop needs {target / ratio:.2f}x less time to meet it)"


def _targets_summary(terminalreporter, end_to_end: dict, catalogue: dict[str, dict]) -> None:
    lines = []
    for (label, epochs), target in END_TO_END_TARGETS.items():
        fit, loop = end_to_end.get((label, epochs, "fit")), end_to_end.get((label, epochs, "loop"))
        if fit and loop:
            ratio = fit[0] / loop[0]
            lines.append(
                f"{label}, {epochs} epochs: loop {ratio:.2f}x fit end to end "
                f"(target >= {target:g}x): {_verdict_ratio(ratio, target)}"
            )
    plain, results = catalogue.get("plain"), catalogue.get("results")
    if plain:
        seconds = plain["seconds"]
        verdict = "met" if seconds <= CATALOGUE_SECONDS else f"missed by {seconds - CATALOGUE_SECONDS:.0f} s"
        lines.append(
            f"catalogue, serial: {seconds:.0f} s (target <= {CATALOGUE_SECONDS:.0f} s): {verdict}"
            f"{_exit_note(plain)}"
        )
    if plain and results:
        ratio = results["seconds"] / plain["seconds"]
        verdict = "met" if ratio <= RESULTS_RATIO else f"missed by {ratio - RESULTS_RATIO:.2f}x"
        lines.append(
            f"results-writing session: {ratio:.2f}x the session without ({results['seconds']:.0f} s "
            f"against {plain['seconds']:.0f} s; target <= {RESULTS_RATIO:g}x): {verdict}{_exit_note(results)}"
        )
    if lines:
        terminalreporter.write_sep("=", "issue 25's end-to-end targets (wall time, this machine)")
        for line in lines:
            terminalreporter.write_line(line)


def _exit_note(session: dict) -> str:
    return "" if session["returncode"] == 0 else f" (the session exited {session['returncode']})"


def _catalogue_summary(terminalreporter, sessions: dict[str, dict]) -> None:
    if not sessions:
        return
    terminalreporter.write_sep(
        "=", "the catalogue, serially (pytest --convergence fixtures --convergence-timing)"
    )
    for name, session in sessions.items():
        what = "with --convergence-results" if name == "results" else "without a results file"
        terminalreporter.write_line(f"session {what}: {session['seconds']:.1f} s wall{_exit_note(session)}")
        totals: dict[str, float] = session.get("totals", {})
        if not totals:
            terminalreporter.write_line("  no phase table found in its output")
            continue
        runs = session.get("runs", 0)
        other = sum(v for k, v in totals.items() if k not in TRAINING_PHASES and k != "other")
        phases = "  ".join(f"{k} {v:.1f}" for k, v in totals.items() if k != "other")
        terminalreporter.write_line(f"  phase totals of {runs} runs ({session['source']}), seconds: {phases}")
        outside = session["seconds"] - sum(v for k, v in totals.items() if k != "other")
        mean = f"{other / runs:.2f} s a run" if runs else "-"
        largest = max(
            ((k, v) for k, v in totals.items() if k not in TRAINING_PHASES and k != "other"),
            key=lambda item: item[1],
            default=("-", math.nan),
        )
        terminalreporter.write_line(
            f"  other {other:.1f} s in all, {mean} (largest: {largest[0]} {largest[1]:.1f} s); "
            f"outside any run's phases (start-up, import, collection, summaries, files): {outside:.1f} s"
        )


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


def _rerun_summary(terminalreporter, times: dict[tuple[str, str], float]) -> None:
    """A rerun (a calibration's perturbed run, a repeat) against the first run of its case."""
    if not times:
        return
    terminalreporter.write_sep("=", "reruns: a calibration's extra run against a first run (median seconds)")
    for case in sorted({case for case, _ in times}):
        first, again = times.get((case, "first")), times.get((case, "rerun"))
        if first is None or again is None:
            continue
        terminalreporter.write_line(
            f"{case:14} first run {first:6.2f} s (build, trace, train, probes)   each rerun "
            f"{again:6.2f} s ({again / first:.0%} of a first run, {first / again:.1f}x less)"
        )
