"""Config dataclasses to and from plain dicts (JSON / YAML), driven by their type hints.

Scene configs and instruments are frozen dataclasses; stores record them as plain dicts and
users write partial ones in YAML. :func:`from_plain` reads a (partial) dict field by field
from the field's *declared type* (``float``, ``int``, ``bool``, ``str``, ``tuple[T, ...]``,
fixed ``tuple[A, B]``, ``Mapping[str, float]``, a nested config dataclass), so every bad value
is reported as one line naming its path (``scene config.crops[0].lai: expected a list of 2
numbers, got [1, 2, 3]``). Value checks (ranges, probabilities) stay with the classes that own them
(:meth:`hyperkd.synth.config.SceneConfig.validate`, ``Instrument.__post_init__``).

No library does this here: pydantic is only a transitive dependency (via typer), coerces
differently (``"yes"`` -> ``True``, rejects ``1`` for a name), reports errors over several
lines, and the partial-over-a-preset merge would still be ours.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from hyperkd.core.errors import DataError, HyperKDError

T = TypeVar("T")


def to_plain(obj: Any) -> dict[str, Any]:
    """A config dataclass as JSON/YAML-friendly values (dicts, lists, numbers, strings, bools)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_plain(cls: type[T], data: Any, where: str, base: T | None = None) -> T:
    """Build the dataclass ``cls`` from a plain mapping; ``where`` names it in error messages.

    Fields missing from ``data`` keep ``base``'s values, or the class defaults without a
    ``base``; a nested config dataclass given partially is completed the same way from the
    value it replaces. Raises :class:`DataError` naming the first unknown, missing or
    ill-typed field.
    """
    if not isinstance(data, Mapping):
        raise DataError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r}; known fields: {', '.join(fields)}")
    current = {n: getattr(base, n) if base is not None else _default(f) for n, f in fields.items()}
    missing = [n for n, v in current.items() if v is dataclasses.MISSING and n not in data]
    if missing:
        raise DataError(f"{where}: missing field {missing[0]!r}")
    hints = _hints(cls)
    kwargs = {
        n: _parse(hints[n], data[n], f"{where}.{n}", current[n]) if n in data else current[n] for n in fields
    }
    try:
        return cls(**kwargs)
    except HyperKDError:
        raise
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {exc}") from None


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _parse(tp: Any, value: Any, where: str, current: Any = None) -> Any:
    """``value`` as the declared type ``tp``; ``current`` completes a partial nested dataclass."""
    if dataclasses.is_dataclass(tp):
        base = current if dataclasses.is_dataclass(current) else None
        return from_plain(tp, value, where, base=base)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise DataError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise DataError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        try:
            if isinstance(value, (bool, list, tuple, Mapping)):
                raise TypeError
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (bool, list, tuple, Mapping)) or value is None:
            raise DataError(f"{where}: expected a name, got {value!r}")
        return str(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Mapping or origin is dict:
        if not isinstance(value, Mapping):
            raise DataError(f"{where}: expected a mapping of name: number, got {type(value).__name__}")
        return {str(k): _parse(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise DataError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_parse(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(args, value, strict=True)))
    raise TypeError(f"{where}: no plain-value reader for the type {tp!r}")  # a programming error
