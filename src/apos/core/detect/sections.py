"""Build a detector's config dataclass from a settings mapping (a TOML table, JSON object).

The per-event detectors (amount, fraud, pattern) take their section of the detection
settings as a plain mapping; this checks it against the dataclass's fields, so a typo or a
wrong type is an error naming the key rather than a silent default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

__all__ = ["config_from_mapping"]

_Config = TypeVar("_Config")


def config_from_mapping(cls: type[_Config], data: Mapping[str, Any], prefix: str = "") -> _Config:
    """An instance of the dataclass ``cls`` from ``data``; missing keys take their defaults.

    A value must have the type of the field's default (an int is accepted for a float, a
    list for a tuple, a string for an enum); otherwise ``ValueError`` names the key.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Example:
    ...     window_s: float = 60.0
    ...     enabled: bool = True
    >>> config_from_mapping(Example, {"window_s": 30})
    Example(window_s=30.0, enabled=True)
    >>> config_from_mapping(Example, {"windw_s": 30}, prefix="fraud.")
    Traceback (most recent call last):
    ...
    ValueError: fraud.windw_s: unknown key
    """
    if not dataclasses.is_dataclass(cls):  # pragma: no cover - a programming error
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            raise ValueError(f"{prefix}{key}: unknown key")
        default = field.default
        values[key] = _coerce(default, value, f"{prefix}{key}")
    try:
        return cls(**values)
    except ValueError as exc:
        raise ValueError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from None


def _coerce(default: Any, value: Any, name: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: must be true or false")
        return value
    if isinstance(default, Enum):
        try:
            return type(default)(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in type(default))
            raise ValueError(f"{name}: must be one of {choices}") from None
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: must be a number")
        if isinstance(default, int) and not isinstance(value, int):
            raise ValueError(f"{name}: must be an integer")
        return type(default)(value)
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{name}: must be a list")
        return tuple(value)
    return value
