"""SIP messages, URIs, name-addr and Via: parsing, serializing, framing and validation (RFC 3261)."""

from __future__ import annotations

import pytest

from sip.errors import InvalidRequest, SipParseError
from sip.message import (
    PONG,
    Headers,
    KeepAlivePing,
    KeepAlivePong,
    Request,
    Response,
    StreamFramer,
    parse_message,
    validate_request,
    validate_response,
)
from sip.uri import NameAddr, SipUri, Via, new_branch, new_call_id, new_tag
from tests import sip_samples as S

MINIMAL = (
    b"OPTIONS sip:vfax@192.0.2.20 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKmin\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:a@example.org>;tag=1\r\n"
    b"To: <sip:vfax@192.0.2.20>\r\n"
    b"Call-ID: min-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _without(raw: bytes, header: bytes) -> bytes:
    return b"".join(line for line in raw.splitlines(keepends=True) if not line.startswith(header + b":"))


def _with(raw: bytes, line: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n" + line + b"\r\n\r\n" + body


# ---------------------------------------------------------------------------------------------- samples


@pytest.mark.parametrize("name", sorted(S.VALID))
def test_sample_parses_and_round_trips(name: str) -> None:
    msg = parse_message(S.VALID[name])
    if isinstance(msg, Request):
        validate_request(msg)
    else:
        validate_response(msg)
    again = parse_message(bytes(msg))
    if name == "no_length_message":  # serializing adds the Content-Length the datagram lacked
        assert again.body == msg.body and again.content_length == len(msg.body)
    else:
        assert again == msg


def test_asterisk_invite_fields_are_typed() -> None:
    req = parse_message(S.ASTERISK_INVITE)
    assert isinstance(req, Request)
    assert req.method == "INVITE"
    assert req.uri == SipUri(user="fax", host="192.0.2.20", port=5080)
    assert req.cseq == (21304, "INVITE")
    assert req.call_id == "9b8c7d6e-5f4a-3b2c-1d0e-f9a8b7c6d5e4"
    assert req.from_.display == "Front Desk"
    assert req.from_.tag == "3f9a1c2e-5b7d-4e8f-a1b2-c3d4e5f60718"
    assert req.to.tag is None
    assert req.supported == ["100rel", "replaces", "norefersub"]
    assert req.require == []
    assert "PRACK" in req.allow
    assert req.max_forwards == 70
    assert req.media_type == "application/sdp"
    assert req.body.startswith(b"v=0\r\n") and req.body.endswith(b"a=sendrecv\r\n")
    assert req.content_length == len(req.body)
    via = req.via
    assert via.transport == "UDP" and via.host == "192.0.2.10" and via.port == 5060
    assert via.rport_requested and via.rport is None and via.rfc3261_branch


def test_kamailio_via_stack_and_record_route_in_order() -> None:
    req = parse_message(S.KAMAILIO_PROXIED_INVITE)
    vias = req.vias
    assert [v.host for v in vias] == ["192.0.2.1", "198.51.100.77"]
    assert vias[1].received == "203.0.113.9" and vias[1].rport == 40112
    assert vias[1].response_address() == ("203.0.113.9", 40112)
    rr = req.record_route
    assert [r.uri.host for r in rr] == ["192.0.2.1", "198.51.100.1"]
    assert all(r.uri.lr for r in rr) and rr[0].uri.params["ftag"] == "a73kszlfl"
    assert req.max_forwards == 69


def test_compact_forms_expand_and_serialize_long() -> None:
    req = parse_message(S.COMPACT_INVITE)
    assert req.headers.get("Call-ID") == "compact-call-1@198.51.100.5"
    assert req.headers.get("i") == req.call_id
    assert req.from_.uri.user == "caller" and req.from_.tag == "c0mp4ct"
    assert req.contact is not None and req.contact.display == "Caller"
    assert req.supported == ["100rel", "timer"]
    assert req.headers.get("Event") == "presence" and req.headers.get("Subject") == "compact test"
    assert req.cseq == (8, "INVITE")
    assert req.content_length == len(req.body) == 93
    wire = bytes(req)
    for long in (
        b"\r\nVia: ",
        b"\r\nFrom: ",
        b"\r\nTo: ",
        b"\r\nCall-ID: ",
        b"\r\nContact: ",
        b"\r\nSupported: ",
    ):
        assert long in wire
    assert b"\r\nMax-Forwards: 70" in wire and b"\r\ni: " not in wire and b"\r\nl: " not in wire


def test_header_names_are_case_insensitive() -> None:
    req = parse_message(S.COMPACT_INVITE)
    assert req.headers.get("max-forwards") == req.headers.get("MAX-FORWARDS") == "70"
    assert "cseq" in req.headers and "CSEQ" in req.headers and "X-Nope" not in req.headers


def test_folded_headers_are_unfolded() -> None:
    req = parse_message(S.FOLDED_INVITE)
    assert req.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.from_.display == "Folded Name"
    assert [v.branch for v in req.vias] == ["z9hG4bKfold1", "z9hG4bKfold2"]


def test_sipvicious_probe_parses_despite_odd_spacing() -> None:
    req = parse_message(S.SIPVICIOUS_OPTIONS)
    validate_request(req)
    assert req.headers.get("User-Agent") == "friendly-scanner"
    assert req.from_.display == "sipvicious" and req.from_.tag is not None
    assert req.contact is not None and req.contact.uri.port == 5060


def test_ipv6_hosts_keep_brackets() -> None:
    req = parse_message(S.BYE_TCP_IPV6)
    assert req.uri.host == "[2001:db8::20]" and req.uri.host_ip == "2001:db8::20" and req.uri.port == 5080
    assert req.uri.transport == "tcp"
    assert req.via.host == "[2001:db8::10]" and req.via.transport == "TCP"
    assert req.headers.get("Reason") == 'Q.850;cause=16;text="Normal call clearing"'


# ---------------------------------------------------------------------------------------------- framing (UDP)


def test_datagram_without_content_length_takes_rest_as_body() -> None:
    assert parse_message(S.NO_LENGTH_MESSAGE).body == b"Hello fax"


def test_content_length_shorter_than_datagram_truncates_body() -> None:
    raw = MINIMAL.replace(b"Content-Length: 0", b"Content-Length: 3") + b"abcdef"
    assert parse_message(raw).body == b"abc"


def test_content_length_longer_than_datagram_is_a_parse_error() -> None:
    raw = MINIMAL.replace(b"Content-Length: 0", b"Content-Length: 30") + b"abc"
    with pytest.raises(SipParseError, match="Content-Length 30"):
        parse_message(raw)


def test_conflicting_content_lengths_are_rejected() -> None:
    with pytest.raises(SipParseError, match="conflicting Content-Length"):
        parse_message(_with(MINIMAL, b"l: 5") + b"12345")


def test_leading_crlf_and_bare_lf_line_ends_are_tolerated() -> None:
    req = parse_message(b"\r\n\r\n" + MINIMAL.replace(b"\r\n", b"\n"))
    assert req.call_id == "min-1" and req.cseq == (1, "OPTIONS")


def test_latin1_display_name_is_kept() -> None:
    raw = MINIMAL.replace(b"From: <", b'From: "Jos\xe9" <')
    assert parse_message(raw).from_.display == "José"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty message"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x", "no blank line"),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "bad request line"),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", "bad SIP version"),
        (b"INV<TE sip:a@b SIP/2.0\r\n\r\n", "bad method"),
        (b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", "no URI scheme"),
        (b"INVITE sip:a@b:99999 SIP/2.0\r\n\r\n", "port"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "bad status code"),
        (b"SIP/2.0 099 Nope\r\n\r\n", "bad status code"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n continued\r\n\r\n", "continuation line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n", "without name and colon"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", "bad header name"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nX: a\x00b\r\n\r\n", "NUL"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nX: a\rb\r\n\r\n", "bare CR"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    ],
)
def test_malformed_message_raises_precise_parse_error(raw: bytes, fragment: str) -> None:
    with pytest.raises(SipParseError, match=fragment):
        parse_message(raw)


# ---------------------------------------------------------------------------------------------- serializing


def test_serializer_sets_content_length_from_body() -> None:
    req = parse_message(MINIMAL)
    req.body = b"v=0\r\n"
    req.headers.add("Content-Type", "application/sdp")
    wire = bytes(req)
    assert b"\r\nContent-Length: 5\r\n" in wire and wire.endswith(b"\r\n\r\nv=0\r\n")
    assert parse_message(wire).body == b"v=0\r\n"


def test_serializer_adds_missing_content_length() -> None:
    wire = bytes(parse_message(S.NO_LENGTH_MESSAGE))
    assert wire.count(b"Content-Length: 9\r\n") == 1


def test_built_request_serializes_to_standard_wire_form() -> None:
    req = Request(method="OPTIONS", uri=SipUri.parse("sip:192.0.2.1"))
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.20:5080;branch=z9hG4bKx;rport")
    req.headers.add("Max-Forwards", "70")
    req.headers.add("To", "<sip:192.0.2.1>")
    req.headers.add("From", "<sip:vfax@192.0.2.20>;tag=t")
    req.headers.add("Call-ID", "c1")
    req.headers.add("CSeq", "1 OPTIONS")
    assert bytes(req) == (
        b"OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5080;branch=z9hG4bKx;rport\r\n"
        b"Max-Forwards: 70\r\nTo: <sip:192.0.2.1>\r\nFrom: <sip:vfax@192.0.2.20>;tag=t\r\nCall-ID: c1\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    validate_request(parse_message(bytes(req)))


def test_copy_is_independent_of_the_original() -> None:
    req = parse_message(S.ASTERISK_INVITE)
    assert isinstance(req, Request)
    retry = req.copy()
    retry.headers.set("CSeq", "21305 INVITE")
    retry.uri.params["transport"] = "tcp"
    assert req.cseq == (21304, "INVITE") and "transport" not in req.uri.params
    assert retry.cseq == (21305, "INVITE") and retry.body == req.body
    resp = Response.for_request(req, 200)
    other = resp.copy()
    other.headers.remove("Via")
    assert "Via" in resp.headers


def test_headers_refuse_crlf_injection() -> None:
    h = Headers()
    with pytest.raises(ValueError):
        h.add("Subject", "hi\r\nVia: evil")
    with pytest.raises(ValueError):
        h.add("Bad Name", "x")


def test_headers_set_prepend_and_remove_first() -> None:
    h = Headers(
        [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"), ("v", "SIP/2.0/UDP c")]
    )
    h.prepend("Via", "SIP/2.0/UDP top;branch=z9hG4bK0")
    assert h.values("via") == [
        "SIP/2.0/UDP top;branch=z9hG4bK0",
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c",
    ]
    assert h.remove_first("Via") == "SIP/2.0/UDP top;branch=z9hG4bK0"
    assert h.remove_first("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.values("Via") == ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c"]
    h.set("via", "SIP/2.0/TCP only")
    assert h.get_all("Via") == ["SIP/2.0/TCP only"]
    assert h.remove("VIA") == 1 and len(h) == 0


def test_comma_inside_quotes_or_brackets_does_not_split() -> None:
    h = Headers([("Contact", '"Doe, John" <sip:j@a;x=1?h=a,b>;q=0.5, <sip:k@b>')])
    contacts = [NameAddr.parse(v) for v in h.values("Contact")]
    assert [c.display for c in contacts] == ["Doe, John", None]
    assert contacts[0].params == {"q": "0.5"}


# ---------------------------------------------------------------------------------------------- responses


def test_response_for_request_copies_dialog_headers_and_adds_to_tag() -> None:
    req = parse_message(S.KAMAILIO_PROXIED_INVITE)
    resp = Response.for_request(req, 180, to_tag="vfx1")
    assert resp.reason == "Ringing"
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.from_ == req.from_
    assert resp.to.tag == "vfx1" and resp.to.uri == req.to.uri
    assert "Record-Route" not in resp.headers and "Contact" not in resp.headers
    wire = bytes(resp)
    assert wire.startswith(b"SIP/2.0 180 Ringing\r\n")
    again = parse_message(wire)
    assert again.to.tag == "vfx1" and again.vias == req.vias and again.content_length == 0


def test_response_for_in_dialog_request_keeps_existing_to_tag() -> None:
    req = parse_message(S.ASTERISK_T38_REINVITE)
    resp = Response.for_request(req, 200, to_tag="other")
    assert resp.to.tag == "vf7c21e0a9"


def test_100_trying_copies_timestamp_and_gets_no_tag() -> None:
    req = parse_message(_with(MINIMAL, b"Timestamp: 54.2"))
    resp = Response.for_request(req, 100, to_tag="t")
    assert resp.to.tag is None and resp.headers.get("Timestamp") == "54.2"
    assert "Timestamp" not in Response.for_request(req, 200).headers


def test_response_to_invalid_request_skips_missing_headers() -> None:
    req = parse_message(_without(MINIMAL, b"Call-ID"))
    with pytest.raises(InvalidRequest) as info:
        validate_request(req)
    resp = Response.for_request(req, info.value.status, info.value.reason)
    assert bytes(resp).startswith(b"SIP/2.0 400 Missing Call-ID Header\r\n")
    assert "Call-ID" not in resp.headers and resp.cseq == (1, "OPTIONS")


def test_status_line_with_custom_reason_round_trips() -> None:
    resp = parse_message(b"SIP/2.0 488 T.38 Not Welcome Here\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(resp, Response) and resp.status == 488 and resp.reason == "T.38 Not Welcome Here"


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("header", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_request_missing_mandatory_header_gets_400_naming_it(header: bytes) -> None:
    req = parse_message(_without(MINIMAL, header))
    with pytest.raises(InvalidRequest) as info:
        validate_request(req)
    assert info.value.status == 400 and info.value.reason == f"Missing {header.decode()} Header"


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        ((b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), "CSeq Method Does Not Match Request"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"), "Malformed CSeq Header"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: 4294967296 OPTIONS"), "Malformed CSeq Header"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 300"), "Malformed Max-Forwards Header"),
        ((b"Via: SIP/2.0/UDP 192.0.2.1", b"Via: SIP/3.0/UDP 192.0.2.1"), "Malformed Via Header"),
        ((b"From: <sip:a@example.org>", b"From: <sip:a@exa mple.org>"), "Malformed From Header"),
        ((b"To: <sip:vfax@192.0.2.20>", b'To: "Fax <sip:vfax@192.0.2.20>'), "Malformed To Header"),
    ],
)
def test_invalid_request_gets_400_with_reason(replace: tuple[bytes, bytes], reason: str) -> None:
    req = parse_message(MINIMAL.replace(*replace))
    with pytest.raises(InvalidRequest) as info:
        validate_request(req)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_body_without_content_type_is_invalid() -> None:
    req = parse_message(MINIMAL.replace(b"Content-Length: 0", b"Content-Length: 3") + b"abc")
    with pytest.raises(InvalidRequest, match="Missing Content-Type"):
        validate_request(req)


def test_other_sip_version_gets_505() -> None:
    req = parse_message(MINIMAL.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    with pytest.raises(InvalidRequest) as info:
        validate_request(req)
    assert info.value.status == 505


def test_non_sip_request_uri_gets_416_but_non_sip_to_is_accepted() -> None:
    req = parse_message(MINIMAL.replace(b"OPTIONS sip:vfax@192.0.2.20", b"OPTIONS mailto:vfax@example.org"))
    assert req.uri.scheme == "mailto" and not req.uri.is_sip and str(req.uri) == "mailto:vfax@example.org"
    with pytest.raises(InvalidRequest) as info:
        validate_request(req)
    assert (info.value.status, info.value.reason) == (416, "Unsupported URI Scheme")
    unksm2 = parse_message(MINIMAL.replace(b"To: <sip:vfax@192.0.2.20>", b"To: isbn:2983792873"))
    validate_request(unksm2)
    assert unksm2.to.uri.scheme == "isbn" and unksm2.to.uri.user == "2983792873"


# RFC 4475 §3.1.1.1 "wsinv": legal but odd whitespace, folding, case and escaping everywhere.
WSINV_SDP = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
    b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
)
WSINV = (
    b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    b"TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n'
    b"MaX-fOrWaRdS: 0068\r\n"
    b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
    b"Content-Length   : %d\r\n"
    b"cseq: 0009\r\n  INVITE\r\n"
    b"Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
    b"s :\r\n"
    b"NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
    b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
    b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
    b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n'
    b"  secondparam ; q = 0.33\r\n"
    b"\r\n" % len(WSINV_SDP)
) + WSINV_SDP


def test_rfc4475_wsinv_torture_message_is_understood() -> None:
    req = parse_message(WSINV)
    validate_request(req)
    assert req.to.tag == "1918181833n" and req.to.uri.user == "vivekg"
    assert req.from_.display == 'J Rosenberg \\"' and req.from_.tag == "98asjd8"
    assert req.max_forwards == 68 and req.cseq == (9, "INVITE") and req.headers.get("Subject") == ""
    assert [(v.transport, v.host, v.branch) for v in req.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert req.route[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    contact = req.contact
    assert contact is not None and contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert req.body == WSINV_SDP and parse_message(bytes(req)) == req


def test_response_without_via_fails_validation() -> None:
    resp = parse_message(_without(S.TRYING_100, b"Via"))
    with pytest.raises(SipParseError, match="missing Via"):
        validate_response(resp)


# ---------------------------------------------------------------------------------------------- URIs


def test_full_sip_uri_parses_and_round_trips() -> None:
    text = "sips:alice:secret@[2001:db8::1]:5061;transport=tls;lr;maddr=192.0.2.1?Subject=hi&Priority=urgent"
    uri = SipUri.parse(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5061,
    )
    assert uri.params == {"transport": "tls", "lr": None, "maddr": "192.0.2.1"}
    assert uri.headers == {"Subject": "hi", "Priority": "urgent"}
    assert str(uri) == text and SipUri.parse(str(uri)) == uri


def test_uri_scheme_and_param_names_are_case_insensitive() -> None:
    uri = SipUri.parse("SIP:bob@Example.COM;Transport=UDP")
    assert uri.scheme == "sip" and uri.transport == "udp" and uri.host == "Example.COM"


def test_tel_uri_keeps_number_and_params() -> None:
    uri = SipUri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert uri.user == "+1-201-555-0123" and uri.params == {"phone-context": "example.com"}
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:a@",
        "sip:a@b:",
        "sip:a@b:x",
        "sip:a@[::1",
        "sip:a@b;;x",
        "sip:a b@c",
        "1im:x@y",
        "sip:a@b?",
    ],
)
def test_bad_uri_raises_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Alice \\"A\\" Smith" <sip:alice@example.org;transport=tcp>;tag=88;expires=60')
    assert quoted.display == 'Alice "A" Smith' and quoted.uri.params == {"transport": "tcp"}
    assert quoted.tag == "88" and quoted.params["expires"] == "60"
    assert NameAddr.parse(str(quoted)) == quoted
    token = NameAddr.parse("Bob  Jones <sip:bob@example.org>")
    assert token.display == "Bob Jones"
    bare = NameAddr.parse("sip:carol@example.org;tag=xyz")
    assert bare.display is None and bare.tag == "xyz" and bare.uri.params == {}
    assert str(bare) == "<sip:carol@example.org>;tag=xyz"
    bare.tag = "new"
    assert str(bare).endswith(";tag=new")
    bare.tag = None
    assert bare.tag is None


@pytest.mark.parametrize("text", ["", '"unterminated <sip:a@b>', "<sip:a@b", '"A" sip:a@b', "<sip:a@b>junk"])
def test_bad_name_addr_raises_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


def test_via_tolerates_whitespace_in_sent_protocol_and_sent_by() -> None:
    via = Via.parse("SIP / 2.0 / udp  192.0.2.1 : 5060 ; branch = z9hG4bKws ; rport")
    assert via.transport == "UDP" and via.host == "192.0.2.1" and via.port == 5060
    assert via.branch == "z9hG4bKws" and via.rport_requested
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKws;rport"


def test_via_stamp_source_fills_received_and_rport() -> None:
    via = Via.parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport")
    via.stamp_source("203.0.113.4", 40000)
    assert via.received == "203.0.113.4" and via.rport == 40000
    assert via.response_address() == ("203.0.113.4", 40000)
    plain = Via.parse("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK2")
    plain.stamp_source("203.0.113.4", 40000)
    assert plain.received == "203.0.113.4" and not plain.rport_requested
    assert plain.response_address() == ("203.0.113.4", 5060)
    same = Via.parse("SIP/2.0/UDP 203.0.113.4:5070;branch=z9hG4bK3")
    same.stamp_source("203.0.113.4", 5070)
    assert same.received is None


@pytest.mark.parametrize("text", ["SIP/2.0/UDP", "SIP/2.0 UDP host", "HTTP/1.1/TCP host", "SIP/2.0/UDP a b"])
def test_bad_via_raises_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


def test_fresh_identifiers_are_unique_and_marked() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") for b in branches)
    assert new_tag() != new_tag()
    assert new_call_id("192.0.2.20").endswith("@192.0.2.20")


# ---------------------------------------------------------------------------------------------- streams


def test_stream_framer_splits_back_to_back_messages() -> None:
    framer = StreamFramer()
    events = framer.feed(S.ASTERISK_INVITE + S.KAMAILIO_401 + S.ACK)
    assert events == [parse_message(S.ASTERISK_INVITE), parse_message(S.KAMAILIO_401), parse_message(S.ACK)]
    assert framer.buffered == 0


def test_stream_framer_handles_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    events = []
    for i in range(len(S.ASTERISK_200_T38)):
        events += framer.feed(S.ASTERISK_200_T38[i : i + 1])
    assert events == [parse_message(S.ASTERISK_200_T38)]


def test_stream_framer_answers_double_crlf_ping() -> None:
    framer = StreamFramer()
    events = framer.feed(b"\r\n\r\n" + S.ACK + b"\r\n\r\n")
    assert events == [KeepAlivePing(), parse_message(S.ACK), KeepAlivePing()]
    assert PONG == b"\r\n"


def test_stream_framer_reports_pong_and_a_ping_split_across_reads() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [KeepAlivePong()]
    assert framer.feed(b"\r\n") == [KeepAlivePing()]
    assert framer.feed(b"\r\n" + S.ACK) == [KeepAlivePong(), parse_message(S.ACK)]


def test_stream_requires_content_length_and_stays_failed() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="Content-Length missing"):
        framer.feed(S.SIPVICIOUS_OPTIONS.replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(SipParseError, match="already failed"):
        framer.feed(S.ACK)


def test_stream_bounds_header_and_body_size() -> None:
    with pytest.raises(SipParseError, match="header section larger"):
        StreamFramer(max_header_bytes=1024).feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    with pytest.raises(SipParseError, match="exceeds the limit"):
        StreamFramer(max_body_bytes=100).feed(_with(MINIMAL, b"X: 1").replace(b"Length: 0", b"Length: 101"))


def test_stream_waits_for_body() -> None:
    framer = StreamFramer()
    head, _, body = S.FREESWITCH_INVITE.partition(b"\r\n\r\n")
    assert framer.feed(head + b"\r\n\r\n" + body[:10]) == []
    assert framer.feed(body[10:]) == [parse_message(S.FREESWITCH_INVITE)]


def test_parsed_addresses_and_vias_are_remembered_but_each_caller_gets_its_own_copy() -> None:
    """Parses are memoised by text (a dialog's headers recur in every message); changing what one
    caller got (dialog.py clears tags, core.py sets a branch) must not leak into the next parse."""
    text = '"Fax" <sip:fax@127.0.0.1:5060;transport=udp>;tag=abc'
    first = NameAddr.parse(text)
    first.tag = None
    first.uri.params["transport"] = "tcp"
    again = NameAddr.parse(text)
    assert again.tag == "abc" and again.uri.params["transport"] == "udp" and again is not first
    via_text = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport"
    v = Via.parse(via_text)
    v.params["branch"] = "z9hG4bKother"
    assert Via.parse(via_text).branch == "z9hG4bKx"
    with pytest.raises(SipParseError):  # a failed parse is not remembered as anything
        NameAddr.parse("<sip:fax@")
    with pytest.raises(SipParseError):
        NameAddr.parse("<sip:fax@")
