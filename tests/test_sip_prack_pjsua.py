"""RFC 3262 100rel/PRACK against pjsua2 configured to *require* it (prackUse = PJSUA_100REL_MANDATORY).

pjsua2 as caller puts ``Require: 100rel`` in its INVITE (we answered 420 before); as callee it refuses an
INVITE without ``Supported: 100rel`` and sends its 180 reliably. Calls both ways with our ``UserAgent``
(ringing, PRACK, answer, BYE) and with a vfax ``FaxLine`` (a G.711 call: pjsua2 has no fax engine, so
the assertions are SIP and RTP, never a fax).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sip.useragent import CallSession, IncomingInvite, UserAgent
from tests.peers.pjsua_client import PjsuaPeer
from tests.test_calls import ladder_lines, page
from tests.test_sip_pjsua import g711
from vfax.call.fax_call import CallOptions
from vfax.call.line import FaxLine, LineConfig
from vfax.call.media import T38Policy
from vfax.status import FaxStatus


def run(fn: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(fn(), timeout))


def lines(ladder: list[tuple[float, str, str]], direction: str) -> list[str]:
    return [line for _, d, line in ladder if d == direction]


def test_pjsua_requiring_100rel_calls_us_we_ring_reliably_it_pracks_and_we_hang_up(
    pjsua_peer: Callable[..., PjsuaPeer],
) -> None:
    peer = pjsua_peer("caller", prack="mandatory")

    async def main() -> None:
        ua = await UserAgent.create()
        sessions: list[CallSession] = []
        required: list[list[str]] = []

        async def on_invite(incoming: IncomingInvite) -> None:
            required.append(incoming.request.require)
            await incoming.ringing()
            rel = incoming.call.reliable_out
            for _ in range(100):  # the 200 waits for pjsua's PRACK here, to show it was matched
                if rel is not None and rel.sent and rel.unacknowledged is None:
                    break
                await asyncio.sleep(0.05)
            sessions.append(await incoming.accept(g711(1)))

        ua.on_invite = on_invite
        handle = (await peer.command("call", uri=f"sip:vfax@127.0.0.1:{ua.local_address[1]}"))["call"]
        await peer.wait_event("call_state", call=handle, state="CONFIRMED", timeout=10)
        assert required == [["100rel"]]
        session = sessions[0]
        await asyncio.wait_for(session.confirmed, 5)
        received, sent = lines(session.ladder(), "in"), lines(session.ladder(), "out")
        assert any(line.startswith("SIP/2.0 180") for line in sent)
        assert not any(line.startswith("SIP/2.0 420") for line in sent)
        assert any(line.startswith("PRACK ") for line in received)
        # pjsua's PRACK got our 200 before our 200 to the INVITE
        prack = await peer.wait_event("tsx_state", call=handle, method="PRACK", role="uac", state="COMPLETED")
        assert prack["status_code"] == 200
        ladder = session.ladder()
        prack_at = next(i for i, (_, d, line) in enumerate(ladder) if d == "in" and line.startswith("PRACK"))
        ok_at = [i for i, (_, d, line) in enumerate(ladder) if d == "out" and line.startswith("SIP/2.0 200")]
        assert len(ok_at) >= 2 and ok_at[0] > prack_at
        final = await session.bye()
        assert final is not None and final.status == 200
        await peer.wait_event("call_state", call=handle, state="DISCONNECTED")
        await ua.close()

    run(main)


def test_we_call_pjsua_requiring_100rel_and_prack_its_reliable_180(
    pjsua_peer: Callable[..., PjsuaPeer],
) -> None:
    peer = pjsua_peer("callee", prack="mandatory")
    peer.command_sync("answer_policy", mode="auto", code=200, delay=1.0, ring=True)

    async def main() -> None:
        ua = await UserAgent.create()
        result = await ua.invite(peer.contact, g711(1))
        assert result.ok, (result.status, result.reason)  # pjsua refuses an INVITE without 100rel support
        assert b"PCMU" in result.remote_sdp or b"PCMA" in result.remote_sdp
        session = result.session
        assert session is not None
        incoming = await peer.wait_event("incoming_call")
        assert "100rel" in incoming["invite"]
        received, sent = lines(session.ladder(), "in"), lines(session.ladder(), "out")
        assert any(line.startswith("SIP/2.0 180") for line in received)
        assert len([line for line in sent if line.startswith("PRACK ")]) == 1
        got = await peer.wait_event(lambda e: e.get("event") == "tsx_state" and "rx" in e, method="PRACK")
        rack = got["rx"].split("RAck:")[1].split("\n")[0].split()
        assert got["role"] == "uas" and len(rack) == 3 and rack[2] == "INVITE"
        done = await peer.wait_event("tsx_state", method="PRACK", role="uas", state="COMPLETED")
        assert done["status_code"] == 200
        handle = incoming["call"]
        await peer.wait_event("call_state", call=handle, state="CONFIRMED")
        final = await session.bye()
        assert final is not None and final.status == 200
        await peer.wait_event("call_state", call=handle, state="DISCONNECTED")
        await ua.close()

    run(main)


def test_vfax_sends_to_pjsua_requiring_100rel_prack_in_the_call_report(
    tmp_path: Path, pjsua_peer: Callable[..., PjsuaPeer]
) -> None:
    """A fax call to pjsua2: set up through its reliable 180, G.711 both ways, torn down; no fax."""
    peer = pjsua_peer("pj", prack="mandatory")
    peer.command_sync("answer_policy", mode="auto", code=200, delay=0.5, ring=True)

    async def scenario() -> Any:
        opts = CallOptions(t38=T38Policy.OFF, max_call_seconds=5)
        line = await FaxLine.open(LineConfig(name="to-pjsua-100rel", call=opts))
        try:
            return await line.send(page(tmp_path), peer.contact)
        finally:
            await line.close()

    outcome = run(scenario, 60)
    ladder = ladder_lines(outcome)
    assert ladder[0].startswith("INVITE ")
    prack_at = next(i for i, line in enumerate(ladder) if line.startswith("PRACK "))
    assert any(line.startswith("SIP/2.0 180") for line in ladder[:prack_at])
    assert any(line.startswith("BYE ") for line in ladder)
    assert outcome.media == "g711" and outcome.report["rtp"]["received"]["packets_received"] > 100
    assert outcome.end_reason.startswith("maximum call duration")
    assert not outcome.ok and outcome.status is not FaxStatus.FS_COMPLETED  # no fax: never a success


def test_pjsua_requiring_100rel_calls_vfax_and_is_answered_not_refused(
    tmp_path: Path, pjsua_peer: Callable[..., PjsuaPeer]
) -> None:
    peer = pjsua_peer("caller", prack="mandatory")

    async def scenario() -> Any:
        line = await FaxLine.open(
            LineConfig(
                name="rx-pj-100rel", inbox=tmp_path / "in",
                call=CallOptions(t38=T38Policy.OFF, max_call_seconds=5),
            )
        )  # fmt: skip
        try:
            await peer.command("call", uri=line.uri)
            return await asyncio.wait_for(line.receptions.get(), 30)
        finally:
            await line.close()

    rec = run(scenario, 60)
    ladder = ladder_lines(rec.outcome)
    assert ladder[0].startswith("INVITE ") and not any(line.startswith("SIP/2.0 420") for line in ladder)
    assert any(line.startswith("SIP/2.0 200") for line in ladder)
    assert rec.outcome.media == "g711" and rec.outcome.report["rtp"]["received"]["packets_received"] > 100
    assert not rec.outcome.ok  # pjsua2 sends no fax
