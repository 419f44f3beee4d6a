"""The sans-IO HTTP/1.1 layer (gateway/http/h1.py): what llhttp parses, what the limits refuse, how
responses are framed. The server over real sockets is covered by test_http_limits, test_hostile_client
and test_fuzz_http."""

from __future__ import annotations

import h11
import pytest

from gateway.http import h1


def parser(max_header: int = 1024, max_body: int = 1024) -> h1.H1Parser:
    return h1.H1Parser(max_header=max_header, max_body=max_body)


def test_pipelined_requests_queue_in_order_with_lowercase_headers_first_value_wins() -> None:
    p = parser()
    p.feed(b"POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\nhi"
           b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    first, second = p.ready
    assert (first.method, first.target, first.body, first.keep_alive) == (b"POST", b"/mcp?x=1", b"hi", True)
    assert first.headers == {b"host": b"a", b"x-a": b"1", b"content-length": b"2"}
    assert (second.method, second.target, second.body) == (b"GET", b"/b", b"")
    assert p.idle is False and p.error is None


def test_a_request_in_pieces_and_a_chunked_body() -> None:
    p = parser()
    data = b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n!!!\r\n0\r\n\r\n"
    for i in range(len(data)):
        p.feed(data[i:i + 1])
        assert p.in_message is (i < len(data) - 1)
    (req,) = p.ready
    assert (req.target, req.body) == (b"/m", b"hi!!!")
    p.taken(p.ready.popleft())
    assert p.idle and p.buffered == 0


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nhi", 400, "Content-Length"),
    (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, "header"),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400, "Bad request"),  # bare LF: a smuggling vector
    (b"GET / HTTP/1.1\r\n\r\n", 400, "Host"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 413, "5000 bytes"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n", 413, "limit"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "Bad request"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 2000 + b"\r\n\r\n", 431, "header"),
])
def test_refusals(data: bytes, status: int, words: str) -> None:
    p = parser()
    p.feed(data)
    assert p.error is not None and p.error.status == status and words in p.error.text, p.error
    assert not p.ready
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not p.ready  # nothing after a refusal is read as a request


def test_a_head_that_never_ends_is_refused_by_size_not_buffered() -> None:
    p = parser(max_header=1024)
    p.feed(b"GET / HTTP/1.1\r\nX-Slow: ")
    for _ in range(70):
        p.feed(b"y" * 1000)
        if p.error is not None:
            break
    assert p.error is not None and p.error.status == 431


def test_requests_before_a_bad_one_are_served_first() -> None:
    p = parser()
    p.feed(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
    assert [r.target for r in p.ready] == [b"/ok"] and p.error is not None and p.error.status == 400


def test_http10_and_connection_close_end_the_connection_and_what_follows_is_never_parsed() -> None:
    p = parser()
    p.feed(b"GET / HTTP/1.0\r\n\r\n")
    assert p.ready[0].keep_alive is False and p.ready[0].http_version == b"1.0"
    p = parser()
    p.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /hidden HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [r.target for r in p.ready] == [b"/"] and p.ready[0].keep_alive is False and p.error is None


def test_expect_100_continue_is_seen_until_the_body_comes() -> None:
    p = parser()
    p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert p.expects_continue and not p.ready
    p.feed(b"hi")
    assert not p.expects_continue and p.ready[0].body == b"hi"


def test_upgrade_keeps_the_bytes_past_the_request_and_http_resumes_when_it_is_not_taken() -> None:
    p = parser()
    p.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05")
    (req,) = p.ready
    assert req.upgrade
    p.feed(b"more")
    assert p.take_rest() == b"\x81\x05more"
    p = parser()
    p.feed(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    p.ready.popleft()
    p.resume_http()
    assert [r.target for r in p.ready] == [b"/next"]


def _read(data: bytes, method: str = "GET") -> list[object]:
    """What a strict HTTP/1.1 client (h11) reads from ``data``."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    events: list[object] = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
            events.append(event)
            return events
        events.append(event)


def test_responses_are_framed_as_a_strict_client_reads_them() -> None:
    body = b'{"ok":true}'
    out = h1.head(200, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]) + body
    response, data, end = _read(out)
    assert isinstance(response, h11.Response) and response.status_code == 200 and response.reason == b"OK"
    assert isinstance(data, h11.Data) and data.data == body and isinstance(end, h11.EndOfMessage)
    streamed = h1.head(200, [(b"content-type", b"text/event-stream")], chunked=True, close=True) + \
        h1.chunk(b"data: 1\n\n") + h1.chunk(b"data: 2\n\n") + h1.LAST_CHUNK
    events = _read(streamed)
    assert b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data)) == b"data: 1\n\ndata: 2\n\n"
    assert (b"connection", b"close") in events[0].headers  # type: ignore[attr-defined]


def test_a_header_with_a_line_break_is_never_written() -> None:
    with pytest.raises(ValueError, match="line break"):
        h1.head(200, [(b"x-origin", b"a\r\nset-cookie: evil=1")])
