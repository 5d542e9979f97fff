"""Private test networks: one Linux network namespace per host, each wired to a bridge by a veth pair.

Why: cluster tests need nodes that are separate machines as far as SIP is concerned (their own
addresses, a source address the dispatcher can tell apart, a cable that can be cut). Network
namespaces give that on one machine: the test makes a bridge in its own namespace with the first
address of a private /24 (10.213.X.0/24, X chosen free), and per host a namespace whose ``eth0`` has
the next address. The test process reaches every host through the bridge; nothing has a default
route, so no packet leaves for any network the test did not make. Everything is removed at the end,
also when the test fails; leftovers of a killed test run are removed by the next one (names carry
the creating process id).

Needs root and iproute2. Where namespaces cannot be made, :class:`TestNetwork` falls back to
127.0.0.x addresses (one per host, free ports chosen per address) and says why, with a warning and a
printed line; cutting a host off the network then becomes SIGSTOP of its processes (told again).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SUBNET_PREFIX = "10.213"  # 10.213.X.0/24; X is picked among those no route of this namespace covers
_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
_OURS_RE = re.compile(r"^vfx(\d+)[a-z]")  # netns vfx<pid><name>, bridge vfx<pid>br, veth vfx<pid>v<i>


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be made here; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    result = subprocess.run([ip, *args], capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Delete namespaces and links that an earlier, killed test process made (its pid is gone)."""
    removed: list[str] = []
    names = _ip("netns", "list", check=False).stdout.split()
    links = re.findall(r"^\d+:\s+([^:@\s]+)", _ip("-o", "link", "show", check=False).stdout, re.MULTILINE)
    for name in links:
        match = _OURS_RE.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    for name in names:
        match = _OURS_RE.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.X.0/24 that no route or address of this namespace overlaps."""
    used: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            first = line.split()[1] if len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(first, strict=False))
    for line in _ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            used.append(ipaddress.IPv4Interface(match.group(1)).network)
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for x in candidates:
        net = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{x}.0/24")
        if not any(net.overlaps(other) and other.prefixlen > 0 for other in used):
            return net
    raise NetnsUnavailable(f"no free {SUBNET_PREFIX}.X.0/24 subnet")


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range (which outgoing connections draw from, so a port chosen
    there can be taken by a client socket before the process under test binds it), split between the
    pytest-xdist workers so that two workers never hand out the same port."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    lo, hi = 20000, max(20000 + 2000, min(low, 32768))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    span = (hi - lo) // max(1, count)
    return lo + index * span, lo + (index + 1) * span


_chosen: set[int] = set()
_pick = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "big"))


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on ``host`` (an address of this namespace) for ``kind``, and for TCP too if UDP; never
    one this process handed out before, and outside the ephemeral range (see :func:`_port_range`)."""
    lo, hi = _port_range()
    for _ in range(500):
        port = _pick.randrange(lo, hi)
        if port in _chosen:
            continue
        kinds = (kind,) if kind != socket.SOCK_DGRAM else (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        try:
            for k in kinds:
                with socket.socket(socket.AF_INET, k) as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        _chosen.add(port)
        return port
    raise OSError(f"no free port on {host} in {lo}-{hi}")


@dataclass
class Host:
    """One machine of the test network: its address, and the namespace it runs in (None: fallback)."""

    name: str
    address: str
    netns: str | None = None
    veth: str | None = None  # the host-side end in the test's namespace (cut/restore act on it)
    _used_ports: set[int] = field(default_factory=set, repr=False)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` on this host (inside its namespace)."""
        if self.netns is None:
            return list(argv)
        return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.netns, *argv]

    def port(self, preferred: int) -> int:
        """``preferred`` in a namespace of its own (nothing else listens there); a free one on a shared
        127.0.0.x address. Never the same port twice for one host."""
        if self.netns is not None:
            port = preferred
            while port in self._used_ports:
                port += 2
        else:
            port = free_port(self.address)
            while port in self._used_ports:
                port = free_port(self.address)
        self._used_ports.add(port)
        return port

    def run(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.wrap(argv), capture_output=True, text=True, timeout=timeout, check=False)


class TestNetwork:
    """Hosts ``names`` on a private network: namespaces when possible, else 127.0.0.x (see ``reason``).

    ``gateway`` is the address of the test process on that network (bridge address, or 127.0.0.1): use
    it as the source of requests the test sends itself. Call :meth:`close` at the end (idempotent).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, names: Iterable[str], *, allow_netns: bool = True) -> None:
        self.names = list(names)
        for name in self.names:
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"host name must be 1-8 lowercase letters/digits, not {name!r}")
        if len(set(self.names)) != len(self.names) or not 1 <= len(self.names) <= 40:
            raise ValueError("host names must be unique, 1 to 40 of them")
        self.hosts: dict[str, Host] = {}
        self.mode = "netns"
        self.reason: str | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = "127.0.0.1"
        self._tag = f"vfx{os.getpid()}"
        self._bridge: str | None = None
        self._made_netns: list[str] = []
        self._made_links: list[str] = []
        self._stopped: dict[str, list[int]] = {}
        self._closed = False
        if not allow_netns:
            self._fall_back("namespaces turned off by the test (VFAX_TEST_NETNS=0 or allow_netns=False)")
            return
        try:
            self._make_namespaces()
        except NetnsUnavailable as exc:
            self._undo()
            self._fall_back(str(exc))

    # -- set-up ------------------------------------------------------------------------------------------
    def _precheck(self) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("not root (network namespaces need CAP_NET_ADMIN)")
        if shutil.which("ip") is None and not os.access("/usr/sbin/ip", os.X_OK):
            raise NetnsUnavailable("iproute2 (the ip command) is not installed")

    def _make_namespaces(self) -> None:
        self._precheck()
        for leftover in remove_leftovers():
            logger.info("removed leftover test network object %s", leftover)
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        self.gateway = str(addresses[0])
        self._bridge = f"{self._tag}br"
        _ip("link", "add", self._bridge, "type", "bridge")
        self._made_links.append(self._bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self._bridge)
        _ip("link", "set", self._bridge, "up")
        for index, name in enumerate(self.names, start=1):
            netns = f"{self._tag}{name}"
            veth = f"{self._tag}v{index}"
            address = str(addresses[index])
            _ip("netns", "add", netns)
            self._made_netns.append(netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            self._made_links.append(veth)
            _ip("link", "set", veth, "master", self._bridge, "up")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            self.hosts[name] = Host(name, address, netns, veth)
        logger.info("test network %s: %s", self.subnet, {h.name: h.address for h in self.hosts.values()})

    def _fall_back(self, reason: str) -> None:
        self.mode = "loopback"
        self.reason = reason
        self.gateway = "127.0.0.1"
        self.hosts = {name: Host(name, f"127.0.0.{10 + i}") for i, name in enumerate(self.names)}
        message = f"network namespaces not used ({reason}); hosts on 127.0.0.x addresses instead"
        print(f"\n[tests.peers.netns] {message}")
        warnings.warn(message, stacklevel=3)

    # -- use ---------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def cut(self, name: str, pids: Sequence[int] = ()) -> None:
        """Take ``name`` off the network (its cable out: link down). Fallback: SIGSTOP of ``pids``."""
        host = self.hosts[name]
        if host.veth is not None:
            _ip("link", "set", host.veth, "down")
            return
        message = f"no namespace for {name}: link cut approximated by SIGSTOP of {list(pids)}"
        print(f"\n[tests.peers.netns] {message}")
        warnings.warn(message, stacklevel=2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        self._stopped.setdefault(name, []).extend(pids)

    def restore(self, name: str) -> None:
        """Plug ``name`` back in (link up), or SIGCONT what :meth:`cut` stopped."""
        host = self.hosts[name]
        if host.veth is not None:
            _ip("link", "set", host.veth, "up")
            return
        for pid in self._stopped.pop(name, []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def describe(self) -> str:
        lines = [f"mode: {self.mode}" + (f" ({self.reason})" if self.reason else "")]
        subnet = f", subnet {self.subnet}" if self.subnet else ""
        lines.append(f"gateway (test process): {self.gateway}{subnet}")
        lines += [f"{h.name}: {h.address}" + (f" netns {h.netns} via {h.veth}" if h.netns else "")
                  for h in self.hosts.values()]  # fmt: skip
        if self.mode == "netns" and not self._closed:
            lines.append(_ip("-br", "link", "show", "master", self._bridge or "", check=False).stdout.strip())
        return "\n".join(lines)

    def failure_report(self) -> list[tuple[str, str]]:
        return [("test network", self.describe())]

    # -- tear-down ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove what was made (SIGCONT anything still stopped first). Safe to call twice."""
        if self._closed:
            return
        for name in list(self._stopped):
            self.restore(name)
        self._undo()
        self._closed = True

    def _undo(self) -> None:
        # veths first (deleting a namespace frees its end only later, asynchronously), then namespaces.
        for link in reversed(self._made_links):
            _ip("link", "del", link, check=False)
        for netns in reversed(self._made_netns):
            _ip("netns", "del", netns, check=False)
        self._made_links.clear()
        self._made_netns.clear()

    def __enter__(self) -> TestNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def netns_allowed() -> bool:
    """VFAX_TEST_NETNS=0 makes the tests use the 127.0.0.x fallback even where namespaces work."""
    return os.environ.get("VFAX_TEST_NETNS", "1").strip().lower() not in ("0", "no", "off", "false")
