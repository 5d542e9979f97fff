# ruff: noqa: E501 -- header lines are as long as the peers send them
"""SIP messages as they look on the wire from real peers, written for the tests (RFC 3261/4475 style).

Addresses are documentation ranges (RFC 5737, RFC 3849). Each constant is the exact bytes of one UDP
datagram or one message on a stream; ``_wire`` fills in Content-Length from the body so it is always right
(except where a sample is about a missing or wrong length).
"""

from __future__ import annotations


def _wire(head: str, body: str = "", *, content_length: bool = True) -> bytes:
    lines = head.strip("\n").split("\n")
    if content_length:
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _sdp(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


ASTERISK_SDP_AUDIO = _sdp(
    "v=0",
    "o=- 1848263419 1848263419 IN IP4 192.0.2.10",
    "s=Asterisk",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 17352 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:140",
    "a=sendrecv",
)

ASTERISK_SDP_T38 = _sdp(
    "v=0",
    "o=- 1848263419 1848263421 IN IP4 192.0.2.10",
    "s=Asterisk",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=image 4390 udptl t38",
    "a=T38FaxVersion:0",
    "a=T38MaxBitRate:14400",
    "a=T38FaxRateManagement:transferredTCF",
    "a=T38FaxUdpEC:t38UDPRedundancy",
    "a=T38FaxMaxDatagram:400",
)

#: Asterisk 22 chan_pjsip calling a fax device.
ASTERISK_INVITE = _wire(
    """
INVITE sip:fax@192.0.2.20:5080 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPj6c1b7a4e-8d2f-4c1e-9b7a-3f0d2e1c5a88
From: "Front Desk" <sip:2001@192.0.2.10>;tag=3f9a1c2e-5b7d-4e8f-a1b2-c3d4e5f60718
To: <sip:fax@192.0.2.20>
Contact: <sip:asterisk@192.0.2.10:5060>
Call-ID: 9b8c7d6e-5f4a-3b2c-1d0e-f9a8b7c6d5e4
CSeq: 21304 INVITE
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, MESSAGE, REFER
Supported: 100rel, replaces, norefersub
Session-Expires: 1800
Min-SE: 90
P-Asserted-Identity: "Front Desk" <sip:2001@192.0.2.10>
Max-Forwards: 70
User-Agent: Asterisk PBX 22.1.0
Content-Type: application/sdp
""",
    ASTERISK_SDP_AUDIO,
)

#: Asterisk 22 ReceiveFAX switching an answered call to T.38 (in-dialog re-INVITE, both tags).
ASTERISK_T38_REINVITE = _wire(
    """
INVITE sip:vfax@192.0.2.20:5080;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPj0e4d1c2b-aa11-4f5e-8d9c-1234567890ab
From: <sip:2001@192.0.2.10>;tag=3f9a1c2e-5b7d-4e8f-a1b2-c3d4e5f60718
To: <sip:fax@192.0.2.20>;tag=vf7c21e0a9
Contact: <sip:asterisk@192.0.2.10:5060>
Call-ID: 9b8c7d6e-5f4a-3b2c-1d0e-f9a8b7c6d5e4
CSeq: 21305 INVITE
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, MESSAGE, REFER
Supported: 100rel, replaces, norefersub
Max-Forwards: 70
User-Agent: Asterisk PBX 22.1.0
Content-Type: application/sdp
""",
    ASTERISK_SDP_T38,
)

#: FreeSWITCH (sofia-sip) INVITE with its usual extras.
FREESWITCH_INVITE = _wire(
    """
INVITE sip:4000@192.0.2.20:5080;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.30;rport;branch=z9hG4bKSt8yXp3gKQ0cF
Max-Forwards: 69
From: "Extension 1000" <sip:1000@192.0.2.30>;tag=Ng9r0aFBZc3eK
To: <sip:4000@192.0.2.20:5080;transport=udp>
Call-ID: 1e3c0a76-2d7b-123f-7a9c-0242ac110002
CSeq: 130671874 INVITE
Contact: <sip:mod_sofia@192.0.2.30:5060>
User-Agent: FreeSWITCH-mod_sofia/1.10.12-release~64bit
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY, PUBLISH, SUBSCRIBE
Supported: timer, path, replaces
Allow-Events: talk, hold, conference, presence, as-feature-event, dialog, line-seize, call-info, sla, include-session-description, presence.winfo, message-summary, refer
Content-Type: application/sdp
Content-Disposition: session
X-FS-Support: update_display,send_info
Remote-Party-ID: "Extension 1000" <sip:1000@192.0.2.30>;party=calling;screen=yes;privacy=off
""",
    _sdp(
        "v=0",
        "o=FreeSWITCH 1732600000 1732600001 IN IP4 192.0.2.30",
        "s=FreeSWITCH",
        "c=IN IP4 192.0.2.30",
        "t=0 0",
        "m=audio 24576 RTP/AVP 8 0 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
    ),
)

#: An INVITE that went through Kamailio: two Vias (proxy on top, received/rport filled in below), two
#: Record-Routes (the proxy double-routes between interfaces), Max-Forwards decremented.
KAMAILIO_PROXIED_INVITE = _wire(
    """
INVITE sip:vfax@192.0.2.20:5080 SIP/2.0
Record-Route: <sip:192.0.2.1;r2=on;lr=on;ftag=a73kszlfl;did=8e1.3c91>
Record-Route: <sip:198.51.100.1;r2=on;lr=on;ftag=a73kszlfl;did=8e1.3c91>
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK4d8e.9a1b5f7f8c1f6a3e2b9d0c7f6e5a4b3c.0
Via: SIP/2.0/UDP 198.51.100.77:5062;received=203.0.113.9;rport=40112;branch=z9hG4bK74bf9
Max-Forwards: 69
From: Alice <sip:alice@example.net>;tag=a73kszlfl
To: Fax <sip:vfax@example.net>
Call-ID: 3848276298220188511@198.51.100.77
CSeq: 1 INVITE
Contact: <sip:alice@203.0.113.9:40112;transport=udp>
Content-Type: application/sdp
""",
    _sdp(
        "v=0",
        "o=alice 2890844526 2890844526 IN IP4 198.51.100.77",
        "s=-",
        "c=IN IP4 198.51.100.77",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ),
)

#: Kamailio registrar challenge (auth module, qop=auth, MD5).
KAMAILIO_401 = _wire(
    """
SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.0.2.20:5080;rport=5080;branch=z9hG4bK9c2a81f0e4d7b3a6;received=192.0.2.20
From: <sip:vfax@example.net>;tag=vf11aa22bb33cc44dd
To: <sip:vfax@example.net>;tag=b27e1a1d33761e85846fc98f5f3a7e58.0a1b
Call-ID: 5f2ad9e6b1c84b0f8e7d6c5b4a39281706@192.0.2.20
CSeq: 1 REGISTER
WWW-Authenticate: Digest realm="example.net", nonce="ZkYw8GZGL8TcS1uqW1YwlWG3ZXGd3r/p", qop="auth"
Server: kamailio (5.8.4 (x86_64/linux))
"""
)

#: RFC 8760 §2.4 style 407 offering SHA-256 first, then MD5, plus a stale re-challenge flag off.
PROXY_407_SHA256 = _wire(
    """
SIP/2.0 407 Proxy Authentication Required
Via: SIP/2.0/UDP 192.0.2.20:5080;branch=z9hG4bK77e1c2d3;rport=5080
From: <sip:vfax@example.net>;tag=vf99
To: <sip:4000@example.net>;tag=px1
Call-ID: 77aa@192.0.2.20
CSeq: 1 INVITE
Proxy-Authenticate: Digest realm="example.net", nonce="Wq4AbV9u", opaque="0a1b2c", algorithm=SHA-256, qop="auth"
Proxy-Authenticate: Digest realm="example.net", nonce="Wq4AbV9u", opaque="0a1b2c", algorithm=MD5, qop="auth"
"""
)

#: A REGISTER with credentials, outbound (RFC 5626) instance and reg-id.
REGISTER = _wire(
    """
REGISTER sip:example.net SIP/2.0
Via: SIP/2.0/UDP 192.0.2.20:5080;rport;branch=z9hG4bK1d5f0a3c7b9e2d4f
Max-Forwards: 70
From: <sip:vfax@example.net>;tag=vf11aa22bb33cc44dd
To: <sip:vfax@example.net>
Call-ID: 5f2ad9e6b1c84b0f8e7d6c5b4a39281706@192.0.2.20
CSeq: 2 REGISTER
Contact: <sip:vfax@192.0.2.20:5080;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>";reg-id=1;expires=3600
Authorization: Digest username="vfax", realm="example.net", nonce="ZkYw8GZGL8TcS1uqW1YwlWG3ZXGd3r/p", uri="sip:example.net", response="0b5a0f4b4a2b9d8e5c3f1e7d9a6b2c4e", algorithm=MD5, cnonce="4f1a2b3c", qop=auth, nc=00000001
Expires: 3600
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE
Supported: path, outbound
User-Agent: vfax/0.1
"""
)

#: sipvicious svmap probe: no space before '<', a space after ';' before tag, Content-Length early.
SIPVICIOUS_OPTIONS = (
    b"OPTIONS sip:100@192.0.2.20 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.66:5060;branch=z9hG4bK-2863925380;rport\r\n"
    b"Content-Length: 0\r\n"
    b'From: "sipvicious"<sip:100@1.1.1.1>; tag=6434396633623535313363340131363139303832373237\r\n'
    b"Accept: application/sdp\r\n"
    b"User-Agent: friendly-scanner\r\n"
    b'To: "sipvicious"<sip:100@1.1.1.1>\r\n'
    b"Contact: sip:100@203.0.113.66:5060\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Call-ID: 822531813930461808218624\r\n"
    b"Max-Forwards: 70\r\n"
    b"\r\n"
)

#: Compact forms everywhere, odd case and whitespace (RFC 4475 §3.1.1.1 style, much tamer).
COMPACT_INVITE = _wire(
    """
INVITE sip:vfax@192.0.2.20 SIP/2.0
v:  SIP/2.0/UDP 198.51.100.5:5060 ;branch=z9hG4bKcompact1;rport
MAX-FORWARDS: 70
f: sip:caller@example.org;tag=c0mp4ct
t: <sip:vfax@192.0.2.20>
i: compact-call-1@198.51.100.5
cSeQ:  8   INVITE
m: "Caller" <sip:caller@198.51.100.5>
k: 100rel
k: timer
o: presence
s: compact test
c: application/sdp
""",
    _sdp(
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.5",
        "s=-",
        "c=IN IP4 198.51.100.5",
        "t=0 0",
        "m=audio 8000 RTP/AVP 0",
    ),
).replace(b"Content-Length:", b"l:")

#: Header fields folded over several lines (§7.3.1 LWS) and Via elements in one comma list.
FOLDED_INVITE = _wire(
    """
INVITE sip:vfax@192.0.2.20 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfold1,
 SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bKfold2
Max-Forwards: 70
From: "Folded
\t Name" <sip:folded@example.org>;tag=f0ld
To: <sip:vfax@192.0.2.20>
Call-ID: folded-1@198.51.100.7
CSeq: 77 INVITE
Subject: I know you're there,
    pick up the phone
    and talk to me!
NewFangledHeader:   newfangled value
 continued newfangled value
Contact: <sip:folded@198.51.100.7:5070>
"""
)

#: A UDP datagram without Content-Length: the body is the rest of the datagram (§18.3).
NO_LENGTH_MESSAGE = _wire(
    """
MESSAGE sip:vfax@192.0.2.20 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.8;branch=z9hG4bKnolen
Max-Forwards: 70
From: <sip:bob@example.org>;tag=nl1
To: <sip:vfax@192.0.2.20>
Call-ID: nolength@198.51.100.8
CSeq: 3 MESSAGE
Content-Type: text/plain
""",
    "Hello fax",
    content_length=False,
)

#: 200 OK from Asterisk accepting our T.38 re-INVITE.
ASTERISK_200_T38 = _wire(
    """
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.20:5080;rport=5080;received=192.0.2.20;branch=z9hG4bK5e6f7a8b9c0d1e2f
Call-ID: vf-3c2b1a09f8e7d6c5b4a3@192.0.2.20
From: <sip:vfax@192.0.2.20>;tag=vf0a1b2c3d
To: <sip:2001@192.0.2.10>;tag=7c1a9f0e-3b2d-4c5e-8f6a-0b1c2d3e4f50
CSeq: 102 INVITE
Server: Asterisk PBX 22.1.0
Contact: <sip:192.0.2.10:5060>
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, MESSAGE, REFER
Supported: 100rel, timer, replaces, norefersub
Content-Type: application/sdp
""",
    ASTERISK_SDP_T38,
)

TRYING_100 = _wire(
    """
SIP/2.0 100 Trying
Via: SIP/2.0/UDP 192.0.2.20:5080;rport=5080;received=192.0.2.20;branch=z9hG4bK5e6f7a8b9c0d1e2f
Call-ID: vf-3c2b1a09f8e7d6c5b4a3@192.0.2.20
From: <sip:vfax@192.0.2.20>;tag=vf0a1b2c3d
To: <sip:2001@192.0.2.10>
CSeq: 102 INVITE
Server: Asterisk PBX 22.1.0
"""
)

BYE_TCP_IPV6 = _wire(
    """
BYE sip:vfax@[2001:db8::20]:5080;transport=tcp SIP/2.0
Via: SIP/2.0/TCP [2001:db8::10]:5060;branch=z9hG4bKv6bye;alias
Max-Forwards: 70
From: <sip:2001@[2001:db8::10]>;tag=v6from
To: <sip:vfax@[2001:db8::20]>;tag=v6to
Call-ID: v6call@2001:db8::10
CSeq: 4 BYE
Reason: Q.850;cause=16;text="Normal call clearing"
"""
)

ACK = _wire(
    """
ACK sip:vfax@192.0.2.20:5080 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPjack01
From: "Front Desk" <sip:2001@192.0.2.10>;tag=3f9a1c2e-5b7d-4e8f-a1b2-c3d4e5f60718
To: <sip:fax@192.0.2.20>;tag=vf7c21e0a9
Call-ID: 9b8c7d6e-5f4a-3b2c-1d0e-f9a8b7c6d5e4
CSeq: 21304 ACK
Max-Forwards: 70
"""
)

NOTIFY_COMPACT_EVENT = _wire(
    """
NOTIFY sip:vfax@192.0.2.20:5080 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKnotify1
Max-Forwards: 70
From: <sip:vfax@example.net>;tag=srv1
To: <sip:vfax@example.net>;tag=vfsub1
Call-ID: sub-1@192.0.2.20
CSeq: 10 NOTIFY
o: message-summary
Subscription-State: active;expires=3600
c: application/simple-message-summary
""",
    "Messages-Waiting: no\r\n",
)

#: Every sample that must parse, by name.
VALID = {
    "asterisk_invite": ASTERISK_INVITE,
    "asterisk_t38_reinvite": ASTERISK_T38_REINVITE,
    "freeswitch_invite": FREESWITCH_INVITE,
    "kamailio_proxied_invite": KAMAILIO_PROXIED_INVITE,
    "kamailio_401": KAMAILIO_401,
    "proxy_407_sha256": PROXY_407_SHA256,
    "register": REGISTER,
    "sipvicious_options": SIPVICIOUS_OPTIONS,
    "compact_invite": COMPACT_INVITE,
    "folded_invite": FOLDED_INVITE,
    "no_length_message": NO_LENGTH_MESSAGE,
    "asterisk_200_t38": ASTERISK_200_T38,
    "trying_100": TRYING_100,
    "bye_tcp_ipv6": BYE_TCP_IPV6,
    "ack": ACK,
    "notify_compact_event": NOTIFY_COMPACT_EVENT,
}
