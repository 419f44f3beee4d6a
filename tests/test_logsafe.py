"""What an upstream puts in the gateway's log: one escaped, capped line, at a bounded rate."""

from __future__ import annotations

import logging

import pytest

from gateway import logsafe


@pytest.mark.parametrize(("raw", "shown"), [
    ("ok\n2026-01-01 CRITICAL forged", "ok\\n2026-01-01 CRITICAL forged"),
    ("a\rb\x00c\x1b[2Jd", "a\\rb\\x00c\\x1b[2Jd"),
    ("tab\there", "tab\\there"),
    ("back\\slash", "back\\\\slash"),  # so an escaped control and a literal backslash-n differ
    ("rtl\u202eevil", "rtl\\u202eevil"), ("sep\u2028line", "sep\\u2028line"), ("c1\x9bx", "c1\\x9bx"),
    (b"bytes \xff\xfe", "bytes \ufffd\ufffd"),
])
def test_clean_makes_one_printable_line(raw: str | bytes, shown: str) -> None:
    assert logsafe.clean(raw) == shown


def test_clean_caps_and_says_how_much_was_cut() -> None:
    out = logsafe.clean("x" * 5000, 100)
    assert out.startswith("x" * 100) and out.endswith("… [+4900 characters]")
    assert logsafe.clean(b"y" * 100_000, 50).startswith("y" * 50)


def test_peer_log_rate_limits_counts_and_reports_drops(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.logsafe")
    caplog.set_level(logging.INFO, "test.logsafe")
    plog = logsafe.PeerLog("srv", logger, rate=10, burst=5, clock=lambda: now[0])
    sent = [plog.log(logging.INFO, f"line {i}\nforged") for i in range(20)]
    assert sent == [True] * 5 + [False] * 15
    assert plog.statistics() == logsafe.PeerLogStatistics(logged=5, dropped=15)
    now[0] = 0.35  # 3.5 tokens later: three more lines, and the drops are said first
    assert [plog.log(logging.INFO, "later") for _ in range(4)] == [True, True, True, False]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "[srv] line 0\\nforged"
    assert "[srv] 15 line(s) dropped: more than 10 lines/s (burst 5)" in messages
    assert all("\n" not in m for m in messages)
