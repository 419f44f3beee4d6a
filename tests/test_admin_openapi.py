"""The admin API's OpenAPI document against the app: the same routes, and a property test
(schemathesis, offline) that sends generated requests to the running admin app over a real socket
and checks every answer: never a 5xx, only documented status codes, content types and schemas.

The generated requests change the configuration (servers, routes, roll backs), so every server
the fuzzing adds runs a process that exits at once instead of its generated command: nothing a
generator writes is executed, and remote servers may only be localhost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, Phase, given, settings

from admin.api import url_rules
from admin.openapi import document
from gateway.config import ServerConfig
from gateway.upstream.process import ProcessLauncher
from tests.helpers import PY, HTTPClient, config, running_gateway, sdk_server
from tests.test_admin import TOKEN, admin_client, admin_gateway, admin_settings


def test_every_route_is_documented_and_every_documented_path_is_a_route() -> None:
    from admin.api import create_app
    from admin.auth import TokenCheck

    class _Control:  # create_app only reads attributes when requests come
        gateway = None

    app = create_app(_Control(), TokenCheck(plain="x"))  # type: ignore[arg-type]
    served = url_rules(app)
    documented = {(path, method) for path, ops in document()["paths"].items() for method in ops}
    assert served == documented
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            assert "401" in op["responses"], (path, method)  # every request needs the token
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, (path, method)


async def test_the_served_document_is_the_document(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api:
        assert await api.get("/openapi.json") == json.loads(json.dumps(document()))


def _launcher(name: str, server: ServerConfig) -> ProcessLauncher:
    if name == "a":
        return ProcessLauncher(name, server.argv(), dict(server.env), None)
    return ProcessLauncher(name, [PY, "-c", "raise SystemExit(3)"], {}, None)  # generated: never run


def fuzz_admin(base_url: str, examples: int, *, path_regex: str | None = None,
               also: Callable[[Any], None] | None = None) -> list[tuple[str, str, int]]:
    """Generated requests (positive and negative) and schemathesis' checks on each answer: to every
    operation, or those whose path matches ``path_regex``; ``also(response)`` checks more."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        ignored_auth,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(document())
    if path_regex is not None:
        schema = schema.include(path_regex=path_regex)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: list[tuple[str, str, int]] = []
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance, ignored_auth]
    def fuzz(mode: Any, chosen: list[Any]) -> None:
        @given(case=schema.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), **headers}  # (ignored_auth checks requests without it)
            response = case.call(base_url=base_url, timeout=30)
            seen.append((case.method, case.operation.path, response.status_code))
            if also is not None:
                also(response)
            case.validate_response(response, checks=chosen, headers=headers)

        run()

    fuzz(schemathesis.GenerationMode.POSITIVE, checks)
    fuzz(schemathesis.GenerationMode.NEGATIVE, [*checks, negative_data_rejection])
    return seen


async def test_generated_requests_get_documented_answers_and_never_a_5xx(tmp_path: Path) -> None:
    settings_ = admin_settings(tmp_path, remote={"allow_hosts": ["localhost"]})
    cfg = config({"a": sdk_server("a")}, **settings_)
    async with running_gateway(cfg, launcher_factory=_launcher) as gw, HTTPClient.connect(gw.port) as http:
        await http.initialize()  # a session to list (and maybe end)
        port = gw.gateway.control.server.port
        seen = await trio.to_thread.run_sync(fuzz_admin, f"http://127.0.0.1:{port}", 200)
    statuses = {status for _, _, status in seen}
    operations = {(method, path) for method, path, _ in seen}
    assert len(operations) >= 18, operations  # (nearly) every operation was tried
    # Success, not found, invalid and malformed were all reached (whether a generated server config is
    # valid enough for a 201 depends on the draw: tests/test_admin.py creates servers on purpose).
    assert {200, 400, 404, 422} <= statuses, statuses
    assert not any(status >= 500 for status in statuses)
