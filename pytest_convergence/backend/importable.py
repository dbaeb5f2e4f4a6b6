"""Objects of the user's own named ``package.module:Name``: how a spec file, which holds no Python,
gives a loss or a metric that Keras does not ship (a builder and callbacks are named the same way).

A class is instantiated (with the ``config`` of a ``{"class_name", "config"}`` dict as keyword
arguments), a function is used as it is, as ``compile`` uses a loss or metric function. The spec
loader puts the spec's folder on the path, so a module beside the spec file imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def names_an_importable(value: Any) -> bool:
    """Whether ``value`` is ``"package.module:Name"`` or a dict whose ``class_name`` is one."""
    if isinstance(value, Mapping):
        value = value.get("class_name")
    return isinstance(value, str) and ":" in value


def make_importable(value: Any) -> Any:
    """The object ``value`` names (see the module docstring); ``ImportError`` or ``TypeError``
    saying what could not be imported or made."""
    name = value.get("class_name") if isinstance(value, Mapping) else value
    config = dict(value.get("config") or {}) if isinstance(value, Mapping) else {}
    module_name, _, attribute = str(name).partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except ImportError as error:
        raise ImportError(f"cannot import {module_name!r} for {name!r}: {error}") from None
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no {attribute!r}") from None
    if isinstance(found, type):
        try:
            return found(**config)
        except TypeError as error:
            raise TypeError(f"{name!r} cannot be made with config {config}: {error}") from None
    if config:
        raise TypeError(f"{name!r} is a function, not a class: it takes no config")
    return found
