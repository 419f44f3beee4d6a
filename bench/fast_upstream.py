"""A minimal, fast stdio MCP server for benchmarks: ``python -m bench.fast_upstream``.

Speaks newline-delimited JSON-RPC on stdin/stdout without the SDK and answers at once:
``initialize``, ``ping``, ``tools/list`` (tools ``echo`` and ``add``) and ``tools/call``; other
requests get -32601, notifications and responses are ignored. It exists so that benchmark figures
measure the gateway, not the upstream.

Speed tricks: stdin is read in large chunks with ``os.read``, every complete line of a chunk is
decoded in one ``Decoder.decode_lines`` call into a single flat Struct (one pass, no second decode
of ``params``), the request id is kept as ``msgspec.Raw`` and spliced back verbatim, and all
answers to a chunk leave in one ``os.write``.
"""

from __future__ import annotations

import os
import sys

import msgspec

SUPPORTED_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
LATEST_VERSION = "2025-11-25"
MAX_LINE = 16 * 1024 * 1024  # an unterminated line larger than this is dropped (bound memory)

_EMPTY = msgspec.Raw()


class Arguments(msgspec.Struct):
    """The union of the tools' arguments; unknown keys are skipped by the decoder."""

    text: msgspec.Raw = _EMPTY  # kept raw: a JSON string is spliced into the answer as it came
    a: float | int | None = None
    b: float | int | None = None


class Params(msgspec.Struct, rename="camel"):
    """The union of the params we look at (initialize and tools/call)."""

    protocol_version: str = ""
    name: str = ""
    arguments: Arguments | None = None


class Message(msgspec.Struct):
    """One JSON-RPC message; ``id`` stays raw (empty means: a notification)."""

    id: msgspec.Raw = _EMPTY
    method: str = ""
    params: Params | None = None


class Envelope(msgspec.Struct):
    """Fallback decode when a message fails the typed one: enough to answer with an error."""

    id: msgspec.Raw = _EMPTY
    method: str = ""


_decoder = msgspec.json.Decoder(Message)
_fallback = msgspec.json.Decoder(Envelope)
_encode = msgspec.json.encode

TOOLS = [
    {
        "name": "echo",
        "description": "Return the given text.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Text to echo back"}},
            "required": ["text"],
        },
    },
    {
        "name": "add",
        "description": "Return the sum of two numbers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
]
_TOOLS_LIST = _encode({"tools": TOOLS})
_EMPTY_RESULT = b"{}"
_TEXT_HEAD = b'{"content":[{"type":"text","text":'
_TEXT_TAIL = b'}],"isError":false}'


def _ok(out: list[bytes], id_: msgspec.Raw, result: bytes) -> None:
    out += (b'{"jsonrpc":"2.0","id":', id_, b',"result":', result, b"}\n")


def _err(out: list[bytes], id_: msgspec.Raw, code: int, message: str) -> None:
    error = _encode({"code": code, "message": message})
    out += (b'{"jsonrpc":"2.0","id":', id_ or b"null", b',"error":', error, b"}\n")


def _initialize(params: Params | None) -> bytes:
    asked = params.protocol_version if params else ""
    return _encode(
        {
            "protocolVersion": asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "fast-upstream", "version": "1.0.0"},
        }
    )


def _call(out: list[bytes], msg: Message) -> None:
    params = msg.params
    args = (params.arguments if params else None) or Arguments()
    name = params.name if params else ""
    if name == "echo":
        text = args.text
        if not text or memoryview(text)[0] != 34:  # absent or not a JSON string (34 is '"')
            return _err(out, msg.id, -32602, "echo: 'text' must be a string")
        _ok(out, msg.id, b"".join((_TEXT_HEAD, text, _TEXT_TAIL)))
    elif name == "add":
        if args.a is None or args.b is None:
            return _err(out, msg.id, -32602, "add: 'a' and 'b' must be numbers")
        total = _encode(args.a + args.b)
        _ok(out, msg.id, b"".join((_TEXT_HEAD, b'"', total, b'"', _TEXT_TAIL)))
    else:
        _err(out, msg.id, -32602, f"unknown tool: {name}")


def handle(msg: Message, out: list[bytes]) -> None:
    """Append the answer to one message (if it needs one) to ``out``."""
    if not msg.id:
        return  # a notification (or a response to us): nothing to say
    method = msg.method
    if method == "tools/call":
        _call(out, msg)
    elif method == "tools/list":
        _ok(out, msg.id, _TOOLS_LIST)
    elif method == "ping":
        _ok(out, msg.id, _EMPTY_RESULT)
    elif method == "initialize":
        _ok(out, msg.id, _initialize(msg.params))
    elif method:
        _err(out, msg.id, -32601, f"method not found: {method}")


def handle_lines(data: bytes, out: list[bytes]) -> None:
    """Answer every message in ``data`` (complete newline-terminated lines)."""
    try:
        messages = _decoder.decode_lines(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        messages = None  # one bad line spoils the batch: redo it line by line
    if messages is not None:
        for msg in messages:
            handle(msg, out)
        return
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            handle(_decoder.decode(line), out)
        except msgspec.ValidationError as exc:
            env = _fallback.decode(line)  # valid JSON, wrong shape
            if env.id:
                _err(out, env.id, -32602, f"invalid params: {exc}")
        except msgspec.DecodeError:
            _err(out, _EMPTY, -32700, "parse error")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(fd_in: int = 0, fd_out: int = 1) -> None:
    """Serve until EOF on ``fd_in``."""
    pending = b""
    out: list[bytes] = []
    while chunk := os.read(fd_in, 1 << 20):
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending += chunk
            if len(pending) > MAX_LINE:
                pending = b""
            continue
        handle_lines(pending + chunk[: cut + 1] if pending else chunk[: cut + 1], out)
        pending = chunk[cut + 1 :]
        if out:
            _write_all(fd_out, b"".join(out))
            out.clear()


def main() -> None:
    """Entry point: serve stdio until EOF; a closed stdout ends quietly."""
    try:
        serve(sys.stdin.fileno(), sys.stdout.fileno())
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
