"""The JSON Schema of spec files, and a validator for the subset of JSON Schema it uses.

The schema is published as ``pytest_convergence/spec/convergence-spec.schema.json`` so editors can
complete and check spec files (TOML editors such as Taplo and Even Better TOML read JSON Schemas).
The loader validates with the same schema, here, so the two never disagree; the validator reports
the first problem with its field path (``model.layers[1].config``) and a "did you mean" for
misspelt keys. A test keeps the published file equal to :data:`SCHEMA`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..case import LOSS_DTYPES
from ..dtypes import DTYPES
from ..dtypes import suggest as suggest_dtype
from ..errors import SchemaViolation
from ..outcome import ENGINES, Outcome

SCHEMA_FILE = Path(__file__).with_name("convergence-spec.schema.json")
OTHER_BACKENDS = ("jax", "torch")
"""Keras backends a spec can give expectations of its own (TensorFlow's are the plain ones)."""

_NUMBER = {"type": "number"}
_CLASS_CONFIG = {
    "type": "object",
    "properties": {
        "class_name": {"type": "string", "minLength": 1},
        "config": {"type": "object"},
        "module": {"type": "string"},
        "registered_name": {"type": ["string", "null"]},
    },
    "required": ["class_name"],
    "additionalProperties": False,
}
_KERAS_OBJECT = {
    "description": "A name, or a config as keras.losses.get / keras.optimizers.get take it.",
    "oneOf": [{"type": "string", "minLength": 1}, _CLASS_CONFIG],
}
_LAYER = {**_CLASS_CONFIG, "description": "A layer config as keras.layers.deserialize takes it."}
_DTYPE = {"type": "string", "enum": list(DTYPES)}
_OUTCOME = {"type": "string", "enum": [o.value for o in Outcome]}
_EXPECTATION = {
    "type": "object",
    "description": "What one dtype must achieve; every key is optional.",
    "properties": {
        "converged": {"type": "boolean"},
        "outcome": {"oneOf": [_OUTCOME, {"type": "array", "items": _OUTCOME, "minItems": 1}]},
        "final_loss_below": {"type": "number", "minimum": 0},
        "steps_to_target_at_most": {"type": "integer", "exclusiveMinimum": 0},
        "raises": {
            "type": "string",
            "minLength": 1,
            "description": "Keras itself cannot train this dtype: the training must fail with an error "
            "containing this text (no other key then).",
        },
        "metrics": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "string",
                "pattern": r"^\S+ (>=|<=|>|<|==) \S+$",
                "x-form": "NAME OP NUMBER (OP one of >=, <=, >, <, ==), e.g. 'val_accuracy >= 0.7'",
            },
            "description": "Conditions on the final value of metrics History records, "
            'e.g. "val_accuracy >= 0.7".',
        },
    },
    "additionalProperties": False,
}
_RTOL = {
    "oneOf": [
        {"type": "number", "minimum": 0},
        {
            "type": "object",
            "propertyNames": {"enum": list(DTYPES)},
            "additionalProperties": {"type": "number", "minimum": 0},
        },
    ]
}


def _data_schema() -> dict[str, Any]:
    """Inline arrays, an .npz, or a generator whose parameters come from :mod:`.datasets` itself,
    so the schema and the generators never disagree (the loosest bound where several share a name;
    the generator checks its own)."""
    from .datasets import describe

    generators = describe()
    parameters: dict[str, Any] = {}
    seen: dict[str, list[dict[str, Any]]] = {}
    for info in generators.values():
        for name, parameter in info["parameters"].items():
            seen.setdefault(name, []).append(parameter)
    for name, variants in seen.items():
        entry = {"type": variants[0]["type"], "description": variants[0]["description"]}
        for bound in ("minimum", "exclusiveMinimum"):
            if all(bound in variant for variant in variants):  # a bound only where all agree on one
                entry[bound] = min(variant[bound] for variant in variants)
        parameters[name] = entry
    return {
        "type": "object",
        "description": "Inline x and y, an .npz beside the spec (arrays x and y), or a generator.",
        "properties": {
            "x": {"type": "array", "minItems": 1},
            "y": {"type": "array", "minItems": 1},
            "npz": {"type": "string"},
            "generator": {
                "type": "string",
                "enum": list(generators),
                "description": "; ".join(
                    f"{name}: {info['description']}" for name, info in generators.items()
                ),
            },
            **parameters,
        },
        "additionalProperties": False,
    }


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://pytest-convergence.dev/convergence-spec.schema.json",
    "title": "pytest-convergence spec file",
    "description": "One case (model, data, loss, optimizer, budget) and what each dtype must achieve.",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "Defaults to the file name."},
        "description": {"type": "string"},
        "dtypes": {"type": "array", "items": _DTYPE, "minItems": 1},
        "engine": {"type": "string", "enum": list(ENGINES)},
        "steps": {"type": "integer", "exclusiveMinimum": 0},
        "epochs": {"type": "integer", "exclusiveMinimum": 0},
        "batch_size": {"type": "integer", "exclusiveMinimum": 0},
        "shuffle": {"type": "boolean"},
        "seed": {"type": "integer"},
        "target_loss": {"type": "number", "minimum": 0},
        "loss_dtype": {
            "type": "string",
            "enum": list(LOSS_DTYPES),
            "description": "Pin the dtype the loss is computed in (compute: the model's compute dtype). "
            "Unset, Keras 3 computes losses in float32 and Keras 2 in the model output's dtype.",
        },
        "metrics": {"type": "array", "items": _KERAS_OBJECT},
        "callbacks": {
            "type": "array",
            "items": _KERAS_OBJECT,
            "description": "Keras callbacks, called as fit calls them: a keras.callbacks class name, or "
            '{ class_name = "ReduceLROnPlateau", config = { factor = 0.5 } }; your own as '
            '"package.module:Name" (a LearningRateScheduler\'s schedule too). A fresh one for every run.',
        },
        "loss_weights": {
            "oneOf": [
                {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
            ],
            "description": "One weight per output, as compile(loss_weights=...): { output_name = weight } "
            "or a list in the outputs' order.",
        },
        "allow_dtype_mismatch": {
            "type": "boolean",
            "description": "Train even where a layer does not follow the dtype (a layer with its own "
            "dtype, on purpose) and record what trained, instead of failing.",
        },
        "initial_weights": {
            "type": "string",
            "description": "An .npz beside the spec with the starting weights, in model.get_weights() order.",
        },
        "model": {
            "type": "object",
            "description": "Give layers (with input_shape), a whole model config, or a builder.",
            "properties": {
                "input_shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
                "layers": {"type": "array", "items": _LAYER, "minItems": 1},
                "config": _LAYER,
                "builder": {
                    "type": "string",
                    "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                    "description": "package.module:function, called with the dtype policy name.",
                },
            },
            "additionalProperties": False,
        },
        "loss": _KERAS_OBJECT,
        "optimizer": _KERAS_OBJECT,
        "data": _data_schema(),
        "validation_data": {
            **_data_schema(),
            "description": "Data evaluated after every epoch, as fit(validation_data=...): inline x and y, "
            "an npz, or a generator, as [data] takes them.",
        },
        "validation_split": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "description": "The last fraction of [data] held out for validation, "
            "as fit(validation_split=...).",
        },
        "expect": {
            "type": "object",
            "description": "Per-dtype expectations, keyed by dtype; under jax or torch, that Keras "
            "backend's own for the dtypes it trains otherwise (the others hold there too).",
            "propertyNames": {"enum": [*DTYPES, *OTHER_BACKENDS]},
            "properties": {
                backend: {
                    "type": "object",
                    "description": f"Expectations of runs on the {backend} backend, keyed by dtype.",
                    "propertyNames": {"enum": list(DTYPES)},
                    "additionalProperties": _EXPECTATION,
                }
                for backend in OTHER_BACKENDS
            },
            "additionalProperties": _EXPECTATION,
        },
        "tolerance": {
            "type": "object",
            "description": "Snapshot tolerance overrides.",
            "properties": {
                "rtol": _RTOL,
                "event_rtol": {"type": "number", "minimum": 0},
                "event_atol": {"type": "integer", "minimum": 0},
                "miss_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "exact": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    },
    "required": ["model", "loss", "data"],
    "additionalProperties": False,
}


def write_schema(path: Path = SCHEMA_FILE) -> None:
    path.write_text(json.dumps(SCHEMA, indent=2) + "\n", encoding="utf-8")


def validate(document: Any, schema: Mapping[str, Any] = SCHEMA, path: str = "") -> None:
    """Raise :class:`SchemaViolation` at the first place ``document`` breaks ``schema``."""
    if "oneOf" in schema:
        problems: list[SchemaViolation] = []
        for option in schema["oneOf"]:
            try:
                validate(document, option, path)
                return
            except SchemaViolation as violation:
                problems.append(violation)
        # the option whose type fits explains best; otherwise name the expected types
        for problem, option in zip(problems, schema["oneOf"]):
            if _type_ok(document, option.get("type")):
                raise problem
        raise SchemaViolation(path, f"expected {_expected(schema)}, got {_describe(document)}")
    kind = schema.get("type")
    if kind is not None and not _type_ok(document, kind):
        raise SchemaViolation(
            path, f"expected {_expected(schema)}, got {_describe(document)}{_as_list(path, document, kind)}"
        )
    if "enum" in schema and document not in schema["enum"]:
        choices = ", ".join(map(str, schema["enum"]))
        raise SchemaViolation(path, f"{document!r} is not one of: {choices}{_hint(document, schema['enum'])}")
    if isinstance(document, (int, float)) and not isinstance(document, bool):
        if "minimum" in schema and document < schema["minimum"]:
            raise SchemaViolation(path, f"must be at least {schema['minimum']}, got {document}")
        if "exclusiveMinimum" in schema and document <= schema["exclusiveMinimum"]:
            raise SchemaViolation(path, f"must be greater than {schema['exclusiveMinimum']}, got {document}")
        if "exclusiveMaximum" in schema and document >= schema["exclusiveMaximum"]:
            raise SchemaViolation(path, f"must be below {schema['exclusiveMaximum']}, got {document}")
    if isinstance(document, str):
        if len(document) < schema.get("minLength", 0):
            raise SchemaViolation(path, "must not be empty")
        if "pattern" in schema:
            import re

            if not re.match(schema["pattern"], document):
                form = schema.get("x-form", "package.module:function")
                raise SchemaViolation(path, f"{document!r} does not have the form {form}")
    if isinstance(document, list):
        if len(document) < schema.get("minItems", 0):
            raise SchemaViolation(path, f"needs at least {schema['minItems']} item(s)")
        if "items" in schema:
            for index, item in enumerate(document):
                validate(item, schema["items"], f"{path}[{index}]")
    if isinstance(document, Mapping):
        _validate_object(document, schema, path)


def _validate_object(document: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> None:
    properties = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in document:
            raise SchemaViolation(_join(path, key), "is required")
    names = schema.get("propertyNames")
    extra = schema.get("additionalProperties", True)
    for key, value in document.items():
        where = _join(path, key)
        if names is not None and key not in names["enum"]:
            raise SchemaViolation(
                where, f"{key!r} is not one of: {', '.join(names['enum'])}{_hint(key, names['enum'])}"
            )
        if key in properties:
            validate(value, properties[key], where)
        elif extra is False:
            valid = list(properties)
            raise SchemaViolation(
                where, f"unknown key {key!r}{_hint(key, valid)}; valid keys: {', '.join(valid)}"
            )
        elif isinstance(extra, Mapping):
            validate(value, extra, where)


_TYPES = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (Mapping,),
    "null": (type(None),),
}


def _type_ok(value: Any, kind: Any) -> bool:
    if kind is None:
        return True
    kinds = kind if isinstance(kind, list) else [kind]
    for name in kinds:
        if name in ("number", "integer") and isinstance(value, bool):
            continue
        if isinstance(value, _TYPES[name]):
            return True
    return False


def _expected(schema: Mapping[str, Any]) -> str:
    if "oneOf" in schema:
        return " or ".join(_expected(option) for option in schema["oneOf"])
    kind = schema.get("type", "a value")
    kinds = kind if isinstance(kind, list) else [kind]
    words = {
        "object": "a table",
        "array": "a list",
        "string": "a string",
        "number": "a number",
        "integer": "an integer",
        "boolean": "true or false",
        "null": "nothing",
    }
    return " or ".join(words.get(k, str(k)) for k in kinds)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _as_list(path: str, value: Any, kind: Any) -> str:
    """The fix for one value where a list is expected (``dtypes = "float16"``): the same in brackets."""
    if kind != "array" or not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return ""
    key = path.rsplit(".", 1)[-1] or "the value"
    parts = value.replace(",", " ").split() if isinstance(value, str) else [value]
    return f"; write it as a list: {key} = [{', '.join(json.dumps(part) for part in parts)}]"


def _hint(word: Any, choices: list[str]) -> str:
    if not isinstance(word, str):
        return ""
    meant = suggest_dtype(word)  # fp16, half, bf16: aliases no spelling distance finds
    if meant is not None and meant in choices:
        return f" (did you mean {meant!r}?)"
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
