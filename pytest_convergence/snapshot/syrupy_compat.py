"""Every syrupy internal pytest-convergence relies on, in one place, version by version.

syrupy has no public API for two things the plugin needs: an assertion for a test item that is not
a ``pytest.Function`` (spec files), and telling syrupy's session about such items, so that their
snapshots count as collected (and, when selected, as expected to be used) instead of "unused".
What each supported syrupy version (6.0 to 7.0, as pyproject declares) keeps there is spelled out
below; the tests check that the registration takes effect on the installed version, and CI runs
them on the oldest supported syrupy (6.0.0) too. syrupy 5.x kept collected items in a set and
reported a ``pytest.skip()``-ped test's snapshot unused; it is not supported.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

SYRUPY_SESSION_ATTRIBUTE = "_syrupy"


def snapshot_session(config: pytest.Config) -> Any:
    """syrupy's ``SnapshotSession`` of this pytest session (None when syrupy is not active)."""
    return getattr(config, SYRUPY_SESSION_ATTRIBUTE, None)


def updating(config: pytest.Config) -> bool:
    """Whether ``--snapshot-update`` was given."""
    return bool(getattr(config.option, "update_snapshots", False))


def assertion_for(node: pytest.Item, extension_class: type) -> Any:
    """A ``SnapshotAssertion`` for ``node`` when syrupy's ``snapshot`` fixture is not at hand."""
    from syrupy.assertion import SnapshotAssertion
    from syrupy.location import PyTestLocation

    config = node.config
    return SnapshotAssertion(
        update_snapshots=updating(config),
        update_new_snapshots_only=getattr(config.option, "update_new_snapshots_only", False),
        extension_class=extension_class,
        test_location=PyTestLocation(node),
        session=snapshot_session(config),
    )


def register_collected(config: pytest.Config, items: Iterable[pytest.Item]) -> int:
    """Tell syrupy that ``items`` (not ``pytest.Function``) were collected, as syrupy's own
    ``collect_items`` does for test functions. Call it before any deselection (``-k``, ``-m``,
    ``--convergence-dtypes``), so a deselected item's snapshot counts as collected, not unused.

    syrupy 6.0-7.0 keep ``_collected_items: dict[nodeid, Item]``. Returns how many items were
    registered (0 where syrupy is not active).
    """
    collected = getattr(snapshot_session(config), "_collected_items", None)
    if not isinstance(collected, dict):
        return 0
    chosen = list(items)
    collected.update((item.nodeid, item) for item in chosen)
    return len(chosen)


def register_selected(config: pytest.Config, items: Iterable[pytest.Item]) -> int:
    """Tell syrupy that ``items`` were selected to run (after every deselection), as syrupy's own
    ``select_items`` does at ``pytest_collection_finish``: ``_selected_items: dict[nodeid,
    ItemStatus]`` in every supported version. Returns how many items were registered."""
    selected = getattr(snapshot_session(config), "_selected_items", None)
    if not isinstance(selected, dict):
        return 0
    from syrupy.session import ItemStatus

    chosen = list(items)
    for item in chosen:
        selected[item.nodeid] = ItemStatus.NOT_RUN
    return len(chosen)


def keep_snapshots_of(config: pytest.Config, nodeid: str) -> bool:
    """Tell syrupy that the test ``nodeid`` judged none of its snapshots (it failed before it
    asserted them: an expectation that failed), so ``--snapshot-update`` keeps them rather than
    removing them as unused; syrupy keeps a skipped test's snapshots. Call it after syrupy recorded
    the test's outcome (its teardown report, which syrupy ignores).

    syrupy 6.0-7.0 keep ``_selected_items: dict[nodeid, ItemStatus]``. Returns whether it took.
    """
    selected = getattr(snapshot_session(config), "_selected_items", None)
    if not isinstance(selected, dict) or nodeid not in selected:
        return False
    from syrupy.session import ItemStatus

    selected[nodeid] = ItemStatus.SKIPPED
    return True


def snapshot_directory(item: pytest.Item) -> Path:
    """The directory a convergence test's snapshots live in, as syrupy's single-file extensions
    place them (``__snapshots__/<module>/``, or ``--snapshot-dirname``), for a write check."""
    from syrupy.location import PyTestLocation

    from .extension import ConvergenceSnapshotExtension

    return Path(ConvergenceSnapshotExtension.dirname(test_location=PyTestLocation(item)))


def keep_unused_snapshots(config: pytest.Config) -> bool:
    """Keep syrupy from looking for unused snapshots at this session's end, and so from deleting them.

    A session that stopped early (Ctrl-C, ``-x``) never used the snapshots of the tests it did not
    reach; syrupy counts every selected test, run or not, and under ``--snapshot-update`` deletes
    their snapshots as unused (without it, it fails the session for them). Called before syrupy's
    ``pytest_sessionfinish``, this sets what ``--snapshot-disable-unused`` sets: syrupy 6.0-7.0 read
    ``config.option.disable_unused_snapshots`` in ``SnapshotSession.finish``, which then still writes
    what finished tests queued and reports them, and skips the unused check. Returns whether syrupy
    would have deleted unused snapshots (it was updating, with cleanup on), so the caller can say so.
    """
    if snapshot_session(config) is None:
        return False
    option = config.option
    would_delete = updating(config) and not (
        getattr(option, "no_cleanup", False) or getattr(option, "disable_unused_snapshots", False)
    )
    option.disable_unused_snapshots = True
    return would_delete
