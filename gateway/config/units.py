"""Durations (``30s``, ``5m``, ``250ms``) and sizes (``256m``, ``1g``): parsing, printing, and the
``Annotated`` markers the schema uses so the validator parses them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec

from .errors import what

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)([kmgt](?:i?b)?|b)?")
_SIZE_UNITS: Final = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_DURATION_HINT = "use e.g. 30s, 5m, 250ms, 1h or a number of seconds"
_SIZE_HINT = "use e.g. 256m, 1g or a number of bytes"


def parse_duration(v: object) -> float:
    """Seconds from ``30s``, ``5m``, ``250ms``, ``1h``, ``1m30s``, ``"30"`` or a plain number."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"invalid duration {v!r} (must be a finite number >= 0)")
        return float(v)
    if not isinstance(v, str):
        raise ValueError(
            f"invalid duration: expected a string or a number, got {what(v)} ({_DURATION_HINT})"
        )
    s = v.strip().lower().replace(" ", "")
    if _NUMBER.fullmatch(s):
        return float(s)
    parts = _DURATION_PART.findall(s)
    # findall skips junk silently, so require the parts to spell the whole string.
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"invalid duration {v!r} ({_DURATION_HINT})")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_size(v: object) -> int:
    """Bytes from ``256m``, ``1g``, ``64k``, ``4MiB``, ``4mb``, ``"512"`` or a plain integer (k = 1024)."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        if isinstance(v, float) and not v.is_integer() or v < 0:
            raise ValueError(f"invalid size {v!r} (must be a whole number of bytes >= 0)")
        return int(v)
    if not isinstance(v, str):
        raise ValueError(f"invalid size: expected a string or an integer, got {what(v)} ({_SIZE_HINT})")
    m = _SIZE_RE.fullmatch(v.strip().lower().replace(" ", ""))
    if m is None or (m[2] in (None, "b") and "." in m[1]):
        raise ValueError(f"invalid size {v!r} ({_SIZE_HINT})")
    return int(float(m[1]) * _SIZE_UNITS[(m[2] or "")[:1]])


def format_duration(seconds: float) -> str:
    """The shortest of ``250ms``, ``2h``, ``5m``, ``30s`` that parse_duration reads back."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, mult in (("h", 3600), ("m", 60)):
        if seconds >= mult and seconds % mult == 0:
            return f"{int(seconds // mult)}{unit}"
    return f"{seconds:g}s"


def format_size(n: int) -> str:
    """``1g``, ``256m``, ``64k`` when exact, else the number of bytes."""
    for unit, mult in (("g", GiB), ("m", MiB), ("k", KiB)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


class Unit:
    """``Annotated`` marker: the raw value goes through ``parse``; bounds print with ``fmt``."""

    def __init__(self, parse: Callable[[object], Any], fmt: Callable[[Any], str], what: str) -> None:
        self.parse, self.fmt, self.what = parse, fmt, what


DURATION: Final = Unit(parse_duration, format_duration, "a duration")
SIZE: Final = Unit(parse_size, format_size, "a size")

Duration = Annotated[float, DURATION, msgspec.Meta(ge=0)]
PositiveDuration = Annotated[float, DURATION, msgspec.Meta(gt=0)]
Size = Annotated[int, SIZE, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
