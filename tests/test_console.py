"""The fax console in a real browser: headless chromium (Selenium) against one real `vfax serve` and a
loopback `vfax receive` for the whole module.

What a user would notice is asserted on the page itself: the login refuses a wrong token, a job's row
and page change from queued to completed while the page stays loaded (a marker set in the page's
JavaScript survives), a queued job is cancelled with the keyboard from its page, and the CSI that came
over a real call as ``<b>x</b>`` is shown as those characters. Screenshots of every page visited are in
each test's tmp dir (``screens/``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sip.useragent import IncomingInvite, UserAgent
from tests import docfactory
from tests.peers.browser import Browser
from tests.serve_process import Receiver, ServeProcess, free_port, write_config

TOKEN = "console-test-token-4711"
HTML_IDENT = "<b>x</b>"  # the sending device's TSI: the receiving side's CSI comes over the wire


class Console(ServeProcess):
    """`vfax serve` with one device whose fax identity is HTML, and its console's base URL."""

    def __init__(self, tmp: Path) -> None:
        self.api_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        api = f"127.0.0.1:{self.api_port}"
        config = write_config(
            tmp, api=api, token=TOKEN, inbox=tmp / "data" / "inbox",
            retry={"max_attempts": 2, "backoff": [1], "jitter": 0},
            device={"listen": f"127.0.0.1:{self.sip_port}", "channels": 2, "media_timeout": 5,
                    "ident": HTML_IDENT},
        )  # fmt: skip
        super().__init__("serve", config, api, TOKEN)
        self.base = f"http://{api}"
        self.uri = f"sip:fax@127.0.0.1:{self.sip_port}"

    def submit_pdf(self, tmp: Path, to: str, **fields: str) -> str:
        return self.submit(docfactory.text_pdf(tmp / "doc.pdf", pages=1), to, **fields)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    s = Console(tmp_path_factory.mktemp("console"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def far(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    r = Receiver("127.0.0.1", tmp_path_factory.mktemp("far"))
    try:
        yield r
    finally:
        r.close()


def log_in(browser: Browser, console: Console, path: str = "/") -> None:
    browser.open(f"{console.base}{path}", "before-login")
    assert "/login" in browser.driver.current_url  # no session: the console asks for the token first
    browser.find("#token").send_keys(TOKEN + "\n")
    browser.wait(lambda: "/login" not in browser.driver.current_url, 10, "the login to lead on")


def mark_page(browser: Browser) -> None:
    """A marker in the page's JavaScript: gone if the page is reloaded or left."""
    browser.script("window.__stayed = 'yes';")


def still_same_page(browser: Browser) -> bool:
    return browser.script("return window.__stayed === 'yes';") is True


def test_login_takes_the_token_and_a_wrong_token_is_refused(browser: Browser, console: Console) -> None:
    browser.open(f"{console.base}/outbound", "before-login")
    assert "/login" in browser.driver.current_url
    browser.find("#token").send_keys("not-the-token\n")
    message = browser.wait(lambda: browser.find("#login-error").text, 10, "a refusal")
    browser.shot("wrong-token")
    assert "Wrong token" in message
    assert browser.driver.get_cookie("vfax_session") is None
    browser.find("#token").send_keys(TOKEN + "\n")
    browser.wait(lambda: browser.driver.current_url.endswith("/outbound"), 10, "back to the page asked for")
    browser.shot("after-login")
    assert browser.text("h1") == "Outbound"
    cookie = browser.driver.get_cookie("vfax_session")
    assert cookie is not None and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "vfax_session" not in browser.script("return document.cookie;")  # scripts cannot read it
    # the API itself still wants the token or the session: without either, 401
    assert httpx.get(f"{console.base}/v1/jobs").status_code == 401


def test_a_job_goes_from_queued_to_completed_on_the_page_without_reload(
    browser: Browser, console: Console, far: Receiver, tmp_path: Path
) -> None:
    log_in(browser, console, "/outbound")
    mark_page(browser)
    listing = browser.driver.current_window_handle
    later = time.time() + 6  # queued for a moment, so that the pages can show it queued
    job_id = console.submit_pdf(tmp_path, far.uri, not_before=str(later))
    row = f'tr[data-job="{job_id}"]'
    browser.wait_text(f"{row} [data-field=state]", "queued", 5)  # the list learns of it by itself
    browser.shot("outbound-queued")
    # its page in a second tab, opened while the job is still queued
    browser.driver.switch_to.new_window("tab")
    browser.open(f"{console.base}/outbound/{job_id}", "job-queued")
    assert "queued" in browser.text("#job-state")
    mark_page(browser)
    browser.wait_text("#job-state", "completed", 90)
    browser.shot("job-completed")
    assert still_same_page(browser)
    assert browser.text("[data-field=attempts]") == "1 / 2"
    assert browser.text("[data-field=pages_sent]") == "1"
    events = [r.text for r in browser.find_all("#events tbody tr")]
    assert events and "terminal" in events[-1] and "completed" in events[-1]
    assert not browser.find("#cancel").is_displayed()
    browser.driver.close()
    browser.driver.switch_to.window(listing)
    browser.wait_text(f"{row} [data-field=state]", "completed", 10)
    browser.shot("outbound-completed")
    assert still_same_page(browser)
    assert browser.text(f"{row} [data-field=pages_sent]") == "1"
    assert console.get(f"/v1/jobs/{job_id}")["state"] == "completed"


def test_cancel_a_queued_job_from_its_page(browser: Browser, console: Console, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    job_id = console.submit_pdf(tmp_path, "sip:nobody@127.0.0.1:9", not_before="2099-01-01T00:00:00Z")
    log_in(browser, console, f"/outbound/{job_id}")
    browser.shot("job-queued")
    mark_page(browser)
    assert "queued" in browser.text("#job-state")
    # with the session cookie but without the page's CSRF token, a state change is refused
    status = browser.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/v1/jobs/{job_id}/cancel', {{method: 'POST'}}).then(r => done(r.status));"
    )
    assert status == 403
    assert console.get(f"/v1/jobs/{job_id}")["state"] == "queued"
    # the keyboard alone: Tab to the button, Enter
    for _ in range(30):
        if browser.script("return document.activeElement && document.activeElement.id;") == "cancel":
            break
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
    else:
        raise AssertionError("the cancel button cannot be reached with Tab")
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    browser.wait_text("#job-state", "cancelled", 15)
    browser.wait_text("#action-result", "Cancelled", 5)
    browser.shot("job-cancelled")
    assert still_same_page(browser)
    assert not browser.find("#cancel").is_displayed()
    assert console.get(f"/v1/jobs/{job_id}")["state"] == "cancelled"


def test_received_fax_with_html_csi_is_shown_as_text(
    browser: Browser, console: Console, tmp_path: Path
) -> None:
    log_in(browser, console, "/")
    mark_page(browser)
    sent, received = int(browser.text("#count-sent")), int(browser.text("#count-received"))
    job_id = console.submit_pdf(tmp_path, console.uri)  # the service calls its own device: a real call
    browser.wait(lambda: int(browser.text("#count-received")) == received + 1, 90, "the received counter")
    browser.wait(lambda: int(browser.text("#count-sent")) == sent + 1, 30, "the sent counter")
    browser.shot("overview-counted")
    assert still_same_page(browser)
    assert console.get(f"/v1/jobs/{job_id}")["state"] == "completed"
    faxes = console.get("/v1/faxes")["faxes"]
    assert [f["remote_csi"] for f in faxes] == [HTML_IDENT]  # the CSI really came over the call as HTML
    fax_id = faxes[0]["id"]

    browser.open(f"{console.base}/inbox", "inbox")
    row = f'tr[data-fax="{fax_id}"]'
    assert browser.text(f"{row} .csi") == HTML_IDENT  # the characters, not a bold x
    assert browser.find_all(f"{row} .csi b") == [] and browser.find_all("main b") == []
    assert browser.text(f"{row} [data-field=pages]") == "1"
    href = browser.find(f"{row} .downloads a").get_attribute("href")
    assert href.endswith(f"/v1/faxes/{fax_id}/pdf")
    kind = browser.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => done(r.status + ' ' + r.headers.get('content-type')));",
        href,
    )
    assert kind == "200 application/pdf"  # the session cookie downloads it
    # readable at phone width: nothing wider than the screen but the tables' own scroll boxes
    browser.driver.set_window_size(390, 844)
    try:
        browser.shot("inbox-phone")
        assert browser.script("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
    finally:
        browser.driver.set_window_size(1100, 900)


def test_a_failed_jobs_call_report_is_one_click_away(
    browser: Browser, console: Console, tmp_path: Path
) -> None:
    """A job to a destination that refuses (TCP connection refused: 503) fails after its two attempts; from
    its page, one click shows the call drawn: the SIP ladder and the end reason in words. The report is
    also the API's (``/v1/jobs/{id}/attempts/{n}/report``), behind the token like every endpoint."""
    refused = free_port()  # nothing listens there
    job_id = console.submit_pdf(tmp_path, f"sip:nobody@127.0.0.1:{refused};transport=tcp")
    job = console.final(job_id, 60)
    assert job["state"] == "failed" and job["attempts"] == 2, job
    api = f"{console.base}/v1/jobs/{job_id}/attempts"
    report = console.get(f"/v1/jobs/{job_id}/attempts/2/report")
    assert report["sip"]["ladder"][0]["line"].startswith("INVITE sip:nobody@127.0.0.1")
    assert console.client.get(f"/v1/jobs/{job_id}/attempts/3/report").status_code == 404
    assert httpx.get(f"{api}/1/report").status_code == 401  # no token, no session
    log_in(browser, console, f"/outbound/{job_id}")
    browser.find('a[href$="/attempts/1"]').click()
    browser.wait(lambda: "/attempts/1" in browser.driver.current_url, 10, "the report page")
    browser.shot("attempt-report")
    assert browser.text("h1") == f"Job {job_id}, attempt 1"
    assert "Fax failed" in browser.text(".call-report h2")
    assert browser.text(".end-reason")  # the end reason in words
    assert len(browser.find_all(".call-report svg")) >= 1  # the ladder drawn
    assert "INVITE sip:nobody@127.0.0.1" in browser.page_text()


HTML_REASON = '<img src=x onerror="window.__xss=1"><b>busy</b>'


class Rejecter:
    """A SIP user agent of our own (in a thread of the test) that refuses every call with 486 and an HTML
    reason phrase: the console must show what came over the wire as text."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ua = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.uri = f"sip:busy@127.0.0.1:{self.ua.local_address[1]}"

    async def _start(self) -> UserAgent:
        ua = await UserAgent.create("127.0.0.1", 0, ("udp",))

        async def refuse(incoming: IncomingInvite) -> None:
            await incoming.reject(486, HTML_REASON)

        ua.on_invite = refuse
        return ua

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.ua.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_html_in_a_sip_reason_phrase_is_shown_as_text(
    browser: Browser, console: Console, tmp_path: Path
) -> None:
    """A real call refused with `486 <img ... onerror=...><b>busy</b>`: the job's last error and the call's
    drawn report show those characters, and nothing of it becomes an element or runs."""
    far = Rejecter()
    try:
        job_id = console.submit_pdf(tmp_path, far.uri)
        job = console.final(job_id, 60)
    finally:
        far.close()
    assert job["state"] == "failed" and HTML_REASON in (job["last_error"] or ""), job
    log_in(browser, console, f"/outbound/{job_id}")
    browser.wait_text("[data-field=last_error]", HTML_REASON, 10)
    assert browser.find_all("main b") == [] and browser.find_all("main img") == []
    browser.find('a[href$="/attempts/1"]').click()
    browser.wait(lambda: "/attempts/1" in browser.driver.current_url, 10, "the report page")
    browser.shot("html-reason-report")
    assert f"486 {HTML_REASON}" in browser.page_text()
    assert browser.find_all("main b") == [] and browser.find_all("main img") == []
    assert browser.script("return window.__xss === undefined;") is True
    # every page readable at phone width: nothing wider than the screen but the scroll boxes of tables
    # and drawings
    report_page = browser.driver.current_url
    fits = "return document.documentElement.scrollWidth <= window.innerWidth + 1;"
    browser.driver.set_window_size(390, 844)
    try:
        for path in ("/", "/outbound", "/outbound/new", "/inbox", f"/outbound/{job_id}"):
            browser.open(f"{console.base}{path}", f"phone{path}")
            assert browser.script(fits), path
        browser.open(report_page, "phone-report")
        assert browser.script(fits)
    finally:
        browser.driver.set_window_size(1100, 900)
