"""The real-peer harness works: Kamailio registers and proxies, pjsua2 peers call each other through it.

These tests pin the harness itself (pjsua2 <-> Kamailio <-> pjsua2), so a failure in a vfax test that
uses these peers can be told apart from a broken harness.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import re
import secrets
import socket
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.peers.kamailio import KamailioServer, find_kamailio, options_probe
from tests.peers.pjsua_client import PeerError, PjsuaPeer

A_USER, B_USER = "1001", "1002"
PeerMaker = Callable[..., PjsuaPeer]


def raw_request(
    kamailio: KamailioServer, method: str, user: str, body: str = "", sock: socket.socket | None = None
) -> str:
    """Send one hand-written request over UDP and return the first final response (RFC 3261 §8.1)."""
    with contextlib.ExitStack() as stack:
        if sock is None:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        port = sock.getsockname()[1]
        target = f"sip:{kamailio.host}:{kamailio.udp_port}" if method == "REGISTER" else kamailio.aor("1002")
        to_user = user if method == "REGISTER" else "1002"
        content_type = "Content-Type: application/sdp\r\n" if body else ""
        request = (
            f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{kamailio.realm}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{to_user}@{kamailio.realm}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
            f"{content_type}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        sock.sendto(request.encode(), (kamailio.host, kamailio.udp_port))
        while True:
            text = sock.recvfrom(65535)[0].decode()
            if not text.startswith("SIP/2.0 1"):
                return text


def header(message: str, name: str) -> list[str]:
    """Values of every header ``name`` in a SIP message (case-insensitive, head only)."""
    head = message.split("\r\n\r\n", 1)[0]
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith(name.lower() + ":")
    ]


def registered_pair(kamailio: KamailioServer, pjsua_peer: PeerMaker) -> tuple[PjsuaPeer, PjsuaPeer]:
    a, b = pjsua_peer("a"), pjsua_peer("b")
    for peer, user in ((a, A_USER), (b, B_USER)):
        reg = peer.register(
            kamailio.uri, user, kamailio.users[user], realm=kamailio.realm, domain=kamailio.realm
        )
        assert reg["code"] == 200, reg
    return a, b


class RawDialogUac:
    """A hand-written UAC over one UDP socket, just enough for one dialog with a peer (RFC 3261 §12, §13).

    Used to send the peer what pjsua2 itself cannot: a T.38 re-INVITE (RFC 3362, T.38 Annex D).
    """

    def __init__(self, target_port: int):
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(3.0)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(3.0)
        self.port = self.sip.getsockname()[1]
        self.target = ("127.0.0.1", target_port)
        self.request_uri = f"sip:peer@127.0.0.1:{target_port}"
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.from_tag = secrets.token_hex(4)
        self.to = "<sip:peer@127.0.0.1>"
        self.cseq = 0
        self.sdp_version = 0

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def sdp(self, media: str) -> str:
        self.sdp_version += 1
        origin = f"o=raw 1 {self.sdp_version} IN IP4 127.0.0.1"
        return f"v=0\r\n{origin}\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}"

    def send(self, method: str, body: str = "", branch: str | None = None, cseq: int | None = None) -> str:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + secrets.token_hex(6)
        content_type = "Content-Type: application/sdp\r\n" if body else ""
        message = (
            f"{method} {self.request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:raw@127.0.0.1>;tag={self.from_tag}\r\n"
            f"To: {self.to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:raw@127.0.0.1:{self.port}>\r\n"
            f"{content_type}Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.sip.sendto(message.encode(), self.target)
        return branch

    def final_response(self, method: str) -> str:
        """The next final response to ``method``; requests from the peer are not expected here."""
        while True:
            text = self.sip.recvfrom(65535)[0].decode()
            is_response = text.startswith("SIP/2.0 ") and header(text, "CSeq")[0].endswith(method)
            if is_response and not text.startswith("SIP/2.0 1"):
                return text

    def invite(self, body: str) -> str:
        """INVITE (or re-INVITE) and its ACK: a new branch after 2xx, the same one otherwise (§17.1.1.3)."""
        branch = self.send("INVITE", body)
        response = self.final_response("INVITE")
        if response.startswith("SIP/2.0 2"):
            if self.to == "<sip:peer@127.0.0.1>":
                self.to = header(response, "To")[0]
                self.request_uri = header(response, "Contact")[0].strip("<>").split(">")[0]
            self.send("ACK", cseq=self.cseq)
        else:
            self.send("ACK", branch=branch, cseq=self.cseq)
        return response

    def rtp_packets(self, count: int) -> list[bytes]:
        """The next ``count`` RTP packets the peer sends to our audio port."""
        return [self.rtp.recvfrom(2048)[0] for _ in range(count)]


def wait_for_rtp(peer: PjsuaPeer, handle: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll the peer until its call has received and sent RTP; return the stream counters."""
    deadline = time.monotonic() + timeout
    stream: dict[str, Any] = {}
    while time.monotonic() < deadline:
        streams = peer.call_status(handle)["streams"]
        stream = streams[0] if streams else {}
        if stream.get("rx_packets", 0) > 0 and stream.get("tx_packets", 0) > 0:
            return stream
        time.sleep(0.05)
    raise AssertionError(f"no RTP both ways on {peer.name}/{handle}: {stream}")


def test_kamailio_answers_options_and_stops_cleanly(tmp_path: Path) -> None:
    if find_kamailio() is None:
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    server = KamailioServer(tmp_path / "kam").start()
    try:
        assert options_probe(server.host, server.udp_port) == 200
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0
    assert options_probe(server.host, server.udp_port, timeout=0.2) is None


def test_register_without_credentials_is_challenged_with_401(kamailio: KamailioServer) -> None:
    response = raw_request(kamailio, "REGISTER", A_USER)
    assert response.startswith("SIP/2.0 401 ")
    (challenge,) = header(response, "WWW-Authenticate")
    assert challenge.startswith("Digest ")
    assert f'realm="{kamailio.realm}"' in challenge
    assert kamailio.registered_contacts(A_USER) == []


def test_invite_without_credentials_is_challenged_with_407(kamailio: KamailioServer) -> None:
    response = raw_request(kamailio, "INVITE", A_USER, body="v=0\r\n")
    assert response.startswith("SIP/2.0 407 ")
    (challenge,) = header(response, "Proxy-Authenticate")
    assert f'realm="{kamailio.realm}"' in challenge


def test_invite_from_trusted_source_is_not_challenged(tmp_path: Path) -> None:
    if find_kamailio() is None:
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        trusted = f"127.0.0.1:{sock.getsockname()[1]}"
        with KamailioServer(tmp_path / "kam", trusted=[trusted]) as server:
            response = raw_request(server, "INVITE", "gateway", body="v=0\r\n", sock=sock)
            register = raw_request(server, "REGISTER", A_USER, sock=sock)
    # Past auth, routing finds no binding for 1002; REGISTER is challenged whatever the source.
    assert response.startswith("SIP/2.0 404 ")
    assert register.startswith("SIP/2.0 401 ")


def test_register_with_wrong_password_fails_and_binds_nothing(
    kamailio: KamailioServer, pjsua_peer: PeerMaker
) -> None:
    peer = pjsua_peer("a")
    reg = peer.register(kamailio.uri, A_USER, "wrong", realm=kamailio.realm, domain=kamailio.realm)
    assert reg["code"] == 401
    assert kamailio.registered_contacts(A_USER) == []


def test_registration_binds_contact_and_unregister_removes_it(
    kamailio: KamailioServer, pjsua_peer: PeerMaker
) -> None:
    peer = pjsua_peer("a")
    reg = peer.register(kamailio.uri, A_USER, "secret1001", realm=kamailio.realm, domain=kamailio.realm)
    assert reg["code"] == 200 and reg["expiration"] > 0
    assert kamailio.registered_contacts(A_USER) == [f"sip:{A_USER}@127.0.0.1:{peer.ports['udp']}"]
    since = peer.mark()
    peer.command_sync("unregister")
    peer.wait_event_sync("reg_state", since=since, code=200, active=False)
    assert kamailio.registered_contacts(A_USER) == []


def test_call_to_unregistered_user_is_answered_404(kamailio: KamailioServer, pjsua_peer: PeerMaker) -> None:
    a, _ = registered_pair(kamailio, pjsua_peer)
    handle = a.call(kamailio.aor("1003"))
    ended = a.wait_event_sync("call_state", call=handle, state="DISCONNECTED")
    assert ended["last_status_code"] == 404


def test_peer_answer_policy_rejects_or_answers_after_ringing(
    kamailio: KamailioServer, pjsua_peer: PeerMaker
) -> None:
    a, b = registered_pair(kamailio, pjsua_peer)
    b.command_sync("answer_policy", mode="reject", code=486)
    rejected = a.call(kamailio.aor(B_USER))
    assert a.wait_event_sync("call_state", call=rejected, state="DISCONNECTED")["last_status_code"] == 486

    b.command_sync("answer_policy", mode="auto", code=200, delay=0.3, ring=True)
    answered = a.call(kamailio.aor(B_USER))
    assert a.wait_event_sync("call_state", call=answered, state="EARLY")["last_status_code"] == 180
    a.wait_event_sync("call_state", call=answered, state="CONFIRMED")
    a.command_sync("hangup", call=answered)
    a.wait_event_sync("call_state", call=answered, state="DISCONNECTED")


def test_call_reaches_peer_registered_over_tcp(kamailio: KamailioServer, pjsua_peer: PeerMaker) -> None:
    a, b = pjsua_peer("a"), pjsua_peer("b")
    assert a.register(kamailio.uri, A_USER, "secret1001", realm=kamailio.realm)["code"] == 200
    reg = b.register(kamailio.tcp_uri, B_USER, "secret1002", realm=kamailio.realm, transport="tcp")
    assert reg["code"] == 200
    # pjsua2 binds the contact to its connection's local port, so only the transport is certain.
    (contact,) = kamailio.registered_contacts(B_USER)
    assert re.fullmatch(rf"sip:{B_USER}@127\.0\.0\.1:\d+;transport=TCP", contact)

    handle = a.call(kamailio.aor(B_USER))
    incoming = b.wait_event_sync("incoming_call")
    assert header(incoming["invite"], "Via")[0].startswith(f"SIP/2.0/TCP {kamailio.host}:{kamailio.tcp_port}")
    a.wait_event_sync("call_state", call=handle, state="CONFIRMED")
    wait_for_rtp(b, incoming["call"])
    b.command_sync("hangup", call=incoming["call"])
    assert a.wait_event_sync("call_state", call=handle, state="DISCONNECTED")["last_status_code"] == 200


def test_call_through_kamailio_with_reinvites_both_ways_and_hangups_from_both_sides(
    kamailio: KamailioServer, pjsua_peer: PeerMaker
) -> None:
    a, b = registered_pair(kamailio, pjsua_peer)
    proxy_via = f"SIP/2.0/UDP {kamailio.host}:{kamailio.udp_port}"

    # Call 1: A -> B via Kamailio; B auto-answers (180, then 200).
    call_a = a.call(kamailio.aor(B_USER))
    incoming = b.wait_event_sync("incoming_call")
    call_b = incoming["call"]
    assert incoming["remote_uri"] == f"<sip:{A_USER}@{kamailio.realm}>"
    (record_route,) = header(incoming["invite"], "Record-Route")
    assert f"{kamailio.host}:{kamailio.udp_port};lr" in record_route
    assert "m=audio " in incoming["sdp"] and "RTP/AVP 0 8" in incoming["sdp"]
    a.wait_event_sync("call_state", call=call_a, state="CONFIRMED")
    b.wait_event_sync("call_state", call=call_b, state="CONFIRMED")
    ok = a.wait_event_sync("tsx_state", call=call_a, method="INVITE", status_code=200)
    assert header(ok["rx"], "Record-Route") == [record_route]

    stream_a, stream_b = wait_for_rtp(a, call_a), wait_for_rtp(b, call_b)
    assert stream_a["codec"] == stream_b["codec"] == "PCMU"

    # A re-INVITEs: it travels the recorded route (through Kamailio) and B accepts it.
    since_a, since_b = a.mark(), b.mark()
    a.command_sync("reinvite", call=call_a)
    reinvite = b.wait_event_sync(
        "tsx_state", since=since_b, call=call_b, method="INVITE", role="uas", state="TRYING"
    )
    assert proxy_via in header(reinvite["rx"], "Via")[0]
    b.wait_event_sync("rx_offer", since=since_b, call=call_b)
    # B's INVITE server transaction ends when A's ACK arrives; only then may B send its own re-INVITE.
    b.wait_event_sync(
        "tsx_state", since=since_b, call=call_b, method="INVITE", role="uas", state="TERMINATED"
    )
    answered = a.wait_event_sync(
        "tsx_state", since=since_a, call=call_a, method="INVITE", role="uac", status_code=200
    )
    assert "rx" in answered

    # B re-INVITEs the other way.
    since_a, since_b = a.mark(), b.mark()
    b.command_sync("reinvite", call=call_b)
    reinvite = a.wait_event_sync(
        "tsx_state", since=since_a, call=call_a, method="INVITE", role="uas", state="TRYING"
    )
    assert proxy_via in header(reinvite["rx"], "Via")[0]
    b.wait_event_sync("tsx_state", since=since_b, call=call_b, method="INVITE", role="uac", status_code=200)

    # Media keeps flowing after both re-INVITEs.
    before = b.call_status(call_b)["streams"][0]["rx_packets"]
    deadline = time.monotonic() + 3.0
    while b.call_status(call_b)["streams"][0]["rx_packets"] <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.call_status(call_b)["streams"][0]["rx_packets"] > before

    # A hangs up: B receives the BYE through Kamailio.
    since_b = b.mark()
    a.command_sync("hangup", call=call_a)
    bye = b.wait_event_sync("tsx_state", since=since_b, call=call_b, method="BYE", role="uas", state="TRYING")
    assert proxy_via in header(bye["rx"], "Via")[0]
    assert b.wait_event_sync("call_state", call=call_b, state="DISCONNECTED")["last_status_code"] == 200
    assert a.wait_event_sync("call_state", call=call_a, state="DISCONNECTED")["last_status_code"] == 200
    final_a = a.call_status(call_a)
    assert final_a["finished"] and final_a["streams"][0]["rx_packets"] > 0

    # Call 2, driven through the asyncio API: same processes, hung up by B this time.
    async def second_call() -> None:
        since_a, since_b = a.mark(), b.mark()
        handle_a = (await a.command("call", uri=kamailio.aor(B_USER)))["call"]
        handle_b = (await b.wait_event("incoming_call", since=since_b))["call"]
        assert handle_a != call_a and handle_b != call_b
        await asyncio.gather(
            a.wait_event("call_state", since=since_a, call=handle_a, state="CONFIRMED"),
            b.wait_event("call_state", since=since_b, call=handle_b, state="CONFIRMED"),
        )
        await b.command("hangup", call=handle_b)
        ended = await a.wait_event("call_state", since=since_a, call=handle_a, state="DISCONNECTED")
        assert ended["last_status_code"] == 200
        await b.wait_event("call_state", since=since_b, call=handle_b, state="DISCONNECTED")

    asyncio.run(second_call())
    assert a.process.poll() is None and b.process.poll() is None


def test_peer_rejects_t38_reinvite_with_488_and_keeps_g711_call(pjsua_peer: PeerMaker) -> None:
    peer = pjsua_peer("b")
    uac = RawDialogUac(peer.ports["udp"])
    try:
        audio = f"m=audio {uac.rtp.getsockname()[1]} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        answer = uac.invite(uac.sdp(audio))
        assert answer.startswith("SIP/2.0 200 ")
        handle = peer.wait_event_sync("incoming_call")["call"]
        peer.wait_event_sync("call_state", call=handle, state="CONFIRMED")
        assert all(packet[1] & 0x7F == 0 for packet in uac.rtp_packets(3))  # PCMU

        t38 = (
            f"m=image {uac.rtp.getsockname()[1] + 2} udptl t38\r\n"
            "a=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\na=T38FaxRateManagement:transferredTCF\r\n"
            "a=T38FaxMaxDatagram:400\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
        )
        rejected = uac.invite(uac.sdp(t38))
        assert rejected.startswith("SIP/2.0 488 ")

        # Still up on G.711: the peer keeps its call and keeps sending PCMU to the old audio port.
        status = peer.call_status(handle)
        assert status["state"] == "CONFIRMED" and not status["finished"]
        assert status["media"][0]["status"] == "ACTIVE"
        assert all(packet[1] & 0x7F == 0 for packet in uac.rtp_packets(5))

        uac.send("BYE")
        assert uac.final_response("BYE").startswith("SIP/2.0 200 ")
        peer.wait_event_sync("call_state", call=handle, state="DISCONNECTED")
    finally:
        uac.close()


def test_tone_sent_by_one_peer_is_recorded_by_the_other(tmp_path: Path, pjsua_peer: PeerMaker) -> None:
    records = tmp_path / "records"
    records.mkdir()
    a, b = pjsua_peer("a", tone_hz=1000), pjsua_peer("b", record_dir=str(records))
    handle = a.call(b.contact)  # direct, no proxy: the peers also work without Kamailio
    incoming = b.wait_event_sync("incoming_call")["call"]
    a.wait_event_sync("call_state", call=handle, state="CONFIRMED")
    deadline = time.monotonic() + 5.0
    while b.call_status(incoming)["streams"][0]["rx_packets"] < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    b.command_sync("hangup", call=incoming)
    a.wait_event_sync("call_state", call=handle, state="DISCONNECTED")
    b.wait_event_sync("call_state", call=incoming, state="DISCONNECTED")
    assert b.close() == 0  # pjmedia finishes the WAV file asynchronously; after exit it is complete

    with wave.open(str(records / f"{incoming}.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        frames = wav.readframes(wav.getnframes())
    samples = array.array("h", frames)
    assert len(samples) >= 4000
    # Between the first and the last loud sample, a 1 kHz tone changes sign 2000 times a second.
    loud = [i for i, x in enumerate(samples) if abs(x) > 1000]
    assert len(loud) > 2000
    span = samples[loud[0] : loud[-1] + 1]
    signs = [x < 0 for x in span if x != 0]
    crossings = sum(1 for x, y in itertools.pairwise(signs) if x != y)
    assert 1900 < crossings * 8000 / len(span) < 2100


def test_command_errors_are_reported_without_killing_the_peer(pjsua_peer: PeerMaker) -> None:
    peer = pjsua_peer("a")
    with pytest.raises(PeerError, match="no active call"):
        peer.command_sync("hangup", call="c99")
    with pytest.raises(PeerError, match="unknown cmd"):
        peer.command_sync("dance")
    assert re.fullmatch(r"sip:peer@127\.0\.0\.1:\d+", peer.contact)
    assert peer.status()["ports"]["udp"] == peer.ports["udp"]
