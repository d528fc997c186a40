"""The dashboard at `/`: its files and headers over HTTP, the Origin rule its buttons rely on, and
the live page itself in real headless Chromium (Debian's chromium + chromium-driver) against a live
mesh: every server renders, a killed server is seen restarting and back, a button restarts one,
markup from servers and clients renders as text, and the page says when the mesh went away."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcpmesh.dashboard import CSP
from mcpmesh.supervision.shared import SharedServer
from tests.conftest import ROOT, RunningMesh, conformance_server, fixture_server, running_mesh
from tests.observe.test_metrics import Raw

pytestmark = pytest.mark.anyio

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "artifacts"
WAIT = 30  # seconds any one thing the page should show may take (a restart with backoff, a slow CI)
XSS = "<img src=x onerror=window.__xss=1>"  # what a server or client might print: must show as text
PORTS = "23590-23599"  # a range of this test's own, for conf's dedicated port
SLOW_BACKOFF = {"restart": {"backoff_initial": 3, "backoff_max": 3}}  # `restarting` lasts 1.5-3 s


# -- over HTTP -------------------------------------------------------------------------------
async def test_the_page_and_its_files_are_served_with_types_cache_headers_and_a_strict_csp() -> None:
    async with running_mesh({"conf": conformance_server()}) as mesh, httpx.AsyncClient(base_url=mesh.base_url) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
        assert page.headers["cache-control"] == "no-cache" and page.headers["x-content-type-options"] == "nosniff"
        assert '<script src="/dashboard/dashboard.js" defer></script>' in page.text
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            reply = await http.get(f"/dashboard/{name}")
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(kind), name
            again = await http.get(f"/dashboard/{name}", headers={"If-None-Match": reply.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        for missing in ("/dashboard/index.html", "/dashboard/nope.js"):
            assert (await http.get(missing)).status_code == 404, missing
        # A traversal through an encoded slash is refused at the door, before any file is looked up.
        traversal = await http.get("/dashboard/..%2fapp.py")
        assert traversal.status_code == 400 and "encoded slash" in traversal.text
        assert (await http.get("/", headers={"Host": "evil.example.com"})).status_code == 421  # DNS rebinding


async def test_a_post_from_the_mesh_own_origin_passes_and_a_foreign_origin_is_refused() -> None:
    """The page's buttons POST with the Origin it was served from, which need not be loopback."""
    async with running_mesh({"conf": conformance_server()}, allowed_hosts=["mesh.internal"]) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
            own = {"Host": f"mesh.internal:{mesh.port}", "Origin": f"http://mesh.internal:{mesh.port}"}
            assert (await http.post("/v1/servers/conf/restart", headers=own)).status_code == 202
            for origin in ("http://evil.example.com", f"http://mesh.internal:{mesh.port + 1}", "null"):
                foreign = {"Host": f"mesh.internal:{mesh.port}", "Origin": origin}
                assert (await http.post("/v1/servers/conf/restart", headers=foreign)).status_code == 403, origin
    async with running_mesh({"conf": conformance_server()}, allowed_hosts=["*"]) as mesh:
        async with httpx.AsyncClient(base_url=mesh.base_url, timeout=30) as http:
            # With the Host check off, "same origin" proves nothing (a rebinding page is that too).
            rebound = {"Host": f"evil.example.com:{mesh.port}", "Origin": f"http://evil.example.com:{mesh.port}"}
            assert (await http.post("/v1/servers/conf/restart", headers=rebound)).status_code == 403


# -- in the browser --------------------------------------------------------------------------
class Page:
    """The dashboard as a person sees it; every wait is on what the page shows (no sleeps)."""

    def __init__(self, driver: Any):
        self.driver = driver

    def open(self, base_url: str) -> None:
        self.driver.get(f"{base_url}/?interval=300")

    def until(self, what: str, condition: Callable[[], Any]) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_: Any) -> Any:
            try:
                return condition()
            except StaleElementReferenceException:
                return False

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(check, f"the page never showed {what}")

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))

    def card(self, server: str, role: str) -> str:
        selector = f'.card[data-server="{server}"] [data-role="{role}"]'
        text: str = self.find(selector).get_attribute("textContent")
        return text

    def shows_state(self, server: str, state: str) -> bool:
        return self.count(f'.card[data-server="{server}"]') == 1 and self.card(server, "state") == state

    def text(self, css: str) -> str:
        text: str = self.find(css).get_attribute("textContent")
        return text


def pid_of(mesh: RunningMesh, name: str) -> int:
    server = mesh.mesh.supervisor.servers[name]
    assert isinstance(server, SharedServer) and server.child is not None
    return server.child.pid


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Selenium blocks: run it beside the event loop the mesh serves from."""
    return await anyio.to_thread.run_sync(fn)


async def test_the_page_shows_every_server_live_and_its_buttons_act(tmp_path: Path) -> None:
    servers = {
        "conf": {**conformance_server(), "dedicated_port": True},
        "faulty": {
            **fixture_server("faulty_server.py", "--stderr-env", "PROBE", "--note", XSS),
            "env": {"PROBE": XSS},
            **SLOW_BACKOFF,
        },
    }
    _require_chromium()
    driver = _chromium()  # before the mesh runs: starting it blocks for a moment
    try:
        await _scenario(Page(driver), servers, tmp_path)
    finally:
        driver.quit()


async def _scenario(page: Page, servers: dict[str, Any], state_dir: Path) -> None:
    driver = page.driver
    async with (
        running_mesh(servers, ports=PORTS, state_dir=str(state_dir)) as mesh,
        httpx.AsyncClient(timeout=30) as http,
    ):
        # Traffic, so the figures and the chart have something to show; a client with markup in its name.
        raw = await Raw.open(http, mesh.url("conf"), XSS)
        for _ in range(3):
            assert "result" in await raw.call_tool("test_simple_text")
        echo = await Raw.open(http, mesh.url("faulty"), "claude-code")
        for text in ("a", "b", "c", "d", "e", "f"):
            assert (await echo.call_tool("echo", text=text))["result"]["content"][0]["text"] == text
        assert "error" in await echo.call_tool("no_such_tool")

        await in_thread(lambda: page.open(mesh.base_url))

        # Every server renders, healthy, with its pid; the header counts them.
        for name in servers:
            pid = str(pid_of(mesh, name))
            await in_thread(lambda n=name, p=pid: page.until(f"{n} healthy", lambda: page.shows_state(n, "healthy")))
            await in_thread(lambda n=name, p=pid: page.until(f"{n}'s pid", lambda: page.card(n, "pid") == p))
        assert "2 healthy" in await in_thread(lambda: page.text("#summary"))
        own = str(mesh.mesh.pool.serving["conf"])
        await in_thread(lambda: page.until("conf's own port", lambda: page.card("conf", "port") == own))
        await in_thread(lambda: page.until("the port pool", lambda: f"{own}conf" in page.text("#ports")))
        assert await in_thread(lambda: page.card("faulty", "port")) == "—"
        assert await in_thread(lambda: page.card("faulty", "rate")) != "0"  # 7 calls in the last minute
        assert await in_thread(lambda: page.card("faulty", "errors")) == "14 %"  # 1 of 7: the unknown tool

        # Markup from a client (its name), a server (its stderr) and a spawn's argv shows as text.
        await in_thread(lambda: page.until("the client's name", lambda: XSS in page.card("conf", "clients")))
        await in_thread(lambda: page.find('.card[data-server="faulty"] .card-title').click())
        await in_thread(lambda: page.until("faulty's details", lambda: page.text("#detail-title") == "faulty"))
        await in_thread(lambda: page.until("faulty's stderr", lambda: f"PROBE={XSS}" in page.text("#stderr")))
        await in_thread(lambda: page.until("faulty's tools", lambda: "echo" in page.text("#tools")))
        await in_thread(lambda: page.until("the spawn's argv", lambda: XSS in page.text("#events")))
        assert await in_thread(lambda: page.count("#stderr img, #events img, .card img")) == 0
        assert await in_thread(lambda: driver.execute_script("return window.__xss === undefined"))

        # Killed: the page sees it restarting, then healthy again with a new pid, without a reload.
        old = pid_of(mesh, "faulty")
        marker = await in_thread(lambda: driver.execute_script("return (window.__marker = Math.random())"))
        os.kill(old, signal.SIGKILL)
        await in_thread(lambda: page.until("faulty restarting", lambda: page.shows_state("faulty", "restarting")))
        await in_thread(lambda: page.until("faulty back", lambda: page.shows_state("faulty", "healthy")))
        new = pid_of(mesh, "faulty")
        assert new != old
        await in_thread(lambda: page.until("the new pid", lambda: page.card("faulty", "pid") == str(new)))
        assert await in_thread(lambda: page.card("faulty", "restarts")) == "1"
        await in_thread(lambda: page.until("the exit event", lambda: f"pid={old}" in page.text("#server-events")))
        assert await in_thread(lambda: driver.execute_script("return window.__marker")) == marker  # no reload

        # The restart button: a new process, as the card and the API both say.
        before = pid_of(mesh, "conf")
        await in_thread(lambda: page.find('.card[data-server="conf"] button[data-action="restart"]').click())
        await in_thread(lambda: page.until("the restart done", lambda: "restart conf: done" in page.text("#toast")))
        await in_thread(
            lambda: page.until("conf's new pid", lambda: page.card("conf", "pid") not in ("—", str(before)))
        )
        await in_thread(lambda: page.until("conf healthy", lambda: page.shows_state("conf", "healthy")))
        shown = int(await in_thread(lambda: page.card("conf", "pid")))
        described = (await http.get(f"{mesh.base_url}/v1/servers/conf")).json()
        assert described["pid"] == shown != before and described["restarts"] == 1
        assert await in_thread(lambda: page.card("conf", "restarts")) == "1"

        await in_thread(lambda: _screenshots(page))

    # The mesh went away: the page says so, and keeps trying until a mesh answers there again.
    await in_thread(lambda: page.until("disconnected", lambda: page.text("#connection").startswith("disconnected")))
    async with running_mesh(servers, port=mesh.port, ports=PORTS, state_dir=str(state_dir)) as again:
        await in_thread(lambda: page.until("live again", lambda: page.text("#connection") == "live"))
        pid = str(pid_of(again, "conf"))
        await in_thread(lambda: page.until("the new mesh's conf", lambda: page.card("conf", "pid") == pid))
        await in_thread(lambda: page.until("faulty healthy", lambda: page.shows_state("faulty", "healthy")))


def _require_chromium() -> None:
    """Skip when Chromium is not installed, unless in CI (CI=true), where that is a failure."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver (scripts/install does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _chromium() -> Any:
    """Headless Chromium at 1366x768, as a laptop shows the page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,768"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _screenshots(page: Page) -> None:
    """artifacts/dashboard.png as a laptop shows it (1366x768), -dark.png the same in dark mode, and
    -full.png the whole page."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.until("the chart", lambda: page.count("#chart svg .line.p50") > 0)
    page.driver.execute_script("window.scrollTo(0, 0)")
    assert page.driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    dark = {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
    assert page.driver.save_screenshot(str(ARTIFACTS / "dashboard-dark.png"))
    page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    height = page.driver.execute_script("return document.documentElement.scrollHeight")
    page.driver.set_window_size(1366, max(768, int(height) + 140))  # + the browser's own frame
    assert page.driver.save_screenshot(str(ARTIFACTS / "dashboard-full.png"))
    page.driver.set_window_size(1366, 768)
