"""Exact, per-platform snapshots, for teams that want bit-exactness on their own CI hardware.

A tolerant snapshot holds across machines; some teams also want to know when *their* CI machine
trains a single bit differently (Megatron-LM keeps golden values per platform). With
``--convergence-platform-snapshots`` every snapshot also gets a bit-exact twin per machine
fingerprint, ``__snapshots_platform__/platform-<fingerprint>/<module>/<test>.exact.txt`` beside
``__snapshots__``: on a machine that has one, the run must match it bit for bit; on any other
machine the tolerant snapshot decides alone. The twins are written by ``--snapshot-update`` with
the option on. They live outside ``__snapshots__`` because syrupy deletes, on an update, every
file there it does not know: another platform's goldens would go.
"""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write_text
from ..tolerance import Tolerance
from .compare import compare
from .format import SnapshotFormatError, Trajectory

SUFFIX = ".exact.txt"


ROOT = "__snapshots_platform__"


def platform_path(location: Path, fingerprint: str) -> Path:
    """Where the exact twin of the tolerant snapshot at ``location`` lives for ``fingerprint``:
    beside syrupy's ``__snapshots__``, never inside it (syrupy deletes files it does not know)."""
    stem = location.name.removesuffix(".convergence.txt")
    snapshots = next((p for p in location.parents if p.name == "__snapshots__"), location.parent.parent)
    relative = location.parent.relative_to(snapshots)
    return snapshots.parent / ROOT / f"platform-{fingerprint}" / relative / f"{stem}{SUFFIX}"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def mismatch(path: Path, text: str) -> list[str] | None:
    """Why ``text`` is not bit-identical to the golden at ``path``; None if it is (or none exists)."""
    if not path.exists():
        return None
    platform = next((p.name for p in path.parents if p.name.startswith("platform-")), "?")
    title = f"{path.name.removesuffix(SUFFIX)} on this platform ({platform})"
    try:
        golden = Trajectory.parse(path.read_text(encoding="utf-8"))
    except (SnapshotFormatError, UnicodeDecodeError) as error:
        return [
            f"{path}: {error}",
            "  fix: pytest --convergence --convergence-platform-snapshots --snapshot-update",
        ]
    result = compare(golden, Trajectory.parse(text), Tolerance(rtol=0.0, exact=True))
    if result.ok:
        return None
    return [
        *result.lines(title),
        f"  this machine's golden is {path}; accept with --convergence-platform-snapshots --snapshot-update",
    ]
