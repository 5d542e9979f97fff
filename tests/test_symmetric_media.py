"""Symmetric RTP/UDPTL on real calls: a peer whose media comes from another address than its SDP names.

The receiving vfax sits behind a small NAT-like UDP forwarder: its SDP names its own media sockets, but
every datagram it sends leaves through the forwarder's public socket, and only what reaches that public
socket comes back to it. The sender with ``symmetric_media`` learns the public address and the fax goes
through; without it, it keeps sending to the SDP's address and drops what really comes, and no fax passes.
A third socket spraying RTP or UDPTL at the sender's ports once it has learned the peer changes nothing.
"""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import Any

from t38.rtp import PT_PCMU, RtpPacket
from t38.udptl import UdptlPacket
from tests.test_calls import fax_once, page, run
from vfax.call.fax_call import CallOptions, FaxCall
from vfax.call.line import FaxLine
from vfax.call.media import T38Policy

Address = tuple[str, int]


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class _Mapping:
    """One media stream through the NAT: ``inside`` faces the hidden host, ``public`` the far end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, dest: Address) -> None:
        self.loop, self.dest = loop, dest
        self.inside, self.public = _udp(), _udp()
        self.public_addr = list(self.public.getsockname())
        self.host: Address | None = None  # the hidden host's socket, learnt from its first datagram
        loop.add_reader(self.inside.fileno(), self._outbound)
        loop.add_reader(self.public.fileno(), self._inbound)

    def _outbound(self) -> None:
        while True:
            try:
                data, self.host = self.inside.recvfrom(4096)
            except BlockingIOError:
                return
            self.public.sendto(data, self.dest)

    def _inbound(self) -> None:
        while True:
            try:
                data, _ = self.public.recvfrom(4096)
            except BlockingIOError:
                return
            if self.host is not None:
                self.inside.sendto(data, self.host)

    def close(self) -> None:
        for sock in (self.inside, self.public):
            self.loop.remove_reader(sock.fileno())
            sock.close()


class NatForwarder:
    """A NAT in front of one line's media (its ``route_media``): each stream kind gets a mapping."""

    def __init__(self) -> None:
        self.mappings: dict[str, _Mapping] = {}

    def route(self, kind: str, dest: Address) -> Address:
        mapping = self.mappings.get(kind)
        if mapping is None:
            mapping = self.mappings[kind] = _Mapping(asyncio.get_running_loop(), dest)
        mapping.dest = dest
        return mapping.inside.getsockname()  # type: ignore[no-any-return]

    def public(self, kind: str) -> list[Any]:
        return self.mappings[kind].public_addr

    def close(self) -> None:
        for mapping in self.mappings.values():
            mapping.close()


async def _spray_once_learned(tx: FaxLine, kind: str, sprayed: list[int]) -> None:
    """Once the sender has learned the peer's ``kind`` stream, send it 3 s of a stranger's packets with
    consecutive sequence numbers (what would pass probation if the lock did not hold)."""
    while True:
        call: FaxCall | None = tx.last_call
        ep = None if call is None else (call.rtp if kind == "audio" else call.udptl)
        if ep is not None and ep.latch is not None and ep.latch.locked and not getattr(ep, "closed", False):
            break
        await asyncio.sleep(0.05)
    target = ep.local_addr if kind == "audio" else ep.local_address  # type: ignore[union-attr]
    ssrc = random.getrandbits(32)
    with _udp() as sock:
        for k in range(150):
            if kind == "audio":
                datagram = bytes(RtpPacket(PT_PCMU, k, 160 * k, ssrc, b"\x00" * 160))
            else:
                datagram = bytes(UdptlPacket(k, b"\x00"))  # a no-signal indicator (T.38 §7.4)
            sock.sendto(datagram, target)
            sprayed[0] += 1
            await asyncio.sleep(0.02)


def test_a_peer_behind_a_nat_faxes_with_symmetric_media_and_not_without(tmp_path: Path) -> None:
    tiff = page(tmp_path)
    nats: dict[str, NatForwarder] = {}
    sprays: dict[str, list[int]] = {"audio": [0], "image": [0]}
    tasks: list[asyncio.Task[None]] = []

    def behind_nat(name: str, spray: str | None = None) -> Any:
        async def setup(tx: FaxLine, rx: FaxLine) -> None:
            nat = nats[name] = NatForwarder()
            rx.route_media = nat.route
            if spray is not None:
                tasks.append(asyncio.create_task(_spray_once_learned(tx, spray, sprays[spray])))

        return setup

    def call(name: str, policy: T38Policy, symmetric: bool, spray: str | None = None) -> Any:
        # without symmetric media nothing passes: end those calls early instead of waiting for T.30
        limits = {} if symmetric else {"media_timeout": 3.0, "max_call_seconds": 10.0}
        tx = CallOptions(t38=policy, symmetric_media=symmetric, **limits)  # type: ignore[arg-type]
        return fax_once(tmp_path, tiff, tx, CallOptions(t38=policy), name=name, setup=behind_nat(name, spray))

    async def scenario() -> list[Any]:
        try:
            return await asyncio.gather(
                call("g711-on", T38Policy.OFF, True, spray="audio"),
                call("t38-on", T38Policy.AUTO, True, spray="image"),
                call("g711-off", T38Policy.OFF, False),
                call("t38-off", T38Policy.AUTO, False),
            )
        finally:
            for task in tasks:
                task.cancel()
            for nat in nats.values():
                nat.close()

    g711_on, t38_on, g711_off, t38_off = run(scenario())
    nat_g711, nat_t38 = nats["g711-on"], nats["t38-on"]

    # symmetric: both faxes complete, the peer learnt after probation at the NAT's public address
    for (sent, rec, _, _), media in ((g711_on, "g711"), (t38_on, "t38")):
        assert sent.ok and rec.outcome.ok and sent.media == media, (sent.end_reason, rec.outcome.end_reason)
        assert rec.outcome.result is not None and rec.outcome.result.pages == 1
    rtp = g711_on[0].report["rtp"]
    assert rtp["latch"]["learned_by"] == "latched"
    assert list(rtp["latch"]["learned_addr"]) == nat_g711.public("audio")
    assert rtp["latch"]["dropped_learning"] >= 3
    assert rtp["received"]["ssrc_changes"] == 0  # the sprayer's stream never got in
    udptl = t38_on[0].report["udptl"]
    assert udptl["latch"]["learned_by"] == "latched"
    assert list(udptl["latch"]["learned_addr"]) == nat_t38.public("image")
    # the sprayer was heard and dropped (the UDPTL socket is not connected, so the latch counts it)
    assert sprays["image"][0] > 0 and udptl["latch"]["dropped_locked"] > 0 and sprays["audio"][0] > 0
    events = [e for e in t38_on[0].report["media"]["events"] if e["event"] == "media t38"]
    assert events and events[0]["symmetric"] is True

    # not symmetric: media goes to the SDP's address (dropped there) and what comes from the NAT is
    # dropped here, so no fax passes
    for sent, rec, _, _ in (g711_off, t38_off):
        assert not sent.ok and not rec.outcome.ok
    rtp_off = g711_off[0].report["rtp"]
    assert rtp_off["latch"] is None and rtp_off["received"]["packets_received"] == 0
    assert "no RTP" in g711_off[0].end_reason, g711_off[0].end_reason
    udptl_off = t38_off[0].report["udptl"]
    assert udptl_off["received"] == 0 and udptl_off["foreign"] > 0 and udptl_off["latch"] is None
