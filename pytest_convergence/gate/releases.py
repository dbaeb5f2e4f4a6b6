"""The releases a bisection walks: TensorFlow's and Keras's, from the package index, in order.

A bisection needs one ordered line of configurations from the gate's old side to its new side,
each a TensorFlow release and, where Keras is a package of its own (Keras 3, TensorFlow 2.16 on),
a Keras release. Two things change along that line, so it moves one with the other pinned, then
the other (:func:`release_path`):

- old Keras a package of its own (TensorFlow 2.16 or later): TensorFlow's releases with the old
  Keras, then Keras's releases on the new TensorFlow;
- old Keras inside TensorFlow (Keras 2, up to 2.15): TensorFlow's releases that still bundle it,
  then, on the first TensorFlow without it, Keras 3's releases up to the new one, then the later
  TensorFlow releases with the new Keras.

Only the standard library: the bisection drives other environments and never trains here.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from ..errors import GateError

FIRST_SEPARATE_KERAS = (2, 16)
"""The first TensorFlow release whose ``tf.keras`` is the separate ``keras`` package (Keras 3)."""
FINAL_RELEASE = re.compile(r"^\d+(\.\d+)*(\.post\d+)?$")
"""A final release (``2.16.1``, ``2.15.0.post1``): release candidates and dev builds are no
release a team upgrades to, and pip would not pick them."""


@dataclass(frozen=True)
class Configuration:
    """One point of a bisection's line: a TensorFlow release and, where separate, a Keras pin."""

    tensorflow: str
    keras: str | None = None
    """The Keras pinned beside it; None: the Keras TensorFlow brings (Keras 2 inside it, or the
    side's own environment)."""
    label: str = ""
    """Names its environment and its files; by default ``2.16.1`` or ``2.16.1-keras-3.0.5``, as
    the gate names its sides."""
    by_hand: bool = False
    """Given by hand (``--releases``): its label is all that is known of it."""
    legacy_keras: bool = False
    """Keras 2 on a TensorFlow whose own Keras is 3: ``keras`` is then the tf-keras release, and
    the sessions run with ``TF_USE_LEGACY_KERAS=1``."""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.legacy_keras:
            return f"{self.tensorflow}-tf-keras-{self.keras}"
        return f"{self.tensorflow}-keras-{self.keras}" if self.keras else self.tensorflow

    def describe(self, keras_ran: str | None = None) -> str:
        """``TensorFlow 2.16.1 (Keras 3.0.5)``: the Keras that ran where it is known."""
        if self.by_hand:
            return self.name
        if self.legacy_keras:
            return f"TensorFlow {self.tensorflow} (Keras 2: tf-keras {self.keras})"
        keras = keras_ran or self.keras
        return f"TensorFlow {self.tensorflow}" + (f" (Keras {keras})" if keras else "")


def version_key(version: str) -> tuple[int, ...]:
    """``2.15.0.post1`` -> (2, 15, 0, 1): release order for final releases."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def keras_is_separate(tensorflow: str) -> bool:
    return version_key(tensorflow)[:2] >= FIRST_SEPARATE_KERAS


def available(package: str, python: str) -> list[str]:
    """The final releases of ``package`` on the index pip uses, oldest first (``pip index versions``)."""
    command = [python, "-m", "pip", "index", "versions", package]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GateError(f"cannot list {package}'s releases ({' '.join(command)}): {error}") from error
    match = re.search(r"Available versions:\s*(.+)", done.stdout)
    if done.returncode != 0 or match is None:
        why = (done.stderr.strip().splitlines() or ["no versions listed"])[-1]
        raise GateError(
            f"cannot list {package}'s releases from the package index ({why}); give them with --releases"
        )
    versions = [v.strip() for v in match.group(1).split(",") if FINAL_RELEASE.match(v.strip())]
    return sorted(set(versions), key=version_key)


def between(versions: list[str], low: str, high: str) -> list[str]:
    """The versions after ``low`` up to and including ``high``, in order."""
    lo, hi = version_key(low), version_key(high)
    return sorted((v for v in versions if lo < version_key(v) <= hi), key=version_key)


def release_path(
    old: dict[str, str],
    new: dict[str, str],
    tensorflow_releases: list[str],
    keras_releases: list[str],
    tf_keras_releases: list[str] = (),  # type: ignore[assignment]
) -> list[Configuration]:
    """The configurations from the old side (first) to the new side (last), one change at a time.

    ``old`` and ``new`` are the two results files' versions (``tensorflow``, ``keras``). The last
    configuration is the new side's own; the first is the old side's. From Keras 2 inside
    TensorFlow, the first TensorFlow without it is tried first with Keras 2 as tf-keras (its
    release for that TensorFlow, from ``tf_keras_releases``), so the TensorFlow release and the
    move to Keras 3 are told apart.
    """
    old_tf, new_tf = old.get("tensorflow"), new.get("tensorflow")
    if not old_tf or not new_tf:
        raise GateError("a results file records no TensorFlow version: bisect needs both sides' versions")
    if version_key(new_tf) < version_key(old_tf):
        raise GateError(f"the new side's TensorFlow {new_tf} is older than the old side's {old_tf}")
    old_keras, new_keras = old.get("keras"), new.get("keras")
    first = Configuration(old_tf, old_keras if keras_is_separate(old_tf) else None)
    tf_after = between(tensorflow_releases, old_tf, new_tf)
    if not tf_after or tf_after[-1] != new_tf:
        tf_after = [*tf_after, new_tf] if new_tf != old_tf else tf_after
    new_pin = new_keras if keras_is_separate(new_tf) else None
    path = [first]
    if keras_is_separate(old_tf):
        path += [Configuration(t, old_keras) for t in tf_after]
        if old_keras and new_keras and old_keras != new_keras:
            path += [Configuration(new_tf, k) for k in between(keras_releases, old_keras, new_keras)]
    else:
        bundled = [t for t in tf_after if not keras_is_separate(t)]
        separate = [t for t in tf_after if keras_is_separate(t)]
        path += [Configuration(t) for t in bundled]
        if separate:
            tf_keras = legacy_keras_for(separate[0], list(tf_keras_releases))
            if tf_keras is not None:
                path.append(Configuration(separate[0], tf_keras, legacy_keras=True))
        if separate and new_pin:
            keras3 = [k for k in keras_releases if version_key(k)[:1] >= (3,)]
            path += [Configuration(separate[0], k) for k in between(keras3, "2.99", new_pin)[:-1]]
        path += [Configuration(t, new_pin) for t in separate]
    last = Configuration(new_tf, new_pin)
    if path[-1] != last:
        path.append(last)
    return _unique(path)


def legacy_keras_for(tensorflow: str, tf_keras_releases: list[str]) -> str | None:
    """The latest tf-keras release made for ``tensorflow``'s minor version, if any."""
    minor = version_key(tensorflow)[:2]
    matching = [v for v in tf_keras_releases if version_key(v)[:2] == minor]
    return max(matching, key=version_key) if matching else None


def explicit_path(old: str, new: str, releases: list[str]) -> list[Configuration]:
    """A line given by hand (``--releases``): labels between the two sides, in order."""
    names = [old, *releases, new]
    if len(set(names)) != len(names):
        raise GateError(
            f"--releases: every configuration once, and neither side among them ({', '.join(names)})"
        )
    return [Configuration(name, label=name, by_hand=True) for name in names]


def _unique(path: list[Configuration]) -> list[Configuration]:
    seen: set[Configuration] = set()
    kept = []
    for configuration in path:
        if configuration not in seen:
            seen.add(configuration)
            kept.append(configuration)
    return kept
