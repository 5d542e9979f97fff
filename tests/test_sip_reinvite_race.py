"""A peer that re-INVITEs at once after our ACK (vfax's own receiver asks for T.38 that way; seen through
a NAT in tests/test_nat.py): the re-INVITE may be taken by the user agent before the application's task
has run on from ``invite()`` and attached ``on_reinvite``. It must wait for the handler, not refuse 488."""

from __future__ import annotations

import asyncio
from typing import Any

from sip.useragent import IncomingInvite, UserAgent
from tests.test_sip_core import SDP_A, SDP_B


def test_a_reinvite_right_after_the_ack_waits_for_the_callers_handler() -> None:
    async def go() -> Any:
        a = await UserAgent.create("127.0.0.1", 0, ("udp",))
        b = await UserAgent.create("127.0.0.1", 0, ("udp",))
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def answer(incoming: IncomingInvite) -> None:
            session = await incoming.accept(SDP_B)
            await session.confirmed
            outcome.set_result(await session.reinvite(SDP_B.replace(b"5000", b"5002")))

        b.on_invite = answer
        result = await a.invite(f"sip:b@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert result.ok and result.session is not None
        await asyncio.sleep(0.05)  # the application attaches its handler a moment later

        async def on_reinvite(body: bytes) -> tuple[int, bytes]:
            return 200, SDP_A

        result.session.on_reinvite = on_reinvite
        got = await asyncio.wait_for(outcome, 10)
        await a.close()
        await b.close()
        return got

    got = asyncio.run(go())
    assert got.ok and got.status == 200, (got.status, got.reason)
