"""``--convergence-isolate``: a session without ``-n`` runs in one pytest-xdist worker, so that a
native crash (TensorFlow aborting the process) fails the test it killed, and xdist starts a new
worker for the rest (:mod:`.crash`, :mod:`.relay`).

When: at ``pytest_cmdline_main``, before any plugin's ``pytest_configure``. pytest-xdist turns
``-n N`` into ``--tx`` in its own ``pytest_cmdline_main`` (also ``tryfirst``; which of the two runs
first depends on the order the plugins were installed) and creates its distributed session in
``pytest_configure`` (``trylast``) when ``--dist`` is not ``no`` and ``--tx`` is set. So this sets
``numprocesses``, ``dist`` and ``tx`` all three, as xdist would for ``-n 1``: right whichever
``pytest_cmdline_main`` runs first, and done before xdist decides. A worker receives the same
arguments, so it must see that it is one and do nothing (``workerinput`` is set on its config
before its ``pytest_cmdline_main``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

OPTION = "--convergence-isolate"
INI = "convergence_isolate"


@dataclass(frozen=True)
class Request:
    """What decides the isolation, read from the config (:func:`request_of`)."""

    wanted: bool
    from_ini: bool
    """Asked by the ini's ``convergence_isolate``, not by the option (the fix differs)."""
    trains: bool
    """``--convergence`` (or the ini's ``convergence``): without it nothing trains, nothing crashes."""
    xdist: bool
    numprocesses: int | str | None
    """``-n``'s value: None when not given, 0 for ``-n 0``."""
    distributed: bool
    """``--tx``/``--dist`` already send the tests to workers."""
    pdb: bool = False
    trace: bool = False
    no_capture: bool = False


def decide(request: Request) -> bool:
    """Whether to run the session in one worker; raises :class:`pytest.UsageError` with the fix
    where that is impossible. Nothing to do when not asked, when nothing trains, under ``-n N``
    (every test already runs in a worker) and under an explicit ``-n 0`` (the user turned workers
    off, e.g. to debug with ``--pdb``)."""
    if not request.wanted or not request.trains:
        return False
    if request.numprocesses == 0 or request.distributed or request.numprocesses:
        return False
    asked = f"{INI} = true in the ini" if request.from_ini else OPTION
    off = f"-o {INI}=false" if request.from_ini else f"drop {OPTION}"
    if not request.xdist:
        raise pytest.UsageError(
            f"{asked} runs the session in a pytest-xdist worker, so that a crash costs one run, but "
            "pytest-xdist is not installed (or was disabled with -p no:xdist)\n"
            f"  fix: pip install pytest-xdist, or {off}"
        )
    for flag, given in (("--pdb", request.pdb), ("--trace", request.trace), ("-s", request.no_capture)):
        if given:
            why = (
                "a worker's output does not reach this terminal"
                if flag == "-s"
                else "a worker has no terminal for the debugger"
            )
            raise pytest.UsageError(
                f"{asked} runs the tests in a pytest-xdist worker, and {flag} cannot work there ({why})\n"
                f"  fix: add -n 0 to run in this process without isolation (a crash then ends the "
                f"session), or drop {flag}"
            )
    return True


def request_of(config: pytest.Config) -> Request:
    option = config.getoption(OPTION)
    enabled = config.getoption("--convergence")
    return Request(
        wanted=bool(option if option is not None else config.getini(INI)),
        from_ini=option is None,
        trains=bool(enabled if enabled is not None else config.getini("convergence")),
        xdist=config.pluginmanager.hasplugin("xdist"),
        numprocesses=getattr(config.option, "numprocesses", None),
        distributed=bool(getattr(config.option, "tx", None)) and getattr(config.option, "dist", "no") != "no",
        pdb=bool(getattr(config.option, "usepdb", False)),
        trace=bool(getattr(config.option, "trace", False)),
        no_capture=getattr(config.option, "capture", "fd") == "no",
    )


def isolate(config: pytest.Config) -> None:
    """Set ``config`` up as ``-n 1`` would, when :func:`decide` says so."""
    if getattr(config, "workerinput", None) is not None or config.option.collectonly:
        return
    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return
    if decide(request_of(config)):
        config.option.numprocesses = 1
        if getattr(config.option, "dist", "no") == "no":
            config.option.dist = "load"
        config.option.tx = ["popen"]
