"""A loaded spec asked of Keras: do its layer, loss and optimizer classes exist, does its data fit?

Called at collection when the session will train (TensorFlow is imported then anyway), so a
misspelt layer is a collection error for its file, not a failure minutes later.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import first_line
from .loader import Spec, SpecError, resolve_builder


def check_with_keras(spec: Spec) -> None:
    """Ask Keras whether the spec's classes exist and its data fits, naming the field if not.

    Called at collection when the session will train (TensorFlow is imported then anyway), so a
    misspelt layer is a collection error for its file, not a failure minutes later.
    """
    from ..backend import import_keras
    from ..backend.importable import names_an_importable

    _, flavour = import_keras()
    keras = flavour.keras
    path = spec.path
    builder = getattr(spec.case.model, "target", None)
    if builder is not None:  # a builder that cannot be imported: the file's error, at collection
        resolve_builder(path, builder)
    for index, layer in enumerate(spec.layer_configs):
        where = f"model.layers[{index}]"
        try:
            # the path Sequential.from_config takes for each layer, whatever the Keras version
            keras.Sequential.from_config({"name": "probe", "layers": [dict(layer)]})
        except Exception as error:
            raise SpecError(
                path, *_explain_keras(where, layer, error, _names(keras.layers, keras.layers.Layer))
            ) from None
    for key, module, base in (
        ("loss", keras.losses, keras.losses.Loss),
        ("optimizer", keras.optimizers, keras.optimizers.Optimizer),
    ):
        value = getattr(spec.case, key)
        try:
            flavour.get(
                module.__name__.rsplit(".", 1)[-1], dict(value) if isinstance(value, Mapping) else value
            )
        except Exception as error:
            if names_an_importable(value) and isinstance(error, (ImportError, TypeError)):
                where = f"{key}.class_name" if isinstance(value, Mapping) else key
                raise SpecError(
                    path,
                    where,
                    f"{error} (name a {key} class or function of your own as module:Name, the module "
                    "beside the spec file or importable)",
                ) from None
            if isinstance(value, str):
                # names as get() takes them: functions, classes, and classes in lower case
                public = [name for name in dir(module) if not name.startswith("_")]
                public += [name.lower() for name in public]
                close = difflib.get_close_matches(value, public, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise SpecError(path, key, f"Keras does not know the {key} {value!r}{hint}") from None
            raise SpecError(path, *_explain_keras(key, value, error, _names(module, base))) from None
    if isinstance(spec.case.model, Mapping):
        _check_data_fits(spec, keras)


def _check_data_fits(spec: Spec, keras: Any) -> None:
    from ..backend import import_keras
    from ..backend.build import model_from_config

    assert isinstance(spec.case.model, Mapping)  # the caller checks: builders are not configs
    try:
        model = model_from_config(import_keras()[1], spec.case.model)
    except Exception as error:
        raise SpecError(spec.path, "model", f"Keras cannot build this model: {first_line(error)}") from None
    x = spec.case.x
    sample = x[:2] if not isinstance(x, Mapping) else {k: v[:2] for k, v in x.items()}
    try:
        output = model(sample)
    except Exception as error:
        shape = tuple(np.shape(x)) if not isinstance(x, Mapping) else "a dict"
        raise SpecError(
            spec.path,
            "data.x",
            f"data of shape {shape} does not fit the model's input: {first_line(error)}",
        ) from None
    y = np.asarray(spec.case.y)
    out_shape = tuple(output.shape)
    if (
        y.ndim == 1
        and len(out_shape) == 2
        and out_shape[1] not in (1,)
        and y.dtype.kind == "f"
        and not _is_labels(y)
    ):
        raise SpecError(
            spec.path,
            "data.y",
            f"y has one value per sample but the model outputs {out_shape[1]} per sample",
        )
    if y.ndim == 2 and len(out_shape) == 2 and y.shape[1] != out_shape[1]:
        raise SpecError(
            spec.path, "data.y", f"y has {y.shape[1]} values per sample but the model outputs {out_shape[1]}"
        )


def _is_labels(y: np.ndarray) -> bool:
    return bool(np.all(np.equal(np.mod(y, 1), 0)) and np.min(y) >= 0)


def _names(module: Any, base: type) -> list[str]:
    return [
        name
        for name in dir(module)
        if isinstance(getattr(module, name, None), type) and issubclass(getattr(module, name), base)
    ]


def _explain_keras(
    where: str, value: Mapping[str, Any], error: Exception, known: list[str]
) -> tuple[str, str]:
    class_name = str(value.get("class_name", ""))
    if class_name and class_name not in known:
        close = difflib.get_close_matches(class_name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        kind = {"loss": "loss", "optimizer": "optimizer"}.get(where, "layer")
        # no near Keras name: most likely the user's own class, which only a builder can make
        own = (
            f": if {class_name} is a layer of your own, build the model in a Python function (called "
            'with the dtype policy name) and give [model] builder = "module:function" instead of '
            "layers (the module beside the spec file, or importable)"
            if kind == "layer" and not close
            else ""
        )
        return f"{where}.class_name", f"Keras has no {kind} class {class_name!r}{hint}{own}"
    return f"{where}.config", f"Keras rejects this config: {first_line(error)}"
