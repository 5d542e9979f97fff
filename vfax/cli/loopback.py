"""`vfax loopback`: the same fax as `vfax simulate`, but in real time over real UDP sockets.

Sender and receiver each get a UDPTL endpoint on 127.0.0.1; between them sits the impairment relay
(seeded loss, bursts, jitter, reordering, duplication), so what the codec, the reordering receiver
and spandsp's timers do with real datagrams and a real clock is what gets measured. No SIP: the
T.38 parameters are the ones two vfax ends negotiate (see vfax.cli.simulate.negotiated_t38).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from t38.engine import FaxEvent, FaxSession, Media
from t38.transport import ImpairmentRelay, UdptlEndpoint
from t38.virtual_line import BackToBackResult
from vfax.cli.simulate import PairRun, SimulationRequest, make_sessions

EVENT_POLL_SECONDS = 0.1
MAX_CALL_SECONDS = 1800.0


def run_pair_realtime(
    req: SimulationRequest,
    send_tiff: Path,
    receive_tiff: Path,
    on_event: Callable[[FaxSession, FaxEvent], None] | None = None,
) -> PairRun:
    """A ``vfax.cli.simulate.Runner`` that takes as long as the fax really does."""
    if req.media is not Media.T38:
        raise ValueError("loopback runs T.38 (UDPTL); G.711 over RTP comes with the call path")
    return asyncio.run(_run(req, send_tiff, receive_tiff, on_event))


async def _run(
    req: SimulationRequest,
    send_tiff: Path,
    receive_tiff: Path,
    on_event: Callable[[FaxSession, FaxEvent], None] | None,
) -> PairRun:
    sender, receiver, tx_t38, rx_t38 = make_sessions(req, send_tiff, receive_tiff)
    impaired = req.network.impaired
    relay = ImpairmentRelay(
        req.network.impairment(0) if impaired else None, req.network.impairment(1) if impaired else None
    )
    a = UdptlEndpoint(sender, tx_t38.udptl, name="sender")
    b = UdptlEndpoint(receiver, rx_t38.udptl, name="receiver")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        await a.start(("127.0.0.1", 0))
        await b.start(("127.0.0.1", 0))
        await relay.start(a.local_address, b.local_address)
        a.set_peer(relay.addr_for_a)
        b.set_peer(relay.addr_for_b)
        deadline = time.monotonic() + MAX_CALL_SECONDS
        while not (sender.done and receiver.done) and time.monotonic() < deadline:
            await asyncio.sleep(EVENT_POLL_SECONDS)
            _dispatch((sender, receiver), on_event)
    finally:
        for endpoint in (a, b):
            endpoint.close()
        relay.close()
        with contextlib.suppress(Exception):
            sender.close()
            receiver.close()
    _dispatch((sender, receiver), on_event)
    wall = time.perf_counter() - wall0
    assert sender.result is not None and receiver.result is not None
    stats = {
        "relay": {side: asdict(st) for side, st in relay.stats.items()},
        "udptl_calling": asdict(a.stats()),
        "udptl_answering": asdict(b.stats()),
    }
    return PairRun(
        outcome=BackToBackResult(sender.result, receiver.result, wall, int(wall / 0.02), stats),
        sender=sender,
        receiver=receiver,
        cpu_seconds=time.process_time() - cpu0,
        wall_seconds=wall,
        udptl=tx_t38.udptl,
    )


def _dispatch(
    sessions: tuple[FaxSession, FaxSession], on_event: Callable[[FaxSession, FaxEvent], None] | None
) -> None:
    for s in sessions:
        for e in s.take_events():
            if on_event is not None:
                on_event(s, e)
