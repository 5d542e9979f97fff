"""The asyncio edge over real loopback sockets: UA to UA over UDP, TCP, TLS and IPv6, many calls at once."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sip.useragent import CallSession, IncomingInvite, UserAgent
from tests.test_sip_core import SDP_A, SDP_B


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(*args), 20))


def answering(ua: UserAgent, answer: bytes = SDP_B, sessions: list[CallSession] | None = None) -> None:
    async def handler(incoming: IncomingInvite) -> None:
        await incoming.ringing()
        session = await incoming.accept(answer)
        if sessions is not None:
            sessions.append(session)

    ua.on_invite = handler


async def full_call(transport: str, host: str = "127.0.0.1", **create: Any) -> None:
    a = await UserAgent.create(host, transports=(transport,), **create)
    b = await UserAgent.create(host, transports=(transport,), **create)
    sessions: list[CallSession] = []
    answering(b, sessions=sessions)
    bh, bp = b.transports.local_addresses[transport]
    bhost = f"[{bh}]" if ":" in bh else bh
    uri = f"sip:b@{bhost}:{bp}" + (f";transport={transport}" if transport != "udp" else "")
    progress: list[int] = []
    result = await a.invite(uri, SDP_A, on_progress=lambda r: progress.append(r.status))
    assert result.ok and result.remote_sdp == SDP_B
    assert progress == [180]
    session = result.session
    assert session is not None
    await asyncio.wait_for(sessions[0].confirmed, 5)

    async def on_reinvite(sdp: bytes) -> tuple[int, bytes]:
        return 200, SDP_B.replace(b"1 1", b"1 2")

    sessions[0].on_reinvite = on_reinvite
    outcome = await session.reinvite(SDP_A.replace(b"1 1", b"1 2"))
    assert outcome.ok and outcome.remote_sdp == SDP_B.replace(b"1 1", b"1 2")
    byes: list[str] = []
    sessions[0].on_bye = lambda: byes.append("bye")
    final = await session.bye()
    assert final is not None and final.status == 200
    assert await sessions[0].wait_terminated(5) == "remote BYE"
    assert byes == ["bye"]
    ladder = [first.split()[0] for _, _, first in a.ladder(session.call_id)]
    assert ladder[:1] == ["INVITE"] and "ACK" in ladder and "BYE" in ladder
    await a.close()
    await b.close()


def test_call_with_reinvite_and_bye_over_udp() -> None:
    run(full_call, "udp")


def test_call_with_reinvite_and_bye_over_tcp() -> None:
    run(full_call, "tcp")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_over_ipv6(transport: str) -> None:
    run(full_call, transport, "::1")


def _tls_contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_call_over_tls(tmp_path: Path) -> None:
    contexts = _tls_contexts(tmp_path)
    if contexts is None:
        pytest.skip("openssl cannot make a test certificate")
    server, client = contexts

    async def main() -> None:
        a = await UserAgent.create(transports=("udp", "tls"), tls_server=server, tls_client=client)
        b = await UserAgent.create(transports=("udp", "tls"), tls_server=server, tls_client=client)
        answering(b)
        port = b.transports.local_addresses["tls"][1]
        result = await a.invite(f"sip:b@127.0.0.1:{port};transport=tls", SDP_A)
        assert result.ok and result.session is not None
        assert result.session.call.transport == "tls"
        assert (await result.session.bye()).status == 200  # type: ignore[union-attr]
        await a.close()
        await b.close()

    run(main)


def test_options_ping_and_crlf_keepalive_over_tcp() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        port = b.transports.local_addresses["tcp"][1]
        resp = await a.options(f"sip:127.0.0.1:{port};transport=tcp")
        assert resp.status == 200 and "INVITE" in resp.allow
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # RFC 5626 pong
        writer.close()
        await a.close()
        await b.close()

    run(main)


def test_garbage_on_a_tcp_connection_closes_it_and_the_ua_keeps_serving() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        port = b.transports.local_addresses["tcp"][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"NOT SIP AT ALL\r\nfoo\r\n\r\n")
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the UA
        writer.close()
        resp = await a.options(f"sip:127.0.0.1:{port};transport=tcp")
        assert resp.status == 200
        await a.close()
        await b.close()

    run(main)


def test_unreachable_tcp_peer_fails_fast_with_503() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = await a.invite(f"sip:b@127.0.0.1:{port};transport=tcp", SDP_A)
        assert result.status == 503 and result.session is None
        await a.close()

    run(main)


def test_cancel_before_answer_returns_487() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        rung = asyncio.Event()
        ended: list[str] = []

        async def handler(incoming: IncomingInvite) -> None:
            await incoming.ringing()
            incoming.session.on_terminated = ended.append
            rung.set()

        b.on_invite = handler
        pending = a.invite(f"sip:b@127.0.0.1:{b.local_address[1]}", SDP_A)
        await asyncio.wait_for(rung.wait(), 5)
        while not pending.provisional:
            await asyncio.sleep(0.01)
        result = await pending.cancel()
        assert result.status == 487 and result.session is None
        await asyncio.sleep(0.05)
        assert ended == ["cancelled"]
        await a.close()
        await b.close()

    run(main)


def test_reinvite_without_handler_is_refused_with_488_and_call_survives() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        answering(b)
        result = await a.invite(f"sip:b@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert result.session is not None
        outcome = await result.session.reinvite(SDP_A + b"m=image 4002 udptl t38\r\n")
        assert outcome.status == 488
        assert result.session.local_sdp == SDP_A
        assert (await result.session.bye()).status == 200  # type: ignore[union-attr]
        await a.close()
        await b.close()

    run(main)


def test_two_hundred_simultaneous_dialogs_in_one_process() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        answering(b)
        uri = f"sip:b@127.0.0.1:{b.local_address[1]}"
        results = await asyncio.gather(*(a.invite(uri, SDP_A) for _ in range(200)))
        assert all(r.ok for r in results)
        assert b.core.active_calls == 200
        finals = await asyncio.gather(*(r.session.bye() for r in results))  # type: ignore[union-attr]
        assert all(f is not None and f.status == 200 for f in finals)
        assert b.core.active_calls == 0
        await a.close()
        await b.close()

    run(main)


def test_close_hangs_up_open_calls() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        sessions: list[CallSession] = []
        answering(b, sessions=sessions)
        result = await a.invite(f"sip:b@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert result.ok
        await a.close()
        assert await sessions[0].wait_terminated(5) == "remote BYE"
        await b.close()

    run(main)


def test_host_names_are_resolved_before_sending() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create()
        resp = await a.options(f"sip:localhost:{b.local_address[1]}")
        assert resp.status == 200
        await a.close()
        await b.close()

    run(main)


def test_connection_flood_is_capped_and_idle_connections_are_closed() -> None:
    async def main() -> None:
        ua = await UserAgent.create()
        ua.transports.max_connections = 5
        ua.transports.idle_timeout = 0.2
        port = ua.transports.local_addresses["tcp"][1]
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
        await asyncio.sleep(0.1)
        assert ua.transports.connections == 5
        ua.transports._sweep()  # as the periodic sweep would, once they are idle
        await asyncio.sleep(0.3)
        ua.transports._sweep()
        await asyncio.sleep(0.05)
        assert ua.transports.connections == 0
        for reader, _ in conns:
            assert await asyncio.wait_for(reader.read(10), 2) == b""  # closed by the UA
        for _, writer in conns:
            writer.close()
        await ua.close()

    run(main)


def test_invite_timeout_without_any_answer_returns_408_promptly() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            port = silent.getsockname()[1]
            result = await a.invite(f"sip:b@127.0.0.1:{port}", SDP_A, timeout=0.3)
            assert result.status == 408 and result.session is None
        await a.close()

    run(main)


def test_session_timer_refreshes_on_the_event_loop_without_bothering_the_application() -> None:
    async def main() -> None:
        a = await UserAgent.create(session_expires=1, min_se=1)
        b = await UserAgent.create(session_expires=1, min_se=1)
        sessions: list[CallSession] = []
        answering(b, sessions=sessions)
        asked: list[bytes] = []

        async def on_reinvite(sdp: bytes) -> tuple[int, bytes]:
            asked.append(sdp)
            return 200, SDP_B

        result = await a.invite(f"sip:b@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert result.session is not None and result.session.session_interval == 1
        sessions[0].on_reinvite = on_reinvite
        await asyncio.sleep(1.3)
        invites = [f for _, d, f in a.ladder(result.session.call_id) if d == "out" and f.startswith("INVITE")]
        assert len(invites) >= 3  # the initial INVITE and a refresh every half interval
        assert asked == []  # same SDP: answered by the core, media untouched
        assert not sessions[0].terminated.done() and not result.session.terminated.done()
        await result.session.bye()
        await a.close()
        await b.close()

    run(main)


def test_advertised_host_goes_into_contact_and_in_dialog_requests_follow_it() -> None:
    async def main() -> None:
        a = await UserAgent.create()
        b = await UserAgent.create("127.0.0.1", advertise_host="localhost")
        answering(b)
        assert b.contact_uri().host == "localhost"
        result = await a.invite(f"sip:b@127.0.0.1:{b.local_address[1]}", SDP_A)
        assert result.ok and result.session is not None
        assert result.session.dialog is not None and result.session.dialog.remote_target.host == "localhost"
        assert (await result.session.bye()).status == 200  # type: ignore[union-attr]
        await a.close()
        await b.close()

    run(main)


def test_udp_reads_what_is_queued_up_to_a_batch_per_loop_iteration() -> None:
    """asyncio hands the protocol one datagram per socket per loop iteration; on a loop busy with
    hundreds of media streams that was one SIP message per 20 ms tick. The protocol drains the rest
    (up to UDP_BATCH) itself, and leaves what is beyond for the next iteration."""
    from sip.transport import UDP_BATCH, _UdpProtocol

    got: list[bytes] = []

    class Owner:
        def on_datagram(self, data: bytes, source: tuple[str, str, int]) -> None:
            assert source[0] == "udp" and source[1] == "127.0.0.1"
            got.append(data)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        proto = _UdpProtocol(Owner(), sock)  # type: ignore[arg-type]
        for k in range(UDP_BATCH + 10):
            client.sendto(b"m%d" % k, sock.getsockname())
        first, addr = sock.recvfrom(100)  # what asyncio would have read and handed over
        proto.datagram_received(first, addr)
        assert got == [b"m%d" % k for k in range(UDP_BATCH)]  # one handed over + the rest of a batch
        got.clear()
        proto.datagram_received(*sock.recvfrom(100))  # the next iteration: the 10 left
        assert got == [b"m%d" % k for k in range(UDP_BATCH, UDP_BATCH + 10)]
        got.clear()
        proto.datagram_received(b"alone", addr)  # nothing queued: just the one
        assert got == [b"alone"]
    finally:
        client.close()
        sock.close()
