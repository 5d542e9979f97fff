"""The asyncio edge of G.711 passthrough: RTP endpoints on 127.0.0.1 driven by the one media clock."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import ImageChops

from t38 import native_rtp
from t38.audio_transport import MediaClock, RtpEndpoint, RtpStats
from t38.engine import FaxConfig, FaxSession
from t38.rtp import PT_PCMA, PT_PCMU, RtpPacket
from t38.spandsp import ffi
from tests.faxpages import make_fax_tiff, tiff_pages


@pytest.fixture(autouse=True, params=["native", "python"])
def rtp_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on both G.711 paths: the C tick (t38.native_rtp, when built) and the
    Python tick, which stays the reference and is what runs where no C compiler was available."""
    if request.param == "native":
        if not native_rtp.available():
            pytest.skip("native RTP path not built")
    else:
        monkeypatch.setattr(native_rtp, "available", lambda: False)
    return str(request.param)


@pytest.fixture
def sessions() -> Iterator[list[FaxSession]]:
    """Sessions made by a test (through ``_answering``), closed after it."""
    made: list[FaxSession] = []
    yield made
    for s in made:
        s.close()


def _answering(sessions: list[FaxSession], tmp: Path, name: str) -> FaxSession:
    s = FaxSession(calling=False, receive_file=tmp / f"{name}.tif", name=name)
    sessions.append(s)
    return s


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def _recv_all(sock: socket.socket, wait: float = 0.1) -> list[bytes]:
    await asyncio.sleep(wait)
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


class _Recorder:
    """A media clock client that notes the deadline of each tick."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.ticks: list[float] = []
        self.fail_at = fail_at
        self.errors: list[Exception] = []

    def on_media_tick(self, now: float) -> None:
        self.ticks.append(now)
        if self.fail_at is not None and len(self.ticks) == self.fail_at:
            raise RuntimeError("boom")

    def on_media_error(self, exc: Exception) -> None:
        self.errors.append(exc)


# --- the media clock --------------------------------------------------------------------------------
def test_clock_ticks_on_absolute_20_ms_deadlines_and_catches_up_after_a_stall() -> None:
    async def main() -> tuple[_Recorder, MediaClock]:
        clock = MediaClock(max_catch_up=50)
        rec = _Recorder()
        clock.register(rec)
        await asyncio.sleep(0.1)
        time.sleep(0.15)  # block the loop: about 7 ticks are missed
        await asyncio.sleep(0.1)
        clock.unregister(rec)
        return rec, clock

    rec, clock = asyncio.run(main())
    steps = [round((b - a) / 0.02, 6) for a, b in zip(rec.ticks, rec.ticks[1:], strict=False)]
    assert steps and all(s == 1.0 for s in steps)  # every deadline is t0 + n * 20 ms, none skipped
    assert clock.caught_up >= 5 and clock.slipped == 0
    assert not clock.running


def test_clock_skips_what_it_cannot_catch_up_and_counts_the_slip() -> None:
    async def main() -> tuple[_Recorder, MediaClock]:
        clock = MediaClock(max_catch_up=2)
        rec = _Recorder()
        clock.register(rec)
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # 10 ticks behind, only 2 replayed
        await asyncio.sleep(0.05)
        clock.unregister(rec)
        return rec, clock

    rec, clock = asyncio.run(main())
    assert clock.slipped >= 5
    span = round((rec.ticks[-1] - rec.ticks[0]) / 0.02)
    assert span == len(rec.ticks) - 1 + clock.slipped  # skipped deadlines, not a slower clock


def test_one_failing_client_does_not_stop_the_others() -> None:
    async def main() -> tuple[_Recorder, _Recorder, MediaClock]:
        clock = MediaClock()
        bad, good = _Recorder(fail_at=2), _Recorder()
        clock.register(bad)
        clock.register(good)
        await asyncio.sleep(0.15)
        clock.unregister(good)
        return bad, good, clock

    bad, good, _ = asyncio.run(main())
    assert len(bad.ticks) == 2 and len(bad.errors) == 1
    assert len(good.ticks) > 4


# --- endpoints on loopback ----------------------------------------------------------------------------
def test_two_endpoints_exchange_50_packets_per_second_each_way(
    sessions: list[FaxSession], tmp_path: Path
) -> None:
    async def main() -> tuple[RtpEndpoint, RtpEndpoint, MediaClock, float]:
        clock = MediaClock()
        a = await RtpEndpoint(
            _answering(sessions, tmp_path, "a"), ("127.0.0.1", 0), None, clock=clock
        ).start()
        assert a.local_addr is not None
        b = await RtpEndpoint(
            _answering(sessions, tmp_path, "b"), ("127.0.0.1", 0), a.local_addr, clock=clock
        ).start()
        assert b.local_addr is not None
        a.set_remote(b.local_addr)
        t0 = asyncio.get_running_loop().time()
        ticks0 = clock.ticks + clock.slipped
        await asyncio.sleep(2.0)
        ticks = clock.ticks + clock.slipped - ticks0
        elapsed = asyncio.get_running_loop().time() - t0
        a.close()
        await asyncio.sleep(0.05)
        b.close()
        return a, b, clock, elapsed - ticks * 0.02

    a, b, clock, drift = asyncio.run(main())
    sa, sb = a.stats(), b.stats()
    # one packet per 20 ms tick in each direction, and the ticks keep pace with the loop clock
    assert abs(drift) <= 0.04
    assert sa.sent.packets_sent >= 95 and sb.sent.packets_sent >= 95
    assert sb.received.packets_received == sa.sent.packets_sent
    assert sa.received.packets_received >= sb.sent.packets_sent - 3  # the last few after a closed
    for s in (sa, sb):
        assert s.received.lost == 0 and s.received.late == 0 and s.malformed == 0 and s.strangers == 0
        assert s.received.frames_played > 80 and s.sent.octets_sent == 160 * s.sent.packets_sent
    assert not clock.running


def test_packets_on_the_wire_are_20_ms_of_g711_with_one_ssrc_across_a_reinvite(
    sessions: list[FaxSession], tmp_path: Path
) -> None:
    async def main() -> tuple[list[bytes], list[bytes], RtpEndpoint]:
        peer1, peer2 = _udp(), _udp()
        ep = await RtpEndpoint(
            _answering(sessions, tmp_path, "a"), ("127.0.0.1", 0), peer1.getsockname(), PT_PCMU
        ).start()
        first = await _recv_all(peer1, 0.2)
        ep.set_remote(peer2.getsockname(), PT_PCMA)  # a re-INVITE moves the peer and changes the law
        second = await _recv_all(peer2, 0.2)
        ep.close()
        peer1.close()
        peer2.close()
        return first, second, ep

    first, second, ep = asyncio.run(main())
    p1 = [RtpPacket.parse(d) for d in first]
    p2 = [RtpPacket.parse(d) for d in second]
    assert len(p1) >= 5 and len(p2) >= 5
    assert all(p.payload_type == PT_PCMU for p in p1) and all(p.payload_type == PT_PCMA for p in p2)
    assert all(len(p.payload) == 160 for p in p1 + p2)
    assert [p.marker for p in p1[:2]] == [True, False]
    assert len({p.ssrc for p in p1 + p2}) == 1
    seqs = [p.sequence_number for p in p1]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    tss = [p.timestamp for p in p1]
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(tss))
    assert ep.stats().sent.packets_sent >= len(p1) + len(p2)


def test_strangers_garbage_and_events_are_dropped_and_counted(
    sessions: list[FaxSession], tmp_path: Path
) -> None:
    async def main() -> RtpEndpoint:
        peer, stranger = _udp(), _udp()
        ep = await RtpEndpoint(_answering(sessions, tmp_path, "a"), ("127.0.0.1", 0), None).start()
        assert ep.local_addr is not None
        # Before the answer names the peer, every datagram is a stranger's: read and counted.
        stranger.sendto(b"early", ep.local_addr)
        peer.sendto(b"early", ep.local_addr)
        await asyncio.sleep(0.1)
        assert ep.stats().strangers == 2
        # Once it is known, the socket is connected: the kernel drops anyone else's datagrams.
        ep.set_remote(peer.getsockname())
        for k in range(10):
            peer.sendto(bytes(RtpPacket(PT_PCMU, k, 160 * k, 77, b"\xff" * 160)), ep.local_addr)
        for k in range(4):
            stranger.sendto(bytes(RtpPacket(PT_PCMU, 500 + k, 0, 99, b"\x00" * 160)), ep.local_addr)
        peer.sendto(b"\x00\x01garbage", ep.local_addr)
        peer.sendto(bytes(RtpPacket(101, 10, 1600, 77, b"\x01\x0a\x00\xa0")), ep.local_addr)  # RFC 4733
        await asyncio.sleep(0.5)  # 10 frames after 60 ms of playout delay
        ep.close()
        peer.close()
        stranger.close()
        return ep

    s = asyncio.run(main()).stats()
    assert s.strangers == 2 and s.malformed == 1
    assert s.received.packets_received == 11 and s.received.ignored_pt == 1
    assert s.received.ssrc == 77 and s.received.ssrc_changes == 0 and s.received.frames_played == 10


def test_media_timeout_fires_once_when_the_peer_goes_silent(
    sessions: list[FaxSession], tmp_path: Path
) -> None:
    async def main() -> tuple[list[str], list[str], RtpEndpoint]:
        clock = MediaClock()
        reasons: list[str] = []
        early: list[str] = []
        fired = asyncio.Event()

        def on_timeout(reason: str) -> None:
            reasons.append(reason)
            fired.set()

        a = await RtpEndpoint(
            _answering(sessions, tmp_path, "a"),
            ("127.0.0.1", 0),
            None,
            clock=clock,
            media_timeout=0.5,
            on_media_timeout=on_timeout,
        ).start()
        assert a.local_addr is not None
        b = await RtpEndpoint(
            _answering(sessions, tmp_path, "b"), ("127.0.0.1", 0), a.local_addr, clock=clock
        ).start()
        assert b.local_addr is not None
        a.set_remote(b.local_addr)
        await asyncio.sleep(1.0)  # the peer talks: twice the timeout, and nothing fires
        early.extend(reasons)
        b.close()  # the peer goes silent
        await asyncio.wait_for(fired.wait(), 5.0)
        await asyncio.sleep(0.4)
        a.close()
        return early, reasons, a

    early, reasons, a = asyncio.run(main())
    assert early == []
    assert len(reasons) == 1 and "no RTP" in reasons[0]
    assert a.stats().media_timeout


@pytest.mark.slow
def test_real_one_page_fax_over_rtp_on_loopback(tmp_path: Path, rtp_path: str) -> None:
    src = make_fax_tiff(tmp_path / "page.tif", pages=1, resolution="standard")
    tx = FaxSession(calling=True, send_file=src, config=FaxConfig(ident="SENDER"), name="tx")
    rx = FaxSession(
        calling=False, receive_file=tmp_path / "rx.tif", config=FaxConfig(ident="RECEIVER"), name="rx"
    )

    async def main() -> tuple[RtpEndpoint, RtpEndpoint]:
        done = asyncio.Event()

        def on_done(_s: FaxSession) -> None:
            if tx.done and rx.done:
                done.set()

        a = await RtpEndpoint(tx, ("127.0.0.1", 0), None, PT_PCMA, on_session_done=on_done).start()
        assert a.local_addr is not None
        b = await RtpEndpoint(rx, ("127.0.0.1", 0), a.local_addr, PT_PCMA, on_session_done=on_done).start()
        assert b.local_addr is not None
        assert a.native is b.native is (rtp_path == "native")
        a.set_remote(b.local_addr)
        try:
            await asyncio.wait_for(done.wait(), 120)
        finally:
            a.close()
            b.close()
        return a, b

    try:
        a, b = asyncio.run(main())
    finally:
        tx.close()
        rx.close()
    assert rx.result is not None and rx.result.ok and rx.result.pages == 1
    assert tx.result is not None and tx.result.ok
    assert rx.result.remote_ident == "SENDER" and rx.result.ecm
    assert 10 < rx.result.line_seconds < 60  # the line time C fed (native) or Python did
    (sent,), (got,) = tiff_pages(src), tiff_pages(tmp_path / "rx.tif")
    assert ImageChops.difference(sent.convert("L"), got.convert("L")).getbbox() is None
    for s in (a.stats(), b.stats()):
        assert s.codec == "PCMA" and s.received.frames_played > 500 and s.malformed == 0


def test_endpoint_adopts_a_socket_already_bound_for_the_sdp_over_ipv6(
    sessions: list[FaxSession], tmp_path: Path
) -> None:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    peer.bind(("::1", 0))
    peer.setblocking(False)
    port = sock.getsockname()[1]

    async def main() -> tuple[RtpEndpoint, list[bytes]]:
        ep = await RtpEndpoint(
            _answering(sessions, tmp_path, "a"), ("::1", 0), ("0:0::1", peer.getsockname()[1])
        ).start(sock=sock)
        for k in range(5):
            peer.sendto(bytes(RtpPacket(PT_PCMU, k, 160 * k, 5, b"\x7f" * 160)), ("::1", port))
        got = await _recv_all(peer, 0.3)
        ep.close()
        return ep, got

    try:
        ep, got = asyncio.run(main())
    finally:
        peer.close()
    s = ep.stats()
    assert s.local_addr == ("::1", port)
    assert s.received.packets_received == 5 and s.strangers == 0
    assert len(got) >= 5 and all(RtpPacket.parse(d).payload_type == PT_PCMU for d in got)


class _Line:
    """A stand-in for the fax session that records what the endpoint hands to the modems."""

    def __init__(self) -> None:
        self.result = None
        self._silence = ffi.new("int16_t[]", 160)
        self.heard: list[tuple[str, int, int]] = []  # ("audio", count, first sample) or ("missing", count, 0)

    def audio_tx(self, count: int = 160) -> object:
        return self._silence

    def audio_rx(self, samples: object, count: int = 160) -> None:
        self.heard.append(("audio", count, samples[0]))  # type: ignore[index]

    def audio_missing(self, count: int = 160) -> None:
        self.heard.append(("missing", count, 0))


def test_a_lost_packet_reaches_the_modems_as_missing_samples_not_as_silence() -> None:
    line = _Line()

    async def main() -> RtpEndpoint:
        peer = _udp()
        ep = await RtpEndpoint(line, ("127.0.0.1", 0), peer.getsockname(), PT_PCMA).start()
        assert ep.local_addr is not None
        for k in range(8):
            if k != 4:  # packet 4 is lost
                peer.sendto(bytes(RtpPacket(PT_PCMA, 1000 + k, 160 * k, 3, b"\xd5" * 160)), ep.local_addr)
        await asyncio.sleep(0.5)
        ep.close()
        peer.close()
        return ep

    ep = asyncio.run(main())
    audio = [h for h in line.heard if h[0] == "audio"]
    assert len(audio) == 7 and all(first == 8 for _, _, first in audio)  # A-law 0xD5 decodes to +8
    start = line.heard.index(audio[0])
    assert (
        line.heard[start : start + 8]
        == [("audio", 160, 8)] * 4 + [("missing", 160, 0)] + [("audio", 160, 8)] * 3
    )
    s = ep.stats().received
    assert s.lost == 1 and s.frames_played == 7


def test_a_flood_on_the_rtp_port_costs_at_most_a_bounded_read_per_tick() -> None:
    """The peer floods its own call (a misbehaving gateway): each tick reads at most
    MAX_DATAGRAMS_PER_TICK datagrams; the rest waits in (or overflows) the kernel buffer, so one
    stream cannot hold the loop that carries every other call."""
    from t38.audio_transport import MAX_DATAGRAMS_PER_TICK, SilentSession

    async def main() -> list[int]:
        peer = _udp()
        clock = MediaClock()
        ep = RtpEndpoint(SilentSession(), ("127.0.0.1", 0), peer.getsockname(), clock=clock)
        await ep.start()
        ep.detach_clock()  # ticks are driven by hand below
        assert ep.local_addr is not None
        for k in range(3 * MAX_DATAGRAMS_PER_TICK):
            peer.sendto(bytes(RtpPacket(PT_PCMU, k, 160 * k, 5, b"\xff" * 160)), ep.local_addr)
        await asyncio.sleep(0.1)
        counts = []
        for _ in range(4):
            ep.on_media_tick(asyncio.get_running_loop().time())
            counts.append(ep.stats().received.packets_received)
        ep.close()
        peer.close()
        return counts

    counts = asyncio.run(main())
    m = MAX_DATAGRAMS_PER_TICK
    assert counts == [m, 2 * m, 3 * m, 3 * m]


def test_an_endpoint_whose_python_side_fails_leaves_the_clock_and_reports_it(rtp_path: str) -> None:
    """A bug in the call layer's callback (here: the one told that the fax is over) ends that stream
    alone, reported as a media error; the clock stops once no stream is left, nothing stays registered."""
    from t38.audio_transport import SilentSession

    reasons: list[str] = []

    def on_done(_s: object) -> None:
        raise RuntimeError("call layer bug")

    async def main() -> tuple[RtpEndpoint, MediaClock]:
        clock = MediaClock()
        peer = _udp()
        session = SilentSession()
        session.result = "over"  # type: ignore[assignment]  # a finished fax, as far as the endpoint sees
        ep = RtpEndpoint(
            session, ("127.0.0.1", 0), peer.getsockname(), clock=clock, media_timeout=0.05,
            on_media_timeout=reasons.append, on_session_done=on_done,
        )  # fmt: skip
        await ep.start()
        await asyncio.sleep(0.3)
        peer.close()
        return ep, clock

    ep, clock = asyncio.run(main())
    assert ep.closed and clock.clients == 0 and not clock.running
    assert any("media error" in r and "call layer bug" in r for r in reasons)


@pytest.mark.parametrize("symmetric", [True, False])
def test_symmetric_rtp_learns_a_peer_whose_media_comes_from_another_address_than_its_sdp(
    sessions: list[FaxSession], tmp_path: Path, symmetric: bool
) -> None:
    """A peer behind a NAT: its SDP names one address (``sdp``), its RTP comes from another (``nat``)."""

    async def main() -> dict[str, object]:
        sdp, nat, stranger, new_sdp = _udp(), _udp(), _udp(), _udp()
        ep = await RtpEndpoint(
            _answering(sessions, tmp_path, "a"), ("127.0.0.1", 0), sdp.getsockname(), symmetric=symmetric
        ).start()
        assert ep.local_addr is not None
        await asyncio.sleep(0.1)
        to_sdp_first = len(await _recv_all(sdp, 0))
        for k in range(10):
            nat.sendto(bytes(RtpPacket(PT_PCMU, 100 + k, 160 * k, 55, b"\xff" * 160)), ep.local_addr)
        await asyncio.sleep(0.1)
        await _recv_all(sdp, 0)
        to_nat = await _recv_all(nat, 0.2)
        to_sdp_later = await _recv_all(sdp, 0)
        for k in range(5):  # a stray stream once the peer is known
            stranger.sendto(bytes(RtpPacket(PT_PCMU, 7 + k, 160 * k, 99, b"\x00" * 160)), ep.local_addr)
        await asyncio.sleep(0.1)
        learned = ep.stats()
        ep.set_remote(new_sdp.getsockname())  # a re-INVITE with another address: learn again
        await _recv_all(nat, 0.1)
        to_new_sdp = await _recv_all(new_sdp, 0.1)
        to_nat_after = await _recv_all(nat, 0)
        relearning = ep.stats()
        nat_addr = nat.getsockname()
        ep.close()
        for s in (sdp, nat, stranger, new_sdp):
            s.close()
        return dict(first=to_sdp_first, nat=to_nat, sdp_later=to_sdp_later, learned=learned,
                    new_sdp=to_new_sdp, nat_after=to_nat_after, relearning=relearning,
                    nat_addr=nat_addr)  # fmt: skip

    r = asyncio.run(main())
    learned, relearning = r["learned"], r["relearning"]
    assert isinstance(learned, RtpStats) and isinstance(relearning, RtpStats)
    assert r["first"] > 0  # until the peer is learned, our RTP goes to the SDP's address
    if not symmetric:  # connected to the SDP's address: the NAT's packets never reach the playout
        assert learned.received.packets_received == 0 and learned.latch is None
        assert r["nat"] == [] and r["sdp_later"] != []
        return
    # the 4th consecutive packet from the NAT's address locks; the three before it were on probation
    assert learned.latch is not None
    assert learned.latch["learned_addr"] == r["nat_addr"] and learned.latch["learned_by"] == "latched"
    assert learned.latch["dropped_learning"] == 3
    assert learned.received.packets_received == 7 and learned.received.ssrc == 55  # not the stranger's
    assert len(r["nat"]) > 3 and r["sdp_later"] == []  # then our RTP goes to where theirs comes from
    sent = [RtpPacket.parse(d) for d in r["nat"]]  # type: ignore[union-attr]
    assert all(b.sequence_number == (a.sequence_number + 1) & 0xFFFF for a, b in itertools.pairwise(sent))
    # a new SDP address: learning again, and our RTP goes there until its source speaks
    assert relearning.latch is not None and relearning.latch["learned_addr"] is None
    assert relearning.latch["relearns"] == 1 and r["new_sdp"] != [] and r["nat_after"] == []
