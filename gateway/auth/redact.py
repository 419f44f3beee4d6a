"""Secrets taken out of tool results (a server's ``redact_results``), on the encoded bytes.

:class:`Redactor` replaces, inside JSON strings of a result's bytes, with ``[REDACTED]``:

- each configured secret value (8 characters or more: shorter values would match ordinary text),
  in every way JSON can write it: each character literally or escaped (``\\n``, ``\\/``,
  ``\\u00e9`` in either case, a surrogate pair), as different servers' encoders do;
- common credential shapes: AWS access key ids, GitHub, Slack, Stripe and Google API keys,
  OpenAI/Anthropic-style ``sk-`` keys, JWTs, PEM private key blocks, and the token of
  ``Bearer <token>``.

The common case costs one fast scan per value and per shape (each regex starts with a literal,
about 0.7 ms per MB each here; a 2 KB result takes ~3 us in all) and no copy: the same object
comes back when nothing matches. A match counts only when it lies inside one JSON string and starts on a character
boundary (never inside an escape sequence such as ``\\n`` or ``\\u00e9``), so the result stays
valid JSON. Credential shapes are recognised as written literally (an upstream that escapes
plain ASCII letters is not looked for). No value is ever logged.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from msgspec import Raw

REPLACEMENT: Final = b"[REDACTED]"
MIN_LENGTH: Final = 8  # characters: shorter configured values are ignored

_TOKEN: Final = rb"[A-Za-z0-9._~+/-]{16,4096}=*"  # a bearer token (RFC 6750's b64token)

#: Credential shapes: (name, regex, starts a word). Each regex starts with one literal (Python's
#: re then finds it with a fast scan; an alternation of several first letters, or a leading \b,
#: makes it test every position, ten times slower); group 1, when there is one, is what is
#: replaced. The classes never hold a quote or a backslash.
SHAPES: Final[tuple[tuple[str, bytes, bool], ...]] = (
    ("aws_access_key_id", rb"A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)[0-9A-Z]{16}(?![0-9A-Za-z_])", True),
    ("google_api_key", rb"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", True),
    ("github_token", rb"gh[psoru]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])", True),
    ("github_pat", rb"github_pat_[A-Za-z0-9_]{22,255}", True),
    ("slack_token", rb"xox[abprs]-[A-Za-z0-9-]{10,250}", True),
    ("stripe_secret_key", rb"sk_(?:live|test)_[A-Za-z0-9]{16,247}", True),
    ("stripe_restricted_key", rb"rk_(?:live|test)_[A-Za-z0-9]{16,247}", True),
    # sk-..., sk-proj-..., sk-ant-api03-...: long, with a digit (so "sk-learn-compatible-..." is text)
    ("sk_key", rb"sk-(?=[A-Za-z0-9_-]{0,300}[0-9])[A-Za-z0-9_-]{32,300}", True),
    ("jwt", rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", True),
    ("pem_private_key", rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----(?:[^\"\\]|\\[^u]|\\u[0-9A-Fa-f]{4}){1,20000}?"
                        rb"-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----", False),
    ("bearer_token", rb"Bearer (" + _TOKEN + rb")", False),
    ("bearer_token_lower", rb"bearer (" + _TOKEN + rb")", False),
)

_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_WORD: Final = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_SHORT_ESCAPES: Final = {'"': b'\\"', "\\": b"\\\\", "/": b"\\/", "\b": b"\\b", "\f": b"\\f", "\n": b"\\n",
                         "\r": b"\\r", "\t": b"\\t"}


def _hex_escape(code: int) -> bytes:
    """``\\uXXXX`` with each hex letter in either case."""
    out = b"\\\\u"
    for digit in f"{code:04x}":
        out += f"[{digit}{digit.upper()}]".encode() if digit.isalpha() else digit.encode()
    return out


def _char(ch: str) -> bytes:
    """A regex for every way JSON can write one character inside a string."""
    code = ord(ch)
    if ch.isascii() and ch.isalnum():
        return ch.encode()  # nobody escapes these: keeps the pattern literal and fast
    forms: list[bytes] = []
    if code >= 0x20 and ch not in '"\\' and not 0xD800 <= code <= 0xDFFF:
        forms.append(re.escape(ch.encode()))
    if ch in _SHORT_ESCAPES:
        forms.append(re.escape(_SHORT_ESCAPES[ch]))
    if code > 0xFFFF:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(_hex_escape(high) + _hex_escape(low))
    else:
        forms.append(_hex_escape(code))
    return forms[0] if len(forms) == 1 else b"(?:" + b"|".join(forms) + b")"


def value_pattern(value: str) -> bytes:
    """A regex for ``value`` as it can appear inside a JSON string."""
    return b"".join(_char(ch) for ch in value)


@dataclass(frozen=True, slots=True)
class RedactorStatistics:
    scanned: int  # bodies looked at
    redacted: int  # bodies that had something replaced
    redactions: int  # values replaced


class Redactor:
    """Replaces secret values and credential shapes in encoded JSON (see the module docstring)."""

    def __init__(self, values: Iterable[str], *, patterns: bool = True) -> None:
        # Longest first: a secret that holds a shorter one must go whole, not leave its tail.
        kept = sorted({v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH}, key=len, reverse=True)
        self.values = len(kept)  # how many values are looked for (never the values themselves)
        # One regex per value and per shape, values first (a shape matching across a secret would
        # leave the secret's tail): each scans fast for its leading literal, see SHAPES.
        self._rules: list[tuple[re.Pattern[bytes], bool]] = [(re.compile(value_pattern(v)), False) for v in kept]
        if patterns:
            self._rules += [(re.compile(rx), word) for _, rx, word in SHAPES]
        self._scanned = self._redacted = self._redactions = 0

    def statistics(self) -> RedactorStatistics:
        return RedactorStatistics(scanned=self._scanned, redacted=self._redacted, redactions=self._redactions)

    @property
    def active(self) -> bool:
        """False when there is nothing to look for (redact returns every body as it is)."""
        return bool(self._rules)

    def redact(self, body: bytes) -> bytes:
        """``body`` with every match replaced; the same object when nothing matched."""
        self._scanned += 1
        first = self._first_hit(body)
        return body if first < 0 else self._apply(body, first)

    def redact_raw(self, raw: Raw) -> Raw:
        """:meth:`redact` for a ``msgspec.Raw`` (a JSON-RPC result as forwarded): the same object
        when nothing matched."""
        self._scanned += 1
        first = self._first_hit(raw)
        if first < 0:
            return raw
        body = bytes(raw)
        out = self._apply(body, first)
        return raw if out is body else Raw(out)

    def _first_hit(self, body: bytes | Raw) -> int:
        """The index of the first rule that finds something (-1: none, the common case)."""
        for i, (rx, _) in enumerate(self._rules):
            if rx.search(body) is not None:  # (a Raw is a buffer: searched in place)
                return i
        return -1

    def _apply(self, body: bytes, first: int) -> bytes:
        out, count = body, 0
        for rx, word in self._rules[first:]:  # (those before found nothing)
            out, n = _replace(rx, word, out)
            count += n
        if not count:  # (a match outside a string, or inside an escape sequence)
            return body
        self._redacted += 1
        self._redactions += count
        return out


def _replace(rx: re.Pattern[bytes], word: bool, body: bytes) -> tuple[bytes, int]:
    spans: list[tuple[int, int]] | None = None
    starts: list[int] = []
    pieces: list[bytes] = []
    last = pos = count = 0
    while (m := rx.search(body, pos)) is not None:
        start, end = m.span(1 if rx.groups else 0)
        if spans is None:  # only once something matched: where the strings are
            spans = [s.span() for s in _STRING.finditer(body)]
            starts = [s for s, _ in spans]
        i = bisect_right(starts, start) - 1
        inside = i >= 0 and spans[i][0] < start and end < spans[i][1]
        if (end == start or not inside or _in_escape(body, start, spans[i][0])
                or (word and body[start - 1] in _WORD)):
            pos = m.start() + 1  # a shorter match may still start right after
            continue
        pieces += (body[last:start], REPLACEMENT)
        last = pos = end
        count += 1
    if not count:
        return body, 0
    pieces.append(body[last:])
    return b"".join(pieces), count


def _odd_backslashes(body: bytes, before: int, floor: int) -> bool:
    """Whether an odd run of backslashes ends just before index ``before`` (not below ``floor``)."""
    n = 0
    while before - 1 - n > floor and body[before - 1 - n] == 0x5C:
        n += 1
    return n % 2 == 1


def _in_escape(body: bytes, start: int, opening: int) -> bool:
    """Whether ``start`` is inside an escape sequence of the string that opens at ``opening``."""
    if _odd_backslashes(body, start, opening):
        return True  # the character right after a backslash: ``\\n``'s n
    for k in range(4):  # on one of the 4 hex digits of a \\uXXXX, k of them before it
        u = start - k
        if u - 2 <= opening:
            break
        if not all(b in _HEX for b in body[u:start]):
            break
        if body[u - 1] == 0x75 and body[u - 2] == 0x5C and _odd_backslashes(body, u - 1, opening):
            return True
    return False
