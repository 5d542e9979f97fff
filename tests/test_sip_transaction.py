"""RFC 3261 §17 transactions on a fake clock: retransmissions, timeouts, absorption, ACK for non-2xx."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sip.message import Request, Response, parse_message
from sip.timers import TimerQueue, TimerValues
from sip.transaction import (
    Address,
    ClientTransaction,
    InviteClientTransaction,
    ServerTransaction,
    State,
    TransactionLayer,
)

UDP: Address = ("udp", "127.0.0.1", 5060)
TCP: Address = ("tcp", "127.0.0.1", 5060)


def make_request(method: str = "INVITE", branch: str = "z9hG4bKabc", cseq: int = 1) -> Request:
    return Request.parse(
        (
            f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=1234\r\n"
            "To: <sip:bob@127.0.0.1>\r\n"
            "Call-ID: call-1@127.0.0.1\r\n"
            f"CSeq: {cseq} {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )


def response_to(req: Request, status: int, to_tag: str = "t1") -> Response:
    return parse_message(bytes(Response.for_request(req, status, to_tag=to_tag)))  # type: ignore[return-value]


@dataclass
class Recorder:
    """Plays the TU and the wire: records what the transactions sent and told."""

    sent: list[tuple[str, Address, bool]] = field(default_factory=list)
    responses: list[int] = field(default_factory=list)
    timeouts: int = 0
    terminated: int = 0

    def send(self, msg: Request | Response, dest: Address, retrans: bool) -> None:
        first = msg.method if isinstance(msg, Request) else str(msg.status)
        self.sent.append((first, dest, retrans))

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        self.responses.append(response.status)

    def on_timeout(self, txn: ClientTransaction | ServerTransaction, now: float) -> None:
        self.timeouts += 1

    def on_terminated(self, txn: ClientTransaction | ServerTransaction) -> None:
        self.terminated += 1

    def firsts(self) -> list[str]:
        return [s[0] for s in self.sent]


class Clock:
    def __init__(self, layer: TransactionLayer) -> None:
        self.now = 0.0
        self.layer = layer

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            self.layer.timers.fire(self.now)


def setup() -> tuple[TransactionLayer, Recorder, Clock]:
    rec = Recorder()
    layer = TransactionLayer(rec.send, TimerQueue(), TimerValues())
    return layer, rec, Clock(layer)


def test_invite_client_retransmits_with_doubling_timer_a_then_times_out_with_timer_b() -> None:
    layer, rec, clock = setup()
    layer.start_client(make_request(), UDP, rec, clock.now)
    clock.advance(31.0)
    # sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 would be next: 6 so far
    assert rec.firsts() == ["INVITE"] * 6
    assert rec.timeouts == 0
    clock.advance(1.5)
    assert rec.timeouts == 1
    assert len(layer) == 0


def test_invite_client_over_tcp_never_retransmits() -> None:
    layer, rec, clock = setup()
    layer.start_client(make_request(), TCP, rec, clock.now)
    clock.advance(40.0, step=0.5)
    assert rec.firsts() == ["INVITE"]
    assert rec.timeouts == 1


def test_provisional_stops_invite_retransmissions() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_client(req, UDP, rec, clock.now)
    layer.match_response(response_to(req, 100)).receive(response_to(req, 100), clock.now)  # type: ignore[union-attr]
    clock.advance(10.0)
    assert rec.firsts() == ["INVITE"]
    assert txn.state is State.PROCEEDING
    assert rec.responses == [100]


def test_non_2xx_final_is_acked_inside_transaction_and_retransmissions_re_acked() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_client(req, UDP, rec, clock.now)
    resp = response_to(req, 486)
    txn.receive(resp, clock.now)
    txn.receive(resp, clock.now + 0.1)
    assert rec.firsts() == ["INVITE", "ACK", "ACK"]
    assert rec.responses == [486]  # the retransmission is absorbed
    assert isinstance(txn, InviteClientTransaction) and txn.ack is not None
    ack = txn.ack
    assert ack.via.branch == req.via.branch  # §17.1.1.3: same branch as the INVITE
    assert ack.cseq == (1, "ACK")
    assert ack.to.tag == "t1"
    clock.advance(33.0)
    assert txn.state is State.TERMINATED and len(layer) == 0


def test_2xx_goes_up_each_time_while_accepted() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_client(req, UDP, rec, clock.now)
    ok = response_to(req, 200)
    txn.receive(ok, clock.now)
    txn.receive(ok, clock.now)
    assert rec.responses == [200, 200]  # RFC 6026: the TU ACKs every retransmitted 2xx
    assert "ACK" not in rec.firsts()
    clock.advance(33.0)
    assert len(layer) == 0


def test_non_invite_client_retransmits_capped_at_t2_and_times_out() -> None:
    layer, rec, clock = setup()
    layer.start_client(make_request("OPTIONS"), UDP, rec, clock.now)
    clock.advance(31.9)
    # 0, .5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5
    assert len(rec.sent) == 11
    assert rec.timeouts == 0
    clock.advance(0.2)
    assert rec.timeouts == 1


def test_non_invite_client_absorbs_retransmitted_final_then_terminates_after_timer_k() -> None:
    layer, rec, clock = setup()
    req = make_request("OPTIONS")
    txn = layer.start_client(req, UDP, rec, clock.now)
    txn.receive(response_to(req, 200), clock.now)
    txn.receive(response_to(req, 200), clock.now)
    assert rec.responses == [200]
    clock.advance(4.9)
    assert txn.state is State.COMPLETED
    clock.advance(0.2)
    assert txn.state is State.TERMINATED


def test_response_matching_uses_branch_and_method() -> None:
    layer, rec, clock = setup()
    req = make_request()
    layer.start_client(req, UDP, rec, clock.now)
    stray = response_to(make_request(branch="z9hG4bKother"), 200)
    assert layer.match_response(stray) is None
    cancel_resp = response_to(make_request("CANCEL"), 200)
    assert layer.match_response(cancel_resp) is None  # same branch, other method: another transaction


def test_invite_server_absorbs_retransmitted_invite_by_resending_last_response() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_server(req, UDP, rec, clock.now)
    txn.respond(Response.for_request(req, 180, to_tag="x"), clock.now)
    again = layer.match_request(make_request())
    assert again is txn
    assert txn.receive_retransmission(make_request(), clock.now) is False
    assert rec.firsts() == ["180", "180"]


def test_invite_server_retransmits_error_until_ack_then_stops() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_server(req, UDP, rec, clock.now)
    txn.respond(Response.for_request(req, 486, to_tag="x"), clock.now)
    clock.advance(1.6)
    assert rec.firsts() == ["486"] * 3  # 0, 0.5, 1.5 (Timer G)
    ack = make_request("ACK")
    assert layer.match_request(ack) is txn
    txn.receive_retransmission(ack, clock.now)
    assert txn.state is State.CONFIRMED
    clock.advance(4.0)
    assert rec.firsts() == ["486"] * 3
    clock.advance(1.1)
    assert txn.state is State.TERMINATED
    assert rec.timeouts == 0


def test_invite_server_without_ack_times_out_with_timer_h() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_server(req, UDP, rec, clock.now)
    txn.respond(Response.for_request(req, 500, to_tag="x"), clock.now)
    clock.advance(32.1, step=0.1)
    assert rec.timeouts == 1
    assert txn.state is State.TERMINATED
    intervals = [s for s in rec.sent if s[0] == "500"]
    assert len(intervals) == 11  # 0, .5, 1.5, 3.5, 7.5, 11.5, ... capped at T2


def test_invite_server_2xx_is_accepted_and_retransmitted_invite_is_absorbed_silently() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_server(req, UDP, rec, clock.now)
    txn.respond(Response.for_request(req, 200, to_tag="x"), clock.now)
    assert txn.state is State.ACCEPTED
    txn.receive_retransmission(make_request(), clock.now)
    assert rec.firsts() == ["200"]
    clock.advance(32.1, step=0.5)
    assert txn.state is State.TERMINATED


def test_non_invite_server_resends_final_for_retransmitted_request_until_timer_j() -> None:
    layer, rec, clock = setup()
    req = make_request("OPTIONS")
    txn = layer.start_server(req, UDP, rec, clock.now)
    assert txn.receive_retransmission(req, clock.now) is False
    assert rec.sent == []  # Trying: nothing to resend yet
    txn.respond(Response.for_request(req, 200, to_tag="x"), clock.now)
    txn.receive_retransmission(req, clock.now)
    assert rec.firsts() == ["200", "200"]
    clock.advance(32.1, step=0.5)
    assert txn.state is State.TERMINATED


def test_non_invite_server_over_tcp_terminates_at_once() -> None:
    layer, rec, clock = setup()
    req = make_request("OPTIONS")
    txn = layer.start_server(req, TCP, rec, clock.now)
    txn.respond(Response.for_request(req, 200), clock.now)
    clock.advance(0.05)
    assert txn.state is State.TERMINATED


def test_cancel_finds_the_invite_server_transaction() -> None:
    layer, rec, clock = setup()
    inv = make_request()
    txn = layer.start_server(inv, UDP, rec, clock.now)
    assert layer.find_invite_server(make_request("CANCEL")) is txn


def test_cancel_request_copies_the_invite_identity() -> None:
    layer, rec, clock = setup()
    req = make_request()
    txn = layer.start_client(req, UDP, rec, clock.now)
    assert isinstance(txn, InviteClientTransaction)
    cancel = txn.cancel_request()
    assert cancel.via.branch == req.via.branch
    assert cancel.cseq == (1, "CANCEL")
    assert cancel.uri == req.uri


def test_transport_error_fails_transactions_to_that_destination() -> None:
    layer, rec, clock = setup()
    layer.start_client(make_request(), TCP, rec, clock.now)
    layer.start_client(make_request("OPTIONS", branch="z9hG4bKzz"), UDP, rec, clock.now)
    assert layer.transport_error(TCP, clock.now) == 1
    assert rec.timeouts == 1
    assert len(layer) == 1


def test_sending_ack_through_a_transaction_is_refused() -> None:
    layer, rec, clock = setup()
    with pytest.raises(ValueError):
        layer.start_client(make_request("ACK"), UDP, rec, clock.now)
