"""Registration (RFC 3261 §10) against a scripted registrar: digest, refresh, back-off, unregister."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sip.auth import DigestVerifier, VerifyResult, parse_auth_params
from sip.message import Request, Response, parse_message
from sip.registration import (
    Registration,
    RegistrationState,
    backoff_delay,
    normalize_registrar,
    refresh_delay,
)
from sip.useragent import UserAgent


class FakeRegistrar(asyncio.DatagramProtocol):
    """A registrar that challenges (401 or 407) with ``DigestVerifier`` and grants ``grant`` seconds."""

    def __init__(self, algorithm: str = "MD5", *, proxy_auth: bool = False, grant: int | None = None) -> None:
        self.verifier = DigestVerifier("vfax.test", {"1001": "secret1001"}, algorithm=algorithm)
        self.proxy_auth = proxy_auth
        self.grant = grant
        self.requests: list[Request] = []
        self.raw: list[bytes] = []
        self.results: list[VerifyResult] = []
        self.fail_with: int | None = None
        self.min_expires: int | None = None
        self.expire_nonce_after_ok = False
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        if not data.strip():
            return
        req = parse_message(data)
        assert isinstance(req, Request)
        self.requests.append(req)
        resp = self.answer(req)
        assert self.transport is not None
        self.transport.sendto(bytes(resp), addr)

    def answer(self, req: Request) -> Response:
        if self.fail_with is not None:
            return Response.for_request(req, self.fail_with, to_tag="r")
        header = "Proxy-Authorization" if self.proxy_auth else "Authorization"
        cred = req.headers.get(header)
        verdict = self.verifier.verify(req.method, cred) if cred else VerifyResult.BAD
        if cred:
            self.results.append(verdict)
        if verdict is not VerifyResult.OK:
            resp = Response.for_request(req, 407 if self.proxy_auth else 401, to_tag="r")
            challenge = "Proxy-Authenticate" if self.proxy_auth else "WWW-Authenticate"
            resp.headers.add(challenge, self.verifier.challenge(stale=verdict is VerifyResult.STALE))
            return resp
        expires = req.expires if req.expires is not None else 3600
        if self.min_expires and 0 < expires < self.min_expires:
            resp = Response.for_request(req, 423, to_tag="r")
            resp.headers.add("Min-Expires", str(self.min_expires))
            return resp
        if self.expire_nonce_after_ok:
            self.verifier.expire(parse_auth_params(cred or "")[1]["nonce"])
        resp = Response.for_request(req, 200, to_tag="r")
        granted = self.grant if self.grant is not None and expires else expires
        contact = req.contact
        if contact is not None and granted:
            resp.headers.add("Contact", f"<{contact.uri}>;expires={granted}")
        return resp


def run_with_registrar(
    fn: Callable[[UserAgent, FakeRegistrar], Awaitable[Any]], registrar: FakeRegistrar | None = None
) -> FakeRegistrar:
    reg = registrar or FakeRegistrar()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: reg, local_addr=("127.0.0.1", 0))
        ua = await UserAgent.create()
        try:
            await fn(ua, reg)
        finally:
            await ua.close()
            transport.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    return reg


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_register_answers_the_401_challenge_and_reports_expiry_contact_and_rtt(algorithm: str) -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001", expires=600, domain="vfax.test")
        result = await r.start()
        assert result.ok and result.status == 200
        assert r.state is RegistrationState.REGISTERED and r.expires == 600
        assert r.contact.startswith("sip:1001@127.0.0.1:")
        assert r.last_rtt_ms is not None and r.last_rtt_ms >= 0
        await r.stop()

    reg = run_with_registrar(flow, FakeRegistrar(algorithm))
    assert reg.results[0] is VerifyResult.OK
    assert [q.cseq[0] for q in reg.requests[:2]] == [1, 2]
    assert len({q.call_id for q in reg.requests}) == 1  # one Call-ID for the whole registration (§10.2.4)


def test_register_answers_a_407_too() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        result = await Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001").register_once()
        assert result.status == 200

    run_with_registrar(flow, FakeRegistrar(proxy_auth=True))


def test_wrong_password_reports_the_401_without_looping() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "wrong")
        result = await r.start()
        assert not result.ok and result.status == 401
        assert r.state is RegistrationState.FAILED
        await r.stop()

    reg = run_with_registrar(flow)
    assert len(reg.requests) == 2


def test_refresh_reuses_the_nonce_with_counted_nc_and_recovers_from_stale() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001", expires=60)
        assert (await r.start()).ok
        second = await r.register_once()  # pre-emptive credentials, nc=00000002
        assert second.ok
        reg.expire_nonce_after_ok = True
        assert (await r.register_once()).ok
        third = await r.register_once()  # the nonce went stale: 401 stale=true, resent at once
        assert third.ok
        await r.stop(unregister=False)

    reg = run_with_registrar(flow)
    auths = [parse_auth_params(q.headers.get("Authorization") or "Digest x=1")[1] for q in reg.requests]
    assert auths[2].get("nc") == "00000002"
    assert VerifyResult.STALE in reg.results
    assert reg.results[-1] is VerifyResult.OK


def test_binding_is_refreshed_before_it_expires() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001", expires=3600)
        reg.grant = 2  # the registrar shortens the interval; we must follow it
        await r.start()
        assert r.expires == 2
        for _ in range(60):
            await asyncio.sleep(0.05)
            if len([q for q in reg.requests if q.cseq[0] > 2]) >= 1:
                break
        assert r.state is RegistrationState.REGISTERED
        await r.stop()

    reg = run_with_registrar(flow)
    refreshes = [q for q in reg.requests if q.expires and q.expires > 0 and q.cseq[0] > 2]
    assert refreshes, "no refresh REGISTER was sent"
    assert reg.requests[-1].expires == 0  # and unregistered on stop


def test_stop_unregisters_with_expires_zero() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001")
        await r.start()
        result = await r.stop()
        assert result is not None and result.ok
        assert r.state is RegistrationState.UNREGISTERED

    reg = run_with_registrar(flow)
    last = reg.requests[-1]
    assert last.expires == 0 and ";expires=0" in (last.headers.get("Contact") or "")


def test_interval_too_brief_is_retried_with_min_expires() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        reg.min_expires = 120
        result = await Registration(
            ua, f"127.0.0.1:{reg.port}", "1001", "secret1001", expires=30
        ).register_once()
        assert result.ok and result.expires == 120

    run_with_registrar(flow)


def test_failure_is_retried_with_backoff_in_the_background() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        reg.fail_with = 503
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001", retry_base=0.1, retry_cap=0.2)
        assert (await r.start()).status == 503
        await asyncio.sleep(0.5)
        assert r.failures >= 2
        reg.fail_with = None
        for _ in range(40):
            await asyncio.sleep(0.05)
            if r.state is RegistrationState.REGISTERED:
                break
        assert r.state is RegistrationState.REGISTERED and r.failures == 0
        await r.stop()

    run_with_registrar(flow)


def test_crlf_keepalives_reach_the_registrar() -> None:
    async def flow(ua: UserAgent, reg: FakeRegistrar) -> None:
        r = Registration(ua, f"127.0.0.1:{reg.port}", "1001", "secret1001", keepalive_interval=0.05)
        await r.start()
        await asyncio.sleep(0.3)
        await r.stop()

    reg = run_with_registrar(flow)
    assert b"\r\n\r\n" in reg.raw


def test_refresh_and_backoff_delays() -> None:
    assert refresh_delay(3600) == 1800
    assert refresh_delay(60) == 28
    assert refresh_delay(2) == 1.0
    assert backoff_delay(1, rnd=1.0) == 30
    assert backoff_delay(3, rnd=1.0) == 120
    assert backoff_delay(20, rnd=1.0) == 1800
    assert 15 <= backoff_delay(1) <= 30


def test_registrar_address_forms() -> None:
    assert str(normalize_registrar("127.0.0.1:5070")) == "sip:127.0.0.1:5070"
    assert str(normalize_registrar("pbx.test", "tcp")) == "sip:pbx.test;transport=tcp"
    assert str(normalize_registrar("sip:[::1]:5060")) == "sip:[::1]:5060"
