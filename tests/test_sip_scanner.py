"""Hostile input: SIPVicious scans, floods of malformed datagrams and mutated messages never break the UA.

The UA must survive, keep answering, leak no calls, and answer per RFC 3261: 405 with Allow for methods it
does not implement, 400 for requests that parse but are invalid, silence for garbage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.core import UserAgentCore
from sip.message import Response, parse_message
from sip.useragent import IncomingInvite, UserAgent

VALID_INVITE = (
    b"INVITE sip:100@127.0.0.1:5062 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfuzz1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "x" <sip:scan@127.0.0.1>;tag=s1\r\n'
    b"To: <sip:100@127.0.0.1>\r\n"
    b"Call-ID: fuzz-1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:scan@127.0.0.1:5070>\r\n"
    b"Supported: 100rel, replaces, norefersub, timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 14\r\n\r\n"
    b"v=0\r\no=- 1 1\r\n"
)


def sipvicious(tool: str) -> str | None:
    exe = Path(sys.executable).with_name(f"sipvicious_{tool}")
    return str(exe) if exe.exists() else shutil.which(f"sipvicious_{tool}")


async def _run_tool(tool: str, args: list[str], home: Path) -> str:
    exe = sipvicious(tool)
    assert exe is not None
    proc = await asyncio.create_subprocess_exec(
        exe, "-b", "127.0.0.1", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, HOME=str(home)),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode(errors="replace")


@pytest.mark.skipif(
    sipvicious("svmap") is None, reason="sipvicious is not installed (pip install sipvicious)"
)
def test_sipvicious_svmap_and_svwar_scans_are_answered_and_survived(tmp_path: Path) -> None:
    async def main() -> None:
        ua = await UserAgent.create("127.0.0.1")

        async def busy(incoming: IncomingInvite) -> None:
            await incoming.reject(486)

        ua.on_invite = busy
        port = str(ua.local_address[1])
        found = await _run_tool("svmap", ["127.0.0.1", "-p", port], tmp_path)
        assert f"127.0.0.1:{port}" in found and "vfax" in found  # it saw our Server header
        await _run_tool("svwar", ["-e100-120", "-m", "INVITE", "127.0.0.1", "-p", port], tmp_path)
        register_scan = await _run_tool(
            "svwar", ["-e100-120", "-m", "REGISTER", "127.0.0.1", "-p", port], tmp_path
        )
        assert "method not allowed" in register_scan.lower()  # 405 for REGISTER (we are no registrar)
        await _run_tool("svwar", ["-e100-120", "-m", "OPTIONS", "--force", "127.0.0.1", "-p", port], tmp_path)
        assert ua.core.active_calls == 0
        assert ua.core.stats["received"] >= 5
        probe = await UserAgent.create("127.0.0.1")
        assert (await probe.options(f"sip:127.0.0.1:{port}")).status == 200  # still serving
        await probe.close()
        await ua.close()

    asyncio.run(asyncio.wait_for(main(), 120))


def mutations(rng: random.Random, base: bytes, count: int) -> list[bytes]:
    """Truncations, byte flips, deleted and duplicated lines, absurd values: what scanners and bugs send."""
    lines = base.split(b"\r\n")
    out: list[bytes] = []
    junk_values = [
        b"",
        b" ",
        b"\x00",
        b"\xff\xfe",
        b"<",
        b">",
        b'"',
        b";;;",
        b"99999999999",
        b"-1",
        b"sip:",
        b"[::",
    ]
    for _ in range(count):
        kind = rng.randrange(7)
        if kind == 0:
            out.append(base[: rng.randrange(len(base))])
        elif kind == 1:
            b = bytearray(base)
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out.append(bytes(b))
        elif kind == 2:
            ls = list(lines)
            del ls[rng.randrange(1, len(ls) - 3)]
            out.append(b"\r\n".join(ls))
        elif kind == 3:
            ls = list(lines)
            i = rng.randrange(0, len(ls) - 3)
            name, _, _ = ls[i].partition(b":")
            ls[i] = (name + b": " if i else b"") + rng.choice(junk_values)
            out.append(b"\r\n".join(ls))
        elif kind == 4:
            ls = list(lines)
            i = rng.randrange(1, len(ls) - 3)
            ls.insert(i, ls[i])
            out.append(b"\r\n".join(ls))
        elif kind == 5:
            method = rng.choice(
                [b"BYE", b"ACK", b"CANCEL", b"UPDATE", b"PRACK", b"REFER", b"FOO", b"OPTIONS"]
            )
            out.append(base.replace(b"INVITE", method))
        else:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
    return out


def test_flood_of_malformed_datagrams_is_dropped_or_answered_without_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        ua = await UserAgent.create("127.0.0.1", transports=("udp", "tcp"))

        async def busy(incoming: IncomingInvite) -> None:
            await incoming.reject(486)

        ua.on_invite = busy
        port = ua.local_address[1]
        rng = random.Random(7)
        packets = mutations(rng, VALID_INVITE, 3000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            for i, pkt in enumerate(packets):
                s.sendto(
                    pkt.replace(b"fuzz-1", b"fuzz-%d" % i).replace(b"fuzz1", b"fuzz%d" % i),
                    ("127.0.0.1", port),
                )
                if i % 50 == 0:
                    await asyncio.sleep(0.005)
        # the same over TCP, one connection per burst (a framing error closes it)
        for chunk in range(20):
            try:
                _reader, writer = await asyncio.open_connection(
                    "127.0.0.1", ua.transports.local_addresses["tcp"][1]
                )
            except OSError:
                continue
            writer.write(b"".join(packets[chunk * 10 : chunk * 10 + 10]))
            await writer.drain()
            writer.close()
        await asyncio.sleep(0.3)
        probe = await UserAgent.create("127.0.0.1")
        assert (await probe.options(f"sip:127.0.0.1:{port}")).status == 200
        assert ua.core.active_calls == 0
        await probe.close()
        await ua.close()

    with caplog.at_level(logging.ERROR, logger="sip"):
        asyncio.run(asyncio.wait_for(main(), 60))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors[0].getMessage() if errors else ""


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=400) | st.just(VALID_INVITE) | st.binary(max_size=60).map(lambda b: VALID_INVITE + b)
)
def test_core_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    core = UserAgentCore()
    core.local_addresses = {"udp": ("127.0.0.1", 5062)}
    core.receive_datagram(data, ("udp", "127.0.0.1", 5070), 0.0)
    core.handle_timers(100.0)
    core.transmits()


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 2**32))
def test_core_answers_mutated_requests_with_sip_or_silence_never_an_error(seed: int) -> None:
    core = UserAgentCore()
    core.local_addresses = {"udp": ("127.0.0.1", 5062)}
    handler = _Collect()
    logging.getLogger("sip").addHandler(handler)
    try:
        for pkt in mutations(random.Random(seed), VALID_INVITE, 3):
            core.receive_datagram(pkt, ("udp", "127.0.0.1", 5070), 0.0)
            for event in core.events():
                call = getattr(event, "call", None)
                if call is not None and not call.terminated:
                    core.reject(call, 486, 0.0)
            for data, dest in core.transmits():
                assert dest == ("udp", "127.0.0.1", 5070)
                assert isinstance(parse_message(data), Response)
        core.handle_timers(200.0)
    finally:
        logging.getLogger("sip").removeHandler(handler)
    assert handler.errors == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(self.format(record))
