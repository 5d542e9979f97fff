"""T.38 SDP attributes (T.38 Annex D): reading real peers' sets, writing ours, negotiating both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t38.sdp import (
    DEFAULT_LOCAL,
    DEFAULT_MAX_BIT_RATE,
    DEFAULT_PEER_MAX_DATAGRAM,
    NegotiatedT38,
    RateManagement,
    T38Params,
    T38SdpError,
    UdpEC,
    accept_answer,
    format_t38_attributes,
    negotiate_answer,
    negotiated_as_answerer,
    parse_t38_attributes,
)

# Asterisk 22 (chan_pjsip) re-INVITE to T.38, as seen on the wire (DESIGN.md), in its order.
ASTERISK_22 = [
    "T38FaxVersion:0",
    "T38MaxBitRate:14400",
    "T38FaxRateManagement:transferredTCF",
    "T38FaxMaxDatagram:1400",
    "T38FaxUdpEC:t38UDPRedundancy",
]

# FreeSWITCH with t38 "broken boolean" on, lower-case names from a normalising proxy, FEC.
FREESWITCH_LIKE = [
    "t38faxversion:0",
    "t38maxbitrate:9600",
    "T38FaxFillBitRemoval:0",
    "T38FaxTranscodingMMR:0",
    "T38FaxTranscodingJBIG:0",
    "t38faxratemanagement:transferredTCF",
    "T38FaxMaxBuffer:2000",
    "T38FaxMaxDatagram:400",
    "T38FaxUdpEC:t38UDPFEC",
    "T38VendorInfo:0 0 0",
]


# --- reading real peers --------------------------------------------------------------------------------


def test_asterisk_22_set_reads_as_sent() -> None:
    p = parse_t38_attributes([*ASTERISK_22, "sendrecv"])
    assert p == T38Params(
        version=0,
        max_bit_rate=14400,
        rate_management=RateManagement.TRANSFERRED_TCF,
        max_datagram=1400,
        udp_ec=UdpEC.REDUNDANCY,
    )


def test_asterisk_22_set_is_written_back_identically() -> None:
    assert format_t38_attributes(parse_t38_attributes(ASTERISK_22)) == ASTERISK_22


def test_freeswitch_like_set_with_lowercase_names_and_zero_booleans() -> None:
    p = parse_t38_attributes(FREESWITCH_LIKE)
    assert p.max_bit_rate == 9600
    assert p.udp_ec is UdpEC.FEC
    assert (p.fill_bit_removal, p.transcoding_mmr, p.transcoding_jbig) == (False, False, False)
    assert p.max_buffer == 2000
    assert p.max_datagram == 400
    assert p.vendor_info == "0 0 0"


def test_non_t38_attributes_are_skipped() -> None:
    p = parse_t38_attributes(["sendrecv", "rtpmap:0 PCMU/8000", "ptime:20", "T38FaxVersion:1"])
    assert p == T38Params(version=1)


def test_leading_a_equals_and_surrounding_whitespace_are_tolerated() -> None:
    p = parse_t38_attributes(["a=T38FaxVersion:2\r\n", "  T38MaxBitRate : 12000 "])
    assert (p.version, p.max_bit_rate) == (2, 12000)


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("T38FaxFillBitRemoval", True),
        ("T38FaxFillBitRemoval:1", True),
        ("T38FaxFillBitRemoval:0", False),
        ("t38faxfillbitremoval:TRUE", True),
        ("T38FaxFillBitRemoval:false", False),
    ],
)
def test_boolean_attribute_bare_or_with_value(attr: str, expected: bool) -> None:
    assert parse_t38_attributes([attr]).fill_bit_removal is expected


def test_mmr_and_jbig_flags_are_read() -> None:
    p = parse_t38_attributes(["T38FaxTranscodingMMR", "T38FaxTranscodingJBIG:1"])
    assert p.transcoding_mmr and p.transcoding_jbig and not p.fill_bit_removal


def test_absent_attributes_take_annex_d_defaults() -> None:
    p = parse_t38_attributes([])
    assert p.version == 0
    assert p.rate_management is RateManagement.TRANSFERRED_TCF
    assert p.udp_ec is UdpEC.NONE
    assert p.max_bit_rate is None and p.max_datagram is None and p.max_buffer is None
    assert not (p.fill_bit_removal or p.transcoding_mmr or p.transcoding_jbig)


def test_version_4_attributes_are_read() -> None:
    p = parse_t38_attributes(
        ["T38FaxVersion:4", "T38FaxMaxIFP:200", "T38FaxUdpECDepth:1 3", "T38FaxUdpFECMaxSpan:4"]
    )
    assert (p.max_ifp, p.udp_ec_depth_min, p.udp_ec_depth_max, p.udp_fec_max_span) == (200, 1, 3, 4)
    assert parse_t38_attributes(["T38FaxUdpECDepth:2"]).udp_ec_depth_max is None


@pytest.mark.parametrize(
    ("attr", "field", "value"),
    [
        ("T38FaxMaxRate:9600", "max_bit_rate", 9600),
        ("T38FaxMaxBitRate:7200", "max_bit_rate", 7200),
        ("T38MaxDatagram:272", "max_datagram", 272),
        ("T38FaxRateManagement:localTCF", "rate_management", RateManagement.LOCAL_TCF),
        ("T38FaxRateManagement:LOCALtcf", "rate_management", RateManagement.LOCAL_TCF),
        ("T38FaxUdpEC:t38udpredundancy", "udp_ec", UdpEC.REDUNDANCY),
        ("T38FaxUdpEC:t38UDPNoEC", "udp_ec", UdpEC.NONE),
    ],
)
def test_aliases_and_token_case_are_accepted(attr: str, field: str, value: object) -> None:
    assert getattr(parse_t38_attributes([attr]), field) == value


def test_last_of_a_repeated_attribute_wins() -> None:
    p = parse_t38_attributes(["T38MaxBitRate:14400", "T38FaxMaxRate:9600"])
    assert p.max_bit_rate == 9600


# --- lenient rules for odd values real peers send ---------------------------------------------------------


def test_unknown_ec_token_means_no_error_correction() -> None:
    assert parse_t38_attributes(["T38FaxUdpEC:t38UDPSomethingNew"]).udp_ec is UdpEC.NONE


def test_zero_bit_rate_and_sizes_mean_not_declared() -> None:
    p = parse_t38_attributes(["T38MaxBitRate:0", "T38FaxMaxBuffer:0", "T38FaxMaxDatagram:0"])
    assert (p.max_bit_rate, p.max_buffer, p.max_datagram) == (None, None, None)


def test_rtpengine_localtfc_typo_means_local_tcf() -> None:
    assert parse_t38_attributes(["T38FaxRateManagement:localTFC"]).rate_management is RateManagement.LOCAL_TCF


@pytest.mark.parametrize("attr", ["T38VendorInfo:", "T38VendorInfo:a\x00b"])
def test_empty_or_control_vendor_info_counts_as_absent(attr: str) -> None:
    assert parse_t38_attributes([attr]).vendor_info is None


# --- malformed values are the peer's fault --------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "named"),
    [
        ("T38FaxVersion:abc", "T38FaxVersion"),
        ("T38FaxVersion:-1", "T38FaxVersion"),
        ("T38FaxVersion", "T38FaxVersion"),
        ("T38FaxVersion:256", "T38FaxVersion"),
        ("T38MaxBitRate:1000000", "T38MaxBitRate"),
        ("T38MaxBitRate:14.4k", "T38MaxBitRate"),
        ("t38maxbitrate:99999999999999999999", "T38MaxBitRate"),
        ("T38FaxMaxDatagram:-400", "T38FaxMaxDatagram"),
        ("T38FaxMaxDatagram:70000", "T38FaxMaxDatagram"),
        ("T38FaxMaxBuffer:x", "T38FaxMaxBuffer"),
        ("T38FaxMaxIFP:1 2", "T38FaxMaxIFP"),
        ("T38FaxRateManagement:remoteTCF", "T38FaxRateManagement"),
        ("T38FaxRateManagement", "T38FaxRateManagement"),
        ("T38FaxFillBitRemoval:yes", "T38FaxFillBitRemoval"),
        ("T38FaxTranscodingJBIG:2", "T38FaxTranscodingJBIG"),
        ("T38FaxUdpECDepth:3 1", "T38FaxUdpECDepth"),
        ("T38FaxUdpECDepth:1 2 3", "T38FaxUdpECDepth"),
        ("T38FaxUdpECDepth:", "T38FaxUdpECDepth"),
        ("T38FaxUdpFECMaxSpan:1000", "T38FaxUdpFECMaxSpan"),
        ("T38FaxVersion:\u0663", "T38FaxVersion"),  # an Arabic-Indic digit is not a decimal digit here
    ],
)
def test_malformed_value_raises_error_naming_the_attribute(attr: str, named: str) -> None:
    with pytest.raises(T38SdpError) as err:
        parse_t38_attributes([attr])
    assert str(err.value).startswith(f"{named}:")


def test_error_message_does_not_echo_a_huge_value_whole() -> None:
    with pytest.raises(T38SdpError) as err:
        parse_t38_attributes(["T38FaxVersion:" + "x" * 10_000])
    assert len(str(err.value)) < 200


def test_t38_sdp_error_is_a_value_error() -> None:
    assert issubclass(T38SdpError, ValueError)


# --- writing ------------------------------------------------------------------------------------------------


def test_default_local_offer_is_what_vfax_advertises() -> None:
    assert format_t38_attributes(DEFAULT_LOCAL) == [
        "T38FaxVersion:0",
        "T38MaxBitRate:14400",
        "T38FaxRateManagement:transferredTCF",
        "T38FaxMaxBuffer:1800",
        "T38FaxMaxDatagram:1400",
        "T38FaxUdpEC:t38UDPRedundancy",
    ]


def test_full_set_is_written_in_canonical_names_and_order() -> None:
    p = T38Params(
        version=4,
        max_bit_rate=33600,
        rate_management=RateManagement.LOCAL_TCF,
        max_buffer=2000,
        max_datagram=512,
        max_ifp=200,
        udp_ec=UdpEC.FEC,
        udp_ec_depth_min=1,
        udp_ec_depth_max=3,
        udp_fec_max_span=4,
        fill_bit_removal=True,
        transcoding_mmr=True,
        transcoding_jbig=True,
        vendor_info="0 0 37",
    )
    assert format_t38_attributes(p) == [
        "T38FaxVersion:4",
        "T38MaxBitRate:33600",
        "T38FaxFillBitRemoval",
        "T38FaxTranscodingMMR",
        "T38FaxTranscodingJBIG",
        "T38FaxRateManagement:localTCF",
        "T38FaxMaxBuffer:2000",
        "T38FaxMaxDatagram:512",
        "T38FaxMaxIFP:200",
        "T38FaxUdpEC:t38UDPFEC",
        "T38FaxUdpECDepth:1 3",
        "T38FaxUdpFECMaxSpan:4",
        "T38VendorInfo:0 0 37",
    ]


def test_no_error_correction_and_false_flags_are_left_out() -> None:
    written = format_t38_attributes(T38Params())
    assert written == ["T38FaxVersion:0", "T38FaxRateManagement:transferredTCF"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": -1},
        {"max_datagram": 0},
        {"max_bit_rate": 40000},
        {"udp_ec_depth_max": 2},
        {"udp_ec_depth_min": 3, "udp_ec_depth_max": 1},
        {"vendor_info": "x\r\na=evil"},
        {"vendor_info": ""},
    ],
)
def test_local_params_out_of_range_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        T38Params(**kwargs)  # type: ignore[arg-type]


def test_local_params_of_wrong_type_are_refused() -> None:
    with pytest.raises(TypeError):
        T38Params(udp_ec="t38UDPFEC")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        T38Params(fill_bit_removal=1)  # type: ignore[arg-type]


# --- round trips and fuzz -----------------------------------------------------------------------------------

_opt_size = st.none() | st.integers(1, 65535)


@st.composite
def t38_params(draw: st.DrawFn) -> T38Params:
    depth_min = draw(st.none() | st.integers(0, 255))
    depth_max = None if depth_min is None else draw(st.none() | st.integers(depth_min, 255))
    return T38Params(
        version=draw(st.integers(0, 255)),
        max_bit_rate=draw(st.none() | st.integers(1, 33600)),
        rate_management=draw(st.sampled_from(RateManagement)),
        max_buffer=draw(st.none() | st.integers(1, 2**31 - 1)),
        max_datagram=draw(_opt_size),
        max_ifp=draw(_opt_size),
        udp_ec=draw(st.sampled_from(UdpEC)),
        udp_ec_depth_min=depth_min,
        udp_ec_depth_max=depth_max,
        udp_fec_max_span=draw(st.none() | st.integers(1, 255)),
        fill_bit_removal=draw(st.booleans()),
        transcoding_mmr=draw(st.booleans()),
        transcoding_jbig=draw(st.booleans()),
        vendor_info=draw(st.none() | st.sampled_from(["0 0 0", "0 0 37", "181 0 21324"])),
    )


@settings(max_examples=300, deadline=None)
@given(t38_params())
def test_format_then_parse_round_trips(p: T38Params) -> None:
    assert parse_t38_attributes(format_t38_attributes(p)) == p


_NAME_SPELLINGS = [
    "T38FaxVersion",
    "T38MaxBitRate",
    "T38FaxMaxRate",
    "T38FaxRateManagement",
    "T38FaxMaxBuffer",
    "T38FaxMaxDatagram",
    "T38MaxDatagram",
    "T38FaxMaxIFP",
    "T38FaxUdpEC",
    "T38FaxUdpECDepth",
    "T38FaxUdpFECMaxSpan",
    "T38FaxFillBitRemoval",
    "T38FaxTranscodingMMR",
    "T38FaxTranscodingJBIG",
    "T38VendorInfo",
]


@st.composite
def attribute_strings(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_NAME_SPELLINGS) | st.text(max_size=20))
    name = draw(st.sampled_from([str.lower, str.upper, str.swapcase, str]))(name)
    value = draw(
        st.text(max_size=30)
        | st.integers(-(10**12), 10**12).map(str)
        | st.sampled_from(["t38UDPRedundancy", "t38UDPFEC", "localTCF", "transferredTCF", "0", "1", "1 3"])
    )
    sep = draw(st.sampled_from([":", "", ": ", "::"]))
    return f"{name}{sep}{value}" if sep else name


@settings(max_examples=500, deadline=None)
@given(st.lists(attribute_strings(), max_size=8))
def test_parse_of_random_attributes_raises_only_t38_sdp_error(attrs: list[str]) -> None:
    try:
        p = parse_t38_attributes(attrs)
    except T38SdpError:
        return
    # whatever was accepted can be written and read back unchanged
    assert parse_t38_attributes(format_t38_attributes(p)) == p


# --- negotiation as answerer (T.38 Annex D) --------------------------------------------------------------


def _local(**kw: object) -> T38Params:
    base = {
        "version": 0,
        "max_bit_rate": 14400,
        "max_buffer": 1800,
        "max_datagram": 1400,
        "udp_ec": UdpEC.REDUNDANCY,
    }
    base.update(kw)
    return T38Params(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offered", "ours", "answered"),
    [
        (0, 0, 0),
        (3, 0, 0),
        (0, 3, 0),
        (2, 3, 2),
    ],
)
def test_answer_version_is_the_lower(offered: int, ours: int, answered: int) -> None:
    assert negotiate_answer(T38Params(version=offered), _local(version=ours)).version == answered


@pytest.mark.parametrize(
    ("offered", "ours", "answered"),
    [
        (14400, 14400, 14400),
        (9600, 14400, 9600),
        (33600, 14400, 14400),
        (None, 14400, 14400),
        (9600, None, 9600),
        (None, None, None),
    ],
)
def test_answer_bit_rate_is_the_lower(offered: int | None, ours: int | None, answered: int | None) -> None:
    assert (
        negotiate_answer(T38Params(max_bit_rate=offered), _local(max_bit_rate=ours)).max_bit_rate == answered
    )


@pytest.mark.parametrize(
    ("offered", "ours", "answered"),
    [
        (UdpEC.REDUNDANCY, UdpEC.REDUNDANCY, UdpEC.REDUNDANCY),
        (UdpEC.FEC, UdpEC.REDUNDANCY, UdpEC.REDUNDANCY),
        (UdpEC.FEC, UdpEC.FEC, UdpEC.FEC),
        (UdpEC.NONE, UdpEC.REDUNDANCY, UdpEC.NONE),
        (UdpEC.REDUNDANCY, UdpEC.FEC, UdpEC.REDUNDANCY),
        (UdpEC.REDUNDANCY, UdpEC.NONE, UdpEC.NONE),
        (UdpEC.FEC, UdpEC.NONE, UdpEC.NONE),
    ],
)
def test_answer_error_correction_is_offered_scheme_or_weaker_fallback(
    offered: UdpEC, ours: UdpEC, answered: UdpEC
) -> None:
    assert negotiate_answer(T38Params(udp_ec=offered), _local(udp_ec=ours)).udp_ec is answered


@pytest.mark.parametrize("rm", list(RateManagement))
def test_answer_keeps_the_offerers_rate_management(rm: RateManagement) -> None:
    ours = _local(rate_management=RateManagement.TRANSFERRED_TCF)
    assert negotiate_answer(T38Params(rate_management=rm), ours).rate_management is rm


@pytest.mark.parametrize(
    ("offered", "ours", "answered"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_answer_flags_only_when_both_sides_have_them(offered: bool, ours: bool, answered: bool) -> None:
    offer = T38Params(fill_bit_removal=offered, transcoding_mmr=offered, transcoding_jbig=offered)
    local = _local(fill_bit_removal=ours, transcoding_mmr=ours, transcoding_jbig=ours)
    answer = negotiate_answer(offer, local)
    assert (answer.fill_bit_removal, answer.transcoding_mmr, answer.transcoding_jbig) == (answered,) * 3


def test_answer_declares_our_receive_limits_not_the_offerers() -> None:
    offer = T38Params(max_buffer=72, max_datagram=272, max_ifp=40)
    answer = negotiate_answer(offer, _local(max_buffer=1800, max_datagram=1400, max_ifp=None))
    assert (answer.max_buffer, answer.max_datagram, answer.max_ifp) == (1800, 1400, None)


def test_answering_asterisk_22_with_default_local() -> None:
    offer = parse_t38_attributes(ASTERISK_22)
    answer = negotiate_answer(offer, DEFAULT_LOCAL)
    assert format_t38_attributes(answer) == [
        "T38FaxVersion:0",
        "T38MaxBitRate:14400",
        "T38FaxRateManagement:transferredTCF",
        "T38FaxMaxBuffer:1800",
        "T38FaxMaxDatagram:1400",
        "T38FaxUdpEC:t38UDPRedundancy",
    ]
    session = negotiated_as_answerer(offer, answer)
    assert session.send_max_datagram == 1400
    assert session.udp_ec is UdpEC.REDUNDANCY
    assert session.max_bit_rate == 14400


def test_answering_a_pass_through_peer_honours_its_small_datagram() -> None:
    offer = parse_t38_attributes([*ASTERISK_22[:3], "T38FaxMaxDatagram:400", "T38FaxUdpEC:t38UDPRedundancy"])
    session = negotiated_as_answerer(offer, negotiate_answer(offer, DEFAULT_LOCAL))
    assert session.send_max_datagram == 400


def test_answering_freeswitch_fec_offer_falls_back_to_redundancy() -> None:
    offer = parse_t38_attributes(FREESWITCH_LIKE)
    answer = negotiate_answer(offer, DEFAULT_LOCAL)
    session = negotiated_as_answerer(offer, answer)
    assert answer.udp_ec is UdpEC.REDUNDANCY
    assert session == NegotiatedT38(
        version=0,
        max_bit_rate=9600,
        rate_management=RateManagement.TRANSFERRED_TCF,
        udp_ec=UdpEC.REDUNDANCY,
        send_max_datagram=400,
        send_max_ifp=None,
        peer_max_buffer=2000,
        udp_ec_depth_min=None,
        udp_ec_depth_max=None,
        udp_fec_max_span=None,
        fill_bit_removal=False,
        transcoding_mmr=False,
        transcoding_jbig=False,
        peer_vendor_info="0 0 0",
    )


def test_peer_without_max_datagram_gets_the_conservative_default() -> None:
    offer = parse_t38_attributes(["T38FaxVersion:0", "T38FaxUdpEC:t38UDPRedundancy"])
    session = negotiated_as_answerer(offer, negotiate_answer(offer, DEFAULT_LOCAL))
    assert session.send_max_datagram == DEFAULT_PEER_MAX_DATAGRAM


def test_no_bit_rate_declared_anywhere_runs_at_v17() -> None:
    offer = T38Params()
    session = negotiated_as_answerer(offer, negotiate_answer(offer, _local(max_bit_rate=None)))
    assert session.max_bit_rate == DEFAULT_MAX_BIT_RATE == 14400


# --- negotiation as offerer -----------------------------------------------------------------------------


def test_accepting_asterisk_answer_to_our_offer() -> None:
    session = accept_answer(DEFAULT_LOCAL, parse_t38_attributes(ASTERISK_22))
    assert session.send_max_datagram == 1400
    assert session.udp_ec is UdpEC.REDUNDANCY
    assert session.version == 0
    assert session.peer_max_buffer is None


def test_accepted_answer_takes_lower_version_bit_rate_and_weaker_ec() -> None:
    offer = _local(version=3, max_bit_rate=14400, udp_ec=UdpEC.FEC)
    answer = T38Params(version=1, max_bit_rate=9600, max_datagram=300, udp_ec=UdpEC.NONE)
    session = accept_answer(offer, answer)
    assert (session.version, session.max_bit_rate, session.udp_ec) == (1, 9600, UdpEC.NONE)
    assert session.send_max_datagram == 300


@pytest.mark.parametrize(
    ("offer", "answer", "named"),
    [
        (_local(version=0), T38Params(version=3, udp_ec=UdpEC.REDUNDANCY), "T38FaxVersion"),
        (_local(udp_ec=UdpEC.REDUNDANCY), T38Params(udp_ec=UdpEC.FEC), "T38FaxUdpEC"),
        (_local(udp_ec=UdpEC.NONE), T38Params(udp_ec=UdpEC.REDUNDANCY), "T38FaxUdpEC"),
        (_local(), T38Params(udp_ec=UdpEC.REDUNDANCY, fill_bit_removal=True), "T38FaxFillBitRemoval"),
        (_local(), T38Params(udp_ec=UdpEC.REDUNDANCY, transcoding_mmr=True), "T38FaxTranscodingMMR"),
        (_local(), T38Params(udp_ec=UdpEC.REDUNDANCY, transcoding_jbig=True), "T38FaxTranscodingJBIG"),
        (
            _local(),
            T38Params(udp_ec=UdpEC.REDUNDANCY, rate_management=RateManagement.LOCAL_TCF),
            "T38FaxRateManagement",
        ),
    ],
)
def test_answer_with_something_not_offered_is_refused(
    offer: T38Params, answer: T38Params, named: str
) -> None:
    with pytest.raises(T38SdpError) as err:
        accept_answer(offer, answer)
    assert str(err.value).startswith(f"{named}:")


@settings(max_examples=300, deadline=None)
@given(t38_params(), t38_params())
def test_our_answer_is_always_acceptable_and_both_sides_agree(offer: T38Params, local: T38Params) -> None:
    answer = negotiate_answer(offer, local)
    as_offerer = accept_answer(offer, answer)
    as_answerer = negotiated_as_answerer(offer, answer)
    assert answer.version <= offer.version and answer.version <= local.version
    assert answer.udp_ec.strength <= min(offer.udp_ec.strength, local.udp_ec.strength)
    for field in ("version", "max_bit_rate", "rate_management", "udp_ec", "fill_bit_removal"):
        assert getattr(as_offerer, field) == getattr(as_answerer, field)
    # each side sends within the limit the other declared
    assert as_answerer.send_max_datagram == (offer.max_datagram or DEFAULT_PEER_MAX_DATAGRAM)
    assert as_offerer.send_max_datagram == (local.max_datagram or DEFAULT_PEER_MAX_DATAGRAM)
