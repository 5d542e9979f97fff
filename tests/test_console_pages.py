"""The console's page viewer, send form and resubmit in headless chromium, against their own `vfax serve`
(the fixtures of tests/test_console.py, a fresh service for this module: its inbox starts empty).

What a user does is what is tested: open a received 2-page fax from the inbox, step through its pages with
the keyboard, zoom and rotate (the image really changes size), mark it unread and read, search the inbox,
delete it after confirming (the API then answers 404 and the inbox no longer lists it); choose a document
in the send form, see its pages as they will be faxed, send, and watch the job complete; a non-document is
refused with the API's message and nothing is queued; resubmit a finished job. Screenshots in each test's
tmp dir (``screens/``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tests import docfactory
from tests.peers.browser import Browser
from tests.serve_process import free_port, wait_for
from tests.test_console import HTML_IDENT, Console, console, log_in, mark_page, still_same_page  # noqa: F401

IMAGE_LOADED = "const i = document.querySelector(arguments[0]); return i.complete && i.naturalWidth > 0 && " \
               "[i.naturalWidth, i.naturalHeight, i.getAttribute('src')];"  # fmt: skip


def loaded(browser: Browser, css: str, want: str) -> tuple[int, int]:
    """The image's natural size once its src contains ``want`` and it has loaded."""
    got = browser.wait(lambda: (v := browser.script(IMAGE_LOADED, css)) and want in v[2] and v, 15,
                       f"{css} to load {want}")  # fmt: skip
    return int(got[0]), int(got[1])


def test_send_form_previews_the_pages_then_queues_them_and_refuses_a_non_document(
    browser: Browser, console: Console, tmp_path: Path  # noqa: F811
) -> None:
    jobs_before = len(console.get("/v1/jobs")["jobs"])
    junk = tmp_path / "notes.txt"
    junk.write_text("<script>alert(1)</script> just text\n")
    log_in(browser, console, "/outbound/new")
    assert browser.text("h1") == "Send a fax"
    browser.find("#document").send_keys(str(junk))
    message = browser.wait(lambda: browser.text("#send-result"), 15, "the refusal")
    browser.shot("send-refused")
    assert message.startswith("Refused: ") and len(message) > len("Refused: ")
    assert browser.find_all("#previews li") == [] and browser.find("#send").get_attribute("disabled")
    assert len(console.get("/v1/jobs")["jobs"]) == jobs_before  # nothing queued

    doc = docfactory.text_pdf(tmp_path / "two.pdf", pages=2)
    browser.find("#resolution option[value=standard]").click()
    browser.find("#document").send_keys(str(doc))
    browser.wait(lambda: len(browser.find_all("#previews li")) == 2, 30, "two page previews")
    for n in (1, 2):
        assert loaded(browser, f"#previews li:nth-child({n}) img", f"/pages/{n}.png?width=160")[0] == 160
    assert browser.text("#preview-state").startswith("2 pages, standard")
    assert browser.find("#send-result").text == ""
    browser.find("#to").send_keys(console.uri)  # its own device: the fax viewed next
    browser.find("#ecm option[value=true]").click()
    browser.find("#t38 option[value=auto]").click()
    browser.shot("send-previewed")
    browser.find("#send").click()
    browser.wait(lambda: "/outbound/01" in browser.driver.current_url, 15, "the job page")
    job_id = browser.driver.current_url.rsplit("/", 1)[-1]
    assert browser.text("#job-id") == job_id
    browser.wait_text("#job-state", "completed", 90)
    browser.shot("send-completed")
    job = console.get(f"/v1/jobs/{job_id}")
    assert job["state"] == "completed" and job["pages_sent"] == 2 and job["destination"] == console.uri
    assert len(console.get("/v1/jobs")["jobs"]) == jobs_before + 1


def a_received_two_page_fax(service: Console, tmp_path: Path) -> dict[str, Any]:
    """The 2-page fax the send form's test sent to the service's own device (a real call), or, when this
    test runs alone, one sent now through the API."""

    def received() -> list[dict[str, Any]]:
        return [f for f in service.get("/v1/faxes")["faxes"] if f["state"] == "completed"]

    if not received():
        doc = docfactory.text_pdf(tmp_path / "two.pdf", pages=2)
        assert service.final(service.submit(doc, service.uri), 90)["state"] == "completed"
    return dict(wait_for(received, 30, "the received fax")[0])


def test_a_received_fax_is_viewed_page_by_page_marked_read_searched_and_deleted(
    browser: Browser, console: Console, tmp_path: Path  # noqa: F811
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    fax = a_received_two_page_fax(console, tmp_path)
    fax_id, api = fax["id"], f"/v1/faxes/{fax['id']}"
    assert fax["pages"] == 2 and fax["read"] is False

    log_in(browser, console, "/inbox")
    row = f'tr[data-fax="{fax_id}"]'
    assert "unread" in browser.find(row).get_attribute("class") and browser.text(f"{row} .new") == "unread"
    # search, on the server: CSI and caller contain, time range
    browser.find("#search-csi").send_keys("<B>X\n")
    browser.wait(lambda: "csi=" in browser.driver.current_url, 10, "the search")
    browser.shot("inbox-search-csi")
    # every fax this service received has that CSI (another test of the module may have run first)
    found = browser.find_all("#faxes tbody tr")
    assert fax_id in [r.get_attribute("data-fax") for r in found]
    assert all(r.find_element("css selector", ".csi").text.lower() == "<b>x</b>" for r in found)
    browser.open(f"{console.base}/inbox?caller=nobody-calls", "inbox-search-none")
    assert browser.find_all("#faxes tbody tr") == []
    assert "No received fax matches" in browser.text("#no-faxes")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    browser.open(f"{console.base}/inbox?since={later}", "inbox-search-later")
    assert browser.find_all("#faxes tbody tr") == []
    browser.open(f"{console.base}/inbox?until={later}", "inbox-search-earlier")
    assert len(browser.find_all(row)) == 1
    browser.open(f"{console.base}/inbox?since=yesterday", "inbox-search-bad")
    assert "since" in browser.text("#search-error")

    browser.open(f"{console.base}/inbox", "inbox")
    browser.find(f"{row} a.open").click()
    browser.wait(lambda: browser.driver.current_url.endswith(f"/inbox/{fax_id}"), 10, "the fax page")
    browser.wait_text("#read-state", "read", 10)
    assert browser.text("#fax .csi") == HTML_IDENT and browser.find_all("main b") == []  # text, not markup
    assert browser.text("#read-state") == "read" and console.get(api)["read"] is True  # read when opened
    browser.wait(lambda: len(browser.find_all("#thumbs button")) == 2, 10, "two thumbnails")
    for n in (1, 2):
        assert loaded(browser, f'#thumbs button[data-page="{n}"] img', f"/pages/{n}.png?width=160")[0] == 160
    assert loaded(browser, "#page-image", "/pages/1.png?width=800")[0] == 800
    browser.shot("fax-page-1")
    assert browser.text("#page-no") == "Page 1 of 2"
    mark_page(browser)
    ActionChains(browser.driver).send_keys(Keys.ARROW_RIGHT).perform()  # the keyboard: next page
    browser.wait_text("#page-no", "Page 2 of 2", 5)
    w, h = loaded(browser, "#page-image", "/pages/2.png?width=800&rotate=0")
    assert w == 800 and h > w  # an A4 page upright
    assert browser.find("#next").get_attribute("disabled") is not None
    browser.find("#zoom-in").click()
    assert loaded(browser, "#page-image", "/pages/2.png?width=1100")[0] == 1100
    browser.find("#rotate-right").click()
    w, h = loaded(browser, "#page-image", "rotate=90")
    assert h == 1100 and w > h  # turned a quarter: landscape
    browser.shot("fax-page-2-zoomed-rotated")
    ActionChains(browser.driver).send_keys(Keys.ARROW_LEFT).perform()
    browser.wait_text("#page-no", "Page 1 of 2", 5)
    loaded(browser, "#page-image", "/pages/1.png?width=1100&rotate=90")
    browser.find('#thumbs button[data-page="2"]').click()
    browser.wait_text("#page-no", "Page 2 of 2", 5)
    assert still_same_page(browser)
    assert browser.find("#download-pdf").get_attribute("href").endswith(f"{api}/pdf")
    assert browser.find("#download-tiff").get_attribute("href").endswith(f"{api}/tiff")
    assert browser.find("#report-link").get_attribute("href").endswith(f"/inbox/{fax_id}/report")

    browser.find("#toggle-read").click()
    browser.wait_text("#action-result", "Marked as unread", 5)
    assert browser.text("#read-state") == "unread" and console.get(api)["read"] is False
    browser.find("#toggle-read").click()
    browser.wait_text("#action-result", "Marked as read", 5)
    assert console.get(api)["read"] is True

    browser.find("#delete").click()
    assert browser.find("#confirm-delete").is_displayed()
    browser.shot("fax-confirm-delete")
    browser.find("#delete-no").click()  # kept
    assert not browser.find("#confirm-delete").is_displayed() and console.get(api)["id"] == fax_id
    browser.find("#delete").click()
    browser.find("#delete-yes").click()
    browser.wait(lambda: "/inbox?deleted=" in browser.driver.current_url, 10, "back to the inbox")
    browser.shot("inbox-after-delete")
    assert browser.find_all(row) == [] and fax_id in browser.text("#deleted-note")
    for path in (api, f"{api}/pdf", f"{api}/tiff", f"{api}/pages/1.png"):
        assert console.client.get(path).status_code == 404, path
    assert fax_id not in [f["id"] for f in console.get("/v1/faxes")["faxes"]]
    browser.open(f"{console.base}/inbox/{fax_id}", "fax-gone")
    assert browser.text("h1") == "No such fax"


def test_a_finished_job_is_sent_again_from_its_page_and_the_outbound_list_filters_by_time(
    browser: Browser, console: Console, tmp_path: Path  # noqa: F811
) -> None:
    refused = f"sip:nobody@127.0.0.1:{free_port()};transport=tcp"  # nothing listens: fails at once
    job_id = console.submit(docfactory.text_pdf(tmp_path / "one.pdf"), refused,
                            not_before="2099-01-01T00:00:00Z", ecm="false")  # fmt: skip
    log_in(browser, console, f"/outbound/{job_id}")
    assert not browser.find("#resubmit").is_displayed()  # queued: only cancel
    browser.find("#cancel").click()
    browser.wait_text("#job-state", "cancelled", 15)
    browser.wait(lambda: browser.find("#resubmit").is_displayed(), 5, "the resubmit button")
    browser.find("#resubmit").click()
    browser.wait(lambda: not browser.driver.current_url.endswith(job_id), 10, "the new job's page")
    new_id = browser.driver.current_url.rsplit("/", 1)[-1]
    browser.shot("job-resubmitted")
    assert browser.text("#job-id") == new_id != job_id
    new = console.get(f"/v1/jobs/{new_id}")
    assert new["destination"] == refused and new["state"] != "cancelled"
    assert console.get(f"/v1/jobs/{new_id}/pages")["count"] == 1
    assert console.final(new_id, 30)["attempts"] == 2  # sent now, refused twice: failed

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    browser.open(f"{console.base}/outbound?since={later}", "outbound-since-later")
    assert browser.find_all("#jobs tbody tr") == [] and "No job matches" in browser.text("#no-jobs")
    browser.open(f"{console.base}/outbound?until={later}", "outbound-until-later")
    shown = {r.get_attribute("data-job") for r in browser.find_all("#jobs tbody tr")}
    assert {job_id, new_id} <= shown
    assert browser.find("#until").get_attribute("value") in (later, later.removesuffix(":00"))
    browser.open(f"{console.base}/outbound?until=soon", "outbound-bad-time")
    assert "until" in browser.text("#filter-error") and browser.find_all("#jobs tbody tr") == []
