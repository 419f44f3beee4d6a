"""Logging what an untrusted peer says, without letting it forge or flood the gateway's log.

An upstream server controls its stderr, its ``notifications/message`` and whatever it writes
instead of JSON-RPC. All of it reaches the log only through :class:`PeerLog`:

- :func:`clean` makes the text one printable line: control characters (NUL, CR, LF, ESC, C1,
  Unicode line separators and bidi overrides) are escaped, so a server cannot start a line that
  looks like the gateway's own or rewrite a terminal; and it is capped in length.
- A token bucket per server bounds the rate (lines per second, with a burst); what it drops is
  counted and said in one line when logging resumes, so nothing disappears silently.

Pure: no trio. The clock is injectable for tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_LINE_LIMIT: Final = 2000  # characters of one logged line
DEFAULT_RATE: Final = 20.0  # lines per second per server, sustained
DEFAULT_BURST: Final = 200  # lines a server may log at once before the rate applies


def _escape_table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in range(0x20)}
    table.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x7F: "\\x7f", 0x5C: "\\\\"})
    table.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})  # C1 controls (CSI is 0x9b)
    for c in (0x2028, 0x2029, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF):
        table[c] = f"\\u{c:04x}"  # line separators, bidi marks and overrides, BOM
    return table


_ESCAPES: Final = _escape_table()


def clean(text: str | bytes | bytearray | memoryview, limit: int = DEFAULT_LINE_LIMIT) -> str:
    """One printable line: bytes decoded as UTF-8 (bad bytes as U+FFFD), controls escaped, capped.

    A backslash is escaped too, so an escaped control and a literal backslash followed by
    ``n`` can always be told apart.
    """
    if not isinstance(text, str):
        raw = bytes(text[: limit * 4 + 4])  # never decode more than could be shown
        cut = len(text) - len(raw)
        text = raw.decode("utf-8", "replace")
    else:
        cut = 0
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    out = text.translate(_ESCAPES)
    if extra > 0 or cut > 0:
        out += f"… [{'+' + str(extra) + ' characters' if extra > 0 else 'truncated'}]"
    return out


@dataclass(frozen=True, slots=True)
class PeerLogStatistics:
    logged: int
    dropped: int


class PeerLog:
    """Rate-limited, escaped logging of one peer's text as ``[source] text``."""

    def __init__(self, source: str, logger: logging.Logger, *, rate: float = DEFAULT_RATE,
                 burst: int = DEFAULT_BURST, line_limit: int = DEFAULT_LINE_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._logger = logger
        self._rate = rate
        self._burst = float(burst)
        self._line_limit = line_limit
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._logged = 0
        self._dropped = 0
        self._unreported = 0  # dropped since the last line that said so
        self._lock = threading.Lock()  # Docker channels may log from worker threads

    def statistics(self) -> PeerLogStatistics:
        return PeerLogStatistics(logged=self._logged, dropped=self._dropped)

    def log(self, level: int, text: str | bytes | bytearray | memoryview, *, what: str = "") -> bool:
        """Log ``text`` (cleaned) if the budget allows; False if it was dropped."""
        if not self._logger.isEnabledFor(level):
            return False
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                self._dropped += 1
                self._unreported += 1
                return False
            self._tokens -= 1.0
            self._logged += 1
            unreported, self._unreported = self._unreported, 0
        context = {"server": self.source}  # for structured (JSON) logs
        if unreported:
            self._logger.warning("[%s] %d line(s) dropped: more than %g lines/s (burst %d)",
                                 self.source, unreported, self._rate, int(self._burst), extra=context)
        prefix = f"[{self.source}] {what}" if what else f"[{self.source}] "
        self._logger.log(level, "%s%s", prefix, clean(text, self._line_limit), extra=context)
        return True


_log: Final = logging.getLogger("mcp_gateway.upstream")
_registry: dict[str, PeerLog] = {}
_registry_lock = threading.Lock()
_settings = {"rate": DEFAULT_RATE, "burst": float(DEFAULT_BURST)}


def configure(*, rate: float, burst: int) -> None:
    """Set the budget of every server's log (from ``limits.upstream_log_rate``/``_burst``)."""
    with _registry_lock:
        _settings["rate"], _settings["burst"] = rate, float(burst)
        _registry.clear()


def peer_log(source: str) -> PeerLog:
    """The one :class:`PeerLog` of server ``source`` (logger ``mcp_gateway.upstream``): every
    instance of a server and all of its output (stderr, log notifications, stray stdout) share
    one budget."""
    found = _registry.get(source)
    if found is not None:
        return found
    with _registry_lock:
        found = _registry.get(source)
        if found is None:
            found = _registry[source] = PeerLog(source, _log, rate=_settings["rate"],
                                                 burst=int(_settings["burst"]))
        return found


def statistics() -> dict[str, PeerLogStatistics]:
    """Per server: lines logged and dropped."""
    return {source: plog.statistics() for source, plog in list(_registry.items())}
