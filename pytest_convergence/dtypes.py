"""The dtypes a case can be trained in, by the names users write in markers and on the command line.

A dtype here is a Keras dtype policy name: a plain dtype (variables and computation in that type)
or a mixed policy (float32 variables, low-precision computation, with loss scaling for
``mixed_float16`` as Keras applies it in ``compile``). Knowing the variable dtype lets the
diagnosis measure updates against the spacing of the numbers the weights are stored in.
"""

from __future__ import annotations

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


def dtype_info(name: str, *, where: str = "dtype") -> DtypeInfo:
    """Look a dtype up, rejecting unknown names with the list of valid ones."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        valid = ", ".join(DTYPES)
        raise CaseError(f"unknown dtype {name!r}; valid dtypes are: {valid}", field=where) from None


def parse_dtype_list(value: object, *, where: str) -> list[str]:
    """Accept a list of names or a comma-separated string; keep the user's order, drop repeats."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)):
        names = list(value)
    else:
        raise CaseError(f"expected a list of dtype names, got {type(value).__name__}", field=where)
    if not names:
        raise CaseError(
            "the list of dtypes is empty", field=where, fix=f"name at least one of: {', '.join(DTYPES)}"
        )
    seen: list[str] = []
    for name in names:
        dtype_info(name, where=where)
        if name not in seen:
            seen.append(name)
    return seen
