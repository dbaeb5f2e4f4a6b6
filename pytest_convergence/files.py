"""Writing the files a session produces (snapshots, results, reports) without ever leaving half of one.

Every writer goes through :func:`atomic_write_text`: a reader, or a session interrupted mid-write,
sees the old file or the new one, nothing in between.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, nothing between."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(temporary, 0o666 & ~umask)  # as an ordinary write would, not mkstemp's 0600
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def unwritable(path: Path) -> str | None:
    """Why ``path`` could not be written by :func:`atomic_write_bytes`, or None if it could.

    Checked before any training, so a typo in an output path costs seconds, not the suite. A
    missing directory is fine (the write makes it); what matters is the nearest existing ancestor:
    it must be a directory, and a file must be creatable in it. That is tried for real (a
    temporary file made and removed), because ``os.access`` answers yes to root even where a
    read-only mount or an immutable directory refuses the write.
    """
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory"
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            return f"{parent} is a link to nowhere"
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a directory, so nothing can be written under it"
    try:
        handle, probe = tempfile.mkstemp(dir=parent, prefix=".write-check.", suffix=".tmp")
    except OSError as error:
        return f"cannot write in {parent}: {error.strerror or error}"
    os.close(handle)
    Path(probe).unlink(missing_ok=True)
    return None
