"""Spec files (``*.convergence.toml``) -> :class:`Case`, with errors that name file and field.

A spec file declares one case in Keras's own vocabulary (layer, loss and optimizer configs as
``keras.layers.deserialize``, ``keras.losses.get`` and ``keras.optimizers.get`` take them) and what
each dtype must achieve. Loading happens in two stages: :func:`load_spec` reads and validates the
file against the published JSON Schema and builds the case without TensorFlow (so ``pytest`` without
``--convergence`` still collects spec files for nothing); :func:`check_with_keras` then asks Keras
whether the layers, loss, optimizer and data fit, when a session is about to train anyway.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..case import Case, sequential_config
from ..dtypes import DEFAULT_DTYPES
from ..errors import CaseError, SpecError
from .schema import OTHER_BACKENDS, SchemaViolation, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Spec:
    """A loaded spec file: its case and the dtypes it runs in."""

    path: Path
    case: Case
    dtypes: list[str]
    description: str = ""
    layer_configs: list[dict[str, Any]] = field(default_factory=list)


def load_spec(path: Path) -> Spec:
    """Read, validate and turn a spec file into a case, without TensorFlow."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpecError(path, None, f"TOML syntax error: {error}") from None
    except FileNotFoundError:
        raise SpecError(
            path,
            None,
            "cannot read the file: no such file; give the path of a spec file (*.convergence.toml)",
        ) from None
    except IsADirectoryError:
        raise SpecError(
            path, None, "cannot read the file: a directory; give the path of one *.convergence.toml in it"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, None, f"cannot read the file: {error}") from None
    try:
        validate(document)
    except SchemaViolation as violation:
        raise SpecError(path, violation.path or None, violation.message) from None
    name = document.get("name") or path.name.removesuffix(".toml").removesuffix(".convergence")
    dtypes = list(dict.fromkeys(document.get("dtypes", list(DEFAULT_DTYPES))))
    expectations = _flat_expectations(document.get("expect", {}))
    for key in expectations:
        dtype = key.split("-", 1)[1] if key.startswith(("jax-", "torch-")) else key
        if dtype not in dtypes:
            raise SpecError(
                path,
                f"expect.{key.replace('-', '.', 1) if dtype != key else key}",
                f"an expectation for {dtype}, which is not in dtypes ({', '.join(dtypes)}); "
                f"add {dtype} to dtypes or remove expect.{key.replace('-', '.', 1) if dtype != key else key}",
            )
    model, layers = _model(path, document["model"])
    x, y = _data(path, document["data"])
    settings: dict[str, Any] = {
        key: document[key]
        for key in (
            "steps",
            "epochs",
            "batch_size",
            "shuffle",
            "seed",
            "target_loss",
            "engine",
            "loss_dtype",
            "validation_split",
            "allow_dtype_mismatch",
            "loss_weights",
        )
        if key in document
    }
    if "validation_data" in document:
        settings["validation_data"] = _data(path, document["validation_data"], where="validation_data")
    if "steps" not in settings and "epochs" not in settings:
        raise SpecError(path, "steps", "give steps (optimizer steps) or epochs (passes over the data)")
    if "steps" in settings and "epochs" in settings:
        raise SpecError(path, "steps", "give steps or epochs, not both")
    initial = _initial_weights(path, document["initial_weights"]) if "initial_weights" in document else None
    try:
        case = Case(
            name=name,
            model=model,
            x=x,
            y=y,
            loss=_importable_beside(path, document["loss"]),
            optimizer=document.get("optimizer", "rmsprop"),
            metrics=_importable_beside(path, document.get("metrics", [])),
            callbacks=_callbacks(path, document.get("callbacks", [])),
            initial_weights=initial,
            expectations=expectations,
            snapshot_tolerance=document.get("tolerance"),
            **settings,
        )
    except CaseError as error:
        raise SpecError(path, _spec_field(error.field), _with_fix(error)) from None
    return Spec(
        path=path, case=case, dtypes=dtypes, description=document.get("description", ""), layer_configs=layers
    )


def _flat_expectations(expect: dict[str, Any]) -> dict[str, Any]:
    """``[expect.jax.bfloat16]`` as the case keys it, ``jax-bfloat16`` (a test id's part)."""
    flat: dict[str, Any] = {}
    for key, value in expect.items():
        if key in OTHER_BACKENDS:
            flat.update({f"{key}-{dtype}": one for dtype, one in value.items()})
        else:
            flat[key] = value
    return flat


def _with_fix(error: CaseError) -> str:
    return f"{error.detail} ({error.fix})" if error.fix else error.detail


def _spec_field(case_field: str | None) -> str | None:
    """Case fields named as the spec names them (``expectations.float16`` is ``expect.float16``)."""
    if case_field is None:
        return None
    for case_name, spec_name in (
        ("expectations", "expect"),
        ("snapshot_tolerance", "tolerance"),
        ("x", "data.x"),
        ("y", "data.y"),
    ):
        if case_field == case_name or case_field.startswith(case_name + "."):
            return spec_name + case_field[len(case_name) :]
    return case_field


def _model(path: Path, model: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    given = [key for key in ("layers", "config", "builder") if key in model]
    if len(given) != 1:
        raise SpecError(
            path, "model", "give exactly one of layers (with input_shape), config (a model config) or builder"
        )
    if "layers" in model:
        if "input_shape" not in model:
            raise SpecError(path, "model.input_shape", "layers need the input shape of one sample, e.g. [2]")
        layers = [dict(layer) for layer in model["layers"]]
        return sequential_config("model", layers, model["input_shape"]), layers
    if "config" in model:
        return dict(model["config"]), []
    return _lazy_builder(path, model["builder"]), []


def _lazy_builder(path: Path, target: str) -> Callable[[str], Any]:
    """Import ``package.module:function`` only when a run needs it (the import may pull in TF)."""

    def build(dtype: str) -> Any:
        return resolve_builder(path, target)(dtype)

    build.target = target  # type: ignore[attr-defined]
    return build


def resolve_builder(path: Path, target: str) -> Callable[[str], Any]:
    module_name, _, function = target.partition(":")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError(path, "model.builder", f"cannot import {module_name!r}: {error}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise SpecError(path, "model.builder", f"{module_name!r} has no function {function!r}")
    return builder


def _callbacks(path: Path, callbacks: Any) -> Any:
    """The callbacks as the case takes them; a ``package.module:Name`` among them is imported
    from beside the spec file, as a builder is, when a run makes them."""
    return _importable_beside(path, callbacks)


def _importable_beside(path: Path, value: Any) -> Any:
    """``value`` as given; where it names a ``package.module:Name`` (a loss, metric or callback of
    the user's own), the spec's folder goes on the path so that a run can import it."""
    if ":" in repr(value) and str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return value


def _data(path: Path, data: Mapping[str, Any], where: str = "data") -> tuple[Any, Any]:
    sources = [key for key in ("x", "npz", "generator") if key in data]
    if len(sources) != 1:
        raise SpecError(path, where, "give inline x and y, or npz (a file beside the spec), or generator")
    if "x" in data:
        if "y" not in data:
            raise SpecError(path, f"{where}.y", "inline data needs y beside x")
        extra = sorted(set(data) - {"x", "y"})
        if extra:
            raise SpecError(path, f"{where}.{extra[0]}", "inline data takes only x and y")
        return _array(path, f"{where}.x", data["x"]), _array(path, f"{where}.y", data["y"])
    if "npz" in data:
        extra = sorted(set(data) - {"npz"})
        if extra:
            raise SpecError(path, f"{where}.{extra[0]}", "npz data takes only the file name")
        arrays = _npz(path, f"{where}.npz", data["npz"])
        for key in ("x", "y"):
            if key not in arrays:
                raise SpecError(
                    path, f"{where}.npz", f"{data['npz']} has no array {key!r} (it has {', '.join(arrays)})"
                )
        return arrays["x"], arrays["y"]
    from .datasets import generate

    params = {key: value for key, value in data.items() if key != "generator"}
    try:
        return generate(data["generator"], params, where=where)
    except CaseError as error:
        raise SpecError(path, error.field, _with_fix(error)) from None


def _array(path: Path, where: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise SpecError(path, where, "expected a rectangular list of numbers (one row per sample)") from None
    return array


def _npz(path: Path, where: str, name: str) -> dict[str, np.ndarray]:
    file = path.parent / name
    if not file.is_file():
        raise SpecError(path, where, f"file not found: {file} (paths are relative to the spec file)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise SpecError(path, where, f"cannot read {file} as an .npz: {error}") from None


def _initial_weights(path: Path, name: str) -> list[np.ndarray]:
    arrays = _npz(path, "initial_weights", name)
    ordered = sorted(arrays, key=lambda key: int(key.split("_")[-1]) if key.split("_")[-1].isdigit() else key)
    return [arrays[key] for key in ordered]
