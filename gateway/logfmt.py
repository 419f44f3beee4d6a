"""Log output: plain text for people at a terminal (the default), or one JSON object per line.

``log_format: json`` gives each record as ``{"time", "level", "logger", "message"}`` plus the
context the gateway attaches where it has it (``route``, ``session``, ``server``, ``tool``,
``peer``), for log pipelines to filter on. Messages are already safe to print (upstream text goes
through gateway.logsafe); JSON encoding keeps them on one line anyway.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

CONTEXT: Final = ("route", "session", "server", "tool", "peer", "method", "identity")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str, fmt: str = "text") -> None:
    """Log to stderr (stdout may be a protocol stream) at ``level``, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
