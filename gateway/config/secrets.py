"""Secret references (``env:NAME``, ``file:/abs/path``): read at use time, never logged, never in argv."""

from __future__ import annotations

import os
import re
from typing import Final

from .errors import SecretError

#: What a secret reference looks like (a config value that is not one is never echoed: it may be a secret).
SECRET_REF: Final = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|file:/.+")

def resolve_secret(ref: str, *, where: str = "") -> str:
    """Read a secret reference (``env:NAME`` or ``file:/abs/path``) at use time.

    Errors are :class:`SecretError` naming ``where`` (e.g. ``servers.gh.secrets.TOKEN``)
    and the reference, never the secret. A file's trailing newline is dropped.
    """
    path = where or "secret"
    if not isinstance(ref, str) or not SECRET_REF.fullmatch(ref):
        raise SecretError("not a secret reference (expected env:NAME or file:/absolute/path)", path=path)
    scheme, _, target = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise SecretError(f"{ref}: environment variable {target} is not set", path=path)
    else:
        try:
            with open(target, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise SecretError(f"{ref}: cannot read ({reason})", path=path) from None
    if not value:
        raise SecretError(f"{ref}: is empty", path=path)
    return value
