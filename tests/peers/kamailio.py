"""Kamailio as a real registrar and record-routing proxy for tests, run as a child process.

Why a real one: our SIP user agent must interoperate with a proxy that challenges with digest auth
(RFC 3261 §22, RFC 7616), inserts Record-Route (RFC 3261 §16.6 step 4) and routes in-dialog requests
loosely (§16.12). The configuration lives in ``kamailio.cfg.tmpl`` next to this file; its header
states the policy (401 for REGISTER, 407 for initial requests unless the source is trusted, 404 for
users without a binding).

Everything runs on 127.0.0.1 from a private temp directory: no root-owned paths, no database
(usrloc keeps bindings in memory), the process in the foreground (``-DD -E``) with its log in a file.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
DEFAULT_REALM = "vfax.test"
DEFAULT_USERS: Mapping[str, str] = {
    "1001": "secret1001",
    "1002": "secret1002",
    "1003": "secret1003",
    "1004": "secret1004",
}
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1

# Lines in Kamailio's log that mean something went badly wrong, whatever the exit code says. (Not
# "CRITICAL:": the TCP workers log "receive_fd(): EOF" at that level on every normal shutdown.)
_CRASH_PATTERNS = re.compile(
    r"exited by a signal|core dumped|segfault|\bBUG:|\bALERT:|no more (?:pkg|shm) memory", re.IGNORECASE
)


class KamailioError(RuntimeError):
    """Kamailio could not be started, did not answer, or died/crashed."""


def find_kamailio() -> str | None:
    """Path of the kamailio binary; Debian puts it in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("kamailio")
    if found:
        return found
    for candidate in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_kamcmd() -> str | None:
    found = shutil.which("kamcmd")
    if found:
        return found
    for candidate in ("/usr/sbin/kamcmd", "/usr/local/sbin/kamcmd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_udp_tcp_port(host: str = HOST) -> int:
    """A port that is free for both UDP and TCP on ``host`` right now (Kamailio listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise KamailioError("no port free for both UDP and TCP")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux PR_SET_PDEATHSIG).

    Keeps a Kamailio from outliving a pytest that was killed. The signal comes when the *thread*
    that spawned the child ends, so start servers from a long-lived thread (pytest's main thread).
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _quote(value: str) -> str:
    """A Kamailio config string literal (no escapes are needed for our values; refuse the rest)."""
    if any(ch in value for ch in '"\\\n\r'):
        raise ValueError(f"unsupported character in config value {value!r}")
    return f'"{value}"'


def options_probe(host: str, port: int, timeout: float = 0.3) -> int | None:
    """Send one OPTIONS over UDP and return the status code of the answer, or None on silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(timeout)
        local_port = sock.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{HOST}\r\n"
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
class KamailioServer:
    """One Kamailio process: call :meth:`start`, use ``host``/``udp_port``/``tcp_port``, then :meth:`stop`.

    ``trusted`` lists sources (``"ip"`` or ``"ip:port"``) whose initial requests are not challenged
    with 407; REGISTER is always challenged. ``no_register`` lists users that may call but whose
    REGISTER gets 403 (an account for sending only). ``challenge_options`` makes OPTIONS to the proxy
    itself need digest credentials (401 first), as Asterisk does.
    """

    workdir: Path
    users: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    realm: str = DEFAULT_REALM
    trusted: Sequence[str] = ()
    no_register: Sequence[str] = ()
    challenge_options: bool = False
    host: str = HOST
    udp_port: int = 0
    tcp_port: int = 0
    debug: int = 2
    shm_mb: int = 64
    pkg_mb: int = 8
    children: int = 2
    #: Kamailio's ``-b``: the largest UDP receive buffer its start-up probing may set (None: its default,
    #: 256 KiB, which the kernel doubles). Benchmarks starting hundreds of calls at once need more.
    udp_buffer: int | None = None
    fr_timer_ms: int = 5000
    fr_inv_timer_ms: int = 30000
    binary: str | None = None
    die_with_parent: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _rundir: Path | None = field(default=None, init=False, repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    @property
    def config_path(self) -> Path:
        return self.workdir / "kamailio.cfg"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    @property
    def ctl_socket(self) -> Path:
        assert self._rundir is not None, "not started"
        return self._rundir / "ctl.sock"

    @property
    def uri(self) -> str:
        """The proxy's SIP URI over UDP, usable as registrar URI and as an outbound proxy (with ;lr)."""
        return f"sip:{self.host}:{self.udp_port}"

    @property
    def tcp_uri(self) -> str:
        return f"sip:{self.host}:{self.tcp_port};transport=tcp"

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.realm}"

    def render_config(self) -> str:
        """The configuration text: the template with this instance's realm, users and paths filled in."""
        lines = [f"\t$sht(users=>{user}) = {_quote(password)};" for user, password in self.users.items()]
        lines += [f"\t$sht(trusted=>{source}) = 1;" for source in self.trusted]
        lines += [f"\t$sht(noreg=>{user}) = 1;" for user in self.no_register]
        if not re.fullmatch(r"[A-Za-z0-9.-]+", self.realm):
            raise ValueError(f"unsupported realm {self.realm!r}")
        for user in self.users:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", user):
                raise ValueError(f"unsupported user name {user!r}")
        for user in self.no_register:
            if user not in self.users:
                raise ValueError(f"no_register names {user!r}, who is not a user")
        for source in self.trusted:
            if not re.fullmatch(r"[0-9.]+(:[0-9]+)?", source):
                raise ValueError(f"trusted source must be 'ip' or 'ip:port', not {source!r}")
        values = {
            "DEBUG": str(self.debug),
            "REALM": self.realm,
            "CTL_SOCKET": str(self.ctl_socket),
            "FR_TIMER_MS": str(self.fr_timer_ms),
            "FR_INV_TIMER_MS": str(self.fr_inv_timer_ms),
            "HTABLE_INIT": "\n".join(lines),
            "OPTIONS_TO_MYSELF": (
                "route(OPTIONSAUTH);" if self.challenge_options else 'sl_send_reply("200", "OK");'
            ),
        }
        text = TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        leftover = re.search(r"\{\{[A-Z_]+\}\}", text)
        if leftover:
            raise KamailioError(f"unfilled marker {leftover.group(0)} in {TEMPLATE}")
        return text

    def command_line(self) -> list[str]:
        assert self.binary is not None and self._rundir is not None
        return [
            self.binary,
            "-f", str(self.config_path),
            "-DD",
            "-E",
            "-a", "no",
            "-l", f"udp:{self.host}:{self.udp_port}",
            "-l", f"tcp:{self.host}:{self.tcp_port}",
            "-n", str(self.children),
            "-N", str(self.children),
            "-m", str(self.shm_mb),
            "-M", str(self.pkg_mb),
            "-Y", str(self._rundir),
            "-P", str(self._rundir / "kamailio.pid"),
            *(["-b", str(self.udp_buffer)] if self.udp_buffer else []),
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> KamailioServer:
        """Write the config, start Kamailio and wait until it answers OPTIONS; retry on a port race."""
        self.binary = self.binary or find_kamailio()
        if self.binary is None:
            raise KamailioError("kamailio binary not found")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The ctl socket path must stay short (sun_path is 108 bytes), so it does not live in workdir.
        self._rundir = Path(tempfile.mkdtemp(prefix="vfax-kam-"))
        self.log_path.write_bytes(b"")
        choose_ports = not self.udp_port
        last_error: Exception | None = None
        for _ in range(3 if choose_ports else 1):
            if choose_ports:
                self.udp_port = self.tcp_port = free_udp_tcp_port(self.host)
            elif not self.tcp_port:
                self.tcp_port = self.udp_port
            self.config_path.write_text(self.render_config())
            try:
                self._spawn_and_wait(timeout)
                return self
            except KamailioError as exc:
                last_error = exc
                self._kill()
                if "bind" not in self.log_tail(4000).lower():
                    break
        self._cleanup_rundir()
        raise KamailioError(f"{last_error}\n--- kamailio log ---\n{self.log_tail()}")

    def _spawn_and_wait(self, timeout: float) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"=== {' '.join(self.command_line())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent and sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise KamailioError(f"kamailio exited during startup with code {self.process.returncode}")
            if self._answers():
                logger.info("kamailio up on %s:%d (pid %d)", self.host, self.udp_port, self.process.pid)
                return
            time.sleep(0.05)
        raise KamailioError(f"kamailio did not answer OPTIONS within {timeout} s")

    def _answers(self) -> bool:
        """Kamailio is up: OPTIONS to it gets the answer this configuration gives."""
        return options_probe(self.host, self.udp_port) == (401 if self.challenge_options else 200)

    def crash_report(self) -> str | None:
        """Why this instance looks crashed (dead early, or a crash line in the log), else None."""
        if self.process is not None and self.process.poll() is not None:
            return f"kamailio exited unexpectedly with code {self.process.returncode}"
        match = _CRASH_PATTERNS.search(self.log_text())
        if match:
            return f"kamailio log reports a crash: {match.group(0)!r}"
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate Kamailio; raise :class:`KamailioError` if it had crashed or did not exit cleanly.

        A second call does nothing (a test may stop the registrar itself; the fixture stops it again)."""
        if self._stopped:
            return
        problem = self.crash_report()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                if self._shut_down_in_order():
                    # Kamailio 5.6 sometimes leaves a worker behind after the main process said
                    # goodbye; that is the peer's quirk, not a crash our traffic caused.
                    warnings.warn(
                        f"kamailio shut down but a worker outlived SIGTERM by {timeout} s; killed",
                        stacklevel=2,
                    )
                else:
                    problem = problem or f"kamailio did not exit within {timeout} s of SIGTERM"
            else:
                if code != 0 and problem is None:
                    problem = f"kamailio exited with code {code} after SIGTERM"
            # Workers may log a crash while shutting down.
            problem = problem or self._log_crash()
        self._cleanup_rundir()
        self._stopped = True
        if problem:
            raise KamailioError(f"{problem}\n--- kamailio log ---\n{self.log_tail()}")

    def _shut_down_in_order(self) -> bool:
        """The main process logged its orderly shutdown (core/main.c handle_sigs)."""
        try:
            return "Thank you for flying kamailio" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def _log_crash(self) -> str | None:
        match = _CRASH_PATTERNS.search(self.log_text())
        return f"kamailio log reports a crash: {match.group(0)!r}" if match else None

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Its own session: the whole group (main process and its forked workers) goes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def _cleanup_rundir(self) -> None:
        if self._rundir is not None:
            shutil.rmtree(self._rundir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    def failure_report(self) -> list[tuple[str, str]]:
        """Sections pytest shows when a test using this server fails (see tests/conftest.py)."""
        return [(f"kamailio log ({self.log_path})", self.log_tail(20000))]

    def rpc(self, *args: str, timeout: float = 3.0) -> str:
        """Run one kamcmd RPC over this instance's ctl socket and return its text output."""
        kamcmd = find_kamcmd()
        if kamcmd is None:
            raise KamailioError("kamcmd not found")
        result = subprocess.run(
            [kamcmd, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0 or result.stdout.startswith("error:"):
            raise KamailioError(f"kamcmd {' '.join(args)} failed: {result.stdout}{result.stderr}".strip())
        return result.stdout

    def registered_contacts(self, user: str) -> list[str]:
        """Contact URIs currently bound to ``user`` in usrloc (empty if none)."""
        try:
            # "s:" keeps kamcmd from sending a numeric user name as an integer.
            output = self.rpc("ul.lookup", "location", f"s:{user}")
        except KamailioError as exc:
            if "404" in str(exc) or "not found" in str(exc).lower():
                return []
            raise
        return re.findall(r"^\s*Address:\s*(\S+)\s*$", output, re.MULTILINE)

    def __enter__(self) -> KamailioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
