"""Config errors: one line each, starting with the key path, never holding a value that may be secret."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem. ``str(e)`` is one line: ``[source: ]key.path: message``."""

    def __init__(self, message: str, *, path: str = "", source: str = "") -> None:
        self.message, self.path, self.source = message, path, source
        super().__init__(": ".join(part for part in (source, path, message) if part))


class SecretError(ConfigError):
    """A secret reference that cannot be resolved. The message never holds the secret."""


class Invalid(Exception):
    """Raised while validating; parse_config adds the source and turns it into ConfigError."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def what(v: object) -> str:
    """How a value's type reads in a message. Never the value itself: it may be a secret."""
    if v is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (dict, "a mapping")):  # fmt: skip
        if isinstance(v, t):
            return name
    return f"a {type(v).__name__}"  # e.g. YAML dates


def show(v: object) -> str:
    """A short rendering of a non-secret scalar for messages."""
    return repr(v) if isinstance(v, str | int | float) and len(repr(v)) <= 60 else what(v)
