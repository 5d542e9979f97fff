# ruff: noqa: E501 -- torture lines are as long as the RFC makes them
"""The RFC 4475 torture messages (§3.1 parser tests, §3.2, §3.3 application-layer semantics, §3.4), written
from the RFC's descriptions, with the answer the RFC asks of a user agent server.

Each ``Case`` is one datagram as it would arrive over UDP. ``status`` is the final status the UA must send
(None: the datagram is dropped without an answer, as for responses that match nothing); ``call`` marks
valid INVITEs that reach the application (the tests' application answers them 486 Busy Here, so
``status`` is 486 for those). Where the RFC allows a liberal reading (``baddate``, ``badaspec``...),
``note`` says which one a fax UA takes.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The SDP most RFC 4475 messages carry (an audio and a video line; the content does not matter here).
SDP = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
)


def build(lines: list[str | bytes], body: bytes = b"") -> bytes:
    """Header lines joined with CRLF, the blank line, then ``body``; ``{CL}`` becomes the body length."""
    out = []
    for line in lines:
        raw = line.encode("utf-8") if isinstance(line, str) else line
        out.append(raw.replace(b"{CL}", str(len(body)).encode()))
    return b"\r\n".join(out) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Case:
    name: str
    section: str
    raw: bytes
    status: int | None  # the final answer the RFC asks for; None: no answer at all
    reason: str = ""  # a fragment the reason phrase must contain (case-insensitive)
    header: tuple[str, str] | None = None  # (name, fragment) the answer must carry
    call: bool = False  # a valid INVITE that reaches the application
    valid: bool = True  # the RFC calls the message well formed
    note: str = ""

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------------------------------------- 3.1.1 valid

WSINV = build(
    [
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
        "TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8',
        "MaX-fOrWaRdS: 0068",
        "Call-ID: wsinv.ndaksdj@192.0.2.1",
        "Content-Length   : {CL}",
        "cseq: 0009\r\n  INVITE",
        "Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw",
        "s :",
        "NewFangledHeader:   newfangled value\r\n continued newfangled value",
        "UnknownHeaderWithUnusualValue: ;;,,;;,;",
        "Content-Type: application/sdp",
        "Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,",
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239",
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n'
        "  secondparam ; q = 0.33",
    ],
    SDP,
)

# Unusual but legal characters in the method, Request-URI, branch, display names, Call-ID and an extension
# header; the To display name holds quoted-pairs of BEL, NUL and DEL.
INTMETH_METHOD = "!interesting-Method0123456789_*+`.%indeed'~"
INTMETH = build(
    [
        f"{INTMETH_METHOD} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com SIP/2.0",
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
        b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>',
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
        '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1\'+`*%!-.',
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        f"CSeq: 139122385 {INTMETH_METHOD}",
        "Max-Forwards: 255",
        "extensionHeader-!.%*+_`'~: \ufeff\u5927\u505c\u96fb",
        "Content-Length: 0",
    ]
)

ESC01 = build(
    [
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
        "To: sip:%75se%72@example.com",
        "From: <sip:I%20have%20spaces@example.net>;tag=938",
        "Max-Forwards: 87",
        "i: esc01.239409asdfakjkn23onasd0-3234",
        "CSeq: 234234 INVITE",
        "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw",
        "C: application/sdp",
        "Contact:\r\n  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
        "Content-Length: {CL}",
    ],
    SDP,
)

ESCNULL = build(
    [
        "REGISTER sip:example.com SIP/2.0",
        "To: sip:null-%00-null@example.com",
        "From: sip:null-%00-null@example.com;tag=839923423",
        "Max-Forwards: 70",
        "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        "CSeq: 14398234 REGISTER",
        "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw",
        "Contact: <sip:%00@host5.example.com>",
        "Contact: <sip:%00%00@host5.example.com>",
        "L:0",
    ]
)

ESC02 = build(
    [
        "RE%47IST%45R sip:registrar.example.com SIP/2.0",
        'To: "%Z%45" <sip:resource@example.com>',
        'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23',
        "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234",
        "CSeq: 29344 RE%47IST%45R",
        "Max-Forwards: 70",
        "Contact: <sip:alias1@host1.example.com>",
        "C%6Fntact: <sip:alias2@host2.example.com>",
        "Contact: <sip:alias3@host3.example.com>",
        "l: 0",
    ]
)

LWSDISP = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:user@example.com",
        "From: caller<sip:caller@example.com>;tag=323",
        "Max-Forwards: 70",
        "Call-ID: lwsdisp.1234abcd@funky.example.com",
        "CSeq: 60 OPTIONS",
        "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw",
        "l: 0",
    ]
)

_LONG = "long" * 20
LONGREQ = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        f'To: "I have a user name of {"extreme" * 10} proportion"<sip:user@example.com:6000;'
        f"unknownparam1=very{_LONG}value;longparam{'name' * 25}=shortvalue;"
        f"very{_LONG}ParameterNameWithNoValue>",
        f"F: sip:{'amazinglylongcallername' * 5}@example.net;tag={'1298' * 40}424;"
        f"unknownheaderparam{'name' * 20}=unknowheaderparam{'value' * 15};"
        f"unknownValueless{'paramname' * 10}",
        f"Call-ID: longreq.one{'really' * 20}longcallid",
        "CSeq: 3882340 INVITE",
        f"Unknown-{'Long' * 20}-Name: unknown-{_LONG}-value; unknown-{_LONG}-parameter-name = "
        f"unknown-{_LONG}-parameter-value",
        *[f"{name}: SIP/2.0/TCP sip{n}.example.com" for n, name in zip(
            range(33, 16, -1),
            ["Via", "v", "V", "Via", "ViA", "VIa", "VIA", "via", "viA", "vIa", "vIA", "V ", "v ", "V  ", "v  ",
             "Via ", "Via  "],
            strict=True,
        )],
        *[f"Via: SIP/2.0/TCP sip{n}.example.com" for n in range(16, 0, -1)],
        f"Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=very{'long' * 50}branchvalue",
        "Max-Forwards: 70",
        f"Contact: <sip:{'amazinglylongcallername' * 5}@host5.example.net>",
        "Content-Type: application/sdp",
        "l: {CL}",
    ],
    SDP,
)

# One REGISTER, then octets that look like an INVITE: past Content-Length, they are noise (§18.3).
DBLREQ = build(
    [
        "REGISTER sip:example.com SIP/2.0",
        "To: sip:j.user@example.com",
        "From: sip:j.user@example.com;tag=43251j3j324",
        "Max-Forwards: 8",
        "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        "Contact: sip:j.user@host.example.com",
        "CSeq: 8 REGISTER",
        "Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492",
        "Content-Length: 0",
    ],
    build(
        [
            "INVITE sip:joe@example.com SIP/2.0",
            "t: sip:joe@example.com",
            "From: sip:caller@example.net;tag=141334",
            "Max-Forwards: 8",
            "Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15",
            "CSeq: 8 INVITE",
            "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234",
            "Content-Type: application/sdp",
            "Content-Length: {CL}",
        ],
        SDP,
    ),
)

SEMIURI = build(
    [
        "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0",
        "To: sip:j_user@example.com",
        "From: sip:caller@example.org;tag=33242",
        "Max-Forwards: 3",
        "Call-ID: semiuri.0ha0isndaksdj",
        "CSeq: 8 OPTIONS",
        "Accept: application/sdp, application/pkcs7-mime,\r\n        multipart/mixed, multipart/signed,\r\n"
        "        message/sip, message/sipfrag",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw",
        "l: 0",
    ]
)

TRANSPORTS = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:user@example.com",
        "From: <sip:caller@example.com>;tag=323",
        "Max-Forwards: 70",
        "Call-ID:  transports.kijh4akdnaqjkwendsasfdj",
        "Accept: application/sdp",
        "CSeq: 60 OPTIONS",
        "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw",
        "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
        "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj",
        "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
        "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee",
        "l: 0",
    ]
)

# A MESSAGE with a multipart/mixed body whose second part is binary (NULs and high octets in the body).
_BINARY = bytes(range(256)) + b"\x00\r\n\x00--not-the-boundary\r\n"
_MPART_BODY = (
    b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nHello\r\n"
    b"--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    + _BINARY
    + b"\r\n--7a9cbec02ceef655--\r\n"
)
MPART01 = build(
    [
        "MESSAGE sip:kumiko@example.org SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport",
        "Max-Forwards: 70",
        "Route: <sip:127.0.0.1:5080>",
        "Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQ=",
        "Contact: <sip:fluffy@127.0.0.1:5070>",
        "To: <sip:kumiko@example.org>",
        "From: <sip:fluffy@example.com>;tag=2fb0dcc9",
        "Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        "CSeq: 1 MESSAGE",
        "Content-Transfer-Encoding: binary",
        "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655",
        "Date: Sat, 15 Oct 2005 04:44:56 GMT",
        "User-Agent: SIPimp.org/0.2.5 (curses)",
        "Content-Length: {CL}",
    ],
    _MPART_BODY,
)

UNREASON = build(
    [
        "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e"
        " \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435",
        "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923",
        "Call-ID: unreason.1234ksdfak3j2erwedfsASdf",
        "CSeq: 35 INVITE",
        "From: sip:user@example.com;tag=11141343",
        "To: sip:user@example.edu;tag=2229",
        "Content-Length: {CL}",
        "Content-Type: application/sdp",
        "Contact: <sip:user@host198.example.com>",
    ],
    SDP,
)

NOREASON = build(
    [
        "SIP/2.0 100 ",
        "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
        "Call-ID: noreason.asndj203insdf99223ndf",
        "CSeq: 35 INVITE",
        "From: <sip:user@example.com>;tag=39ansfi3",
        "To: <sip:user@example.edu>;tag=902jndnke3",
        "Content-Length: 0",
        "Contact: <sip:user@host105.example.com>",
    ]
)

# ---------------------------------------------------------------------------------------------- 3.1.2 invalid

BADINV01 = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        "To: sip:j.user@example.com",
        "From: sip:caller@example.net;tag=134161461246",
        "Max-Forwards: 7",
        "Call-ID: badinv01.0ha0isndaksdjasdf3234nas",
        "CSeq: 8 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
        'Contact: "Joe" <sip:joe@example.org>;;;;',
        "Content-Length: {CL}",
        "Content-Type: application/sdp",
    ],
    SDP,
)

_INVITE_HEAD = [
    "Max-Forwards: 80",
    "To: sip:j.user@example.com",
    "From: sip:caller@example.net;tag=93942939o2",
    "Contact: <sip:caller@hungry.example.net>",
]

CLERR = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        *_INVITE_HEAD,
        "Call-ID: clerr.0ha0isndaksdjweiafasdk3",
        "CSeq: 8 INVITE",
        "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523",
        "Content-Type: application/sdp",
        "Content-Length: 9999",
    ],
    SDP,
)

NCL = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        "Max-Forwards: 254",
        "To: sip:j.user@example.com",
        "From: sip:caller@example.net;tag=32394234",
        "Call-ID: ncl.0ha0isndaksdj2193423r542w35",
        "CSeq: 0 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw",
        "Contact: <sip:caller@example53.example.net>",
        "Content-Type: application/sdp",
        "Content-Length: -999",
    ],
    SDP,
)

SCALAR02 = build(
    [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3",
        "To: <sip:user@example.com>",
        "From: <sip:user@example.com>;tag=239232jh3",
        "CSeq: 36893488147419103232 REGISTER",
        "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32",
        "Max-Forwards: 300",
        "Expires: 1" + "0" * 100,
        "Contact: <sip:user@host129.example.com>\r\n  ;expires=280297596632815",
        "Content-Length: 0",
    ]
)

SCALARLG = build(
    [
        "SIP/2.0 503 Service Unavailable",
        "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129",
        "To: <sip:user@example.com>",
        "From: <sip:other@example.net>;tag=2easdjfejw",
        "CSeq: 9292394834772304023312 OPTIONS",
        "Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r",
        "Retry-After: 949302838503028349304023988",
        'Warning: 1812 overture "In Progress"',
        "Content-Length: 0",
    ]
)

QUOTBAL = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        'To: "Mr. J. User <sip:j.user@example.com>',
        "From: sip:caller@example.net;tag=93334",
        "Max-Forwards: 10",
        "Call-ID: quotbal.aksdj",
        "Contact: <sip:caller@host59.example.net>",
        "CSeq: 8 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234",
        "Content-Type: application/sdp",
        "Content-Length: {CL}",
    ],
    SDP,
)


def _invite(request_line: str, call_id: str, via: str, extra: tuple[str, ...] = ()) -> bytes:
    return build(
        [
            request_line,
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=39291",
            "Max-Forwards: 23",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            f"Via: {via}",
            "Contact: <sip:caller@host5.example.net>",
            *extra,
            "Content-Type: application/sdp",
            "Content-Length: {CL}",
        ],
        SDP,
    )


LTGTRURI = _invite("INVITE <sip:user@example.com> SIP/2.0", "ltgtruri.1@192.0.2.5", "SIP/2.0/UDP 192.0.2.5")
LWSRURI = _invite(
    "INVITE sip:user@example.com; lr SIP/2.0",
    "lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395",
)
LWSSTART = _invite(
    "INVITE  sip:user@example.com  SIP/2.0",
    "lwsstart.dfknq234oi243099adsdfnawe3@example.com",
    "SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923",
)
TRWS = build(
    [
        "OPTIONS sip:remote-target@example.com SIP/2.0  ",
        "Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093",
        "To: <sip:remote-target@example.com>",
        "From: <sip:local-resource@example.com>;tag=329429089",
        "Call-ID: trws.oicu34958239neffasdhr2345r",
        "Accept: application/sdp",
        "CSeq: 238923 OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
)
ESCRURI = _invite(
    "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
    "escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5",
    "SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw",
)
BADDATE = _invite(
    "INVITE sip:user@example.com SIP/2.0",
    "baddate.239423mnsadf3j23lj42--sedfnm234",
    "SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw",
    ("Date: Fri, 01 Jan 2010 16:00:00 EST",),
)

REGBADCT = build(
    [
        "REGISTER sip:example.com SIP/2.0",
        "To: sip:user@example.com",
        "From: sip:user@example.com;tag=998332",
        "Max-Forwards: 70",
        "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1",
        "CSeq: 1 REGISTER",
        "Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw",
        "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        "l: 0",
    ]
)

BADASPEC = build(
    [
        "OPTIONS sip:user@example.org SIP/2.0",
        "Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234",
        "Max-Forwards: 70",
        'From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423',
        'To: "Watson, Thomas" < sip:t.watson@example.org >',
        "Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3",
        "Accept: application/sdp",
        "CSeq: 3923239 OPTIONS",
        "l: 0",
    ]
)

BADDN = build(
    [
        "OPTIONS sip:t.watson@example.org SIP/2.0",
        "Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw",
        "Max-Forwards:      70",
        "From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
        "To:      Watson, Thomas <sip:t.watson@example.org>",
        "Call-ID: baddn.31415@c.example.com",
        "Accept: application/sdp",
        "CSeq:    3923239 OPTIONS",
        "l: 0",
    ]
)

BADVERS = build(
    [
        "OPTIONS sip:t.watson@example.org SIP/7.0",
        "Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
        "Max-Forwards:     70",
        "From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe",
        "To:      T. Watson <sip:t.watson@example.org>",
        "Call-ID: badvers.31417@c.example.com",
        "CSeq:    1 OPTIONS",
        "l: 0",
    ]
)

MISMATCH01 = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:j.user@example.com",
        "From: sip:caller@example.net;tag=34525",
        "Max-Forwards: 6",
        "Call-ID: mismatch01.dj0234sxdfl3",
        "CSeq: 8 INVITE",
        "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw",
        "l: 0",
    ]
)

MISMATCH02 = build(
    [
        "NEWMETHOD sip:user@example.com SIP/2.0",
        "To: sip:j.user@example.com",
        "From: sip:caller@example.net;tag=34525",
        "Max-Forwards: 6",
        "Call-ID: mismatch02.dj0234sxdfl3",
        "CSeq: 8 INVITE",
        "Contact: <sip:caller@host.example.net>",
        "Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw",
        "Content-Type: application/sdp",
        "l: {CL}",
    ],
    SDP,
)

BIGCODE = build(
    [
        "SIP/2.0 4294967301 better not break the receiver",
        "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
        "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i",
        "CSeq: 353494 INVITE",
        "From: <sip:user@example.com>;tag=39ansfi3",
        "To: <sip:user@example.edu>;tag=902jndnke3",
        "Content-Length: 0",
        "Contact: <sip:user@host105.example.com>",
    ]
)

# ---------------------------------------------------------------------------------------------- 3.2, 3.3, 3.4

BADBRANCH = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:user@example.com",
        "From: sip:caller@example.org;tag=33242",
        "Max-Forwards: 3",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK",
        "Accept: application/sdp",
        "Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n",
        "CSeq: 8 OPTIONS",
        "l: 0",
    ]
)

INSUF = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        "CSeq: 193942 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf",
        "Content-Type: application/sdp",
        "l: {CL}",
    ],
    SDP,
)


def _options(request_line: str, call_id: str, via: str, extra: tuple[str, ...] = ()) -> bytes:
    return build(
        [
            request_line,
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=384",
            "Max-Forwards: 3",
            f"Call-ID: {call_id}",
            "CSeq: 3923423 OPTIONS",
            f"Via: {via}",
            *extra,
            "Content-Length: 0",
        ]
    )


UNKSCM = _options(
    "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
    "unkscm.nasdfasser0q239nwsdfasdkl34",
    "SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234",
)
NOVELSC = _options(
    "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0",
    "novelsc.asdfasser0q239nwsdfasdkl34",
    "SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234",
)


def _register(call_id: str, extra: tuple[str, ...], to: str = "sip:watson@example.com") -> bytes:
    return build(
        [
            "REGISTER sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw",
            "Max-Forwards: 70",
            "From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe",
            f"To: {to}",
            f"Call-ID: {call_id}",
            "CSeq: 2 REGISTER",
            *extra,
            "l: 0",
        ]
    )


UNKSM2 = build(
    [
        "REGISTER sip:example.com SIP/2.0",
        "To: isbn:2983792873",
        "From: <http://www.example.com>;tag=3234233",
        "Call-ID: unksm2.daksdj@hyphenated-host.example.com",
        "CSeq: 234902 REGISTER",
        "Max-Forwards: 70",
        "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw",
        "Contact: <name:John_Smith>",
        "l: 0",
    ]
)

BEXT01 = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:j_user@example.com",
        "From: sip:caller@example.net;tag=242etr",
        "Max-Forwards: 6",
        "Call-ID: bext01.0ha0isndaksdj",
        "Require: nothingSupportsThis, nothingSupportsThisEither",
        "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis",
        "CSeq: 8 OPTIONS",
        "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw",
        "Content-Length: 0",
    ]
)

_XML = b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'
INVUT = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        "Contact: <sip:caller@host5.example.net>",
        "To: sip:j.user@example.com",
        "From: sip:caller@example.net;tag=8392034",
        "Max-Forwards: 70",
        "Call-ID: invut.0ha0isndaksdjadsfij34n23d",
        "CSeq: 235448 INVITE",
        "Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw",
        "Content-Type: application/unknownformat",
        "Content-Length: {CL}",
    ],
    _XML,
)

REGAUT01 = build(
    [
        "REGISTER sip:example.com SIP/2.0",
        "To: sip:j.user@example.com",
        "From: sip:j.user@example.com;tag=87321hj23128",
        "Max-Forwards: 8",
        "Call-ID: regaut01.0ha0isndaksdj",
        "CSeq: 9338 REGISTER",
        "Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw",
        "Authorization: NoOneKnowsThisScheme opaque-data=here",
        "Content-Length:0",
    ]
)

MULTI01 = build(
    [
        "INVITE sip:user@company.com SIP/2.0",
        "Contact: <sip:caller@host25.example.net>",
        "Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw",
        "Max-Forwards: 70",
        "CSeq: 5 INVITE",
        "Call-ID: multi01.98asdh@192.0.2.1",
        "CSeq: 59 INVITE",
        "Call-ID: multi01.98asdh@192.0.2.2",
        "From: sip:caller@example.com;tag=3413415",
        "To: sip:user@example.com",
        "To: sip:other@example.net",
        "From: sip:caller@example.net;tag=2923420123",
        "Content-Type: application/sdp",
        "l: {CL}",
        "Contact: <sip:caller@host36.example.net>",
        "Max-Forwards: 5",
    ],
    SDP,
)

MCL01 = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423",
        "To: sip:user@example.com",
        "From: sip:other@example.net;tag=3923942",
        "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf",
        "CSeq: 15932 OPTIONS",
        "Content-Length: 13",
        "Max-Forwards: 60",
        "Content-Length: 5",
        "Content-Type: text/plain",
    ],
    b"There's no way to know how many octets are supposed to be here.\r\n",
)

BCAST = build(
    [
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923",
        "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23",
        "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf",
        "CSeq: 35 INVITE",
        "From: sip:user@example.com;tag=11141343",
        "To: sip:user@example.edu;tag=2229",
        "Content-Length: {CL}",
        "Content-Type: application/sdp",
        "Contact: <sip:user@host28.example.com>",
    ],
    SDP,
)

ZEROMF = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "To: sip:user@example.com",
        "From: sip:caller@example.net;tag=3ghsd41",
        "Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas",
        "CSeq: 39234321 OPTIONS",
        "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i",
        "Max-Forwards: 0",
        "Content-Length: 0",
    ]
)

CPARAM01 = _register("cparam01.70710@saturn.example.com", ("Contact: sip:+19725552222@gw1.example.net;unknownparam",))
CPARAM02 = _register(
    "cparam02.70710@saturn.example.com", ("Contact: <sip:+19725552222@gw1.example.net;unknownparam>",)
)
REGESCRT = _register(
    "regescrt.k345asrl3fdbv@192.0.2.1", ("M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>",)
)

SDP01 = build(
    [
        "INVITE sip:user@example.com SIP/2.0",
        "To: sip:j_user@example.com",
        "Contact: <sip:caller@host15.example.net>",
        "From: sip:caller@example.net;tag=234",
        "Max-Forwards: 5",
        "Call-ID: sdp01.ndaksdj9342dasdd",
        "Accept: text/nobodyKnowsThis",
        "CSeq: 8 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw",
        "Content-Length: {CL}",
        "Content-Type: application/sdp",
    ],
    SDP,
)

_SDP_2543 = (
    b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0\r\n"
)
# RFC 2543 syntax: no branch, no Max-Forwards, no Content-Length (the datagram ends the body).
INV2543 = build(
    [
        "INVITE sip:UserB@example.com SIP/2.0",
        "Via: SIP/2.0/UDP iftgw.example.com",
        "From: <sip:+13035551111@ift.client.example.net;user=phone>",
        "Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>",
        "To: sip:+16505552222@ss1.example.net;user=phone",
        "Call-ID: inv2543.1717@ift.client.example.com",
        "CSeq: 56 INVITE",
        "Content-Type: application/sdp",
    ],
    _SDP_2543,
)

# Not RFC 4475 messages, but field findings of the same kind (issue 14): no blank line after the header
# section, and a Content-Length that conflicts with a compact-form one.
NOBLANK = build(
    [
        "OPTIONS sip:user@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKnoblank",
        "To: sip:user@example.com",
        "From: sip:caller@example.net;tag=9",
        "Call-ID: noblank.1",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
).removesuffix(b"\r\n")

CASES: list[Case] = [
    Case("wsinv", "3.1.1.1", WSINV, 481, note="well formed; its To tag names a dialog we do not have"),
    Case("intmeth", "3.1.1.2", INTMETH, 501, header=("Allow", "INVITE")),
    Case("esc01", "3.1.1.3", ESC01, 486, call=True),
    Case("escnull", "3.1.1.4", ESCNULL, 405, header=("Allow", "INVITE"), note="a UA is no registrar"),
    Case("esc02", "3.1.1.5", ESC02, 501, header=("Allow", "INVITE")),
    Case("lwsdisp", "3.1.1.6", LWSDISP, 200),
    Case("longreq", "3.1.1.7", LONGREQ, 486, call=True),
    Case("dblreq", "3.1.1.8", DBLREQ, 405, note="the INVITE octets after Content-Length are ignored"),
    Case("semiuri", "3.1.1.9", SEMIURI, 200),
    Case("transports", "3.1.1.10", TRANSPORTS, 200),
    Case("mpart01", "3.1.1.11", MPART01, 405, header=("Allow", "INVITE")),
    Case("unreason", "3.1.1.12", UNREASON, None, note="a response matching no request of ours"),
    Case("noreason", "3.1.1.13", NOREASON, None, note="a response matching no request of ours"),
    Case("badinv01", "3.1.2.1", BADINV01, 400, valid=False),
    Case("clerr", "3.1.2.2", CLERR, 400, "content-length", valid=False),
    Case("ncl", "3.1.2.3", NCL, 400, "content-length", valid=False),
    Case("scalar02", "3.1.2.4", SCALAR02, 400, "cseq", valid=False),
    Case("scalarlg", "3.1.2.5", SCALARLG, None, valid=False),
    Case("quotbal", "3.1.2.6", QUOTBAL, 400, "to", valid=False),
    Case("ltgtruri", "3.1.2.7", LTGTRURI, 400, "request-uri", valid=False),
    Case("lwsruri", "3.1.2.8", LWSRURI, 400, "request line", valid=False),
    Case("lwsstart", "3.1.2.9", LWSSTART, 400, "request line", valid=False),
    Case("trws", "3.1.2.10", TRWS, 400, "request line", valid=False),
    Case("escruri", "3.1.2.11", ESCRURI, 400, "request-uri", valid=False),
    Case("baddate", "3.1.2.12", BADDATE, 486, call=True, valid=False, note="Date is not used: ignored"),
    Case("regbadct", "3.1.2.13", REGBADCT, 405, valid=False, note="method first (§8.2.1): no registrar here"),
    Case("badaspec", "3.1.2.14", BADASPEC, 200, valid=False, note="liberal: the spaces are ignored"),
    Case("baddn", "3.1.2.15", BADDN, 400, "from", valid=False),
    Case("badvers", "3.1.2.16", BADVERS, 505, valid=False),
    Case("mismatch01", "3.1.2.17", MISMATCH01, 400, "cseq", valid=False),
    Case("mismatch02", "3.1.2.18", MISMATCH02, 501, valid=False, note="the RFC prefers 501 to 400"),
    Case("bigcode", "3.1.2.19", BIGCODE, None, valid=False),
    Case("badbranch", "3.2.1", BADBRANCH, 200, note="falls back to RFC 2543 matching"),
    Case("insuf", "3.3.1", INSUF, 400, "missing", valid=False),
    Case("unkscm", "3.3.2", UNKSCM, 416),
    Case("novelsc", "3.3.3", NOVELSC, 416),
    Case("unksm2", "3.3.4", UNKSM2, 405, note="a UA is no registrar"),
    Case("bext01", "3.3.5", BEXT01, 420, header=("Unsupported", "nothingSupportsThis, nothingSupportsThisEither")),
    Case("invut", "3.3.6", INVUT, 415, header=("Accept", "application/sdp")),
    Case("regaut01", "3.3.7", REGAUT01, 405, note="a UA is no registrar"),
    Case("multi01", "3.3.8", MULTI01, 400, "multiple", valid=False),
    Case("mcl01", "3.3.9", MCL01, 400, "content-length", valid=False),
    Case("bcast", "3.3.10", BCAST, None, note="a response matching no request of ours"),
    Case("zeromf", "3.3.11", ZEROMF, 200, note="Max-Forwards 0 stops proxies, not the UAS"),
    Case("cparam01", "3.3.12", CPARAM01, 405, note="a UA is no registrar"),
    Case("cparam02", "3.3.13", CPARAM02, 405, note="a UA is no registrar"),
    Case("regescrt", "3.3.14", REGESCRT, 405, note="a UA is no registrar"),
    Case("sdp01", "3.3.15", SDP01, 406),
    Case(
        "inv2543", "3.4.1", INV2543, 400, "contact",
        note="answered, but refused: RFC 3261 §8.1.1.8 wants a Contact in an INVITE (our remote target)",
    ),
    Case("noblank", "issue 14", NOBLANK, 400, "blank line", valid=False),
]
