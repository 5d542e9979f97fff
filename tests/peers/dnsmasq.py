"""dnsmasq (Debian's) as the tests' DNS server: NAPTR, SRV and A records on 127.0.0.1, on a free port.

It answers only what the test gives it (``--no-resolv --no-hosts``, no upstream) and is authoritative for
the ``test.`` domain (``--local=/test/``): a name it has no record for gets NXDOMAIN, not REFUSED. Records
use dnsmasq's own option syntax: ``srv(name, target, port, priority, weight)``, ``naptr(...)``, ``host(...)``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.peers.kamailio import _die_with_parent
from tests.peers.netns import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def srv(name: str, target: str, port: int, priority: int = 10, weight: int = 0) -> str:
    return f"--srv-host={name},{target},{port},{priority},{weight}"


def naptr(name: str, order: int, preference: int, service: str, replacement: str) -> str:
    return f"--naptr-record={name},{order},{preference},S,{service},,{replacement}"


def host(name: str, ip: str = "127.0.0.1") -> str:
    return f"--host-record={name},{ip}"


def available() -> bool:
    return Path(DNSMASQ).exists()


@contextlib.contextmanager
def dnsmasq(records: Sequence[str], log: Path) -> Iterator[tuple[str, int]]:
    """Run dnsmasq serving ``records`` until the block ends; yields its (ip, port)."""
    port = free_port("127.0.0.1", socket.SOCK_DGRAM)
    argv = [
        DNSMASQ, "--no-daemon", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
        "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--local=/test/", "--log-queries",
        "--pid-file=", *records,
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        _wait_answering(port, proc, log)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_answering(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    query = dns.message.make_query("ready.test.", "A")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dnsmasq exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, dns.exception.Timeout):
            dns.query.udp(query, "127.0.0.1", timeout=0.2, port=port)
            return
        time.sleep(0.05)
    raise AssertionError(f"dnsmasq did not answer on port {port}: {log.read_text()[-2000:]}")
