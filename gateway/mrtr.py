"""Multi-round-trip requests (MCP 2026-07-28): a handshake-era upstream's questions to a stateless client.

A 2026-07-28 client has no session to carry a server request, so when an upstream asks for
sampling, elicitation or roots in the middle of a ``tools/call``, ``prompts/get`` or
``resources/read``, the gateway answers the client's request with an ``InputRequiredResult``
(``resultType: "input_required"``, the question under ``inputRequests``, and an opaque
``requestState``) while the upstream call stays parked. The client retries the same request
with ``inputResponses`` and the ``requestState``; the gateway hands the answer to the waiting
upstream and answers the retry with what comes next: the result, or the next question.

The call runs in a task of the gateway's (an :class:`Exchange`), not of the HTTP request, so it
outlives the first answer. ``requestState`` is a random handle (192 bits) to the exchange, bound
to the request's method and name; an exchange that nobody retries within its deadline is
cancelled, upstream too. The client must have declared the capability in that very request.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import trio
from msgspec import Raw

from .protocol import jsonrpc
from .protocol.errors import INVALID_PARAMS, CallError, Cancelled, ProtocolError, UpstreamTimeout

log = logging.getLogger("mcp_gateway.mrtr")

METHODS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})  # where the spec allows it
_KEY = "q"  # the inputRequests key of the question (one at a time)
INPUT_REQUIRED: Final = b'{"resultType":"input_required"'  # how such a result starts (input_required below)


@dataclass(slots=True)
class _Question:
    method: str
    params: Raw | msgspec.UnsetType


class Exchange:
    """One client request whose upstream call may ask questions; lives across the client's retries."""

    def __init__(self, handle: str, binding: tuple[str, str | None], deadline: float) -> None:
        self.handle = handle
        self.binding = binding  # (method, name or uri): a retry must name the same request
        self.deadline = deadline
        self._send, self._events = trio.open_memory_channel[tuple[str, Any]](1)
        self._answer: trio.MemorySendChannel[Raw | CallError] | None = None
        self.done = False
        self.scope = trio.CancelScope()
        self.context: Any = None  # the upstream call's CallContext (what it went to, for metrics and audit)

    async def ask(self, method: str, params: Raw | msgspec.UnsetType, timeout: float) -> Raw:
        """From the relay (inside the upstream call): put the question to the client, wait for its answer."""
        answer_send, answer_recv = trio.open_memory_channel[Raw | CallError](1)
        self._answer = answer_send
        await self._send.send(("input", _Question(method, params)))
        with trio.move_on_after(timeout):
            answer = await answer_recv.receive()
            if isinstance(answer, CallError):
                raise answer
            return answer
        raise UpstreamTimeout(f"the client did not answer {method} within {timeout:g}s")

    def respond(self, answer: Raw | CallError) -> bool:
        if self._answer is None:
            return False
        try:
            self._answer.send_nowait(answer)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self._answer = None
        return True

    async def next_event(self) -> tuple[str, Any]:
        """("done", (result or None, error or None)) or ("input", question)."""
        return await self._events.receive()

    async def finish(self, outcome: tuple[Raw | None, CallError | ProtocolError | None]) -> None:
        self.done = True
        await self._send.send(("done", outcome))


class Exchanges:
    """The gateway's parked exchanges; owns their tasks (``run`` in the gateway's nursery)."""

    def __init__(self) -> None:
        self._parked: dict[str, Exchange] = {}
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        return len(self._parked)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:  # expire exchanges nobody retried (their upstream call is cancelled)
                await trio.sleep(1)
                now = trio.current_time()
                for handle, exchange in list(self._parked.items()):
                    if exchange.deadline < now:
                        log.info("an input_required exchange expired unanswered; its call is cancelled")
                        exchange.scope.cancel()
                        self._parked.pop(handle, None)

    def start(self, binding: tuple[str, str | None], timeout: float,
              call: Callable[[Exchange], Awaitable[Raw]]) -> Exchange:
        """Run ``call`` in an exchange of its own; its questions and its outcome come as events."""
        assert self._nursery is not None
        handle = secrets.token_urlsafe(24)
        exchange = Exchange(handle, binding, trio.current_time() + timeout)
        self._parked[handle] = exchange

        async def task() -> None:
            outcome: tuple[Raw | None, CallError | ProtocolError | None] = (
                None, Cancelled("The request expired unanswered, or the gateway stopped"))
            with exchange.scope:
                try:
                    outcome = (await call(exchange), None)
                except (ProtocolError, CallError) as exc:
                    outcome = (None, exc)
            self._parked.pop(handle, None)
            with trio.move_on_after(1):  # the client's current request takes it (or is gone)
                await exchange.finish(outcome)

        self._nursery.start_soon(task)
        return exchange

    def open(self, ctx_capabilities: Any) -> bool:
        """Whether a request may get questions: its client declared one of the capabilities."""
        return self._nursery is not None and isinstance(ctx_capabilities, dict) and any(
            k in ctx_capabilities for k in ("sampling", "elicitation", "roots"))

    def resume(self, state: str, binding: tuple[str, str | None], responses: dict[str, Raw]) -> Exchange:
        """A retry: hand the client's answer to the exchange it names. Raises -32602 if it names none."""
        exchange = self._parked.get(state)
        if exchange is None or exchange.binding != binding:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: requestState names no pending request "
                                                "(it expired, was answered, or belongs to another request)")
        answer = responses.get(_KEY)
        if answer is None or not exchange.respond(answer):
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: inputResponses must answer {_KEY!r}")
        exchange.deadline = max(exchange.deadline, trio.current_time() + 60)
        return exchange

    def cancel_all(self) -> None:
        for exchange in self._parked.values():
            exchange.scope.cancel()


_strip: Final = ("_meta", "task")


def input_required(question: _Question, handle: str) -> Raw:
    """The InputRequiredResult for a question (its params without what 2026-07-28 removed)."""
    params: Any = jsonrpc.decode_any(question.params) if not isinstance(question.params, msgspec.UnsetType) else None
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if k not in _strip}
        if params.get("mode") == "url":
            params.pop("elicitationId", None)
    request: dict[str, Any] = {"method": question.method}
    if params is not None and question.method != "roots/list":
        request["params"] = params
    return Raw(jsonrpc.encoder.encode({"resultType": "input_required", "inputRequests": {_KEY: request},
                                       "requestState": handle}))
