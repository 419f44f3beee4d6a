"""A small walker over the Struct annotations that turns loaded YAML/JSON data into Structs.

Not ``msgspec.convert``: msgspec reports dict keys as ``[...]`` in its error paths, and
``servers.<name>`` is exactly the part of the path a user needs to see. The walker parses
durations and sizes (the :mod:`.units` markers), checks the ``msgspec.Meta`` bounds, suggests the
key a typo meant, and builds the Structs, so they stay plain msgspec types.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from .errors import Invalid, show, what
from .units import Unit


def _expect(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        unit = next((m for m in tp.__metadata__ if isinstance(m, Unit)), None)
        return unit.what if unit else _expect(get_args(tp)[0])
    if origin is list:
        return "a list"
    if origin is Literal:
        return " or ".join(map(repr, get_args(tp)))
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(tp, str(tp))


def _fits(v: object, tp: Any) -> bool:
    """Whether ``v`` has the rough shape of ``tp`` (to pick a Union member)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return True if any(isinstance(m, Unit) for m in tp.__metadata__) else _fits(v, get_args(tp)[0])
    if origin is list:
        return isinstance(v, list)
    if origin is Literal:
        return isinstance(v, str)
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return isinstance(v, dict)
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        return True
    return isinstance(v, tp) and not (isinstance(v, bool) and tp is not bool)


def convert(v: object, tp: Any, path: str) -> Any:
    """Check ``v`` against annotation ``tp`` and return the converted value."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        unit = next((m for m in meta if isinstance(m, Unit)), None)
        if unit is not None:
            try:
                v = unit.parse(v)
            except ValueError as e:
                raise Invalid(path, str(e)) from None
        else:
            v = convert(v, base, path)
        fmt = unit.fmt if unit else str
        for m in meta:
            if isinstance(m, msgspec.Meta):
                _bounds(v, m, fmt, path)
        return v
    if origin in (Union, types.UnionType):
        arms = get_args(tp)
        if v is None and type(None) in arms:
            return None
        arms = tuple(a for a in arms if a is not type(None))
        for arm in arms:
            if _fits(v, arm):
                return convert(v, arm, path)
        raise Invalid(path, f"expected {' or '.join(_expect(a) for a in arms)}, got {what(v)}")
    if origin is Literal:
        choices = get_args(tp)
        if v not in choices or not isinstance(v, str):
            raise Invalid(path, f"expected one of {', '.join(map(repr, choices))}, got {show(v)}")
        return v
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return build(v, tp, path)
    if origin is dict:
        if not isinstance(v, dict):
            raise Invalid(path, f"expected a mapping, got {what(v)}")
        out = {}
        for key, item in v.items():
            if not isinstance(key, str):
                raise Invalid(f"{path}.{key}", f"keys must be strings, got {what(key)}")
            out[key] = convert(item, get_args(tp)[1], f"{path}.{key}")
        return out
    if origin is list:
        if not isinstance(v, list):
            raise Invalid(path, f"expected a list, got {what(v)}")
        return [convert(item, get_args(tp)[0], f"{path}[{i}]") for i, item in enumerate(v)]
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not _fits(v, tp):
        raise Invalid(path, f"expected {_expect(tp)}, got {what(v)}")
    if tp is float and not math.isfinite(v):  # type: ignore[arg-type]
        raise Invalid(path, "must be a finite number")
    return v


def _bounds(v: Any, m: msgspec.Meta, fmt: Callable[[Any], str], path: str) -> None:
    if m.ge is not None and m.le is not None and not m.ge <= v <= m.le:
        raise Invalid(path, f"must be between {fmt(m.ge)} and {fmt(m.le)}, got {fmt(v)}")
    if m.ge is not None and v < m.ge:
        raise Invalid(path, f"must be at least {fmt(m.ge)}, got {fmt(v)}")
    if m.gt is not None and v <= m.gt:
        raise Invalid(path, f"must be greater than {fmt(m.gt)}, got {fmt(v)}")


def build(raw: object, cls: type[Any], path: str, preset: dict[str, Any] | None = None) -> Any:
    """Build Struct ``cls`` from a mapping; ``preset`` fields are supplied by the caller."""
    if not isinstance(raw, dict):
        raise Invalid(path, f"expected a mapping, got {what(raw)}")
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    preset = preset or {}

    def at(key: object) -> str:
        return f"{path}.{key}" if path else str(key)

    for key in raw:
        if key not in fields or key in preset:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise Invalid(at(key), "unknown key" + hint)
    kwargs = dict(preset)
    for name, f in fields.items():
        if name in preset:
            continue
        if name in raw:
            kwargs[name] = convert(raw[name], f.type, at(name))
        elif f.required:
            raise Invalid(at(name), "required key is missing")
    return cls(**kwargs)
