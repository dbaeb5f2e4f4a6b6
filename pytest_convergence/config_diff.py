"""What differs between two recorded configurations, in words.

Two readers compare what ran on two sides: the gate (two results files' records of a case) and the
snapshot comparison (the header a snapshot stored against the new run's). Both read the same
records (``optimizer_ran``/``loss_ran``: a class path and its JSON config; named settings such as
the loss dtype or the engine), so the comparison lives here, once, as plain Python: what counts as
the same setting (a learning rate read back from a float32 variable equals the Python float it was
given), which config keys are inert, and how a change is written (``learning_rate 2.55 -> 1``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

INERT_KEYS = frozenset({"name", "jit_compile", "is_legacy_optimizer"})
"""Config keys that change no number a run computes."""
EMA_KEYS = frozenset({"ema_momentum", "ema_overwrite_frequency"})
"""Settings of the exponential moving average, inert unless ``use_ema`` is on."""
ABSENT = "(none)"


def same_setting(before: object, after: object) -> bool:
    """Equal, or the same number once stored in float32 (a learning rate read back from a
    float32 variable by one version, kept as the Python float by the other)."""
    if before == after:
        return True
    numbers = (int, float)
    if isinstance(before, numbers) and isinstance(after, numbers) and not isinstance(before, bool):
        return bool(np.float32(before) == np.float32(after))
    return False


def setting_text(value: object) -> str:
    """A config value as a reader wrote it: a float that is a float32 value read back in its
    shortest float32 form (``2.549999952316284`` -> ``2.55``), anything else as it is."""
    if isinstance(value, float) and np.isfinite(value) and float(np.float32(value)) == value:
        return np.format_float_positional(np.float32(value), unique=True, trim="-")
    return str(value)


def split_ran(ran: str) -> tuple[str, dict[str, object] | None]:
    """An ``optimizer_ran``/``loss_ran`` text (``path {config}``) as its class path and config
    (None where the config is not a JSON object: a plain loss function has none)."""
    path, _, config = ran.partition(" ")
    try:
        parsed = json.loads(config or "{}")
    except ValueError:
        return path, None
    return path, parsed if isinstance(parsed, dict) else None


def inert_keys(old: Mapping[str, object], new: Mapping[str, object]) -> frozenset[str]:
    """The keys whose change changes nothing: :data:`INERT_KEYS`, and the EMA settings while
    neither side uses EMA."""
    if not old.get("use_ema") and not new.get("use_ema"):
        return INERT_KEYS | EMA_KEYS
    return INERT_KEYS


def shared_config_changes(before: str, after: str) -> str:
    """The config keys both ``..._ran`` texts have with other values (``rho 0.9 -> 0.8``): a key
    only one version knows (``use_ema``, ``is_legacy_optimizer``) is a new option, not a changed
    setting. The gate's mechanism sentence uses it."""
    _, old = split_ran(before)
    _, new = split_ran(after)
    if old is None or new is None:
        return ""
    inert = inert_keys(old, new)
    keys = sorted(k for k in set(old) & set(new) if k not in inert and not same_setting(old[k], new[k]))
    return ", ".join(f"{k} {old[k]} -> {new[k]}" for k in keys)


def ran_changes(label: str, before: str, after: str) -> list[str]:
    """What differs between two ``..._ran`` texts, one phrase each: another class
    (``optimizer keras...RMSprop -> keras...Adam``), or its config
    (``optimizer RMSprop learning_rate 2.55 -> 1, rho 0.9 -> 0.8``; a key one side lacks reads
    ``(none)``). Empty where either side recorded nothing or both ran the same."""
    if not before or not after or before == after:
        return []
    old_class, old = split_ran(before)
    new_class, new = split_ran(after)
    if old_class != new_class:
        return [f"{label} {old_class} -> {new_class}"]
    if old is None or new is None:
        return [f"{label} {before} -> {after}"]
    inert = inert_keys(old, new)
    keys = sorted(
        k
        for k in set(old) | set(new)
        if k not in inert and (k not in old or k not in new or not same_setting(old[k], new[k]))
    )
    if not keys:
        return []
    changes = ", ".join(f"{k} {_value(old, k)} -> {_value(new, k)}" for k in keys)
    return [f"{label} {old_class.rsplit('.', 1)[-1]} {changes}"]


def _value(config: Mapping[str, object], key: str) -> str:
    return setting_text(config[key]) if key in config else ABSENT


def setting_differences(
    before: Mapping[str, str], after: Mapping[str, str], *, one_sided: bool = False, absent: str = ABSENT
) -> dict[str, tuple[str, str]]:
    """The named settings whose values differ: name -> (old, new), in ``before``'s order then
    ``after``'s. By default only settings both sides recorded (non-empty) count; with
    ``one_sided``, a setting only one side has is a difference too, its missing side ``absent``."""
    names = [*before, *(name for name in after if name not in before)]
    changed: dict[str, tuple[str, str]] = {}
    for name in names:
        old, new = before.get(name, ""), after.get(name, "")
        if old == new or (not one_sided and (not old or not new)):
            continue
        changed[name] = (old or absent, new or absent)
    return changed
