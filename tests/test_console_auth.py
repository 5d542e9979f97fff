"""The console's login, session cookie, CSRF rule and escaping, in process (FastAPI's TestClient over a
real SQLite store): the fast half of the console's tests; tests/test_console.py drives a real browser.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api import AUTH, TOKEN, Env, TestClient
from vfax.console import auth
from vfax.service.api import openapi_spec
from vfax.service.config import ApiConfig
from vfax.status import FaxStatus

HTML = "<b>x</b>"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


def logged_in(env: Env, base_url: str = "http://testserver") -> TestClient:
    client = TestClient(env.app, base_url=base_url)
    r = client.post("/login", data={"token": TOKEN, "next": "/inbox"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/inbox"
    return client


def page_csrf(client: TestClient, path: str = "/") -> str:
    r = client.get(path)
    assert r.status_code == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', r.text)
    assert match and match.group(1)
    return match.group(1)


def queued_job(env: Env, tmp_path: Path) -> str:
    from tests import docfactory

    r = env.submit(docfactory.text_pdf(tmp_path / "d.pdf", pages=1), not_before="2099-01-01T00:00:00Z")
    assert r.status_code == 201
    return str(r.json()["id"])


def test_a_page_without_a_session_leads_to_the_login_and_the_api_stays_401(env: Env) -> None:
    r = env.client.get("/outbound?state=queued", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Foutbound%3Fstate%3Dqueued"
    assert env.client.get("/v1/jobs").status_code == 401
    assert env.client.get("/login").status_code == 200
    assert env.client.get("/static/console.js").status_code == 200  # public: holds nothing secret


def test_a_wrong_token_is_refused_with_a_message_and_no_cookie(env: Env) -> None:
    r = env.client.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401
    assert "Wrong token" in r.text
    assert "set-cookie" not in r.headers
    assert env.client.get("/", follow_redirects=False).status_code == 303


def test_the_login_cookie_is_httponly_strict_and_secure_over_https(env: Env) -> None:
    plain = env.client.post("/login", data={"token": TOKEN}, follow_redirects=False).headers["set-cookie"]
    assert "HttpOnly" in plain and "SameSite=strict" in plain and "Secure" not in plain
    assert f"Max-Age={auth.SESSION_SECONDS}" in plain
    tls = TestClient(env.app, base_url="https://testserver")
    secure = tls.post("/login", data={"token": TOKEN}, follow_redirects=False).headers["set-cookie"]
    assert "Secure" in secure


def test_the_session_authorises_reads_of_the_api(env: Env) -> None:
    client = logged_in(env)
    assert client.get("/v1/jobs").status_code == 200
    assert client.get("/").status_code == 200
    client.post("/logout", data={"csrf": page_csrf(client)})
    assert client.get("/v1/jobs").status_code == 401


def test_a_state_change_with_the_session_needs_its_csrf_token(env: Env, tmp_path: Path) -> None:
    job_id = queued_job(env, tmp_path)
    client = logged_in(env)
    refused = client.post(f"/v1/jobs/{job_id}/cancel")
    assert refused.status_code == 403 and refused.json()["error"] == "csrf"
    other = logged_in(env)  # another session's token is no good either
    wrong = client.post(f"/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": page_csrf(other)})
    assert wrong.status_code == 403
    assert env.store.get(job_id).state.value == "queued"
    ok = client.post(f"/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": page_csrf(client)})
    assert ok.status_code == 200 and ok.json()["state"] == "cancelled"
    # the bearer token needs no CSRF token: a browser never sends that header by itself
    assert env.client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["state"] == "cancelled"


def test_logout_without_the_csrf_field_keeps_the_session(env: Env) -> None:
    client = logged_in(env)
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/v1/jobs").status_code == 200


def test_forged_expired_and_other_token_sessions_are_refused(env: Env) -> None:
    now = time.time()
    good = auth.new_session(TOKEN, now)
    assert auth.check_session(good, TOKEN, now) == good
    issued, nonce, mac = good.split(".")
    assert auth.check_session(f"{issued}.{nonce}x.{mac}", TOKEN, now) is None
    assert auth.check_session(f"{int(issued) + 1}.{nonce}.{mac}", TOKEN, now) is None
    assert auth.check_session(good, TOKEN, now + auth.SESSION_SECONDS + 1) is None
    assert auth.check_session(good, "another-token", now) is None
    for value in ("", "a.b", "x.y.z", "1.2.3.4"):
        assert auth.check_session(value, TOKEN, now) is None
    client = TestClient(env.app)
    client.cookies.set(auth.COOKIE, auth.new_session("another-token", now))
    assert client.get("/v1/jobs").status_code == 401


@pytest.mark.parametrize("value", ["//evil.example/", "https://evil.example/", "evil", "/\\evil.example", ""])
def test_after_the_login_only_paths_of_this_site(value: str) -> None:
    assert auth.safe_next(value) == "/"
    assert auth.safe_next("/outbound?state=queued") == "/outbound?state=queued"


def test_html_from_the_network_is_text_on_every_page(env: Env, tmp_path: Path) -> None:
    fax = env.store.record_inbound(call_id="c@h", caller=f"sip:{HTML}@127.0.0.1", callee="sip:fax@h",
                                   device="line1")  # fmt: skip
    env.store.update_inbound(fax.id, pages=1, remote_csi=HTML)
    env.store.finish_inbound(fax.id, FaxStatus.FS_COMPLETED, pages=1)
    job_id = queued_job(env, tmp_path)
    env.store.append_event(job_id, "status", FaxStatus.FS_BUSY, payload={"reason": f"Busy {HTML}"})
    client = logged_in(env)
    for path in ("/inbox", f"/outbound/{job_id}"):
        body = client.get(path).text
        assert HTML not in body, path
        assert "&lt;b&gt;x&lt;/b&gt;" in body, path
    assert "Content-Security-Policy" in client.get("/inbox").headers


def test_without_a_token_the_console_is_open_like_the_api(tmp_path: Path) -> None:
    env = Env(tmp_path, config=ApiConfig(token=None))
    try:
        assert env.client.get("/", follow_redirects=False).status_code == 200
        assert env.client.get("/login", follow_redirects=False).status_code == 303
    finally:
        env.store.close()


def test_console_pages_are_not_in_the_openapi_document() -> None:
    assert all(p.startswith("/v1/") or p == "/healthz" for p in openapi_spec()["paths"])


def test_jobs_can_be_listed_by_destination(env: Env, tmp_path: Path) -> None:
    from tests import docfactory

    doc = docfactory.text_pdf(tmp_path / "d.pdf", pages=1)
    targets = ("sip:1@127.0.0.1", "sip:2@127.0.0.1", "sip:1@127.0.0.1")
    ids = [env.submit(doc, to=to).json()["id"] for to in targets]
    r = env.client.get("/v1/jobs", params={"destination": "sip:1@127.0.0.1"}, headers=AUTH)
    assert [j["id"] for j in r.json()["jobs"]] == [ids[0], ids[2]]
    page = logged_in(env).get("/outbound", params={"destination": "sip:2@127.0.0.1"}).text
    assert ids[1] in page and ids[0] not in page
