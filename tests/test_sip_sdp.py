"""SDP model and offer/answer (RFC 4566, RFC 3264): real peers' offers answered line by line; our offers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.sdp import (
    Connection,
    LocalSession,
    MediaDescription,
    OfferRejected,
    RtpMap,
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    parse_sdp,
    process_answer,
)


def sdp(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


T38_ATTRS = [
    "T38FaxVersion:0",
    "T38MaxBitRate:14400",
    "T38FaxRateManagement:transferredTCF",
    "T38FaxUdpEC:t38UDPRedundancy",
    "T38FaxMaxDatagram:400",
]

# Asterisk 22 ReceiveFAX re-INVITE to T.38 (DESIGN.md): one m=image line in the audio line's place, c= at
# session level, no b= line, the five attributes.
ASTERISK_22_T38_REINVITE = sdp(
    "v=0",
    "o=- 1927436154 1927436156 IN IP4 192.0.2.10",
    "s=Asterisk",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=image 4000 udptl t38",
    *(f"a={a}" for a in T38_ATTRS),
)

# The initial INVITE of the same Asterisk call: G.711 and telephone-event.
ASTERISK_22_AUDIO = sdp(
    "v=0",
    "o=- 1927436154 1927436154 IN IP4 192.0.2.10",
    "s=Asterisk",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 10000 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
)

# Shape 2: audio removed with port 0, image added after it.
SHAPE_AUDIO_0_PLUS_IMAGE = sdp(
    "v=0",
    "o=gw 100 101 IN IP4 192.0.2.20",
    "s=-",
    "c=IN IP4 192.0.2.20",
    "t=0 0",
    "m=audio 0 RTP/AVP 8 101",
    "m=image 20002 udptl t38",
    *(f"a={a}" for a in T38_ATTRS),
)

# Shape 3: audio still active plus image (FreeSWITCH/DIDWW style, per-line c=, upper-case UDPTL).
SHAPE_AUDIO_PLUS_IMAGE = sdp(
    "v=0",
    "o=- 1869739744 1869739745 IN IP4 192.0.2.30",
    "s=-",
    "t=0 0",
    "m=audio 13960 RTP/AVP 0 8 18 101",
    "c=IN IP4 192.0.2.30",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
    "a=sendrecv",
    "a=ptime:20",
    "m=image 13962 UDPTL t38",
    "c=IN IP4 192.0.2.31",
    "a=T38FaxMaxDatagram:612",
    "a=T38FaxUdpEC:t38UDPRedundancy",
    "a=T38FaxVersion:0",
)

OUR_T38 = ["T38FaxVersion:0", "T38MaxBitRate:14400", "T38FaxRateManagement:transferredTCF"]


def answer(text: str, **kw: object) -> object:
    params: dict[str, object] = {
        "local_addr": "127.0.0.1",
        "audio_port": 5004,
        "image_port": 6004,
        "image_attributes": OUR_T38,
        "session": LocalSession("127.0.0.1", session_id=7, version=1),
    }
    params.update(kw)
    return answer_offer(parse_sdp(text), **params)  # type: ignore[arg-type]


# ---- real peers' T.38 switches ---------------------------------------------------------------------------


def test_asterisk_22_t38_reinvite_is_answered_with_one_image_line() -> None:
    result = answer(ASTERISK_22_T38_REINVITE)
    assert str(result.sdp) == sdp(
        "v=0",
        "o=vfax 7 1 IN IP4 127.0.0.1",
        "s=vfax",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=image 6004 udptl t38",
        *(f"a={a}" for a in OUR_T38),
    )
    assert result.chosen_audio is None
    img = result.chosen_image
    assert img is not None
    assert (img.index, img.address, img.port, img.hold) == (0, "192.0.2.10", 4000, False)
    assert list(img.attributes) == T38_ATTRS


def test_asterisk_22_t38_reinvite_round_trips_byte_for_byte() -> None:
    parsed = parse_sdp(ASTERISK_22_T38_REINVITE.encode())
    assert bytes(parsed) == ASTERISK_22_T38_REINVITE.encode()
    assert parsed.bandwidths == []
    assert parsed.connection == Connection("192.0.2.10")
    assert [(m.media, m.port, m.proto, m.formats) for m in parsed.media] == [
        ("image", 4000, "udptl", ["t38"])
    ]


def test_audio_port_zero_plus_image_keeps_both_lines_in_order() -> None:
    result = answer(SHAPE_AUDIO_0_PLUS_IMAGE)
    media = result.sdp.media
    assert [(m.media, m.port, m.proto) for m in media] == [("audio", 0, "RTP/AVP"), ("image", 6004, "udptl")]
    assert media[0].formats == ["8", "101"]
    assert result.chosen_audio is None
    assert result.chosen_image is not None
    assert (result.chosen_image.index, result.chosen_image.port) == (1, 20002)


def test_active_audio_plus_image_takes_image_and_rejects_audio_with_port_0() -> None:
    result = answer(SHAPE_AUDIO_PLUS_IMAGE)
    media = result.sdp.media
    assert [(m.media, m.port, m.proto) for m in media] == [("audio", 0, "RTP/AVP"), ("image", 6004, "UDPTL")]
    assert media[0].formats == ["0", "8", "18", "101"]
    assert media[0].attributes == []
    assert result.chosen_audio is None
    img = result.chosen_image
    assert img is not None
    # The image line's own c= overrides nothing here: there is no session-level c= at all.
    assert (img.index, img.address, img.port, img.proto) == (1, "192.0.2.31", 13962, "UDPTL")


def test_active_audio_plus_image_can_prefer_audio() -> None:
    result = answer(SHAPE_AUDIO_PLUS_IMAGE, prefer="audio")
    assert [m.port for m in result.sdp.media] == [5004, 0]
    assert result.sdp.media[1].formats == ["t38"]
    assert result.chosen_image is None
    assert result.chosen_audio is not None
    assert (result.chosen_audio.codec, result.chosen_audio.address) == ("PCMU", "192.0.2.30")


def test_each_t38_shape_answer_has_the_offers_line_count_and_media_order() -> None:
    for text in (ASTERISK_22_T38_REINVITE, SHAPE_AUDIO_0_PLUS_IMAGE, SHAPE_AUDIO_PLUS_IMAGE):
        offer = parse_sdp(text)
        result = answer(text)
        assert [m.media for m in result.sdp.media] == [m.media for m in offer.media]
        assert [m.port != 0 for m in result.sdp.media].count(True) == 1
        reparsed = parse_sdp(bytes(result.sdp))
        assert reparsed == result.sdp


def test_t38_refused_by_callback_falls_back_to_the_audio_line() -> None:
    seen: list[MediaDescription] = []

    def refuse(m: MediaDescription) -> None:
        seen.append(m)
        return None

    result = answer(SHAPE_AUDIO_PLUS_IMAGE, image_attributes=refuse)
    assert [m.port for m in result.sdp.media] == [5004, 0]
    assert result.chosen_audio is not None and result.chosen_image is None
    assert seen[0].attribute_values("T38FaxMaxDatagram") == ["612"]


def test_image_callback_sees_offered_line_and_its_answer_is_sent() -> None:
    result = answer(
        ASTERISK_22_T38_REINVITE, image_attributes=lambda m: [f"T38FaxMaxDatagram:{len(m.attributes)}"]
    )
    assert result.sdp.media[0].attributes == [("T38FaxMaxDatagram", "5")]


def test_t38_only_offer_without_t38_support_is_rejected_488() -> None:
    with pytest.raises(OfferRejected) as info:
        answer(ASTERISK_22_T38_REINVITE, accept_image=False)
    assert info.value.status == 488
    assert "T.38 not accepted" in info.value.reason


# ---- audio ------------------------------------------------------------------------------------------------


def test_audio_offer_answer_picks_our_first_codec_and_drops_telephone_event() -> None:
    result = answer(ASTERISK_22_AUDIO)
    m = result.sdp.media[0]
    assert (m.port, m.formats) == (5004, ["0"])
    assert m.attributes == [("rtpmap", "0 PCMU/8000"), ("ptime", "20"), ("sendrecv", None)]
    chosen = result.chosen_audio
    assert chosen is not None
    assert (chosen.codec, chosen.payload_type, chosen.address, chosen.port, chosen.ptime) == (
        "PCMU",
        0,
        "192.0.2.10",
        10000,
        20,
    )


def test_audio_answer_follows_our_preference_not_the_offers_order() -> None:
    result = answer(ASTERISK_22_AUDIO, codecs=("PCMA", "PCMU"))
    assert result.sdp.media[0].formats == ["8"]
    assert result.chosen_audio is not None
    assert (result.chosen_audio.codec, result.chosen_audio.payload_type) == ("PCMA", 8)


def test_dynamic_payload_type_for_g711_is_echoed() -> None:
    text = ASTERISK_22_AUDIO.replace("RTP/AVP 0 8 101", "RTP/AVP 96 101").replace(
        "rtpmap:0 PCMU", "rtpmap:96 pcmu"
    )
    result = answer(text)
    assert result.sdp.media[0].formats == ["96"]
    assert result.chosen_audio is not None
    assert (result.chosen_audio.codec, result.chosen_audio.payload_type) == ("PCMU", 96)


def test_static_payload_types_need_no_rtpmap() -> None:
    text = sdp(
        "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", "m=audio 7078 RTP/AVP 8"
    )
    result = answer(text)
    assert result.chosen_audio is not None
    assert result.chosen_audio.codec == "PCMA"
    assert result.chosen_audio.ptime is None


def test_no_common_codec_is_rejected_488_naming_the_offer() -> None:
    text = ASTERISK_22_AUDIO.replace("RTP/AVP 0 8 101", "RTP/AVP 18 101")
    with pytest.raises(OfferRejected) as info:
        answer(text)
    assert info.value.status == 488
    assert "no common audio codec" in info.value.reason
    assert "18,101" in info.value.reason


def test_telephone_event_alone_is_not_a_fax_codec() -> None:
    text = ASTERISK_22_AUDIO.replace("RTP/AVP 0 8 101", "RTP/AVP 101")
    with pytest.raises(OfferRejected):
        answer(text)


def test_srtp_and_video_lines_are_rejected_but_kept_in_place() -> None:
    text = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x",
        "m=video 4002 RTP/AVP 96",
        "m=audio 4004 RTP/AVP 0",
        "m=audio 4006 RTP/AVP 8",
    )
    result = answer(text)
    lines = [(m.media, m.port, m.proto, m.formats) for m in result.sdp.media]
    assert lines == [
        ("audio", 0, "RTP/SAVP", ["0"]),
        ("video", 0, "RTP/AVP", ["96"]),
        ("audio", 5004, "RTP/AVP", ["0"]),
        ("audio", 0, "RTP/AVP", ["8"]),
    ]
    assert result.chosen_audio is not None and result.chosen_audio.index == 2


def test_rejected_offer_line_without_format_gets_one_in_the_answer() -> None:
    text = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=image 0 udptl",
        "m=audio 4 RTP/AVP 0",
    )
    result = answer(text)
    assert [(m.port, m.formats) for m in result.sdp.media] == [(0, ["t38"]), (5004, ["0"])]


# Asterisk 22 at the end of a fax it had switched to T.38: the image stream removed, nothing else offered.
ASTERISK_22_T38_REMOVED = ASTERISK_22_T38_REINVITE.replace("m=image 4000 udptl t38", "m=image 0 udptl t38")


def test_offer_that_removes_every_stream_is_answered_with_the_lines_mirrored_at_port_0() -> None:
    result = answer(ASTERISK_22_T38_REMOVED)
    assert result.chosen_audio is None and result.chosen_image is None
    lines = [(m.media, m.port, m.proto, m.formats) for m in result.sdp.media]
    assert lines == [("image", 0, "udptl", ["t38"])]
    assert parse_sdp(bytes(result.sdp)).media[0].rejected  # a valid answer that re-parses


def test_offer_with_no_media_line_is_answered_with_none() -> None:
    result = answer(sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"))
    assert result.chosen_audio is None and result.chosen_image is None and result.sdp.media == []


def test_an_active_line_we_cannot_take_is_still_rejected_488() -> None:
    """Only an offer with no active line at all is the peer removing media; an unusable one is 488."""
    with pytest.raises(OfferRejected):
        answer(ASTERISK_22_T38_REINVITE.replace("m=image 4000 udptl t38", "m=video 4000 RTP/AVP 31"))


def test_ipv6_offer_is_answered_over_ipv6() -> None:
    text = ASTERISK_22_AUDIO.replace("IN IP4 192.0.2.10", "IN IP6 ::1")
    result = answer(text, local_addr="::1", session=None)
    assert result.chosen_audio is not None
    assert result.chosen_audio.address == "::1"
    assert result.sdp.connection == Connection("::1", "IP6")
    assert "c=IN IP6 ::1\r\n" in str(result.sdp)
    assert result.sdp.origin.addrtype == "IP6"


def test_media_level_c_overrides_session_level() -> None:
    text = ASTERISK_22_AUDIO.replace("a=ptime:20", "c=IN IP4 198.51.100.7\r\na=ptime:20")
    result = answer(text)
    assert result.chosen_audio is not None
    assert result.chosen_audio.address == "198.51.100.7"


def test_active_line_without_any_c_address_is_an_sdp_error() -> None:
    text = ASTERISK_22_AUDIO.replace("c=IN IP4 192.0.2.10\r\n", "")
    with pytest.raises(SdpError, match="no c= address"):
        answer(text)


@pytest.mark.parametrize(
    ("change", "answered", "hold"),
    [
        (("a=sendrecv", "a=sendonly"), "recvonly", True),
        (("a=sendrecv", "a=inactive"), "inactive", True),
        (("a=sendrecv", "a=recvonly"), "sendonly", False),
        (("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"), "sendrecv", True),
    ],
)
def test_hold_is_reported_and_direction_mirrored(change: tuple[str, str], answered: str, hold: bool) -> None:
    result = answer(ASTERISK_22_AUDIO.replace(*change))
    assert result.sdp.media[0].direction == answered
    assert result.chosen_audio is not None
    assert result.chosen_audio.hold is hold


def test_session_level_direction_applies_to_lines_without_their_own() -> None:
    text = ASTERISK_22_T38_REINVITE.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    result = answer(text)
    assert result.chosen_image is not None and result.chosen_image.hold
    assert result.sdp.media[0].direction == "recvonly"


# ---- our offers and the peer's answers ---------------------------------------------------------------------


def test_offer_lists_audio_then_image_unless_image_first() -> None:
    session = LocalSession("127.0.0.1", session_id=9, version=3)
    offer = build_offer(
        "127.0.0.1", audio_port=4000, image_port=4002, image_attributes=OUR_T38, session=session
    )
    assert str(offer) == sdp(
        "v=0",
        "o=vfax 9 3 IN IP4 127.0.0.1",
        "s=vfax",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 8",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=ptime:20",
        "a=sendrecv",
        "m=image 4002 udptl t38",
        *(f"a={a}" for a in OUR_T38),
    )
    swapped = build_offer("127.0.0.1", audio_port=4000, image_port=4002, image_first=True)
    assert [m.media for m in swapped.media] == ["image", "audio"]


def test_offer_needs_some_media_and_valid_ports() -> None:
    with pytest.raises(ValueError):
        build_offer("127.0.0.1", audio_port=None, image_port=None)
    with pytest.raises(ValueError):
        build_offer("127.0.0.1", audio_port=70000, image_port=None)
    with pytest.raises(ValueError):
        build_offer("127.0.0.1", audio_port=4000, image_port=None, codecs=("G729",))


def test_our_t38_reinvite_answered_by_asterisk_gives_the_image_line() -> None:
    offer = build_offer("127.0.0.1", audio_port=None, image_port=4002, image_attributes=OUR_T38)
    result = process_answer(offer, parse_sdp(ASTERISK_22_T38_REINVITE))
    assert result.chosen_audio is None
    assert result.chosen_image is not None
    assert (result.chosen_image.address, result.chosen_image.port) == ("192.0.2.10", 4000)
    assert list(result.chosen_image.attributes) == T38_ATTRS


def test_answer_rejecting_image_leaves_audio() -> None:
    offer = build_offer("127.0.0.1", audio_port=4000, image_port=4002)
    reply = sdp(
        "v=0",
        "o=- 5 5 IN IP4 192.0.2.40",
        "s=-",
        "c=IN IP4 192.0.2.40",
        "t=0 0",
        "m=audio 30000 RTP/AVP 8",
        "a=ptime:30",
        "m=image 0 udptl t38",
    )
    result = process_answer(offer, parse_sdp(reply))
    assert result.chosen_image is None
    assert result.chosen_audio is not None
    assert (result.chosen_audio.codec, result.chosen_audio.port, result.chosen_audio.ptime) == (
        "PCMA",
        30000,
        30,
    )


def test_answer_with_wrong_line_count_is_an_sdp_error() -> None:
    offer = build_offer("127.0.0.1", audio_port=4000, image_port=4002)
    with pytest.raises(SdpError, match="1 m-lines, our offer had 2"):
        process_answer(offer, parse_sdp(ASTERISK_22_AUDIO))


def test_answer_with_other_media_or_codec_is_an_sdp_error() -> None:
    offer = build_offer("127.0.0.1", audio_port=4000, image_port=None, codecs=("PCMU",))
    with pytest.raises(SdpError, match="is image"):
        process_answer(offer, parse_sdp(ASTERISK_22_T38_REINVITE))
    with pytest.raises(SdpError, match="no codec we offered"):
        process_answer(offer, parse_sdp(ASTERISK_22_AUDIO.replace("RTP/AVP 0 8 101", "RTP/AVP 8")))


def test_answer_rejecting_everything_reports_no_media() -> None:
    offer = build_offer("127.0.0.1", audio_port=4000, image_port=None)
    result = process_answer(offer, parse_sdp(ASTERISK_22_AUDIO.replace("m=audio 10000", "m=audio 0")))
    assert (result.chosen_audio, result.chosen_image) == (None, None)


def test_our_answer_is_accepted_by_our_own_offer_logic() -> None:
    offer = build_offer("::1", audio_port=4000, image_port=4002, image_attributes=OUR_T38)
    result = answer_offer(offer, local_addr="::1", audio_port=5000, image_port=5002, image_attributes=OUR_T38)
    back = process_answer(offer, parse_sdp(bytes(result.sdp)))
    assert back.chosen_audio is None
    assert back.chosen_image is not None
    assert (back.chosen_image.address, back.chosen_image.port, back.chosen_image.index) == ("::1", 5002, 1)


# ---- o= versions (RFC 3264 §8) -----------------------------------------------------------------------------


def test_version_goes_up_by_one_only_when_the_sdp_changes() -> None:
    session = LocalSession("127.0.0.1", session_id=1234, version=10)
    first = build_offer("127.0.0.1", audio_port=4000, image_port=None, session=session)
    refresh = build_offer("127.0.0.1", audio_port=4000, image_port=None, session=session)
    t38 = build_offer("127.0.0.1", audio_port=None, image_port=4002, session=session)
    again = answer_offer(
        parse_sdp(ASTERISK_22_T38_REINVITE), local_addr="127.0.0.1", image_port=4002, session=session
    ).sdp
    versions = [sd.origin.session_version for sd in (first, refresh, t38, again)]
    assert versions == [10, 10, 11, 11]
    assert {sd.origin.session_id for sd in (first, refresh, t38, again)} == {"1234"}
    assert bytes(first) == bytes(refresh)


def test_returned_sdp_can_be_edited_without_touching_the_session_record() -> None:
    session = LocalSession("127.0.0.1", session_id=1, version=1)
    offer = build_offer("127.0.0.1", audio_port=4000, image_port=None, session=session)
    offer.media[0].attributes.clear()
    again = build_offer("127.0.0.1", audio_port=4000, image_port=None, session=session)
    assert again.origin.session_version == 1


# ---- parsing ----------------------------------------------------------------------------------------------


def test_media_helpers_read_rtpmap_fmtp_ptime_direction() -> None:
    m = parse_sdp(ASTERISK_22_AUDIO).media[0]
    assert m.rtpmap == {
        "0": RtpMap("PCMU", 8000),
        "8": RtpMap("PCMA", 8000),
        "101": RtpMap("telephone-event", 8000),
    }
    assert m.fmtp == {"101": "0-16"}
    assert (m.ptime, m.direction, m.rejected) == (20, "sendrecv", False)
    assert m.attribute_values("MAXPTIME") == ["150"]
    assert m.codec_of("18") == RtpMap("G729", 8000)


def test_malformed_rtpmap_is_skipped_not_fatal() -> None:
    text = ASTERISK_22_AUDIO.replace("a=rtpmap:101 telephone-event/8000", "a=rtpmap:101 telephone-event/x")
    assert "101" not in parse_sdp(text).media[0].rtpmap


def test_lenient_reading_of_sloppy_peers() -> None:
    text = (
        "v=0\n"
        "o=- 1 2 IN IP4 host.example.com\n"
        "c=IN IP4 gw.example.com\n"
        "y=unknown line type\n"
        "a=\n"
        "\n"
        "m=audio 4000/2 RTP/AVP 0   \n"
        "x=also unknown\n"
        "b=AS:64\n"
        "a=ptime:20.0\n"
    )
    sd = parse_sdp(text)
    assert (sd.session_name, sd.timing, sd.attributes) == ("-", [(0, 0)], [])
    m = sd.media[0]
    assert (m.port, m.port_count, m.formats, m.bandwidths, m.ptime) == (4000, 2, ["0"], [("AS", 64)], 20)
    assert parse_sdp(str(sd)) == sd


def test_kept_lines_are_written_back_in_rfc_4566_order() -> None:
    text = sdp(
        "v=0",
        "o=alice 2890844526 2890844527 IN IP4 198.51.100.1",
        "s=Fax",
        "i=a session",
        "u=http://example.com/fax",
        "e=alice@example.com",
        "p=+1 555 0100",
        "c=IN IP4 224.2.17.12/127",
        "b=CT:128",
        "t=2873397496 2873404696",
        "r=7d 1h 0 25h",
        "z=2882844526 -1h",
        "k=prompt",
        "a=recvonly",
        "m=audio 49170 RTP/AVP 0",
        "i=voice",
        "c=IN IP6 2001:db8::1",
        "b=AS:64",
        "k=prompt",
        "a=rtpmap:0 PCMU/8000",
        "m=image 0 udptl t38",
    )
    sd = parse_sdp(text)
    assert str(sd) == text
    shuffled = text.replace("c=IN IP4 224.2.17.12/127\r\n", "").replace(
        "a=recvonly\r\n", "a=recvonly\r\nc=IN IP4 224.2.17.12/127\r\n"
    )
    assert str(parse_sdp(shuffled)) == text
    assert sd.direction_for(0) == "recvonly"
    assert sd.connection_for(0) == Connection("2001:db8::1", "IP6")
    assert sd.connection_for(1) == Connection("224.2.17.12/127")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing v="),
        ("o=- 1 1 IN IP4 192.0.2.1\r\n", "must start with v="),
        ("v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n", "unsupported SDP version"),
        ("v=0\r\ns=-\r\n", "missing o="),
        ("v=0\r\no=- 1 IN IP4 192.0.2.1\r\n", "line 2: o= needs 6 fields"),
        ("v=0\r\no=- 1 x IN IP4 192.0.2.1\r\n", "sess-version 'x' is not a number"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio\r\n", "line 3: m= needs media, port and proto"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000 \r\n", "line 3: m= needs media"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x4000 RTP/AVP 0\r\n", "line 3: m= port 'x4000' is not a number"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio -1 RTP/AVP 0\r\n", "m= port '-1' is not a number"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n", "m= port 70000 out of range"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000/0 RTP/AVP 0\r\n", "port count 0 out of range"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 300.1.1.1\r\n", "line 3: c=: bad IP4 address '300.1.1.1'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP6 ::g\r\n", "bad IP6 address"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", "c= needs 3 fields"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nt=0\r\n", "t= needs start and stop"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=AS\r\n", "b= must be <type>:<bandwidth>"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=AS:lots\r\n", "b= bandwidth 'lots' is not a number"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nContent-Length: 0\r\n", "line 3: expected <type>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nv=0\r\n", "second v="),
    ],
)
def test_malformed_sdp_raises_sdp_error_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    raw = ASTERISK_22_T38_REINVITE.replace("s=Asterisk", "s=Fax \xe9").encode("latin-1")
    assert bytes(parse_sdp(raw)) == raw


def test_model_built_by_hand_serialises_and_parses_back() -> None:
    sd = SessionDescription(
        origin=parse_sdp(ASTERISK_22_T38_REINVITE).origin,
        connection=Connection("192.0.2.1"),
        media=[MediaDescription("image", 4000, "udptl", ["t38"], attributes=[("T38FaxVersion", "0")])],
    )
    assert SessionDescription.parse(bytes(sd)) == sd


# ---- fuzz ------------------------------------------------------------------------------------------------

SAMPLES = [ASTERISK_22_T38_REINVITE, ASTERISK_22_AUDIO, SHAPE_AUDIO_0_PLUS_IMAGE, SHAPE_AUDIO_PLUS_IMAGE]
SDP_ALPHABET = st.sampled_from(list("vosctmab=: /0123456789.\r\nINIP46RTP/AVPudptlt38image audio-x\x00\xe9"))


def _exercise(text: str | bytes) -> None:
    """Parse and answer: only SdpError/OfferRejected may escape, and what parses re-parses to itself."""
    try:
        sd = parse_sdp(text)
    except SdpError:
        return
    assert parse_sdp(str(sd)) == sd
    assert parse_sdp(bytes(sd)) == sd
    try:
        result = answer_offer(sd, local_addr="127.0.0.1", audio_port=5004, image_port=6004)
    except (SdpError, OfferRejected):
        return
    assert len(result.sdp.media) == len(sd.media)
    assert all(m.formats for m in result.sdp.media)
    back = process_answer(sd, parse_sdp(bytes(result.sdp)))
    if result.chosen_audio is not None:
        assert back.chosen_audio is not None
        assert (back.chosen_audio.index, back.chosen_audio.port) == (result.chosen_audio.index, 5004)
    if result.chosen_image is not None:
        assert back.chosen_image is not None
        assert (back.chosen_image.index, back.chosen_image.port) == (result.chosen_image.index, 6004)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.text(SDP_ALPHABET, max_size=300)))
def test_random_input_only_raises_sdp_error(data: str | bytes) -> None:
    _exercise(data)
    _exercise("v=0\r\no=- 1 1 IN IP4 h\r\n" + (data if isinstance(data, str) else data.decode("latin-1")))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(
            st.sampled_from(["delete", "insert", "replace", "swap_lines", "drop_line"]),
            st.integers(min_value=0, max_value=10_000),
            st.text(SDP_ALPHABET, min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_sdp_only_raises_sdp_error(sample: str, edits: list[tuple[str, int, str]]) -> None:
    text = sample
    for op, where, piece in edits:
        lines = text.split("\r\n")
        pos = where % (len(text) + 1)
        if op == "delete":
            text = text[:pos] + text[pos + len(piece) :]
        elif op == "insert":
            text = text[:pos] + piece + text[pos:]
        elif op == "replace":
            text = text[:pos] + piece + text[pos + len(piece) :]
        elif op == "swap_lines" and len(lines) > 2:
            i = where % (len(lines) - 1)
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
            text = "\r\n".join(lines)
        elif op == "drop_line" and lines:
            del lines[where % len(lines)]
            text = "\r\n".join(lines)
    _exercise(text)
