"""RFC 3262 100rel/PRACK in the sans-I/O core, as callee and as caller (virtual time, no sockets).

Our core as UAS faces a scripted UAC (raw bytes in, everything our core sends recorded), our core as UAC
faces a scripted UAS; both cores together check the whole exchange. Times are the fake clock's.
"""

from __future__ import annotations

import pytest

from sip.core import CallAnswered, CallProgress, CallState, CallTerminated, CoreConfig, IncomingCall
from sip.message import Headers, Request, Response
from sip.transaction import Address
from tests.test_sip_core import SDP_A, SDP_B, Net, Node

UAC_PORT = 5070


# ---------------------------------------------------------------------------------------------- UAS


def invite(extra: str = "Require: 100rel\r\n", body: bytes = SDP_A, call_id: str = "p1") -> bytes:
    return (
        "INVITE sip:vfax@127.0.0.1:5062 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{UAC_PORT};branch=z9hG4bK{call_id}inv\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:peer@127.0.0.1>;tag=u1\r\n"
        "To: <sip:vfax@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 10 INVITE\r\n"
        f"Contact: <sip:peer@127.0.0.1:{UAC_PORT}>\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def prack(to_tag: str, rack: str, *, cseq: int = 11, branch: str = "pr1", call_id: str = "p1") -> bytes:
    return (
        "PRACK sip:vfax@127.0.0.1:5062 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{UAC_PORT};branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:peer@127.0.0.1>;tag=u1\r\n"
        f"To: <sip:vfax@127.0.0.1>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} PRACK\r\n"
        f"RAck: {rack}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Uac:
    """A scripted caller at port 5070 that records what our core (port 5062) sends it."""

    def __init__(self, net: Net, config: CoreConfig | None = None) -> None:
        self.net = net
        self.b = net.add(5062, config)
        self.node = net.add_raw(UAC_PORT, self._got)

    def _got(self, msg: Request | Response, source: Address) -> list[bytes]:
        return []

    def send(self, data: bytes) -> None:
        self.net._deliver(self.node, data, ("udp", "127.0.0.1", 5062))
        self.net.pump()

    def responses(self, status: int | None = None) -> list[Response]:
        out = [m for m in self.node.received if isinstance(m, Response)]
        return [r for r in out if status is None or r.status == status]

    def incoming(self):
        return self.b.of(IncomingCall)[-1].call


def rack_of(resp: Response) -> str:
    return f"{resp.headers.get('RSeq')} {resp.cseq[0]} {resp.cseq[1]}"


def test_180_is_reliable_when_the_invite_requires_100rel_not_420_and_only_then() -> None:
    uac = Uac(Net())
    uac.send(invite())
    assert not uac.responses(420)
    call = uac.incoming()
    uac.b.core.ringing(call, uac.net.now)  # type: ignore[union-attr]
    uac.net.pump()
    (ringing,) = uac.responses(180)
    assert [t.lower() for t in ringing.require] == ["100rel"]
    rseq = int(ringing.headers.get("RSeq") or "0")
    assert 1 <= rseq < 2**31
    assert ringing.to.tag == call.local_tag and ringing.contact is not None
    # an INVITE that only supports 100rel gets ordinary provisional responses (our choice, RFC 3262 §3 MAY)
    uac.send(invite("Supported: 100rel, timer\r\n", call_id="p2"))
    uac.b.core.ringing(uac.incoming(), uac.net.now)  # type: ignore[union-attr]
    uac.net.pump()
    plain = [r for r in uac.responses(180) if r.call_id == "p2"]
    assert len(plain) == 1 and not plain[0].require and plain[0].headers.get("RSeq") is None


def test_callee_retransmits_the_reliable_180_from_t1_doubling_and_gives_up_with_500() -> None:
    net = Net()
    uac = Uac(net)
    uac.send(invite())
    call = uac.incoming()
    uac.b.core.ringing(call, net.now)  # type: ignore[union-attr]
    net.pump()
    net.advance(40.0, step=0.25)
    times = net.sent_by(uac.b, "SIP/2.0 180")
    # RFC 3262 §3: T1, doubling without the T2 cap of a 2xx, for 64*T1 (T1 = 0.5 s)
    assert times == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert {r.headers.get("RSeq") for r in uac.responses(180)} == {uac.responses(180)[0].headers.get("RSeq")}
    assert net.sent_by(uac.b, "SIP/2.0 500")[0] == pytest.approx(32.0)
    assert uac.responses(500)[0].reason == "No PRACK"
    assert uac.b.of(CallTerminated)[0].reason == "no PRACK"
    assert call.state is CallState.TERMINATED


def test_prack_matching_the_rack_gets_200_and_stops_retransmissions_others_481() -> None:
    net = Net()
    uac = Uac(net)
    uac.send(invite())
    call = uac.incoming()
    uac.b.core.ringing(call, net.now)  # type: ignore[union-attr]
    net.pump()
    (ringing,) = uac.responses(180)
    rseq = int(ringing.headers.get("RSeq") or "0")
    uac.send(prack(call.local_tag, f"{rseq + 1} 10 INVITE", branch="bad1"))  # no such RSeq
    uac.send(prack(call.local_tag, f"{rseq} 9 INVITE", cseq=12, branch="bad2"))  # wrong CSeq-num
    uac.send(prack("other", rack_of(ringing), cseq=13, branch="bad3"))  # another dialog
    assert [r.cseq[1] for r in uac.responses(481)] == ["PRACK"] * 3
    assert not uac.responses(200)
    uac.send(prack(call.local_tag, rack_of(ringing), cseq=14, branch="good"))
    assert [(r.status, r.cseq[1]) for r in uac.responses(200)] == [(200, "PRACK")]
    uac.send(prack(call.local_tag, rack_of(ringing), cseq=14, branch="good"))  # retransmitted PRACK
    assert len(uac.responses(200)) == 2  # the transaction answers it again, nothing new
    uac.send(prack(call.local_tag, rack_of(ringing), cseq=15, branch="again"))  # acknowledged already
    assert len(uac.responses(481)) == 4
    net.advance(40.0)
    assert len(net.sent_by(uac.b, "SIP/2.0 180")) == 1
    assert not uac.responses(500) and call.state is CallState.INCOMING
    uac.b.core.accept(call, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    assert [r.cseq[1] for r in uac.responses(200)][-1] == "INVITE"


def test_second_reliable_provisional_waits_for_the_prack_of_the_first() -> None:
    net = Net()
    uac = Uac(net)
    uac.send(invite())
    call = uac.incoming()
    uac.b.core.ringing(call, net.now, 183)  # type: ignore[union-attr]
    uac.b.core.ringing(call, net.now, 180)  # type: ignore[union-attr]
    net.pump()
    assert [r.status for r in uac.responses() if r.status > 100] == [183]
    first = uac.responses(183)[0]
    uac.send(prack(call.local_tag, rack_of(first)))
    (second,) = uac.responses(180)
    assert int(second.headers.get("RSeq") or "0") == int(first.headers.get("RSeq") or "0") + 1
    assert [t.lower() for t in second.require] == ["100rel"]


def test_2xx_is_held_until_the_prack_of_a_reliable_183_with_sdp() -> None:
    net = Net()
    uac = Uac(net)
    uac.send(invite())
    call = uac.incoming()
    uac.b.core.ringing(call, net.now, 183, SDP_B)  # type: ignore[union-attr]
    uac.b.core.accept(call, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    assert not uac.responses(200) and call.state is CallState.INCOMING
    uac.send(prack(call.local_tag, rack_of(uac.responses(183)[0])))
    assert [r.cseq[1] for r in uac.responses(200)] == ["PRACK", "INVITE"]
    assert uac.responses(200)[1].body == SDP_B and call.state is CallState.ANSWERED


def test_2xx_without_sdp_in_the_18x_goes_at_once_and_the_18x_stops() -> None:
    net = Net()
    uac = Uac(net)
    uac.send(invite())
    call = uac.incoming()
    uac.b.core.ringing(call, net.now)  # type: ignore[union-attr]
    uac.b.core.accept(call, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    assert [r.cseq[1] for r in uac.responses(200)] == ["INVITE"]
    net.advance(3.0)
    assert len(net.sent_by(uac.b, "SIP/2.0 180")) == 1
    # §3: a PRACK for the response still outstanding is answered 200 after the final response
    uac.send(prack(call.local_tag, rack_of(uac.responses(180)[0])))
    assert [r.cseq[1] for r in uac.responses(200)][-1] == "PRACK"


def test_prack_is_allowed_and_100rel_supported_and_other_extensions_get_420() -> None:
    net = Net()
    uac = Uac(net)
    uac.send(invite("Require: 100rel, foo\r\n"))
    (refusal,) = uac.responses(420)
    assert refusal.unsupported == ["foo"]
    options_request = invite("", call_id="p2").replace(b"INVITE sip", b"OPTIONS sip")
    uac.send(options_request.replace(b"10 INVITE", b"1 OPTIONS"))
    (options,) = uac.responses(200)
    assert "PRACK" in options.allow and "100rel" in options.supported


# ---------------------------------------------------------------------------------------------- UAC


def response(req: Request, status: int, *, rseq: int | None = None, body: bytes = b"") -> bytes:
    resp = Response.for_request(req, status, to_tag="callee")
    resp.headers.add("Contact", "<sip:b@127.0.0.1:5063>")
    if rseq is not None:
        resp.headers.add("Require", "100rel")
        resp.headers.add("RSeq", str(rseq))
    if body:
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = body
    return bytes(resp)


OK = 0  # in a script: 200 to the request itself (a PRACK), not a response to the INVITE


class Uas:
    """A scripted callee at port 5063: ``script[(method, n)]`` lists what to send on the n-th such request
    (responses to the INVITE: status, RSeq or None, body; or ``OK``)."""

    def __init__(self, net: Net, config: CoreConfig | None = None) -> None:
        self.net = net
        self.a = net.add(5061, config)
        self.node: Node = net.add_raw(5063, self._got)
        self.invite: Request | None = None
        self.script: dict[tuple[str, int], list[tuple[int, int | None, bytes]]] = {}
        self.seen: dict[str, int] = {}

    def _got(self, msg: Request | Response, source: Address) -> list[bytes]:
        if not isinstance(msg, Request):
            return []
        if msg.method == "INVITE":
            self.invite = msg
        n = self.seen[msg.method] = self.seen.get(msg.method, 0) + 1
        out = []
        for status, rseq, body in self.script.get((msg.method, n), []):
            if status == OK:
                out.append(bytes(Response.for_request(msg, 200, "OK")))
            else:
                assert self.invite is not None
                out.append(response(self.invite, status, rseq=rseq, body=body))
        return out

    def pracks(self) -> list[Request]:
        return [m for m in self.node.received if isinstance(m, Request) and m.method == "PRACK"]

    def call(self):
        call = self.a.core.invite("sip:b@127.0.0.1:5063", SDP_A, self.net.now)  # type: ignore[union-attr]
        self.net.pump()
        return call


def test_caller_advertises_100rel_and_pracks_a_reliable_180_then_takes_the_200() -> None:
    net = Net()
    uas = Uas(net)
    uas.script[("INVITE", 1)] = [(100, None, b""), (180, 5, b"")]
    uas.script[("PRACK", 1)] = [(OK, None, b""), (200, None, SDP_B)]
    call = uas.call()
    assert uas.invite is not None and "100rel" in [s.lower() for s in uas.invite.supported]
    (pr,) = uas.pracks()
    assert pr.headers.get("RAck") == "5 1 INVITE"
    assert pr.cseq == (2, "PRACK") and pr.to.tag == "callee" and pr.from_.tag == call.local_tag
    assert str(pr.uri) == "sip:b@127.0.0.1:5063"  # the early dialog's remote target
    assert [e.response.status for e in uas.a.of(CallProgress)] == [180]
    assert uas.a.of(CallAnswered) and call.state is CallState.CONFIRMED and call.remote_sdp == SDP_B
    bye = uas.a.core.bye(call, net.now)  # type: ignore[union-attr]
    assert bye is not None and bye.request.cseq == (3, "BYE")  # after the PRACK's CSeq
    ladder = [line for _, _, line in uas.a.core.ladder(call.call_id)]  # type: ignore[union-attr]
    first_200 = next(i for i, line in enumerate(ladder) if line.startswith("SIP/2.0 200"))
    assert ladder.index("PRACK sip:b@127.0.0.1:5063 SIP/2.0") < first_200


def test_duplicate_and_out_of_order_reliable_provisionals_are_not_pracked() -> None:
    net = Net()
    uas = Uas(net)
    # 180 RSeq 5, its retransmission, then 183 RSeq 7 (6 skipped): one PRACK, one CallProgress
    uas.script[("INVITE", 1)] = [(180, 5, b""), (180, 5, b""), (183, 7, b"")]
    # the PRACK's 200, then 183 RSeq 6 (in order now): PRACKed; its PRACK brings the 200 to the INVITE
    uas.script[("PRACK", 1)] = [(OK, None, b""), (183, 6, b"")]
    uas.script[("PRACK", 2)] = [(OK, None, b""), (200, None, SDP_B)]
    call = uas.call()
    assert [p.headers.get("RAck") for p in uas.pracks()] == ["5 1 INVITE", "6 1 INVITE"]
    assert [p.cseq[0] for p in uas.pracks()] == [2, 3]
    assert [e.response.status for e in uas.a.of(CallProgress)] == [180, 183]
    assert call.state is CallState.CONFIRMED


def test_lost_prack_is_retransmitted_by_its_transaction() -> None:
    net = Net()
    uas = Uas(net)
    uas.script[("INVITE", 1)] = [(180, 1, b"")]
    lost = {"n": 0}

    def lose_first_prack(data: bytes, dest: Address, sender: Node) -> bool:
        if data.startswith(b"PRACK"):
            lost["n"] += 1
            return lost["n"] == 1
        return False

    net.drop = lose_first_prack
    uas.call()
    assert not uas.pracks()
    net.advance(0.6)
    (pr,) = uas.pracks()
    assert pr.headers.get("RAck") == "1 1 INVITE" and lost["n"] == 2
    assert len(net.sent_by(uas.a, "PRACK")) == 2


def test_answer_in_a_reliable_183_stands_when_the_200_has_no_sdp() -> None:
    net = Net()
    uas = Uas(net)
    uas.script[("INVITE", 1)] = [(183, 40, SDP_B)]
    uas.script[("PRACK", 1)] = [(OK, None, b""), (200, None, b"")]
    call = uas.call()
    assert call.state is CallState.CONFIRMED and call.remote_sdp == SDP_B


def test_unreliable_180_is_not_pracked_and_100rel_can_be_left_out() -> None:
    net = Net()
    uas = Uas(net, CoreConfig(offer_100rel=False))
    uas.script[("INVITE", 1)] = [(180, None, b""), (200, None, SDP_B)]
    call = uas.call()
    assert uas.invite is not None and "100rel" not in [s.lower() for s in uas.invite.supported]
    assert not uas.pracks() and call.state is CallState.CONFIRMED


# ---------------------------------------------------------------------------------------------- both


def test_two_cores_caller_requiring_100rel_rings_pracks_and_answers() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a = a.core.invite(  # type: ignore[union-attr]
        "sip:b@127.0.0.1:5062", SDP_A, net.now, headers=Headers([("Require", "100rel")])
    )
    net.pump()
    call_b = b.of(IncomingCall)[0].call
    b.core.ringing(call_b, net.now)  # type: ignore[union-attr]
    net.pump()
    b.core.accept(call_b, SDP_B, net.now)  # type: ignore[union-attr]
    net.pump()
    assert call_a.state is CallState.CONFIRMED and call_b.state is CallState.CONFIRMED
    wire = [line for _, _, line in net.wire]
    assert wire == [
        "INVITE sip:b@127.0.0.1:5062 SIP/2.0",
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "PRACK sip:vfax@127.0.0.1:5062 SIP/2.0",
        "SIP/2.0 200 OK",
        "SIP/2.0 200 OK",
        "ACK sip:vfax@127.0.0.1:5062 SIP/2.0",
    ]
    net.advance(40.0)
    assert call_a.state is CallState.CONFIRMED and len(net.sent_by(b, "SIP/2.0 180")) == 1
