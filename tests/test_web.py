"""The admin web page (issue 12): the login, its sessions, CSRF and headers over raw HTTP against a
real gateway; then the page itself in a real browser (Debian's chromium driven by Playwright for
Python, nothing downloaded) against a real gateway with real upstreams (mcp-server-time, the SDK
test server, tests/servers/web_server.py). Screenshots of every page at 1280 and 390 px wide go to
build/screenshots/.

The browser tests share one gateway (in a thread of its own, with its own trio loop: Playwright's
sync API wants the test's thread) and one browser per module; each test gets a fresh browser
context (its own cookies). Without chromium they fail, saying how to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from admin.web import WebSessions, quantile, safe_next, same_origin
from gateway.stats import BUCKETS
from tests.helpers import PY, ROOT, SDK_SERVER, HTTPClient, Reply, sdk_server, time_server
from tests.test_admin import TOKEN, AdminGateway, admin_client, admin_gateway, db_rows

CHROMIUM = os.environ.get("MCP_GATEWAY_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
WEB_SERVER = str(ROOT / "tests" / "servers" / "web_server.py")
PAYLOAD = "<img src=x onerror=alert(1)><script>alert(2)</script>"
WIDTHS = (1280, 390)


def web_server() -> dict[str, Any]:
    return {"command": PY, "args": [WEB_SERVER]}


def servers() -> dict[str, Any]:
    return {"time": time_server(), "web": web_server(), "sdk": sdk_server("sdk", on_tool_change="block")}


# -- pure parts ----------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_browser_sessions_expire_when_idle_and_at_their_lifetime_and_are_bounded() -> None:
    clock = Clock()
    sessions = WebSessions(clock=clock, lifetime=100, idle=30, limit=2)
    value, session = sessions.create("tok")
    assert value != "tok" and session.csrf and session.csrf != value
    assert sessions.get(value) is session and sessions.get("other") is None and sessions.get(None) is None
    clock.now += 29
    assert sessions.get(value) is session  # used: its idle time starts again
    clock.now += 29
    assert sessions.get(value) is session
    clock.now += 30
    assert sessions.get(value) is None  # idle too long
    value, session = sessions.create("tok")
    for _ in range(4):
        clock.now += 20
        assert sessions.get(value) is session
    clock.now += 20
    assert sessions.get(value) is None  # 100 s after it began, however busy
    a, _ = sessions.create("a")
    clock.now += 1
    b, _ = sessions.create("b")
    clock.now += 1
    assert sessions.get(a) is not None  # a used last: b is the one to give way
    c, _ = sessions.create("c")
    assert sessions.get(b) is None and sessions.get(a) is not None and sessions.get(c) is not None
    sessions.end(a)
    assert sessions.get(a) is None and len(sessions) == 1


def test_quantiles_of_a_histogram() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    assert quantile(counts, 0.5) is None
    i = BUCKETS.index(0.01)
    counts[i] = 100  # everything between 5 ms and 10 ms
    assert quantile(counts, 0.5) == pytest.approx(0.0075)
    assert 0.005 < quantile(counts, 0.99) <= 0.01  # type: ignore[operator]
    counts[-1] = 100  # half beyond the last bound
    assert quantile(counts, 0.99) == BUCKETS[-1]


def test_where_a_login_may_lead_and_what_counts_as_the_same_origin() -> None:
    assert safe_next("/ui/tools?q=x") == "/ui/tools?q=x"
    for bad in (None, "", "https://evil.example/", "//evil.example/ui/", "/ui\\@evil", "/servers", "/ui/admin/keys",
                "/ui/api/headline"):
        assert safe_next(bad) == "/ui/"
    assert same_origin("http://127.0.0.1:8081", None, "http", "127.0.0.1:8081")
    assert not same_origin("http://evil.example", None, "http", "127.0.0.1:8081")
    assert not same_origin("https://127.0.0.1:8081", None, "http", "127.0.0.1:8081")
    assert not same_origin("null", None, "http", "127.0.0.1:8081")
    assert same_origin("null", "same-origin", "http", "h")  # what no-referrer makes of the page's own POSTs
    assert not same_origin("null", "cross-site", "http", "h")
    assert same_origin(None, None, "http", "h") and same_origin(None, "same-origin", "http", "h")
    assert not same_origin(None, "cross-site", "http", "h") and not same_origin(None, "same-site", "http", "h")


# -- over raw HTTP: login, cookie, CSRF, headers, the proxy, the playground call ----------------------
def _cookie(reply: Reply) -> str:
    header = reply.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


async def _login(http: HTTPClient, token: str = TOKEN) -> Reply:
    body = f"token={token}&next=%2Fui%2Ftools".encode()
    return await http.request("POST", "/ui/login", body, {"content-type": "application/x-www-form-urlencoded",
                                                          "origin": "http://127.0.0.1"})


async def _csrf(http: HTTPClient, cookie: str) -> str:
    page = await http.request("GET", "/ui/", headers={"cookie": f"mcpg_ui={cookie}"})
    assert page.status == 200, page
    found = re.search(rb'<meta name="csrf-token" content="([^"]+)">', page.body)
    assert found
    return found.group(1).decode()


async def test_login_sessions_csrf_and_security_headers(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"web": web_server()}) as gw, HTTPClient.connect(gw.admin_port) as http:
        away = await http.request("GET", "/ui/playground?route=/&tool=a")
        assert away.status == 303 and away.headers["location"] == "/ui/login?next=/ui/playground%3Froute%3D/%26tool%3Da"
        assert (await http.request("GET", "/ui/api/headline")).status == 401
        login = await http.request("GET", "/ui/login")
        assert login.status == 200 and b'name="token"' in login.body
        for name, value in (("content-security-policy", "script-src 'self'"), ("x-frame-options", "DENY"),
                            ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer")):
            assert value in login.headers[name]
        assert "unsafe-inline" not in login.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in login.headers["content-security-policy"]

        wrong = await _login(http, TOKEN + "x")
        assert wrong.status == 401 and b"not the admin token" in wrong.body and "set-cookie" not in wrong.headers
        cross = await http.request("POST", "/ui/login", f"token={TOKEN}".encode(),
                                   {"content-type": "application/x-www-form-urlencoded", "origin": "http://evil.example"})
        assert cross.status == 403 and "set-cookie" not in cross.headers

        ok = await _login(http)
        assert ok.status == 303 and ok.headers["location"] == "/ui/tools"
        flags = [f.strip().lower() for f in ok.headers["set-cookie"].split(";")]
        assert {"httponly", "samesite=strict", "path=/ui"} <= set(flags) and "secure" not in flags  # plain http here
        cookie = _cookie(ok)
        assert TOKEN not in cookie and len(cookie) >= 40
        jar = {"cookie": f"mcpg_ui={cookie}"}
        csrf = await _csrf(http, cookie)

        # The page's JSON and the JSON API through the session need the CSRF token (reads too).
        assert (await http.request("GET", "/ui/api/headline", headers=jar)).status == 403
        assert (await http.request("GET", "/ui/admin/servers", headers=jar)).status == 403
        both = {**jar, "x-csrf-token": csrf}
        headline = await http.request("GET", "/ui/api/headline", headers=both)
        assert headline.status == 200 and headline.json()["requests_total"] >= 0
        evil = await http.request("GET", "/ui/admin/servers", headers={**both, "origin": "http://evil.example"})
        assert evil.status == 403
        site = await http.request("GET", "/ui/admin/servers", headers={**both, "sec-fetch-site": "cross-site"})
        assert site.status == 403
        proxied = await http.request("GET", "/ui/admin/servers", headers=both)
        assert proxied.status == 200 and [s["name"] for s in proxied.json()["servers"]] == ["web"]
        assert proxied.headers["x-frame-options"] == "DENY" and proxied.headers["cache-control"] == "no-store"
        bad = await http.request("POST", "/ui/admin/servers", json.dumps({"name": "x", "server": {"command": ""}}).encode(),
                                 {**both, "content-type": "application/json"})
        assert bad.status == 422 and bad.json()["error"]["path"] == "servers.x.command"
        # The JSON API's own paths do not take the cookie: a Bearer token only.
        assert (await http.request("GET", "/servers", headers=both)).status == 401
        # A state-changing page request without the token is refused.
        assert (await http.request("POST", "/ui/logout", b"", {**jar, "content-type":
                                                               "application/x-www-form-urlencoded"})).status == 403
        out = await http.request("POST", "/ui/logout", f"csrf={csrf}".encode(),
                                 {**jar, "content-type": "application/x-www-form-urlencoded"})
        assert out.status == 303 and out.headers["location"] == "/ui/login"
        assert (await http.request("GET", "/ui/api/headline", headers=both)).status == 401
        assert (await http.request("GET", "/ui/admin/servers", headers=both)).status == 401

        # Who logged in, who failed (the presented token is nowhere in the log) and who left.
        with trio.fail_after(10):
            while True:
                found = await db_rows(gw.db, "SELECT identity, detail, outcome, arguments FROM audit_log WHERE method LIKE "
                                             "'POST /ui/log%' ORDER BY id")
                if len(found) >= 3:
                    break
                await trio.sleep(0.05)
        details = [(who, detail) for who, detail, _, _ in found]
        assert ("(no valid token)", "admin page login refused") in details
        assert ("admin", "logged in to the admin page") in details and ("admin", "logged out of the admin page") in details
        assert not any(TOKEN in str(row) for row in found)


async def _page_call(http: HTTPClient, jar: dict[str, str], body: Any) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await http.request("POST", "/ui/api/call", data, {**jar, "content-type": "application/json"})


async def test_a_playground_call_goes_through_the_pipeline_as_the_admin(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"web": web_server()}) as gw, HTTPClient.connect(gw.admin_port) as http:
        cookie = _cookie(await _login(http))
        jar = {"cookie": f"mcpg_ui={cookie}", "x-csrf-token": await _csrf(http, cookie)}
        reply = await _page_call(http, jar, {"route": "/", "name": "web__report", "arguments": {}})
        assert reply.status == 200, reply
        data = reply.json()
        assert data["failure"] is None and data["seconds"] > 0
        content = data["answer"]["result"]["content"]
        assert [c["type"] for c in content] == ["text", "image", "resource"]
        methods = [n["method"] for n in data["notifications"]]
        assert methods.count("notifications/progress") == 2 and methods.count("notifications/message") == 2
        progress = [n["params"] for n in data["notifications"] if n["method"] == "notifications/progress"]
        assert [p["progress"] for p in progress] == [1, 2] and progress[0]["progressToken"] == "playground"
        nested = await _page_call(http, jar, {"route": "/", "name": "web__order", "arguments": {"a": {"b": [1]}}})
        assert json.loads(nested.json()["answer"]["result"]["content"][0]["text"]) == {"a": {"b": [1]}}
        unknown = await _page_call(http, jar, {"route": "/", "name": "web__nope"})
        assert unknown.json()["answer"]["error"]["message"] == "Unknown tool: 'web__nope'"
        for body, status, path in (({"route": "/nope", "name": "x"}, 422, "route"),
                                   ({"route": "/", "name": "x", "arguments": [1]}, 422, "arguments"),
                                   ({"route": "/", "name": ""}, 422, "name"),
                                   ({"route": "/", "name": "x", "method": "tools/list"}, 422, "method"),
                                   ({"route": "/", "name": "x", "extra": 1}, 400, "extra"),
                                   (b"{not json", 400, None), (b"[]", 400, None)):
            refused = await _page_call(http, jar, body)
            assert refused.status == status, (body, refused)
            assert refused.json()["error"]["path"] == path
        # Attributed to the admin in the audit log, like any caller's call.
        with trio.fail_after(10):
            while not (found := await db_rows(gw.db, "SELECT identity, route, server, name, outcome FROM audit_log "
                                                     "WHERE kind = 'call' ORDER BY id")) or len(found) < 3:
                await trio.sleep(0.05)
        assert found[0] == ("admin:admin", "/", "web", "web__report", "ok")
        assert gw.gateway.dispatcher.stats.callers["admin:admin"] >= 2
        assert len(gw.gateway.sessions) == 0  # each call's session ends with it
        peers = await db_rows(gw.db, "SELECT DISTINCT peer FROM audit_log WHERE kind = 'call'")
        assert peers == [("admin page 127.0.0.1",)]  # counted apart from data-plane clients of that address


# -- in a real browser ----------------------------------------------------------------------------------
class GatewayThread:
    """A gateway with the admin API on, served by its own trio loop in a thread (see the module)."""

    def __init__(self, tmp: Path, config_servers: dict[str, Any]) -> None:
        self.tmp, self.servers = tmp, config_servers
        self.gw: AdminGateway | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), name="web-gateway", daemon=True)

    async def _main(self) -> None:
        self._token, self._stop = trio.lowlevel.current_trio_token(), trio.Event()
        try:
            async with admin_gateway(self.tmp, self.servers) as gw:
                self.gw = gw
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._ready.set()

    def start(self) -> AdminGateway:
        self._thread.start()
        assert self._ready.wait(60), "the gateway did not start within 60 s"
        if self.error is not None or self.gw is None:
            raise RuntimeError("the gateway did not start") from self.error
        return self.gw

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn(*args)`` in the gateway's loop and return its result."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(30)


@dataclass
class Live:
    thread: GatewayThread
    gw: AdminGateway

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.gw.admin_port}{path}"

    def api(self, method: str, path: str, body: Any = ...) -> Reply:
        async def go() -> Reply:
            async with admin_client(self.gw.admin_port) as client:
                return await client.call(method, path, body)
        result: Reply = self.thread.run(go)
        return result


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    thread = GatewayThread(tmp_path_factory.mktemp("web"), servers())
    gw = thread.start()
    try:
        yield Live(thread, gw)
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: .venv/bin/pip install -e '.[dev]' (make install)")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/test-env (it installs Debian's chromium package), "
                    "or set MCP_GATEWAY_CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Any
    live: Live
    dialogs: list[str]
    console: list[str]

    def goto(self, path: str) -> None:
        self.page.goto(self.live.url(path))

    def shot(self, name: str) -> None:
        """Screenshots at each width (full page) into build/screenshots/; at a phone's width the page
        must not scroll sideways (wide tables scroll inside their box)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": 900})
            self.page.wait_for_timeout(150)
            self.page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            overflow = self.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{name} scrolls sideways by {overflow} px at {width} px"
        self.page.set_viewport_size({"width": 1280, "height": 900})


@contextmanager
def open_tab(browser: Any, live: Live, *, bypass_csp: bool = False) -> Iterator[Tab]:
    """A fresh browser context (its own cookies) and page; ``bypass_csp`` turns the page's
    Content-Security-Policy off, to test what the page does without that second line of defence."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    console: list[str] = []

    def dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"page error: {e}"))
    try:
        yield Tab(page, live, dialogs, console)
        # No script error and nothing the Content-Security-Policy had to stop ("Refused to ..."), on
        # any test's pages (answers with an error status, which the tests ask for, are logged too).
        assert not [c for c in console if not c.startswith("Failed to load resource")], console
        assert not dialogs, dialogs
    finally:
        context.close()


@pytest.fixture
def tab(browser: Any, live: Live) -> Iterator[Tab]:
    with open_tab(browser, live) as opened:
        yield opened


def log_in(tab: Tab, path: str = "/ui/") -> None:
    tab.goto(path)
    tab.page.fill("#token", TOKEN)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_selector("header.top")


def test_the_login_takes_the_token_and_refuses_a_wrong_one(tab: Tab) -> None:
    page = tab.page
    tab.goto("/ui/servers")
    assert page.url.endswith("/ui/login?next=/ui/servers")
    tab.shot("login")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    assert page.locator("#login-error").inner_text() == "That is not the admin token."
    assert page.context.cookies() == []
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#server-list tbody tr")
    assert page.url.endswith("/ui/servers")
    [cookie] = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == ("mcpg_ui", True, "Strict", "/ui")
    assert TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    page.click("header .logout button")
    page.wait_for_selector("#token")
    tab.goto("/ui/")
    assert "/ui/login" in page.url


def test_the_overview_shows_the_time_server_ready_and_follows_a_change_without_reloading(tab: Tab) -> None:
    page = tab.page
    log_in(tab)
    state = page.locator('#servers tr[data-server="time"] .state')
    state.wait_for()
    page.wait_for_function("() => document.querySelector('#servers tr[data-server=\"time\"] .state').textContent === 'ready'")
    assert page.locator('#routes tr[data-route="/"]').count() == 1
    page.evaluate("window.notReloaded = true")
    added = tab.live.api("POST", "/servers", {"name": "broken", "server": {"command": PY, "args": ["-c", "raise SystemExit(3)"]}})
    assert added.status == 201, added
    try:
        row = page.locator('#servers tr[data-server="broken"]')
        row.wait_for()
        page.wait_for_function(
            "() => ['down', 'backing off'].includes(document.querySelector('#servers tr[data-server=\"broken\"] .state')"
            "?.textContent)")
        assert row.locator(".error-text").inner_text()  # why it is down
        assert page.evaluate("window.notReloaded") is True
        page.wait_for_function("() => document.getElementById('m-rate').textContent !== '–'")
        tab.shot("overview")
    finally:
        assert tab.live.api("DELETE", "/servers/broken").status == 200
    row.wait_for(state="detached")
    assert page.evaluate("window.notReloaded") is True


def test_the_playground_calls_time_get_current_time(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/playground")
    page.wait_for_selector("#pg-tool option")
    page.fill("#pg-filter", "current_time")
    page.select_option("#pg-tool", "time__get_current_time")
    page.fill('[name="timezone"]', "Europe/Paris")
    page.click("#pg-submit")
    output = page.locator("#pg-output pre.text")
    output.first.wait_for()
    answer = json.loads(output.first.inner_text())
    assert answer["timezone"] == "Europe/Paris" and re.match(r"\d{4}-\d\d-\d\dT", answer["datetime"])
    assert page.locator("#pg-duration").inner_text().startswith("in ")
    assert "is-error" not in (page.locator("#pg-output").get_attribute("class") or "")
    tab.shot("playground")


def test_a_form_built_from_a_nested_schema_sends_the_right_json(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/playground?route=/&tool=web__order")
    page.wait_for_selector('[name="customer.name"]')
    page.fill('[name="customer.name"]', "Ada")
    page.fill('[name="customer.address.city"]', "London")  # zip left empty: not sent
    for _ in range(3):
        page.click('[data-add="items"]')
    page.fill('[name="items.0.sku"]', "A-1")
    page.fill('[name="items.0.qty"]', "2")
    page.fill('[name="items.1.sku"]', "B-2")
    page.fill('[name="items.1.qty"]', "1")
    page.locator('fieldset[data-path="items"] ol.items > li').nth(2).locator("button").click()  # removed again
    page.select_option('[name="priority"]', label="high")
    page.select_option('[name="gift"]', label="true")
    page.fill('[name="discount"]', "0.25")
    page.click("#pg-submit")
    expected = {"customer": {"name": "Ada", "address": {"city": "London"}},
                "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
                "priority": "high", "gift": True, "discount": 0.25}
    echoed = page.locator("#pg-output pre.text").first
    echoed.wait_for()
    assert json.loads(echoed.inner_text()) == expected  # what the upstream received
    # A bad number is refused in the page, naming the field; nothing is sent.
    page.fill('[name="items.1.qty"]', "1.5")
    page.click("#pg-submit")
    assert page.locator("#pg-form-error").inner_text() == "items.1.qty: expected an integer"
    # The raw JSON fallback starts from the form's arguments and sends what is written there.
    page.fill('[name="items.1.qty"]', "3")
    page.check("#pg-raw")
    raw = json.loads(page.input_value("#pg-json"))
    assert raw == {**expected, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 3}]}
    page.fill("#pg-json", json.dumps({"customer": {"name": "Bob"}, "items": [], "priority": "low", "extra": [1, {"x": None}]}))
    page.click("#pg-submit")
    page.wait_for_function("() => document.querySelector('#pg-output pre.text')?.textContent.includes('Bob')")
    assert json.loads(page.locator("#pg-output pre.text").first.inner_text()) == {
        "customer": {"name": "Bob"}, "extra": [1, {"x": None}], "items": [], "priority": "low"}


def test_progress_logs_images_and_resources_are_shown(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/playground?route=/&tool=web__report")
    page.wait_for_selector("#pg-submit:not([disabled])")
    page.click("#pg-submit")
    page.wait_for_selector("#pg-output img.content-image")
    assert page.locator("#pg-output img.content-image").get_attribute("src", timeout=1000).startswith("data:image/png;base64,")
    assert page.evaluate("document.querySelector('#pg-output img.content-image').naturalWidth") == 1
    assert page.locator("#pg-output .resource pre").inner_text() == "the report"
    messages = page.locator("#pg-messages li").all_inner_texts()
    assert [m.split()[0] for m in messages] == ["progress", "info", "progress", "warning"], messages
    assert "1/2 step 1" in messages[0] and PAYLOAD in messages[1]


def test_an_xss_payload_from_an_upstream_is_shown_as_text(browser: Any, live: Live) -> None:
    # With the CSP off: the escaping alone must hold (the CSP is checked over raw HTTP above).
    with open_tab(browser, live, bypass_csp=True) as tab:
        _xss(tab)


def _xss(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/tools")
    page.fill("#search", "hostile")
    entry = page.locator('details.entry:not([hidden])')
    assert entry.count() == 1
    entry.locator("summary").click()
    assert PAYLOAD in entry.locator(".description").inner_text()
    assert PAYLOAD in entry.locator(".title").inner_text()
    assert PAYLOAD in entry.locator("pre.schema").first.inner_text()  # the property's description
    page.fill("#search", "")
    assert PAYLOAD in page.locator('details.entry[data-kind="prompt"]', has_text="web__greet").inner_text()
    assert PAYLOAD in page.locator('details.entry[data-kind="resource"]', has_text="memo://web/readme").text_content()
    assert page.locator("main img, main script").count() == 0  # nothing the payload wrote became an element
    tab.shot("tools")
    tab.goto("/ui/playground?route=/&tool=web__hostile")
    page.wait_for_selector("#pg-submit:not([disabled])")
    assert PAYLOAD in page.locator("#pg-description").inner_text()
    assert PAYLOAD in page.locator('[data-path="note"] .help').inner_text()
    page.click("#pg-submit")
    page.wait_for_selector("#pg-output pre.text")
    texts = page.locator("#pg-output pre.text").all_inner_texts()
    assert texts == [f"result: {PAYLOAD}", PAYLOAD]
    assert "cannot be shown" in page.locator("#pg-output").inner_text()  # the text/html "image"
    assert page.locator("main img, main script").count() == 0
    page.wait_for_timeout(300)  # (an onerror would have fired by now)
    assert tab.dialogs == []


def test_servers_add_with_a_field_error_then_add_diff_remove_and_roll_back(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/servers")
    page.wait_for_selector('#server-list tr[data-server="time"]')
    page.fill("#s-name", "extra")
    page.fill("#s-command", PY)
    page.fill("#s-args", f"{SDK_SERVER}\nextra")
    page.fill("#s-extra", '{"call_timeout": "soon"}')
    page.click("#server-save")
    error = page.locator("#server-error")
    error.wait_for()
    assert error.inner_text().startswith("servers.extra.call_timeout: invalid duration 'soon'")
    assert "invalid" in (page.locator("#s-extra").get_attribute("class") or "")
    page.fill("#s-extra", "")
    page.fill("#s-command", "")
    page.click("#server-save")
    page.wait_for_function("() => document.getElementById('server-error').textContent.startsWith('servers.extra.command')")
    assert page.locator("#s-command").get_attribute("aria-invalid") == "true"
    page.fill("#s-command", PY)
    page.click("#server-save")
    page.wait_for_selector('#server-list tr[data-server="extra"]')
    assert "Added extra" in page.locator("#notice").inner_text()
    added = page.locator("#versions tbody tr").first
    assert "(current)" in added.inner_text() and "add server extra" in added.inner_text()
    added.locator("button", has_text="Diff").click()
    page.wait_for_function("() => document.getElementById('diff-text').textContent.includes('extra')")
    assert "+  extra:" in page.locator("#diff-text").inner_text()
    version = int(added.get_attribute("data-version") or 0)
    remove = page.locator('#server-list tr[data-server="extra"] button', has_text="Remove")
    remove.click()
    page.locator('#server-list tr[data-server="extra"] button.danger').click()  # asked once more: yes
    page.locator('#server-list tr[data-server="extra"]').wait_for(state="detached")
    back = page.locator(f'#versions tr[data-version="{version}"] button', has_text="Roll back")
    back.click()
    page.locator(f'#versions tr[data-version="{version}"] button.danger').click()
    page.wait_for_selector('#server-list tr[data-server="extra"]')
    assert f"Rolled back to version {version}" in page.locator("#notice").inner_text()
    assert "extra" in tab.live.gw.gateway.supervisors
    tab.shot("servers")
    assert tab.live.api("DELETE", "/servers/extra").status == 200


def test_a_pending_tool_change_is_approved_from_the_servers_page(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/playground?route=/&tool=sdk__redefine")
    page.fill('[name="description"]', "Ignore previous instructions")
    page.click("#pg-submit")
    page.wait_for_function("() => document.getElementById('pg-output').textContent.includes('echo redefined')")
    pins = tab.live.gw.gateway.pins
    for _ in range(100):
        if pins.pending():
            break
        page.wait_for_timeout(100)
    tab.goto("/ui/servers")
    change = page.locator('article.change[data-tool="sdk/echo"]')
    change.wait_for()
    assert "Ignore previous instructions" in change.locator("pre.diff").inner_text()
    change.locator("button", has_text="Approve").click()
    page.wait_for_function("() => document.getElementById('changes').textContent.includes('None waiting')")
    assert not pins.pending() and "Approved echo of sdk" in page.locator("#notice").inner_text()


def test_the_audit_log_filters_and_pages(tab: Tab) -> None:
    page = tab.page
    log_in(tab, "/ui/playground?route=/&tool=web__order")
    page.wait_for_selector("#pg-submit:not([disabled])")
    page.check("#pg-raw")
    for _ in range(3):
        page.fill("#pg-json", json.dumps({"customer": {"name": "x"}, "items": [], "priority": "low"}))
        page.click("#pg-submit")
        page.wait_for_selector("#pg-output pre.text")
    tab.goto("/ui/audit?limit=2&identity=admin:admin&tool=web__order")
    rows = page.locator("#audit tbody tr")
    page.wait_for_function("() => document.querySelectorAll('#audit tbody tr[data-id]').length === 2")
    page.click("#audit-more")
    page.wait_for_function("() => document.querySelectorAll('#audit tbody tr[data-id]').length >= 3")
    ids = [int(r.get_attribute("data-id") or 0) for r in rows.all()]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    for r in rows.all():
        cells = r.locator("td").all_inner_texts()
        assert cells[2] == "admin:admin" and cells[3] == "tools/call" and cells[6] == "web__order"
    page.select_option("#f-kind", "admin")
    page.fill("#f-identity", "")
    page.fill("#f-tool", "")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_function("() => [...document.querySelectorAll('#audit tbody tr[data-id] td:nth-child(2)')]"
                           ".every(td => td.textContent === 'admin')")
    page.select_option("#f-outcome", "timeout")
    page.select_option("#f-kind", "")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_selector("#audit tbody td.muted")
    assert page.locator("#audit tbody").inner_text().strip() == "Nothing matches."
    page.select_option("#f-outcome", "")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_selector("#audit tbody tr[data-id]")
    tab.shot("audit")


@pytest.fixture(scope="module")
def pet_store_url() -> Iterator[str]:
    """The REST API of tests/test_rest_tools.py on 127.0.0.1, in a trio loop of its own."""
    from functools import partial

    from tests.test_rest_tools import PetStore

    store, ready, held = PetStore(), threading.Event(), {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, store.serve, 0, host="127.0.0.1"))
            held.update(url=f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}",
                        token=trio.lowlevel.current_trio_token(), stop=trio.Event())
            ready.set()
            await held["stop"].wait()
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), name="pet-store", daemon=True)
    thread.start()
    assert ready.wait(30), "the pet store did not start"
    try:
        yield held["url"]
    finally:
        trio.from_thread.run_sync(held["stop"].set, trio_token=held["token"])
        thread.join(10)


def test_a_rest_api_added_from_its_openapi_file_is_called_from_the_playground(tab: Tab, pet_store_url: str) -> None:
    """The issue's newcomer: add a REST API from its OpenAPI document on the servers page, then call
    one of its operations in the playground."""
    page = tab.page
    log_in(tab, "/ui/servers")
    page.wait_for_selector('#server-list tr[data-server="time"]')
    page.fill("#s-name", "pets")
    page.select_option("#s-kind", "http")
    page.fill("#s-base_url", "http://127.0.0.1:1")  # nothing listens there: the document's calls would fail
    page.fill("#s-openapi", str(ROOT / "tests" / "data" / "no-such-document.json"))
    page.click("#server-save")
    page.wait_for_function("() => document.getElementById('server-error').textContent.startsWith('servers.pets.http.openapi')")
    assert page.locator("#s-openapi").get_attribute("aria-invalid") == "true"
    page.fill("#s-base_url", f"{pet_store_url}/v1")
    page.fill("#s-openapi", str(ROOT / "tests" / "data" / "petstore-3.1.json"))
    page.click("#server-save")
    page.wait_for_selector('#server-list tr[data-server="pets"]')
    try:
        tab.goto("/ui/playground")
        page.wait_for_selector("#pg-tool option")
        page.fill("#pg-filter", "listPets")
        page.wait_for_selector('#pg-tool option[value="pets__listPets"]', state="attached")
        page.select_option("#pg-tool", "pets__listPets")
        page.fill('[name="limit"]', "2")
        page.click("#pg-submit")
        output = page.locator("#pg-output pre.text")
        output.first.wait_for()
        answer = json.loads(output.first.inner_text())
        assert [p["name"] for p in answer] == ["Rex", "Tom"]
        tab.shot("playground-rest")
    finally:
        assert tab.live.api("DELETE", "/servers/pets").status == 200
