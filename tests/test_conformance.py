"""The official MCP conformance suite (npm @modelcontextprotocol/conformance, every server scenario,
pending ones included) against the project's conformance fixture, twice:

- directly, over the fixture's own Streamable HTTP server: every check must pass, so the fixture
  (tests/servers/conformance_server.py, official Python SDK) is faithful to what the suite asks;
- through the gateway (route "/", ``prefix: false``, the fixture as a stdio process server): every
  check must pass except those listed in tests/conformance/expected-failures.txt, and a listed check
  that passes fails the test, so the list only shrinks.

Node 22 and the suite come from the npm registry through scripts/conformance-env (cached outside
the repo); one suite run each way, about two seconds apiece once installed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from gateway.auth.keys import KeyStore
from tests import header_proxy
from tests.helpers import PY, ROOT, config, free_port, running_gateway

FIXTURE = str(ROOT / "tests" / "servers" / "conformance_server.py")
EXPECTED_FAILURES = ROOT / "tests" / "conformance" / "expected-failures.txt"
SUITE_TIMEOUT = 300  # seconds for one whole suite run (about 2 s when all is well)
RANK = {"SUCCESS": 0, "WARNING": 1, "FAILURE": 2}  # INFO checks only log what the suite did


@dataclass(frozen=True)
class Check:
    key: str  # <scenario>/<check id>
    status: str  # SUCCESS, WARNING or FAILURE
    description: str
    error: str

    def line(self) -> str:
        return f"{self.key}: {self.status}: {self.description}" + (f": {self.error}" if self.error else "")


@dataclass
class SuiteRun:
    url: str
    scenarios: list[str]
    checks: dict[str, Check] = field(repr=False)
    output: str = field(repr=False)
    seconds: float = 0.0

    def with_status(self, status: str) -> list[Check]:
        return [c for c in self.checks.values() if c.status == status]

    def score(self) -> str:
        decided = [c for c in self.checks.values() if c.status != "WARNING"]
        passed = sum(c.status == "SUCCESS" for c in decided)
        return (f"{passed}/{len(decided)} checks passed, {len(self.with_status('WARNING'))} warnings, "
                f"{len(self.scenarios)} scenarios, {self.seconds:.1f} s against {self.url}")


def suite_command(cli: str, url: str, out_dir: Path) -> list[str]:
    return [cli, "server", "--url", url, "--suite", "all", "--output-dir", str(out_dir)]


RESULT_DIR = re.compile(r"server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z")


def parse_run(url: str, out_dir: Path, output: str, returncode: int, seconds: float) -> SuiteRun:
    """The suite's results: ``checks.json`` of each scenario (written by ``--output-dir`` into
    ``server-<scenario>-<timestamp>/``); its console output only tells which scenarios ran."""
    announced = re.search(r"^Running \w+ suite \((\d+) scenarios\)", output, re.M)
    scenarios = re.findall(r"^=== Running scenario: (\S+) ===$", output, re.M)
    if returncode not in (0, 1) or announced is None or len(scenarios) != int(announced[1]) or not scenarios:
        pytest.fail(f"the conformance suite did not run its scenarios (exit {returncode}):\n{output[-4000:]}")
    checks: dict[str, Check] = {}
    reported: set[str] = set()
    for entry in out_dir.iterdir():
        match = RESULT_DIR.fullmatch(entry.name)
        assert match and (entry / "checks.json").is_file(), f"unexpected suite output {entry}"
        scenario = match[1]
        reported.add(scenario)
        for raw in json.loads((entry / "checks.json").read_text()):
            if raw["status"] not in RANK:
                continue
            check = Check(f"{scenario}/{raw['id']}", raw["status"], raw.get("description", ""),
                          raw.get("errorMessage") or "")
            old = checks.get(check.key)  # an id may repeat: its worst status counts
            if old is None or RANK[check.status] > RANK[old.status]:
                checks[check.key] = check
    for scenario in scenarios:
        if scenario not in reported:  # the runner caught an exception: no checks.json, only console text
            said = re.search(rf"^Failed to run scenario {re.escape(scenario)}:.*$", output, re.M)
            checks[f"{scenario}/{scenario}"] = Check(
                f"{scenario}/{scenario}", "FAILURE", "the scenario crashed", said[0] if said else "no results")
    return SuiteRun(url, scenarios, checks, output, seconds)


def load_expected_failures() -> dict[str, str]:
    """``<scenario>/<check> # reason`` lines; blank lines and ``#`` comments are ignored."""
    expected: dict[str, str] = {}
    for number, line in enumerate(EXPECTED_FAILURES.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([a-z0-9-]+/[A-Za-z0-9$_-]+)\s+#\s*(\S.*)", line.strip())
        assert match, f"{EXPECTED_FAILURES.name}:{number}: expected '<scenario>/<check> # reason', got {line!r}"
        assert match[1] not in expected, f"{EXPECTED_FAILURES.name}:{number}: {match[1]} is listed twice"
        expected[match[1]] = match[2]
    return expected


@pytest.fixture(scope="module")
def suite_cli() -> str:
    """Node 22 and the pinned suite, installed from the npm registry on first use."""
    out = subprocess.run([str(ROOT / "scripts" / "conformance-env")], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail(f"scripts/conformance-env failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the conformance fixture exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the conformance fixture did not listen on port {port}:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def direct(suite_cli: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuiteRun]:
    """One suite run directly against the fixture's Streamable HTTP server."""
    work = tmp_path_factory.mktemp("conformance-direct")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    log = work / "fixture.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([PY, FIXTURE, "--port", str(port)], stdout=sink, stderr=sink, cwd=work)
    try:
        _wait_for_port(port, proc, log)
        started = time.monotonic()
        out = subprocess.run(suite_command(suite_cli, url, work / "results"), cwd=work, timeout=SUITE_TIMEOUT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        yield parse_run(url, work / "results", out.stdout, out.returncode, time.monotonic() - started)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_fixture_passes_every_check_directly(direct: SuiteRun) -> None:
    failures = direct.with_status("FAILURE")
    assert not failures, (
        f"directly against the fixture: {direct.score()}; the fixture must do what these scenarios ask "
        "(tests/servers/conformance_server.py):\n" + "\n".join(c.line() for c in failures))
    # The SHOULD-level warnings the SDK's server gives (e.g. no SSE priming event for a request that
    # says MCP-Protocol-Version 2025-03-26) are the baseline the gateway run is compared with.
    assert len(direct.checks) > len(direct.scenarios), direct.score()  # every scenario checked something


@pytest.mark.parametrize("auth", ["open", "api key"])
async def test_the_suite_through_the_gateway(suite_cli: str, direct: SuiteRun, tmp_path: Path, auth: str) -> None:
    """The same checks pass with API keys required: the suite has no option to send a header, so
    it talks to a proxy that adds the key (tests/header_proxy.py), and the gateway checks it."""
    expected = load_expected_failures()
    extra: dict[str, object] = {}
    if auth == "api key":
        extra["auth"] = {"api_keys": {"path": str(tmp_path / "keys.db")}}
        with KeyStore(str(tmp_path / "keys.db")) as store:
            key = store.create("conformance").key
    cfg = config({"conformance": {"command": PY, "args": [FIXTURE, "--stdio"]}},
                 routes={"/": {"servers": ["conformance"], "prefix": False}}, **extra)
    async with running_gateway(cfg) as gw, trio.open_nursery() as nursery:
        url = gw.url
        if auth == "api key":
            port = await nursery.start(header_proxy.serve, gw.port, [(b"authorization", f"Bearer {key}".encode())])
            url = f"http://127.0.0.1:{port}/mcp"
        started = time.monotonic()
        with trio.fail_after(SUITE_TIMEOUT):
            out = await trio.run_process(suite_command(suite_cli, url, tmp_path / "results"), cwd=tmp_path,
                                         capture_stdout=True, stderr=subprocess.STDOUT, check=False)
        run = parse_run(url, tmp_path / "results", out.stdout.decode(), out.returncode,
                        time.monotonic() - started)
        if auth == "api key":  # every request was the key's: none went through unauthenticated
            access = gw.gateway.access.statistics()
            assert access["auth_accepted"] > 0 and not access["auth_refused"], access
        nursery.cancel_scope.cancel()

    baseline_warnings = {c.key for c in direct.with_status("WARNING")}
    failing = {c.key: c for c in run.checks.values()
               if c.status == "FAILURE" or (c.status == "WARNING" and c.key not in baseline_warnings)}
    unknown = {key for key in expected if key.split("/")[0] not in run.scenarios}
    problems = [f"{key}: listed in {EXPECTED_FAILURES.name}, but the suite has no scenario {key.split('/')[0]!r}"
                for key in sorted(unknown)]
    problems += [f"{c.line()}\n    (the gateway broke this, or list it in {EXPECTED_FAILURES.name} with the reason)"
                 for key, c in sorted(failing.items()) if key not in expected]
    for key in sorted(set(expected) - set(failing) - unknown):
        now = run.checks[key].status if key in run.checks else "no longer reported"
        problems.append(f"{key}: now {now} through the gateway: remove it from {EXPECTED_FAILURES.name}")
    assert not problems, f"through the gateway: {run.score()}\n" + "\n".join(problems)
