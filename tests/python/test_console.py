"""The web console (issue 13), in a real browser: Debian's chromium, headless, driven by Selenium,
against the gateway served by uvicorn on 127.0.0.1. An operator signs in with an API key, sees a
user's tool call waiting, approves it from the approval queue, watches the live feed, reads the
conversation's timeline, injects a message, and sees the agent's stats and charts. The console
shows only the key's tenant."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from typing import Any, Callable, Iterator

import psycopg
import pytest

from scripted_llm import text, tool_calls
from test_gateway import SQL_CALL, Site, site  # noqa: F401  (site is a fixture)

webdriver = pytest.importorskip("selenium.webdriver")
uvicorn = pytest.importorskip("uvicorn")
from selenium.webdriver.common.by import By  # noqa: E402

from pgagent_gateway.app import create_app  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")


@pytest.fixture
def server(site) -> Iterator[str]:
    """The gateway on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(site.cluster.dsn(site.dbname, user=site.role("gw")), pool_size=4)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        th.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(fn: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = fn()
        except Exception:   # the element is not there yet (stale, missing)
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def shot(browser: Any, name: str) -> None:
    """With PGAGENT_SCREENSHOTS=<dir>, save a screenshot of the page (docs/img/console-*.png are
    made this way: PGAGENT_SCREENSHOTS=docs/img pytest tests/python/test_console.py)."""
    where = os.environ.get("PGAGENT_SCREENSHOTS")
    if where:
        time.sleep(0.5)
        browser.save_screenshot(os.path.join(where, f"console-{name}.png"))


def texts(browser: Any, css: str) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, css)]


def test_an_operator_works_the_console(site, server, browser):
    # a user's turn parks on an approval; another tenant has a turn of its own
    with site.as_role("team_user") as u:
        cid = u.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
        site.llm.script(tool_calls([("bump", {"n": 5})]))
        parked = u.execute("SELECT pgagent.send_message(%s, 'bump five please')", [cid]).fetchone()[0]
    with site.as_role("rival_user") as r:
        rid = r.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
        site.llm.script(text("RIVAL-SECRET answer"))
        r.execute("SELECT pgagent.send_message(%s, 'RIVAL-SECRET question')", [rid])
    assert parked["status"] == "awaiting_approval"

    browser.get(server + "/console")
    browser.find_element(By.ID, "key").send_keys(site.keys["team_operator"])
    browser.find_element(By.ID, "login-button").click()
    wait_for(lambda: site.role("team_operator") in browser.find_element(By.ID, "whoami").text, what="signed in")
    # the live feed: the tenant's recent steps, nothing of the rival's
    wait_for(lambda: "bump five please" in browser.find_element(By.ID, "feed-table").text, what="feed")
    assert "RIVAL-SECRET" not in browser.page_source

    # the approval queue: approve the waiting call
    browser.find_element(By.ID, "tab-approvals").click()
    row = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#approvals-table button.approve"), what="approvals")
    shot(browser, "approvals")
    assert "bump" in browser.find_element(By.ID, "approvals-table").text
    site.llm.script(text("Bumped five."))
    row.click()
    wait_for(lambda: browser.find_elements(By.ID, "no-approvals"), what="queue empty")
    status = site.conn.execute("SELECT status, answer FROM pgagent.turn WHERE turn_id = %s",
                               [parked["turn_id"]]).fetchone()
    assert status == ("completed", "Bumped five.")
    decided = site.conn.execute("SELECT payload ->> 'decided_by' FROM pgagent.step WHERE kind = 'approval'").fetchone()[0]
    assert decided == site.role("team_operator")

    # the feed follows live: the steps the approval made arrive without a reload
    browser.find_element(By.ID, "tab-feed").click()
    wait_for(lambda: "Bumped five." in browser.find_element(By.ID, "feed-table").text, what="live steps")
    shot(browser, "feed")

    # a conversation's timeline; inject a message and pause it
    browser.find_element(By.ID, "tab-conversation").click()
    browser.find_element(By.ID, "conv-id").send_keys(str(cid))
    browser.find_element(By.ID, "conv-load").click()
    wait_for(lambda: "tool_result" in browser.find_element(By.ID, "timeline").text, what="timeline")
    kinds = texts(browser, "#timeline tbody tr td:nth-child(3)")
    assert kinds == ["user_message", "llm_call", "tool_call", "approval", "tool_result", "llm_call", "response"]
    browser.find_element(By.ID, "inject-text").send_keys("Operator: keep answers short.")
    browser.find_element(By.ID, "inject").click()
    browser.find_element(By.ID, "pause").click()
    wait_for(lambda: "(paused)" in browser.find_element(By.ID, "conv-state").text, what="paused")
    shot(browser, "conversation")
    actions = [a for (a,) in site.conn.execute("SELECT action FROM pgagent.intervention ORDER BY intervention_id")]
    assert actions == ["inject_message", "pause"]

    # agent stats and the charts of the last 24 hours
    browser.find_element(By.ID, "tab-stats").click()
    wait_for(lambda: "analyst" in browser.find_element(By.ID, "agent-stats").text, what="stats")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#chart-turns rect.bar")) >= 24,
             what="charts (" + browser.find_element(By.ID, "msg").text + ")")
    assert any(float(e.get_attribute("height")) > 0 for e in browser.find_elements(By.CSS_SELECTOR, "#chart-turns rect"))
    shot(browser, "agents")
    assert "RIVAL-SECRET" not in browser.page_source

    # a user's key cannot approve: the console shows the database's refusal
    browser.find_element(By.ID, "logout").click()
    wait_for(lambda: browser.find_element(By.ID, "key").is_displayed(), what="signed out")
    assert json.loads(browser.execute_script("return JSON.stringify(sessionStorage)")) == {}


def test_the_console_page_is_locked_down(server):
    import httpx
    r = httpx.get(server + "/console")
    csp = r.headers["content-security-policy"]
    assert r.status_code == 200 and "script-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert r.headers["x-content-type-options"] == "nosniff" and not re.search(r"pga_[0-9a-f]{48}", r.text)
