"""Digest authentication: RFC 2617/7616 test vectors, challenge parsing, nonce-count, stale and refusal."""

from __future__ import annotations

import pytest

from sip.auth import (
    AuthVerdict,
    DigestChallenge,
    DigestClient,
    DigestVerifier,
    VerifyResult,
    digest_response,
    parse_auth_params,
)
from sip.errors import SipParseError
from sip.message import Request, Response, parse_message
from tests import sip_samples as S

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc2617_section_3_5_example() -> None:
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc="00000001",
            cnonce="0a4f113b",
            qop="auth",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples_through_the_client(algorithm: str, expected: str) -> None:
    challenge = DigestChallenge.parse(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    _, p = parse_auth_params(client.authorization(challenge, "GET", "/dir/index.html"))
    assert p["response"] == expected
    assert (p["qop"], p["nc"], p["cnonce"], p["opaque"]) == (
        "auth",
        "00000001",
        RFC7616_CNONCE,
        RFC7616_OPAQUE,
    )
    assert (p["username"], p["realm"], p["uri"], p["algorithm"]) == (
        "Mufasa",
        "http-auth@example.org",
        "/dir/index.html",
        algorithm,
    )


def test_challenge_parsing_reads_every_field() -> None:
    ch = DigestChallenge.parse(
        'Digest realm="sip.example.net", nonce="abc,def", opaque="o1", algorithm=SHA-256-sess, '
        'qop="auth,auth-int", stale=TRUE, domain="sip:example.net"',
        proxy=True,
    )
    assert (ch.realm, ch.nonce, ch.opaque, ch.algorithm) == (
        "sip.example.net",
        "abc,def",
        "o1",
        "SHA-256-sess",
    )
    assert ch.qop == ("auth", "auth-int") and ch.stale and ch.proxy and ch.supported
    assert ch.header_name == "Proxy-Authorization"
    assert DigestChallenge.parse(str(ch), proxy=True) == ch


@pytest.mark.parametrize(
    "value",
    ['Basic realm="x"', 'Digest nonce="n"', 'Digest realm="x", nonce="unterminated', "Digest realm"],
)
def test_unusable_challenge_raises_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        DigestChallenge.parse(value)


def _register(cseq: int = 1) -> Request:
    req = parse_message(S.REGISTER)
    assert isinstance(req, Request)
    req.headers.remove("Authorization")
    req.headers.set("CSeq", f"{cseq} REGISTER")
    return req


def _challenge(req: Request, verifier: DigestVerifier, *, stale: bool = False, status: int = 401) -> Response:
    resp = Response.for_request(req, status, to_tag="srv")
    resp.headers.add(
        "WWW-Authenticate" if status == 401 else "Proxy-Authenticate", verifier.challenge(stale=stale)
    )
    return resp


def _verify(verifier: DigestVerifier, req: Request, header: str = "Authorization") -> VerifyResult:
    value = req.headers.get(header)
    assert value is not None
    return verifier.verify(req.method, value, req.body)


def test_register_flow_with_nonce_count_increments() -> None:
    verifier = DigestVerifier("example.net", {"vfax": "s3cret"})
    client = DigestClient("vfax", "s3cret")
    first = _register(1)
    assert client.handle_challenge(first, _challenge(first, verifier)) is AuthVerdict.RETRY
    second = _register(2)
    client.authorize(second)
    assert parse_auth_params(second.headers.get("Authorization") or "")[1]["nc"] == "00000001"
    assert _verify(verifier, second) is VerifyResult.OK
    refresh = _register(3)
    client.authorize(refresh)  # pre-emptive credentials on the refresh, same nonce, next nc
    assert len(refresh.headers.get_all("Authorization")) == 1
    assert parse_auth_params(refresh.headers.get("Authorization") or "")[1]["nc"] == "00000002"
    assert _verify(verifier, refresh) is VerifyResult.OK
    assert _verify(verifier, refresh) is VerifyResult.BAD  # a replayed nonce-count is refused


def test_stale_nonce_is_retried_without_asking() -> None:
    verifier = DigestVerifier("example.net", {"vfax": "s3cret"}, algorithm="SHA-256")
    client = DigestClient("vfax", "s3cret")
    first = _register(1)
    client.handle_challenge(first, _challenge(first, verifier))
    second = _register(2)
    client.authorize(second)
    nonce = parse_auth_params(second.headers.get("Authorization") or "")[1]["nonce"]
    verifier.expire(nonce)
    assert _verify(verifier, second) is VerifyResult.STALE
    assert client.handle_challenge(second, _challenge(second, verifier, stale=True)) is AuthVerdict.STALE
    third = _register(3)
    client.authorize(third)
    assert _verify(verifier, third) is VerifyResult.OK


def test_wrong_password_is_rejected_even_with_a_new_nonce() -> None:
    verifier = DigestVerifier("example.net", {"vfax": "s3cret"})
    client = DigestClient("vfax", "wrong")
    first = _register(1)
    assert client.handle_challenge(first, _challenge(first, verifier)) is AuthVerdict.RETRY
    second = _register(2)
    client.authorize(second)
    assert _verify(verifier, second) is VerifyResult.BAD
    assert client.handle_challenge(second, _challenge(second, verifier)) is AuthVerdict.REJECTED


def test_preemptive_credentials_with_an_unknown_nonce_get_one_retry() -> None:
    verifier = DigestVerifier("example.net", {"vfax": "s3cret"})
    client = DigestClient("vfax", "s3cret")
    first = _register(1)
    client.handle_challenge(first, _challenge(first, verifier))
    client.authorize(_register(2))
    refresh = _register(3)
    client.authorize(refresh)  # nc=2 on the old nonce; the server restarted and forgot it
    restarted = DigestVerifier("example.net", {"vfax": "s3cret"})
    assert _verify(restarted, refresh) is VerifyResult.BAD
    assert client.handle_challenge(refresh, _challenge(refresh, restarted)) is AuthVerdict.RETRY
    retry = _register(4)
    client.authorize(retry)
    assert _verify(restarted, retry) is VerifyResult.OK
    client.password = "changed"  # now the account password is wrong: one retry, then give up
    refresh2 = _register(5)
    client.authorize(refresh2)
    assert _verify(restarted, refresh2) is VerifyResult.BAD
    assert client.handle_challenge(refresh2, _challenge(refresh2, restarted)) is AuthVerdict.RETRY
    wrong = _register(6)
    client.authorize(wrong)
    assert _verify(restarted, wrong) is VerifyResult.BAD
    assert client.handle_challenge(wrong, _challenge(wrong, restarted)) is AuthVerdict.REJECTED


def test_same_nonce_called_stale_again_is_rejected() -> None:
    client = DigestClient("vfax", "s3cret")
    first = _register(1)
    ch = 'Digest realm="example.net", nonce="n1", qop="auth"'
    resp = Response.for_request(first, 401)
    resp.headers.add("WWW-Authenticate", ch)
    client.handle_challenge(first, resp)
    second = _register(2)
    client.authorize(second)
    again = Response.for_request(second, 401)
    again.headers.add("WWW-Authenticate", ch + ", stale=true")
    assert client.handle_challenge(second, again) is AuthVerdict.REJECTED


def test_proxy_challenge_prefers_sha256_and_answers_in_proxy_authorization() -> None:
    resp = parse_message(S.PROXY_407_SHA256)
    assert isinstance(resp, Response)
    req = Request(method="INVITE", uri=parse_message(S.KAMAILIO_PROXIED_INVITE).uri)  # type: ignore[union-attr]
    client = DigestClient("vfax", "pw", cnonce_factory=lambda: "c0ffee")
    assert client.handle_challenge(req, resp) is AuthVerdict.RETRY
    client.authorize(req)
    assert "Authorization" not in req.headers
    _, p = parse_auth_params(req.headers.get("Proxy-Authorization") or "")
    assert p["algorithm"] == "SHA-256" and p["opaque"] == "0a1b2c" and len(p["response"]) == 64
    assert p["uri"] == "sip:vfax@192.0.2.20:5080"


def test_unknown_algorithm_or_foreign_realm_is_unsupported() -> None:
    req = _register(1)
    resp = Response.for_request(req, 401)
    resp.headers.add("WWW-Authenticate", 'Digest realm="example.net", nonce="n", algorithm=SHA-1')
    assert DigestClient("vfax", "pw").handle_challenge(req, resp) is AuthVerdict.UNSUPPORTED
    resp2 = Response.for_request(req, 401)
    resp2.headers.add("WWW-Authenticate", 'Digest realm="evil.example", nonce="n"')
    assert (
        DigestClient("vfax", "pw", realm="example.net").handle_challenge(req, resp2)
        is AuthVerdict.UNSUPPORTED
    )


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
@pytest.mark.parametrize("qop", [("auth",), ("auth-int",), ()])
def test_every_algorithm_and_qop_verifies(algorithm: str, qop: tuple[str, ...]) -> None:
    verifier = DigestVerifier("example.net", {"vfax": "pw"}, algorithm=algorithm, qop=qop, opaque="op")
    client = DigestClient("vfax", "pw")
    req = _register(1)
    req.body = b"body that auth-int covers"
    req.headers.add("Content-Type", "text/plain")
    assert client.handle_challenge(req, _challenge(req, verifier)) is AuthVerdict.RETRY
    client.authorize(req)
    value = req.headers.get("Authorization") or ""
    assert ("nc=" in value) == bool(qop)
    assert verifier.verify("REGISTER", value, req.body) is VerifyResult.OK
    if qop == ("auth-int",):
        assert verifier.verify("REGISTER", value, b"tampered") is VerifyResult.BAD


def test_userhash_hides_the_username() -> None:
    ch = DigestChallenge.parse('Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth", userhash=true')
    _, p = parse_auth_params(DigestClient("vfax", "pw").authorization(ch, "REGISTER", "sip:r"))
    assert p["username"] != "vfax" and len(p["username"]) == 64 and p["userhash"] == "true"


def test_kamailio_401_sample_is_answered() -> None:
    resp = parse_message(S.KAMAILIO_401)
    assert isinstance(resp, Response)
    client = DigestClient("vfax", "pw")
    assert client.handle_challenge(_register(1), resp) is AuthVerdict.RETRY
    assert [c.nonce for c in client.challenges] == ["ZkYw8GZGL8TcS1uqW1YwlWG3ZXGd3r/p"]
