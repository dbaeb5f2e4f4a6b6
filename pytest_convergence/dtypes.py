"""The dtypes a case can be trained in, by the names users write in markers and on the command line.

A dtype here is a Keras dtype policy name: a plain dtype (variables and computation in that type)
or a mixed policy (float32 variables, low-precision computation, with loss scaling for
``mixed_float16`` as Keras applies it in ``compile``). Knowing the variable dtype lets the
diagnosis measure updates against the spacing of the numbers the weights are stored in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import CaseError


@dataclass(frozen=True)
class DtypeInfo:
    name: str
    variable_dtype: str
    compute_dtype: str

    @property
    def mixed(self) -> bool:
        return self.variable_dtype != self.compute_dtype


DTYPES: dict[str, DtypeInfo] = {
    info.name: info
    for info in (
        DtypeInfo("float16", "float16", "float16"),
        DtypeInfo("bfloat16", "bfloat16", "bfloat16"),
        DtypeInfo("float32", "float32", "float32"),
        DtypeInfo("float64", "float64", "float64"),
        DtypeInfo("mixed_float16", "float32", "float16"),
        DtypeInfo("mixed_bfloat16", "float32", "bfloat16"),
    )
}

DEFAULT_DTYPES: tuple[str, ...] = ("float16", "float32", "float64")


ALIASES: dict[str, str] = {
    **dict.fromkeys(
        ("fp16", "f16", "half", "float16_t", "tf.float16", "np.float16", "torch.float16"), "float16"
    ),
    **dict.fromkeys(("bf16", "bfloat", "brain_float16", "tf.bfloat16", "torch.bfloat16"), "bfloat16"),
    **dict.fromkeys(
        ("fp32", "f32", "float", "single", "tf.float32", "np.float32", "torch.float32"), "float32"
    ),
    **dict.fromkeys(("fp64", "f64", "double", "tf.float64", "np.float64", "torch.float64"), "float64"),
    **dict.fromkeys(
        ("mixed16", "mixed_fp16", "mixed-float16", "amp", "fp16_mixed", "mixed"), "mixed_float16"
    ),
    **dict.fromkeys(("mixed_bf16", "mixed-bfloat16", "bf16_mixed", "mixed_bfloat"), "mixed_bfloat16"),
}
"""Names other frameworks and habits use for a dtype, mapped to the Keras policy name, so an
unknown name gets a "did you mean" that works instead of only the list of valid names."""


def suggest(name: object) -> str | None:
    """The valid dtype a user most likely meant by ``name``: an alias (``fp16``, ``half``, ``bf16``),
    the name in another case (``Float16``), or a close spelling (``flaot16``); None if none fits."""
    if not isinstance(name, str):
        return None
    import difflib

    key = name.strip().lower().replace(" ", "")
    if key in DTYPES:
        return key
    if key in ALIASES:
        return ALIASES[key]
    close = difflib.get_close_matches(key, list(DTYPES), n=1, cutoff=0.8)
    return close[0] if close else None


def dtype_info(name: str, *, where: str = "dtype") -> DtypeInfo:
    """Look a dtype up, rejecting unknown names with the list of valid ones and a "did you mean"."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        valid = ", ".join(DTYPES)
        meant = suggest(name)
        hint = f"; did you mean {meant!r}?" if meant else ""
        raise CaseError(f"unknown dtype {name!r}; valid dtypes are: {valid}{hint}", field=where) from None


def parse_dtype_list(value: object, *, where: str) -> list[str]:
    """Accept a list of names or a comma-separated string (the command line's and the ini file's
    form); keep the user's order, drop repeats."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",") if part.strip()]
        return _checked(names, where=where)
    return parse_dtype_names(value, where=where)


def parse_dtype_names(value: object, *, where: str) -> list[str]:
    """A list of dtype names as a marker or a ``Case`` takes it: a string is refused.

    ``dtypes="float16"`` looks right but is a string, not a list: accepting it quietly would hide
    the same mistake as ``dtypes="float16 float32"``, which is no dtype at all.
    """
    if isinstance(value, str):
        names = [part for part in value.replace(",", " ").split() if part]
        listed = ", ".join(f'"{name}"' for name in names) or '"float32"'
        raise CaseError(
            f"dtypes takes a list of dtype names, got the string {value!r}",
            field=where,
            fix=f"write dtypes=[{listed}]",
        )
    if not isinstance(value, (list, tuple)):
        raise CaseError(
            f"expected a list of dtype names, got {type(value).__name__}",
            field=where,
            fix='write dtypes=["float32"] (a list, even for one dtype)',
        )
    return _checked(list(value), where=where)


def _checked(names: Sequence[object], *, where: str) -> list[str]:
    if not names:
        raise CaseError(
            "the list of dtypes is empty", field=where, fix=f"name at least one of: {', '.join(DTYPES)}"
        )
    seen: list[str] = []
    for name in names:
        info = dtype_info(name, where=where)  # type: ignore[arg-type]  # any value: the error names it
        if info.name not in seen:
            seen.append(info.name)
    return seen
