"""A real PostgreSQL server for tests: Debian's binaries, a temporary data directory, a port it chooses.

Why a real one: the cluster's job store relies on what only the server does (``FOR UPDATE SKIP LOCKED``,
LISTEN/NOTIFY, constraints checked across connections, a restart in the middle of work). The server runs
as a child process on 127.0.0.1 with trust authentication for its own superuser; its Unix socket lives in
the data directory, so nothing touches the system cluster. PostgreSQL refuses to run as root: when the tests
run as root (CI), the server runs as the ``postgres`` system user that Debian's package creates.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
SUPERUSER = "vfax"
PR_SET_PDEATHSIG = 1


class PostgresError(RuntimeError):
    """The server could not be set up, did not start, or died."""


def find_bindir() -> Path | None:
    """Debian installs the server binaries in /usr/lib/postgresql/<major>/bin (newest first)."""
    majors = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for bindir in majors:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("postgres", "initdb")):
            return Path(bindir)
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def _free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One private server: start, url(db), create_database; stop or kill, then start again.

    ``listen`` is the one address it listens on (127.0.0.1 by default; a test network's bridge address
    lets nodes in network namespaces reach it); ``trust`` lists further client networks (CIDR) allowed
    in without a password, as initdb trusts only the loopback ones."""

    def __init__(self, bindir: Path | None = None, *, listen: str = HOST, trust: Sequence[str] = ()) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresError("no PostgreSQL server binaries (Debian package postgresql)")
        self.bindir = found
        self.host = listen
        self.port = _free_port(listen)
        self.root = Path(tempfile.mkdtemp(prefix="vfax-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresError("running as root needs the 'postgres' system user") from exc
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        self._initdb()
        if trust:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in trust)

    # -- process control ---------------------------------------------------------------------------------
    def _demote(self) -> None:
        """In the child: drop to the postgres user, then die with the test process (the parent-death
        signal is cleared by a change of user, so it is set after)."""
        if self._run_as is not None:
            os.setgid(self._run_as.pw_gid)
            os.setuid(self._run_as.pw_uid)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def _run(self, args: Sequence[str]) -> None:
        done = subprocess.run(args, preexec_fn=self._demote, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ]
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log, "ab")  # noqa: SIM115 - the server writes it for its whole life
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.data}",
                "-c", "max_connections=200", "-c", "fsync=on",
            ],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._demote, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self.proc.returncode}: {self.log_tail()}")
            if self._accepts():
                return
            time.sleep(0.05)
        raise PostgresError(f"postgres did not accept connections within {timeout:.0f} s: {self.log_tail()}")

    def _accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT: active transactions roll back, clients are disconnected)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL of the postmaster: what a crash looks like to clients (the next start recovers)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the postmaster and every backend with it
            self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- databases ---------------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def failure_report(self) -> list[tuple[str, str]]:
        return [("postgres log", self.log_tail())]
