"""Kamailio running the cluster front of lab/cluster/kamailio.cfg, as a child process, for tests.

Why the lab file itself: what the tests exercise must be what a user deploys. The file takes every
address from ``#!define`` lines with defaults (``#!ifndef``); this fixture overrides only the listen
address, the destination list, the control socket and the log level with ``-A`` on the command line,
and writes the destination list (set 1: the nodes, set 2: the PBX) in the format of
lab/cluster/dispatcher.list. The timers (probing interval and thresholds, fr_timer) stay the lab's.

Runs like the registrar fixture (tests/peers/kamailio.py): foreground (``-DD -E``), log in a file,
crash patterns checked at stop, failure_report with the log. It may run inside a network namespace
(``prefix`` = the ``ip netns exec NAME`` words of tests.peers.netns.Host.wrap).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.kamailio import KamailioError, KamailioServer, find_kamailio

logger = logging.getLogger(__name__)

LAB_CONFIG = Path(__file__).resolve().parents[2] / "lab" / "cluster" / "kamailio.cfg"
NODE_SET = 1
PBX_SET = 2
_DEST_RE = re.compile(r"URI:\s*(\S+)\s*\n\s*FLAGS:\s*(\S+)")
_EVENT_RE = re.compile(r"dispatcher: destination (\S+) (UP|DOWN) \(t=(\d+)\.(\d+)\)")


def sip_probe(source: str, host: str, port: int, timeout: float = 0.5) -> int | None:
    """One OPTIONS from ``source`` (an address of the test's namespace) to host:port; the status or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source}:{local_port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{source}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{source}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, port))
        try:
            data, _ = sock.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(match.group(1)) if match else None


@dataclass
class DispatcherEvent:
    uri: str
    state: str  # "UP" or "DOWN"
    at: float  # Kamailio's wall clock (time.time() scale), from the log line


@dataclass
class DispatcherServer(KamailioServer):
    """lab/cluster/kamailio.cfg on ``host``:``udp_port`` (both required) with ``nodes`` and ``pbxs``.

    ``nodes`` and ``pbxs`` are ``"ip:port"`` strings. ``probe_from`` is the address the readiness
    probe is sent from (the test's own address on the network Kamailio listens on).
    """

    nodes: Sequence[str] = ()
    pbxs: Sequence[str] = ()
    prefix: Sequence[str] = ()
    probe_from: str = "127.0.0.1"
    config_file: Path = LAB_CONFIG
    defines: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.config_file

    @property
    def list_path(self) -> Path:
        return self.workdir / "dispatcher.list"

    def node_uri(self, node: str) -> str:
        return f"sip:{node}"

    def render_list(self) -> str:
        for target in (*self.nodes, *self.pbxs):
            if not re.fullmatch(r"[0-9.]+:[0-9]+", target):
                raise ValueError(f"destinations are 'ip:port', not {target!r}")
        lines = ["# written by tests/peers/kamailio_dispatcher.py (format: lab/cluster/dispatcher.list)"]
        lines += [f"{NODE_SET} sip:{node} 8 0 duid=node{i}" for i, node in enumerate(self.nodes, start=1)]
        lines += [f"{PBX_SET} sip:{pbx} 8 {10 - i} duid=pbx{i}" for i, pbx in enumerate(self.pbxs, start=1)]
        return "\n".join(lines) + "\n"

    def command_line(self) -> list[str]:
        assert self.binary is not None and self._rundir is not None
        defines = {
            "SIP_LISTEN": f"udp:{self.host}:{self.udp_port}",
            "DS_LIST": f'"{self.list_path}"',
            "CTL_SOCKET": f'"unix:{self.ctl_socket}"',
            "LOG_LEVEL": str(self.debug),
            **self.defines,
        }
        args = [*self.prefix, self.binary, "-f", str(self.config_file), "-DD", "-E"]
        for name, value in defines.items():
            args += ["-A", f"{name}={value}"]
        args += [
            "-n", str(self.children),
            "-m", str(self.shm_mb),
            "-M", str(self.pkg_mb),
            "-Y", str(self._rundir),
            "-P", str(self._rundir / "kamailio.pid"),
        ]  # fmt: skip
        return args

    def start(self, timeout: float = 30.0) -> DispatcherServer:
        """Write the destination list, start Kamailio on the lab config, wait until it answers OPTIONS."""
        if not self.udp_port:
            raise ValueError("DispatcherServer needs its udp_port (the host may be in another namespace)")
        if not self.nodes:
            raise ValueError("a dispatcher without nodes")
        self.tcp_port = self.udp_port
        self.binary = self.binary or find_kamailio()
        if self.binary is None:
            raise KamailioError("kamailio binary not found")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._rundir = Path(tempfile.mkdtemp(prefix="vfax-kds-"))
        self.list_path.write_text(self.render_list())
        self.log_path.write_bytes(b"")
        try:
            self._spawn_and_wait(timeout)
        except KamailioError as exc:
            self._kill()
            self._cleanup_rundir()
            raise KamailioError(f"{exc}\n--- kamailio log ---\n{self.log_tail()}") from None
        return self

    def _answers(self) -> bool:
        """200 while a node is active, 503 before the first probe answered: either means it is up."""
        return sip_probe(self.probe_from, self.host, self.udp_port, timeout=0.3) in (200, 503)

    # -- state -------------------------------------------------------------------------------------------
    def destinations(self) -> dict[str, str]:
        """URI -> FLAGS (``AP`` active and probed, ``IP`` inactive and probed, ``TP`` trying...)."""
        return dict(_DEST_RE.findall(self.rpc("dispatcher.list")))

    def is_active(self, target: str) -> bool:
        return self.destinations().get(f"sip:{target}", "").startswith("A")

    def events(self) -> list[DispatcherEvent]:
        """The UP/DOWN transitions logged by the config's dispatcher event routes, in order."""
        return [
            DispatcherEvent(uri, state, float(f"{sec}.{usec}"))
            for uri, state, sec, usec in _EVENT_RE.findall(self.log_text())
        ]

    def routed_to(self, call_id: str) -> list[str]:
        """The node URIs an incoming call was sent to, in order (first choice, then failovers)."""
        pattern = re.compile(
            r"dispatcher: INVITE " + re.escape(call_id) + r" (?:from \S+ to node|now to node) (\S+)"
        )
        return pattern.findall(self.log_text())

    def failure_report(self) -> list[tuple[str, str]]:
        sections = [(f"dispatcher log ({self.log_path})", self.log_tail(30000))]
        with contextlib.suppress(OSError):
            sections.append(("dispatcher.list", self.list_path.read_text()))
        return sections
