"""Dialogs (RFC 3261 §12-§14) and session timers (RFC 4028), on the fake-clock network of test_sip_core."""

from __future__ import annotations

import random

import pytest

from sip.core import (
    CallState,
    CallTerminated,
    CoreConfig,
    IncomingCall,
    ReinviteReceived,
    ReinviteResult,
    UsageError,
)
from sip.dialog import Dialog, DialogState
from sip.errors import InvalidRequest
from sip.message import Request, Response
from sip.uri import Via
from tests.test_sip_core import SDP_A, SDP_B, Net, answered_call

INVITE = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"Record-Route: <sip:p1.test;lr>, <sip:p2.test;lr>\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 5 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5070>\r\n"
    b"Content-Length: 0\r\n\r\n"
)

VIA = Via(transport="UDP", host="127.0.0.1", port=5080, params={"branch": "z9hG4bKx"})


def test_uas_dialog_keeps_record_route_order_and_targets_the_contact() -> None:
    d = Dialog.from_uas(Request.parse(INVITE), "b1")
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.test;lr", "sip:p2.test;lr"]
    assert d.remote_target.port == 5070 and d.remote_seq == 5 and not d.caller
    bye = d.create_request("BYE", VIA, None)
    assert str(bye.uri) == "sip:alice@127.0.0.1:5070"
    assert bye.headers.values("Route") == ["<sip:p1.test;lr>", "<sip:p2.test;lr>"]
    assert bye.from_.tag == "b1" and bye.to.tag == "a1"
    assert bye.cseq == (1, "BYE")


def test_uac_dialog_reverses_record_route() -> None:
    req = Request.parse(INVITE)
    resp = Response.for_request(req, 200, to_tag="b1")
    resp.headers.add("Record-Route", "<sip:p1.test;lr>, <sip:p2.test;lr>")
    resp.headers.add("Contact", "<sip:bob@127.0.0.1:5090>")
    d = Dialog.from_uac(req, resp)
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.test;lr", "sip:p1.test;lr"]
    assert d.state is DialogState.CONFIRMED and d.caller
    assert d.next_hop().host == "p2.test"
    assert d.create_request("INFO", VIA, None).cseq == (6, "INFO")  # continues the INVITE's CSeq


def test_strict_route_becomes_request_uri_and_target_goes_last() -> None:
    d = Dialog.from_uas(Request.parse(INVITE.replace(b"p1.test;lr", b"p1.test")), "b1")
    bye = d.create_request("BYE", VIA, None)
    assert str(bye.uri) == "sip:p1.test"
    assert bye.headers.values("Route")[-1] == "<sip:alice@127.0.0.1:5070>"


def test_lower_cseq_in_dialog_is_refused_with_500() -> None:
    d = Dialog.from_uas(Request.parse(INVITE), "b1")
    late = Request.parse(INVITE.replace(b"5 INVITE", b"4 INVITE"))
    with pytest.raises(InvalidRequest) as info:
        d.check_request(late)
    assert info.value.status == 500


def test_reinvite_from_caller_reaches_callee_app_and_updates_both_sides() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, call_b = answered_call(net, a, b)
    offer = SDP_A.replace(b"o=a 1 1", b"o=a 1 2")
    a.core.reinvite(call_a, offer, net.now)
    net.pump()
    event = b.of(ReinviteReceived)[0]
    assert event.request.body == offer
    b.core.answer_reinvite(call_b, 200, net.now, SDP_B)
    net.pump()
    assert a.of(ReinviteResult)[0].response.status == 200
    assert call_a.local_sdp == offer and call_b.remote_sdp == offer
    assert call_b.ok is None  # the ACK arrived


def test_reinvite_from_callee_refreshes_the_target_at_the_caller() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, call_b = answered_call(net, a, b)
    b.core.local_addresses["udp"] = ("127.0.0.1", 5072)  # B's Contact moves
    net.nodes[("127.0.0.1", 5072)] = net.nodes[("127.0.0.1", 5062)]
    b.core.reinvite(call_b, SDP_B.replace(b"5000", b"5002"), net.now)
    net.pump()
    a.core.answer_reinvite(call_a, 200, net.now, SDP_A)
    net.pump()
    assert call_a.dialog.remote_target.port == 5072
    a.core.bye(call_a, net.now)
    net.pump()
    assert b.of(CallTerminated)[0].by_remote


def test_rejected_reinvite_leaves_the_call_up() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, call_b = answered_call(net, a, b)
    a.core.reinvite(call_a, SDP_A + b"m=image 4002 udptl t38\r\n", net.now)
    net.pump()
    b.core.answer_reinvite(call_b, 488, net.now)
    net.pump()
    assert a.of(ReinviteResult)[0].response.status == 488
    assert call_a.state is CallState.CONFIRMED and call_a.local_sdp == SDP_A
    a.core.reinvite(call_a, SDP_A.replace(b"1 1", b"1 3"), net.now)  # a new exchange is possible again


def test_second_offer_while_one_is_pending_is_a_usage_error() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, _ = answered_call(net, a, b)
    a.core.reinvite(call_a, SDP_A, net.now)
    with pytest.raises(UsageError):
        a.core.reinvite(call_a, SDP_A, net.now)


def test_glare_gives_491_both_ways_and_the_non_owner_retries_first() -> None:
    net = Net()
    a = net.add(5061, CoreConfig(random_uniform=random.Random(1).uniform))
    b = net.add(5062, CoreConfig(random_uniform=random.Random(2).uniform))
    call_a, call_b = answered_call(net, a, b)
    offer_a = SDP_A.replace(b"1 1", b"1 2")
    offer_b = SDP_B.replace(b"1 1", b"1 2")
    # both send before either arrives: queue them on the wire together
    a.core.reinvite(call_a, offer_a, net.now)
    b.core.reinvite(call_b, offer_b, net.now)
    net.pump()
    assert len(net.sent_by(a, "SIP/2.0 491")) == 1 and len(net.sent_by(b, "SIP/2.0 491")) == 1
    assert not a.of(ReinviteResult) and not b.of(ReinviteResult)  # retries are pending, not failures
    start = net.now

    def answer_pending() -> None:
        for node, call, sdp in ((a, call_a, SDP_A), (b, call_b, SDP_B)):
            for ev in node.of(ReinviteReceived):
                if call.reinvite_in is not None and call.reinvite_in_request is ev.request:
                    node.core.answer_reinvite(call, 200, net.now, sdp)
        net.pump()

    for _ in range(100):
        net.advance(0.05)
        answer_pending()
    retry_b = [t for t in net.sent_by(b, "INVITE") if t > start]
    retry_a = [t for t in net.sent_by(a, "INVITE") if t > start]
    assert retry_b and retry_a
    assert 0 <= retry_b[0] - start <= 2.0 + 0.05  # the callee did not choose the Call-ID: 0-2 s
    assert 2.1 <= retry_a[0] - start <= 4.0 + 0.05  # the caller owns the Call-ID: 2.1-4 s
    assert [e.response.status for e in a.of(ReinviteResult)] == [200]
    assert [e.response.status for e in b.of(ReinviteResult)] == [200]


def session_net(a_config: CoreConfig, b_config: CoreConfig) -> tuple[Net, object, object]:
    net = Net()
    a = net.add(5061, a_config)
    b = net.add(5062, b_config)
    return net, a, b


def test_caller_refreshes_with_the_same_sdp_and_callee_media_is_untouched() -> None:
    net, a, b = session_net(CoreConfig(session_expires=90), CoreConfig(session_expires=90))
    call_a, call_b = answered_call(net, a, b)  # type: ignore[arg-type]
    assert (
        call_a.session_interval == 90 and call_a.local_refresher
    )  # the UAS chose the UAC (it supports timer)
    assert call_b.session_interval == 90 and not call_b.local_refresher
    net.advance(100.0, step=0.5)
    refreshes = [t for t in net.sent_by(a, "INVITE")]  # type: ignore[arg-type]
    assert len(refreshes) == 3  # the initial INVITE, then one every 45 s
    assert not b.of(ReinviteReceived)  # type: ignore[attr-defined]
    assert call_b.remote_sdp == SDP_A and call_a.remote_sdp == SDP_B
    assert call_a.state is CallState.CONFIRMED and call_b.state is CallState.CONFIRMED


def test_callee_as_refresher_when_the_caller_asks_for_it() -> None:
    net, a, b = session_net(
        CoreConfig(session_expires=90, session_refresher="uas"), CoreConfig(session_expires=90)
    )
    call_a, call_b = answered_call(net, a, b)  # type: ignore[arg-type]
    assert call_b.local_refresher and not call_a.local_refresher
    net.advance(50.0, step=0.5)
    assert len(net.sent_by(b, "INVITE")) == 1  # type: ignore[arg-type]
    assert call_a.state is CallState.CONFIRMED


def test_refreshee_sends_bye_when_refreshes_stop() -> None:
    net, a, b = session_net(CoreConfig(session_expires=90), CoreConfig(session_expires=90))
    _call_a, _call_b = answered_call(net, a, b)  # type: ignore[arg-type]
    net.drop = lambda data, dest, sender: sender is a and data.startswith(b"INVITE")
    net.advance(70.0, step=0.5)
    ended = b.of(CallTerminated)  # type: ignore[attr-defined]
    assert ended and ended[0].reason == "session expired"
    assert net.sent_by(b, "BYE")  # type: ignore[arg-type]


def test_refresh_by_update_carries_no_body() -> None:
    net, a, b = session_net(
        CoreConfig(session_expires=90, refresh_method="UPDATE"), CoreConfig(session_expires=90)
    )
    call_a, call_b = answered_call(net, a, b)  # type: ignore[arg-type]
    net.advance(46.0, step=0.5)
    assert len(net.sent_by(a, "UPDATE")) == 1  # type: ignore[arg-type]
    assert call_a.state is CallState.CONFIRMED and call_b.remote_sdp == SDP_A


def test_too_small_session_interval_gets_422_and_the_caller_retries_with_min_se() -> None:
    net, a, b = session_net(
        CoreConfig(session_expires=90, min_se=90), CoreConfig(session_expires=1800, min_se=120)
    )
    call_a, _call_b = answered_call(net, a, b)  # type: ignore[arg-type]
    assert len(net.sent_by(b, "SIP/2.0 422")) == 1  # type: ignore[arg-type]
    assert call_a.state is CallState.CONFIRMED and call_a.session_interval == 120


def test_options_inside_a_dialog_is_answered() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a, _ = answered_call(net, a, b)
    req = call_a.dialog.create_request("OPTIONS", a.core.new_via("udp"), None)
    b.core.receive_datagram(bytes(req), ("udp", "127.0.0.1", 5061), net.now)
    replies = [d for d, _ in b.core.transmits()]
    assert replies and replies[0].startswith(b"SIP/2.0 200")


def test_incoming_call_can_be_rejected() -> None:
    net = Net()
    a, b = net.add(5061), net.add(5062)
    call_a = a.core.invite("sip:b@127.0.0.1:5062", SDP_A, net.now)
    net.pump()
    b.core.reject(b.of(IncomingCall)[0].call, 486, net.now)
    net.pump()
    assert call_a.terminated and call_a.terminate_reason.startswith("486")
