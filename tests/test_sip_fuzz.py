"""Hostile input: random and mutated messages never crash the parser, hang, or escape as another error."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.auth import DigestChallenge, parse_auth_params
from sip.errors import InvalidRequest, SipParseError
from sip.message import KeepAlivePing, KeepAlivePong, Request, StreamFramer, parse_message, validate_request
from sip.uri import NameAddr, SipUri, Via
from tests import sip_samples as S

SAMPLES = list(S.VALID.values())
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _exercise(data: bytes) -> None:
    """Parse and touch every typed view, as a UA would; only the two SIP errors may escape."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    wire = bytes(msg)
    again = parse_message(wire)  # what we serialize must parse
    assert again.body == msg.body
    for view in (
        "vias",
        "from_",
        "to",
        "call_id",
        "cseq",
        "contacts",
        "route",
        "record_route",
        "max_forwards",
    ):
        with contextlib.suppress(SipParseError):
            getattr(msg, view)
    try:
        if isinstance(msg, Request):
            validate_request(msg)
    except InvalidRequest as exc:
        assert 400 <= exc.status <= 599 and exc.reason and "\n" not in exc.reason


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    _exercise(data)


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.sampled_from(b'\x00\r\n :;,<>"@[]/=?%\t\xff\xc3' + bytes([data[pos] ^ 0x20])))
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b"\r\n", b" ", b",", b";", b'"', b"<", b"\r\n ", b"\xe9", b"::"])
            )
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 40))]
    return bytes(data)


@FUZZ
@given(mutated_samples())
def test_mutated_samples_only_raise_sip_errors(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([s for s in SAMPLES if s is not S.NO_LENGTH_MESSAGE]), min_size=1, max_size=5),
    st.data(),
)
def test_stream_framer_gives_the_same_messages_for_any_segmentation(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = b"\r\n\r\n".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = StreamFramer()
    events = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events += framer.feed(stream[prev:cut])
        prev = cut
    got = [e for e in events if not isinstance(e, KeepAlivePing | KeepAlivePong)]
    assert got == [parse_message(m) for m in messages]
    assert framer.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(SAMPLES)), max_size=6))
def test_stream_framer_on_garbage_only_raises_parse_error(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_header_bytes=2048, max_body_bytes=2048)
    try:
        for chunk in chunks:
            framer.feed(chunk)
    except SipParseError:
        pass


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!*_+~", min_size=1, max_size=10)
_host = st.one_of(
    st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8),
        min_size=1,
        max_size=4,
    )
    .map(".".join)
    .map(lambda h: "h" + h),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_params = st.dictionaries(_token.map(str.lower), st.one_of(st.none(), _token), max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.one_of(st.none(), _token),
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    params=_params,
    header_params=_params,
    display=st.one_of(
        st.none(), st.text(min_size=1, max_size=12).filter(lambda s: "\r" not in s and "\n" not in s)
    ),
)
def test_uri_and_name_addr_round_trip(
    scheme: str,
    user: str | None,
    host: str,
    port: int | None,
    params: dict[str, str | None],
    header_params: dict[str, str | None],
    display: str | None,
) -> None:
    uri = SipUri(scheme=scheme, user=user, host=host, port=port, params=params)
    assert SipUri.parse(str(uri)) == uri
    addr = NameAddr(uri=uri, display=display, params=header_params)
    assert NameAddr.parse(str(addr)) == addr
    via = Via(transport="UDP", host=host, port=port, params=header_params)
    assert Via.parse(str(via)) == via


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_address_and_auth_parsers_only_raise_parse_error(text: str) -> None:
    for parse in (SipUri.parse, NameAddr.parse, Via.parse, DigestChallenge.parse, parse_auth_params):
        with contextlib.suppress(SipParseError):
            parse(text)
