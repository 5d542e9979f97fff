"""Our user agent against pjsua2 (an independent SIP stack) through Kamailio: calls both ways with G.711."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sip.registration import Registration
from sip.useragent import CallSession, IncomingInvite, UserAgent
from tests.peers.kamailio import KamailioServer
from tests.peers.pjsua_client import PjsuaPeer


def g711(version: int, port: int = 40000) -> bytes:
    """A hand-written G.711 offer/answer (RFC 3551 PCMU 0, PCMA 8), o= version as given."""
    return (
        f"v=0\r\no=vfax 4242 {version} IN IP4 127.0.0.1\r\ns=vfax\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\n"
        "a=sendrecv\r\n"
    ).encode()


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(fn(), 25))


def test_we_call_pjsua_reinvite_both_ways_and_pjsua_hangs_up(
    kamailio: KamailioServer, pjsua_peer: Callable[..., PjsuaPeer]
) -> None:
    peer = pjsua_peer("callee")
    reg = peer.register(kamailio.uri, "1002", "secret1002", domain=kamailio.realm)
    assert reg["code"] == 200

    async def main() -> None:
        ua = await UserAgent.create(contact_user="1001")
        offers: list[bytes] = []
        result = await ua.invite(
            f"sip:1002@{kamailio.realm}", g711(1), proxy=kamailio.uri, credentials=("1001", "secret1001"),
            from_=f"<sip:1001@{kamailio.realm}>",
        )  # fmt: skip
        assert result.ok, (result.status, result.reason)
        assert b"PCMU" in result.remote_sdp or b"PCMA" in result.remote_sdp
        session = result.session
        assert session is not None
        incoming = await peer.wait_event("incoming_call")
        handle = incoming["call"]
        await peer.wait_event("call_state", call=handle, state="CONFIRMED")

        async def on_reinvite(sdp: bytes) -> tuple[int, bytes]:
            offers.append(sdp)
            return 200, g711(3)

        session.on_reinvite = on_reinvite
        outcome = await session.reinvite(g711(2, 40002))
        assert outcome.ok
        rx = await peer.wait_event("rx_offer", call=handle)
        assert "40002" in rx["sdp"]
        await peer.command("reinvite", call=handle)
        for _ in range(100):
            if offers:
                break
            await asyncio.sleep(0.05)
        assert offers and b"m=audio" in offers[0]
        await asyncio.sleep(0.2)  # let the ACK of the peer's re-INVITE arrive
        await peer.command("hangup", call=handle)
        assert await session.wait_terminated(5) == "remote BYE"
        await ua.close()

    run(main)


def test_pjsua_calls_us_through_the_proxy_and_we_hang_up(
    kamailio: KamailioServer, pjsua_peer: Callable[..., PjsuaPeer]
) -> None:
    peer = pjsua_peer("caller")
    assert peer.register(kamailio.uri, "1002", "secret1002", domain=kamailio.realm)["code"] == 200

    async def main() -> None:
        ua = await UserAgent.create(contact_user="1001")
        registration = Registration(ua, kamailio.uri, "1001", "secret1001", domain=kamailio.realm)
        assert (await registration.start()).ok
        sessions: list[CallSession] = []
        remote_offers: list[bytes] = []

        async def on_invite(incoming: IncomingInvite) -> None:
            remote_offers.append(incoming.remote_sdp)
            await incoming.ringing()
            sessions.append(await incoming.accept(g711(1)))

        ua.on_invite = on_invite
        handle = (await peer.command("call", uri=f"sip:1001@{kamailio.realm}"))["call"]
        await peer.wait_event("call_state", call=handle, state="CONFIRMED", timeout=10)
        assert remote_offers and b"RTP/AVP" in remote_offers[0]
        session = sessions[0]
        await asyncio.wait_for(session.confirmed, 5)
        outcome = await session.reinvite(g711(2, 40004))
        assert outcome.ok
        await peer.wait_event("rx_offer", call=handle)
        await asyncio.sleep(0.2)
        final = await session.bye()
        assert final is not None and final.status == 200
        await peer.wait_event("call_state", call=handle, state="DISCONNECTED")
        await registration.stop()
        await ua.close()

    run(main)


def test_pjsua_calls_us_directly_and_hangs_up_before_answer(pjsua_peer: Callable[..., PjsuaPeer]) -> None:
    peer = pjsua_peer("direct")

    async def main() -> None:
        ua = await UserAgent.create()
        ended: list[str] = []
        rung = asyncio.Event()

        async def on_invite(incoming: IncomingInvite) -> None:
            incoming.session.on_terminated = ended.append
            await incoming.ringing()
            rung.set()

        ua.on_invite = on_invite
        handle = (await peer.command("call", uri=f"sip:vfax@127.0.0.1:{ua.local_address[1]}"))["call"]
        await asyncio.wait_for(rung.wait(), 5)
        await peer.wait_event("call_state", call=handle, state="EARLY")
        await peer.command("hangup", call=handle)
        await peer.wait_event("call_state", call=handle, state="DISCONNECTED")
        for _ in range(40):
            if ended:
                break
            await asyncio.sleep(0.05)
        assert ended == ["cancelled"]
        await ua.close()

    run(main)
