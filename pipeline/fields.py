"""Field parsers of on-disk records: one place for "this field must be an integer >= 0".

Every ``parse_*`` takes the value, the field's name and ``where`` (the file, or file and
line) and returns the value typed, or raises ``error`` (the stage's own error type below
``pipeline.errors.NCoreError``: ``ManifestError``, ``TrainerError``, ...) in one line
naming both::

    seed-1/evaluation.json: field 'seed' must be an integer, got '3'

Booleans are not numbers here (JSON ``true`` is not the integer 1), and ``1.0`` is not an
integer. Torch-free and dependency-free: the run folder's records, the checkpoint state,
the split records and the manifest all parse through it.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

FieldError = type[Exception]


def json_kind(value: Any) -> str:
    """``value``'s JSON type, for messages ("a list", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {list: "a list", str: "a string", dict: "an object"}.get(type(value), "a number")


def parse_object(value: Any, where: str, error: FieldError = ValueError) -> dict[str, Any]:
    """``value`` when it is a JSON object (``where`` names it: the file, or its field)."""
    if not isinstance(value, dict):
        raise error(f"{where}: expected a JSON object, got {json_kind(value)}")
    return value


def check_keys(
    data: dict[str, Any],
    known: Collection[str],
    where: str,
    optional: Collection[str] = (),
    error: FieldError = ValueError,
) -> None:
    """Refuse the first unknown key of ``data`` and the first of ``known`` (less
    ``optional``) it lacks, in name order."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"{where}: unknown field {unknown[0]!r}")
    missing = sorted(set(known) - set(data) - set(optional))
    if missing:
        raise error(f"{where}: missing field {missing[0]!r}")


def parse_int(
    value: Any,
    name: str,
    where: str,
    minimum: int | None = None,
    optional: bool = False,
    error: FieldError = ValueError,
) -> int | None:
    """An integer (>= ``minimum``); None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{where}: field {name!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise error(f"{where}: field {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_number(
    value: Any,
    name: str,
    where: str,
    optional: bool = False,
    error: FieldError = ValueError,
    finite: bool = False,
) -> float | None:
    """A number as a float (``finite``: not NaN or infinite); None passes when
    ``optional`` (JSON null: NaN or undefined)."""
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (finite and not math.isfinite(value))
    ):
        raise error(f"{where}: field {name!r} must be a number, got {value!r}")
    return float(value)


def require(data: dict[str, Any], name: str, where: str, error: FieldError = ValueError) -> Any:
    """``data[name]``; a record without the field is refused (its value is parsed next)."""
    if name not in data:
        raise error(f"{where}: missing field {name!r}")
    return data[name]


def parse_str(
    value: Any,
    name: str,
    where: str,
    optional: bool = False,
    error: FieldError = ValueError,
    nonempty: bool = False,
) -> str | None:
    """A string (``nonempty``: not ``""``); None passes when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (nonempty and not value):
        what = "a non-empty string" if nonempty else "a string"
        raise error(f"{where}: field {name!r} must be {what}, got {value!r}")
    return value


def parse_bool(value: Any, name: str, where: str, error: FieldError = ValueError) -> bool:
    if not isinstance(value, bool):
        raise error(f"{where}: field {name!r} must be true or false, got {value!r}")
    return value


def parse_choice(
    value: Any, name: str, where: str, choices: Collection[Any], error: FieldError = ValueError
) -> Any:
    """One of ``choices`` (``None`` may be one; an unhashable value is none of them)."""
    if not isinstance(value, str | int | float | type(None)) or value not in choices:
        listed = ", ".join("null" if c is None else str(c) for c in choices)
        raise error(f"{where}: field {name!r} must be one of {listed}, got {value!r}")
    return value


def parse_names(
    value: Any, name: str, where: str, error: FieldError = ValueError, nonempty: bool = False
) -> tuple[str, ...]:
    """A list of strings (``nonempty``: of names, no empty string) as a tuple."""
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, str) and (v or not nonempty) for v in value
    ):
        what = "names" if nonempty else "strings"
        raise error(f"{where}: field {name!r} must be a list of {what}")
    return tuple(value)


def parse_objects(
    value: Any, name: str, where: str, error: FieldError = ValueError
) -> list[dict[str, Any]]:
    """A list whose every item is a JSON object (a record's entries)."""
    if not isinstance(value, list):
        raise error(f"{where}: field {name!r} must be a list, got {json_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise error(f"{where}: item {i} of {name!r} must be an object, got {json_kind(item)}")
    return value


def parse_ints(
    value: Any,
    name: str,
    where: str,
    length: int | None = None,
    minimum: int | None = None,
    error: FieldError = ValueError,
) -> tuple[int, ...]:
    """A list of integers (``length`` of them, each >= ``minimum``) as a tuple."""
    if (
        not isinstance(value, list | tuple)
        or (length is not None and len(value) != length)
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)
            for v in value
        )
    ):
        count = "" if length is None else f"{length} "
        floor = "" if minimum is None else f" >= {minimum}"
        raise error(f"{where}: field {name!r} must be a list of {count}integers{floor}")
    return tuple(value)


def parse_version(
    data: dict[str, Any],
    where: str,
    current: int,
    unversioned: str,
    error: FieldError = ValueError,
) -> int:
    """The record's ``schema_version``, which must be ``current``: a record without one
    is refused with ``unversioned`` (what to do about it, e.g. the migrate command),
    any other version as not supported. ``true`` and ``1.0`` compare equal to 1: only the
    integer itself is a version."""
    if "schema_version" not in data:
        raise error(f"{where}: no schema_version: {unversioned}")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != current:
        raise error(
            f"{where}: schema_version {version!r} is not supported (this toolkit reads "
            f"version {current})"
        )
    return version
