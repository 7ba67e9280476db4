"""Component configs: dataclasses that round-trip through JSON and ``--set key=value``.

Values from the command line are parsed against the field's type, so an
unknown key or a badly typed value is caught before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from gentoolkit.errors import GentoolError, unknown


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """Build ``cls`` from a dict read from JSON, converting lists back to tuples and checking
    each value against its field's type; missing fields take their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(values) - names
    if extra:
        raise GentoolError(f"{cls.__qualname__} has no option(s) {', '.join(sorted(extra))}; "
                           "the checkpoint was written by another version of its plugin.")
    kwargs = {k: _from_json(hints[k], v, k) for k, v in values.items()}
    return cls(**kwargs)


def _from_json(hint: Any, value: Any, key: str) -> Any:
    """``value`` as a value of type ``hint``, or a GentoolError saying what was expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_json(inner[0], value, key) if len(inner) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            raise GentoolError(f"'{key}' must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GentoolError(f"'{key}' must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_from_json(item, v, key) for v in value)
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint)
    if expected and (not isinstance(value, expected) or (hint is not bool and isinstance(value, bool))):
        raise GentoolError(f"'{key}' must be {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def _origin(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _origin(args[0]) if len(args) == 1 else origin
    return origin or hint


def parse_value(hint: Any, text: str, key: str) -> Any:
    """Parse ``text`` as a value of type ``hint``; raise GentoolError saying what was expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(inner[0], text, key)
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise GentoolError(f"--set {key}={text}: expected one of {', '.join(map(str, args))}.")
    if origin is tuple:
        item = args[0] if args else str
        parts = [p for p in text.replace(" ", "").split(",") if p]
        return tuple(parse_value(item, p, key) for p in parts)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise GentoolError(f"--set {key}={text}: expected true or false.")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise GentoolError(f"--set {key}={text}: expected {hint.__name__}.") from None
    return text


def format_value(value: Any) -> str:
    """``value`` as a user types it after ``--set`` (what :func:`parse_value` reads back):
    ``32,64`` for a tuple, ``true``, ``none``."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(format_value, value))
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value)


def split_assignment(assignment: str) -> tuple[str, str]:
    """Split ``key=value``; raise a clear error when there is no ``=``."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise GentoolError(f"--set '{assignment}': expected KEY=VALUE, for example --set latent_dim=32.")
    return key.strip(), value.strip()


def apply_overrides(config: Any, assignments: Iterable[tuple[str, str]], owner: str) -> Any:
    """A copy of ``config`` with ``(key, text)`` pairs parsed and applied."""
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, text in assignments:
        if key not in hints:
            choices = [f.name for f in dataclasses.fields(config)]
            err = unknown(f"option for {owner}", key, choices)
            if not choices:
                err = GentoolError(f"unknown option '{key}': {owner} has no options.")
            raise err
        changes[key] = parse_value(hints[key], text, key)
    try:
        return dataclasses.replace(config, **changes)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise GentoolError(f"{owner}: {exc}") from None
