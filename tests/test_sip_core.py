"""The sans-I/O UA core: two cores on an in-memory network driven by a fake clock (no sockets)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sip.auth import DigestClient, DigestVerifier, VerifyResult
from sip.core import (
    CallAnswered,
    CallConfirmed,
    CallFailed,
    CallProgress,
    CallState,
    CallTerminated,
    CoreConfig,
    Event,
    IncomingCall,
    ReinviteResult,
    RequestCompleted,
    UserAgentCore,
)
from sip.message import Request, Response, parse_message
from sip.transaction import Address, InviteClientTransaction

SDP_A = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_B = b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"

Raw = Callable[[Request | Response, Address], list[bytes]]


@dataclass
class Node:
    core: UserAgentCore | None
    host: str
    port: int
    events: list[Event] = field(default_factory=list)
    received: list[Request | Response] = field(default_factory=list)
    raw: Raw | None = None  # a scripted peer instead of a core

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


class Net:
    """Delivers every transmit to the node at its destination; ``drop`` decides losses."""

    def __init__(self) -> None:
        self.now = 0.0
        self.nodes: dict[tuple[str, int], Node] = {}
        self.drop: Callable[[bytes, Address, Node], bool] = lambda data, dest, sender: False
        self.wire: list[tuple[float, str, str]] = []  # (time, sender host:port, first line)

    def add(self, port: int, config: CoreConfig | None = None, host: str = "127.0.0.1") -> Node:
        core = UserAgentCore(config or CoreConfig(random_uniform=random.Random(port).uniform))
        core.local_addresses = {"udp": (host, port), "tcp": (host, port)}
        node = Node(core, host, port)
        self.nodes[(host, port)] = node
        return node

    def add_raw(self, port: int, raw: Raw, host: str = "127.0.0.1") -> Node:
        node = Node(None, host, port, raw=raw)
        self.nodes[(host, port)] = node
        return node

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for node in list(self.nodes.values()):
                if node.core is None:
                    continue
                node.events.extend(node.core.events())
                for data, dest in node.core.transmits():
                    moved = True
                    self._deliver(node, data, dest)
            if not moved:
                return
        raise AssertionError("network did not settle")

    def _deliver(self, sender: Node, data: bytes, dest: Address) -> None:
        first = data.split(b"\r\n", 1)[0].decode()
        self.wire.append((self.now, f"{sender.port}", first))
        if self.drop(data, dest, sender):
            return
        target = self.nodes.get((dest[1], dest[2]))
        if target is None:
            return
        source: Address = (dest[0], sender.host, sender.port)
        if target.core is not None:
            target.core.receive_datagram(data, source, self.now)
        else:
            assert target.raw is not None
            msg = parse_message(data)
            target.received.append(msg)
            for reply in target.raw(msg, source):
                self._deliver(target, reply, (dest[0], sender.host, sender.port))

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for node in self.nodes.values():
                if node.core is not None:
                    node.core.handle_timers(self.now)
            self.pump()

    def sent_by(self, node: Node, prefix: str) -> list[float]:
        return [t for t, who, first in self.wire if who == str(node.port) and first.startswith(prefix)]


def answered_call(net: Net, a: Node, b: Node, body: bytes = SDP_A):
    """A calls B, B rings and accepts; returns (A's call, B's call)."""
    call = a.core.invite(f"sip:b@127.0.0.1:{b.port}", body, net.now)  # type: ignore[union-attr]
    net.pump()
    incoming = b.of(IncomingCall)[-1]
    b.core.ringing(incoming.call, net.now)  # type: ignore[union-attr]
    b.core.accept(incoming.call, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    return call, incoming.call


def test_invite_200_ack_bye_sets_up_and_tears_down_the_call() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, call_b = answered_call(net, a, b)
    assert [e.response.status for e in a.of(CallProgress)] == [180]
    assert a.of(CallAnswered)[0].response.body == SDP_B
    assert b.of(IncomingCall)[0].call.remote_sdp == SDP_A
    assert len(b.of(CallConfirmed)) == 1
    assert call_a.state is CallState.CONFIRMED and call_b.state is CallState.CONFIRMED
    assert call_a.dialog.remote_target.port == 5062
    bye = a.core.bye(call_a, net.now)  # type: ignore[union-attr]
    net.pump()
    assert bye is not None and bye.final is not None and bye.final.status == 200
    assert b.of(CallTerminated)[0].by_remote is True
    assert a.of(CallTerminated)[0].reason == "local BYE"
    ladder = [first for _, _, first in a.core.ladder(call_a.call_id)]  # type: ignore[union-attr]
    assert ladder[0].startswith("INVITE") and any(f.startswith("ACK") for f in ladder)
    assert ladder[-1] == "SIP/2.0 200 OK"


def test_bye_from_the_callee_ends_the_call_at_the_caller() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, call_b = answered_call(net, a, b)
    b.core.bye(call_b, net.now)  # type: ignore[union-attr]
    net.pump()
    assert a.of(CallTerminated)[0].reason == "remote BYE"
    assert call_a.terminated


def test_callee_retransmits_200_until_the_ack_arrives() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    acks = {"n": 0}

    def lose_first_ack(data: bytes, dest: Address, sender: Node) -> bool:
        if data.startswith(b"ACK"):
            acks["n"] += 1
            return acks["n"] == 1
        return False

    net.drop = lose_first_ack
    _call_a, call_b = answered_call(net, a, b)
    assert call_b.state is CallState.ANSWERED
    net.advance(0.6)
    assert call_b.state is CallState.CONFIRMED
    assert len(net.sent_by(b, "SIP/2.0 200")) == 2
    assert acks["n"] == 2


def test_callee_without_ack_gives_up_with_bye_after_64_t1() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    net.drop = lambda data, dest, sender: data.startswith(b"ACK")
    answered_call(net, a, b)
    net.advance(33.0, step=0.25)
    assert b.of(CallTerminated)[0].reason == "no ACK"
    assert net.sent_by(b, "BYE")


def test_invite_to_nobody_fails_with_408_after_timer_b() -> None:
    net = Net()
    a = net.add(5061)
    a.core.invite("sip:b@127.0.0.1:5999", SDP_A, net.now)  # type: ignore[union-attr]
    net.pump()
    net.advance(33.0, step=0.25)
    assert [e.response.status for e in a.of(CallFailed)] == [408]
    assert len(net.sent_by(a, "INVITE")) == 7


def test_cancel_before_answer_gives_487_to_caller_and_ends_callee() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a = a.core.invite(f"sip:b@127.0.0.1:{b.port}", SDP_A, net.now)  # type: ignore[union-attr]
    net.pump()
    b.core.ringing(b.of(IncomingCall)[0].call, net.now)  # type: ignore[union-attr]
    net.pump()
    a.core.cancel(call_a, net.now)  # type: ignore[union-attr]
    net.pump()
    assert [e.response.status for e in a.of(CallFailed)] == [487]
    assert b.of(CallTerminated)[0].reason == "cancelled"
    assert call_a.terminated


def test_cancel_waits_for_a_provisional_response() -> None:
    net = Net()
    a = net.add(5061)
    held: list[Request | Response] = []

    def silent(msg: Request | Response, source: Address) -> list[bytes]:
        held.append(msg)
        return []

    net.add_raw(5062, silent)
    call = a.core.invite("sip:b@127.0.0.1:5062", SDP_A, net.now)  # type: ignore[union-attr]
    net.pump()
    a.core.cancel(call, net.now)  # type: ignore[union-attr]
    net.pump()
    assert not net.sent_by(a, "CANCEL")  # §9.1: not before a provisional response
    ringing = Response.for_request(held[0], 180, to_tag="r1")  # type: ignore[arg-type]
    a.core.receive_datagram(bytes(ringing), ("udp", "127.0.0.1", 5062), net.now)  # type: ignore[union-attr]
    net.pump()
    assert net.sent_by(a, "CANCEL")


def test_options_is_answered_with_allow_and_accept() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    req = a.core.request("OPTIONS", f"sip:127.0.0.1:{b.port}", net.now)  # type: ignore[union-attr]
    net.pump()
    assert req.final is not None and req.final.status == 200
    assert "INVITE" in req.final.allow and "UPDATE" in req.final.allow
    assert req.final.headers.get("Accept") == "application/sdp"
    assert a.of(RequestCompleted)[0].response.status == 200


def raw_request(method: str, extra: str = "", *, call_id: str = "x1", to_tag: str = "") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:vfax@127.0.0.1:5062 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK" + call_id + method + "\r\n"
        "From: <sip:scan@127.0.0.1>;tag=s1\r\n"
        f"To: <sip:vfax@127.0.0.1>{tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:scan@127.0.0.1:5070>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answer_to(node: Node, data: bytes, net: Net) -> Response:
    node.core.receive_datagram(data, ("udp", "127.0.0.1", 5070), net.now)  # type: ignore[union-attr]
    out = node.core.transmits()  # type: ignore[union-attr]
    finals = [parse_message(d) for d, _ in out]
    finals = [m for m in finals if isinstance(m, Response) and m.status >= 200]
    assert len(finals) == 1, finals
    return finals[0]  # type: ignore[return-value]


def test_unknown_method_gets_405_with_allow() -> None:
    net = Net()
    b = net.add(5062)
    resp = answer_to(b, raw_request("MESSAGE"), net)
    assert resp.status == 405
    assert "INVITE" in resp.allow and "BYE" in resp.allow


def test_required_extension_we_lack_gets_420_with_unsupported() -> None:
    net = Net()
    b = net.add(5062)
    resp = answer_to(b, raw_request("INVITE", "Require: precondition\r\nSupported: timer\r\n"), net)
    assert resp.status == 420
    assert resp.unsupported == ["precondition"]


def test_supported_extensions_we_lack_are_ignored() -> None:
    net = Net()
    b = net.add(5062)
    b.core.receive_datagram(  # type: ignore[union-attr]
        raw_request("INVITE", "Supported: 100rel, replaces, norefersub\r\n"),
        ("udp", "127.0.0.1", 5070),
        net.now,
    )
    assert len(b.core.events()) == 1  # type: ignore[union-attr]


def test_request_missing_call_id_gets_400_with_reason() -> None:
    net = Net()
    b = net.add(5062)
    data = raw_request("OPTIONS").replace(b"Call-ID: x1\r\n", b"")
    resp = answer_to(b, data, net)
    assert resp.status == 400
    assert "Call-ID" in resp.reason


def test_cseq_method_mismatch_gets_400() -> None:
    net = Net()
    b = net.add(5062)
    resp = answer_to(b, raw_request("OPTIONS").replace(b"1 OPTIONS", b"1 INVITE"), net)
    assert resp.status == 400


def test_bye_for_unknown_dialog_gets_481() -> None:
    net = Net()
    b = net.add(5062)
    assert answer_to(b, raw_request("BYE", to_tag="nope"), net).status == 481


def test_garbage_and_stray_responses_are_dropped_silently() -> None:
    net = Net()
    b = net.add(5062)
    core = b.core
    assert core is not None
    for junk in (
        b"\x00\xff" * 50,
        b"hello",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"\r\n\r\n",
        b"INVITE x SIP/2.0\r\n\r\n",
    ):
        core.receive_datagram(junk, ("udp", "127.0.0.1", 5070), net.now)
    stray = Response.for_request(Request.parse(raw_request("OPTIONS")), 200)
    core.receive_datagram(bytes(stray), ("udp", "127.0.0.1", 5070), net.now)
    assert core.transmits() == [] and core.events() == []
    assert core.stats["dropped"] >= 5


def test_invite_from_outside_the_allow_list_is_forbidden() -> None:
    net = Net()
    b = net.add(5062, CoreConfig(invite_allow_list=frozenset({"10.0.0.1"})))
    assert answer_to(b, raw_request("INVITE"), net).status == 403
    assert b.core.events() == []  # type: ignore[union-attr]


def test_retransmitted_request_is_absorbed_and_answered_again() -> None:
    net = Net()
    b = net.add(5062)
    first = answer_to(b, raw_request("OPTIONS"), net)
    again = answer_to(b, raw_request("OPTIONS"), net)
    assert first.status == again.status == 200
    assert b.core.stats["received"] == 2  # type: ignore[union-attr]


def test_invite_digest_auth_as_uac_retries_after_407() -> None:
    net = Net()
    a = net.add(5061)
    verifier = DigestVerifier("vfax.test", {"1001": "secret1001"}, algorithm="SHA-256")
    outcome: list[VerifyResult] = []

    def proxy(msg: Request | Response, source: Address) -> list[bytes]:
        if not isinstance(msg, Request) or msg.method == "ACK":
            return []
        cred = msg.headers.get("Proxy-Authorization")
        if cred is None:
            resp = Response.for_request(msg, 407, to_tag="p1")
            resp.headers.add("Proxy-Authenticate", verifier.challenge())
            return [bytes(resp)]
        outcome.append(verifier.verify(msg.method, cred))
        ok = Response.for_request(msg, 200, to_tag="p2")
        ok.headers.add("Contact", "<sip:peer@127.0.0.1:5063>")
        return [bytes(ok)]

    net.add_raw(5063, proxy)
    auth = DigestClient("1001", "secret1001")
    call = a.core.invite("sip:1002@vfax.test", SDP_A, net.now, proxy="sip:127.0.0.1:5063", auth=auth)  # type: ignore[union-attr]
    net.pump()
    assert outcome == [VerifyResult.OK]
    assert a.of(CallAnswered) and call.state is CallState.CONFIRMED
    assert call.invite is not None and call.invite.cseq[0] == 2  # a new CSeq for the new INVITE (§22.2)
    assert [first.split()[0] for _, who, first in net.wire if who == "5061"] == [
        "INVITE",
        "ACK",
        "INVITE",
        "ACK",
    ]


def test_wrong_password_is_reported_not_looped() -> None:
    net = Net()
    a = net.add(5061)
    verifier = DigestVerifier("vfax.test", {"1001": "secret1001"})

    def registrar(msg: Request | Response, source: Address) -> list[bytes]:
        assert isinstance(msg, Request)
        cred = msg.headers.get("Authorization")
        if cred is None or verifier.verify(msg.method, cred) is not VerifyResult.OK:
            resp = Response.for_request(msg, 401, to_tag="r")
            resp.headers.add("WWW-Authenticate", verifier.challenge())
            return [bytes(resp)]
        return [bytes(Response.for_request(msg, 200, to_tag="r"))]

    net.add_raw(5063, registrar)
    req = a.core.request(  # type: ignore[union-attr]
        "REGISTER",
        "sip:127.0.0.1:5063",
        net.now,
        auth=DigestClient("1001", "wrong"),
        to="<sip:1001@vfax.test>",
    )
    net.pump()
    assert req.final is not None and req.final.status == 401
    assert len([m for m in net.wire if m[2].startswith("REGISTER")]) == 2


def test_two_hundred_simultaneous_calls_in_one_core_pair() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    calls = [a.core.invite(f"sip:b@127.0.0.1:{b.port}", SDP_A, net.now) for _ in range(200)]  # type: ignore[union-attr]
    net.pump()
    for inc in b.of(IncomingCall):
        b.core.accept(inc.call, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    assert all(c.state is CallState.CONFIRMED for c in calls)
    assert b.core.active_calls == 200  # type: ignore[union-attr]
    for c in calls:
        a.core.bye(c, net.now)  # type: ignore[union-attr]
    net.pump()
    assert b.core.active_calls == 0  # type: ignore[union-attr]
    net.advance(40.0, step=1.0)
    assert len(a.core.layer) == 0 and len(b.core.layer) == 0  # type: ignore[union-attr]
    assert a.core.calls == {} and b.core.calls == {}  # type: ignore[union-attr]


def test_outbound_proxy_receives_out_of_dialog_requests_with_a_preloaded_route() -> None:
    net = Net()
    a = net.add(5061, CoreConfig(outbound_proxy="sip:127.0.0.1:5063"))

    def proxy(msg: Request | Response, source: Address) -> list[bytes]:
        assert isinstance(msg, Request)
        return [bytes(Response.for_request(msg, 200, to_tag="p"))]

    p = net.add_raw(5063, proxy)
    req = a.core.request("OPTIONS", "sip:far@example.test", net.now)  # type: ignore[union-attr]
    net.pump()
    assert req.final is not None and req.final.status == 200
    got = p.received[0]
    assert isinstance(got, Request) and str(got.uri) == "sip:far@example.test"
    assert got.headers.values("Route") == ["<sip:127.0.0.1:5063;lr>"]


def test_merged_request_arriving_by_a_second_path_gets_482() -> None:
    net = Net()
    b = net.add(5062)
    b.core.receive_datagram(raw_request("INVITE"), ("udp", "127.0.0.1", 5070), net.now)  # type: ignore[union-attr]
    assert len(b.core.events()) == 1  # type: ignore[union-attr]
    b.core.transmits()  # type: ignore[union-attr]
    forked = raw_request("INVITE").replace(b"branch=z9hG4bKx1INVITE", b"branch=z9hG4bKother")
    assert answer_to(b, forked, net).status == 482
    assert b.core.events() == []  # type: ignore[union-attr]


def test_large_request_switches_to_tcp() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    big = SDP_A + b"a=x-padding:" + b"p" * 1400 + b"\r\n"
    call = a.core.invite(f"sip:b@127.0.0.1:{b.port}", big, net.now)  # type: ignore[union-attr]
    assert call.transport == "tcp"
    assert call.invite is not None and call.invite.via.transport == "TCP"
    net.pump()
    assert b.of(IncomingCall)[0].source[0] == "tcp"


def test_cancelled_reinvite_gets_487_and_the_call_stays_up() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, call_b = answered_call(net, a, b)
    oreq = a.core.reinvite(call_a, SDP_A.replace(b"1 1", b"1 2"), net.now)  # type: ignore[union-attr]
    net.pump()
    assert call_b.reinvite_in is not None
    assert isinstance(oreq.txn, InviteClientTransaction)
    cancel = oreq.txn.cancel_request()
    b.core.receive_datagram(bytes(cancel), ("udp", "127.0.0.1", 5061), net.now)  # type: ignore[union-attr]
    sent = [parse_message(d) for d, _ in b.core.transmits()]  # type: ignore[union-attr]
    assert sorted(m.status for m in sent if isinstance(m, Response)) == [200, 487]
    assert call_b.reinvite_in is None and call_b.state is CallState.CONFIRMED


def test_unanswered_ringing_invite_is_cancelled_after_the_invite_timeout() -> None:
    net = Net()
    a = net.add(5061, CoreConfig(invite_timeout=60))
    b = net.add(5062)
    call = a.core.invite(f"sip:b@127.0.0.1:{b.port}", SDP_A, net.now)  # type: ignore[union-attr]
    net.pump()
    b.core.ringing(b.of(IncomingCall)[0].call, net.now)  # type: ignore[union-attr]
    net.pump()
    net.advance(61.0, step=0.5)
    assert [e.response.status for e in a.of(CallFailed)] == [487]
    assert call.terminated and b.of(CallTerminated)[0].reason == "cancelled"


def test_peer_that_never_answers_the_cancel_is_given_up_with_408() -> None:
    net = Net()
    a = net.add(5061, CoreConfig(invite_timeout=60))

    def rings_forever(msg: Request | Response, source: Address) -> list[bytes]:
        if isinstance(msg, Request) and msg.method == "INVITE":
            return [bytes(Response.for_request(msg, 180, to_tag="r"))]
        return []

    net.add_raw(5063, rings_forever)
    a.core.invite("sip:b@127.0.0.1:5063", SDP_A, net.now)  # type: ignore[union-attr]
    net.pump()
    net.advance(95.0, step=0.5)
    assert net.sent_by(a, "CANCEL")
    assert [e.response.status for e in a.of(CallFailed)] == [408]


def test_2xx_without_contact_fails_the_call_with_502() -> None:
    net = Net()
    a = net.add(5061)

    def broken(msg: Request | Response, source: Address) -> list[bytes]:
        if isinstance(msg, Request) and msg.method == "INVITE":
            return [bytes(Response.for_request(msg, 200, to_tag="r"))]
        return []

    net.add_raw(5063, broken)
    a.core.invite("sip:b@127.0.0.1:5063", SDP_A, net.now)  # type: ignore[union-attr]
    net.pump()
    assert [e.response.status for e in a.of(CallFailed)] == [502]


@pytest.mark.parametrize("seed", range(12))
def test_call_setup_reinvite_and_teardown_survive_25_percent_loss(seed: int) -> None:
    net = Net()
    rng = random.Random(seed)
    net.drop = lambda data, dest, sender: rng.random() < 0.25
    a, b = net.add(5061), net.add(5062)
    call_a = a.core.invite(f"sip:b@127.0.0.1:{b.port}", SDP_A, net.now)  # type: ignore[union-attr]
    for _ in range(400):
        net.advance(0.1)
        for inc in b.of(IncomingCall):
            if inc.call.state is CallState.INCOMING:
                b.core.accept(inc.call, SDP_B, net.now)  # type: ignore[union-attr]
        if call_a.state is CallState.CONFIRMED and b.of(CallConfirmed):
            break
    call_b = b.of(IncomingCall)[0].call
    assert call_a.state is CallState.CONFIRMED and call_b.state is CallState.CONFIRMED
    assert len(b.of(IncomingCall)) == 1  # retransmitted INVITEs were absorbed, not new calls
    a.core.reinvite(call_a, SDP_A.replace(b"1 1", b"1 2"), net.now)  # type: ignore[union-attr]
    for _ in range(400):
        net.advance(0.1)
        if call_b.reinvite_in is not None and call_b.ok is None and call_b.reinvite_in_request is not None:
            b.core.answer_reinvite(call_b, 200, net.now, SDP_B)  # type: ignore[union-attr]
        if a.of(ReinviteResult):
            break
    assert [e.response.status for e in a.of(ReinviteResult)] == [200]
    bye = a.core.bye(call_a, net.now)  # type: ignore[union-attr]
    net.advance(40.0, step=0.1)
    assert b.of(CallTerminated) and b.of(CallTerminated)[0].reason == "remote BYE"
    assert bye is not None and bye.final is not None and bye.final.status in (200, 408)
