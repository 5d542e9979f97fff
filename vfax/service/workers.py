"""`vfax serve --workers N`: one machine, N worker processes, one API address.

One ``vfax serve`` process is one event loop on one core. To use every core, a supervisor starts N
worker processes (``multiprocessing`` with the *spawn* context: a fresh interpreter, no forked event loop
or locks), each an ordinary node of the store (``<node_id>-w<K>``) with its own SIP ports (worker K's
devices listen on their configured port + K * ``service.worker_port_stride``; a port 0 stays 0) and its
own media ports (chosen by the OS anyway). They share:

- the store: SQLite across processes of one host (WAL, ``BEGIN IMMEDIATE`` claims: a job is claimed by
  one worker only), or PostgreSQL. A job submitted through one worker's API wakes that worker; the
  others look at the queue every second (the controller's poll), or at once on PostgreSQL's NOTIFY.
- the API: the supervisor binds ``api.listen`` once and every worker serves on that socket, so the kernel
  spreads the connections over the workers; every worker's API serves every job and fax (one store).
- registration: only worker 0 registers a device. Registering one AOR from N contacts makes a PBX that
  keeps one contact per AOR (Asterisk ``max_contacts=1``) replace the binding at every refresh; the
  other workers send without registering (the digest answer on the INVITE is enough). The registration
  state that worker 0 sees is shared with the others (shared memory), so ``GET /v1/devices`` and
  ``vfax health`` tell the machine's registration whichever worker answers. Incoming calls reach worker 0
  (the registered contact) unless a dispatcher in front spreads them (docs/cluster.md, "Workers").
- event sinks: only worker 0 runs them ("one dispatcher per database"); events written by the other
  workers are in the same outbox and delivered within its poll.

The supervisor validates the configuration once (a bad one is refused before any worker starts, exit 2),
starts worker 0 first (it recovers what a crash left and salvages partial receptions alone), then the
others; it restarts a worker that dies (after marking its node left, so the restarted worker rejoins
under the same id and retries the jobs the dead one had in flight), with a back-off; it gives up (exit 1)
when a worker keeps dying before it is ready. SIGTERM/SIGINT are forwarded to every worker, which stops
like a single ``vfax serve`` (calls finish for a grace period, the node leaves the store). A worker dies
with its supervisor (Linux ``PR_SET_PDEATHSIG``): ``kill -9`` of the supervisor is the death of the
whole node, as for a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_any
from typing import TYPE_CHECKING, Any

from vfax.call.line import parse_advertise
from vfax.process import EXIT_BAD_INPUT, EXIT_FAILED, JsonLogFormatter
from vfax.service.config import ConfigError, ServiceConfig, parse_listen

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.sharedctypes import SynchronizedString
    from multiprocessing.synchronize import Event

    from vfax.service.controller import Controller

__all__ = [
    "WorkerHooks",
    "bind_api_socket",
    "check_worker_ports",
    "default_workers",
    "supervise",
    "worker_config",
    "worker_listen",
    "worker_node_id",
]

log = logging.getLogger("vfax.service.workers")

#: A worker that dies this many times in a row before it is ready makes the supervisor give up.
START_ATTEMPTS = 3
#: Restart delays after consecutive deaths (the last one repeats).
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
#: A worker that ran this long before dying is restarted after the first delay again.
STABLE_SECONDS = 60.0
#: How long the supervisor waits for its workers to stop (their calls get 30 s of grace).
STOP_SECONDS = 60.0
#: How often worker 0 publishes its devices' registration state to the other workers.
SHARE_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
_NOT_LEFT = "node %s: could not record its end (%s); it rejoins once its lease expires"


def default_workers() -> int:
    """One worker per core."""
    return os.cpu_count() or 1


def worker_node_id(base: str, index: int) -> str:
    return f"{base}-w{index}"


def worker_listen(listen: str, index: int, stride: int) -> str:
    """``HOST:PORT`` of a device in worker ``index`` (port + index * stride; a port 0 stays 0)."""
    host, port = parse_listen(listen, "listen")
    if port == 0 or index == 0:
        return listen
    port += index * stride
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def worker_advertise(advertise: str | None, index: int, stride: int) -> str | None:
    """A device's advertised address in worker ``index``: a forwarded port moves with the listen port."""
    if advertise is None or index == 0:
        return advertise
    host, port = parse_advertise(advertise)
    if port is None:
        return advertise
    port += index * stride
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _overlap(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a == b or a in wildcard or b in wildcard


def check_worker_ports(config: ServiceConfig, workers: int) -> None:
    """:class:`ConfigError` when two devices of different workers would listen on one port."""
    stride = config.node.worker_port_stride
    taken: dict[int, list[tuple[str, int, str]]] = {}
    for k in range(workers):
        for i, dev in enumerate(config.devices):
            host, port = parse_listen(dev.listen, f"devices[{i}].listen")
            if port == 0:
                continue
            mine = port + k * stride
            label = f"devices[{i}] ({dev.name}) of worker {k}"
            if mine > 65535:
                raise ConfigError(
                    "service.worker_port_stride",
                    f"with {workers} workers of stride {stride}, {label} would listen on port {mine},"
                    " above 65535: use fewer workers, a smaller stride or lower ports",
                )
            for other_host, other_k, other in taken.get(mine, []):
                if (k or other_k) and _overlap(host, other_host):
                    raise ConfigError(
                        "service.worker_port_stride",
                        f"with {workers} workers of stride {stride}, {label} would listen on port {mine},"
                        f" where {other} listens: make the stride larger than the spread of the devices'"
                        " ports, or move the devices' ports apart",
                    )
            taken.setdefault(mine, []).append((host, k, label))


def worker_config(config: ServiceConfig, index: int, base_id: str) -> ServiceConfig:
    """The configuration worker ``index`` runs: its node id, its ports, registration and sinks only in
    worker 0."""
    stride = config.node.worker_port_stride
    devices = tuple(
        replace(d, listen=worker_listen(d.listen, index, stride), register=d.register and index == 0,
                advertise=worker_advertise(d.advertise, index, stride))
        for d in config.devices
    )
    return replace(
        config,
        devices=devices,
        sinks=config.sinks if index == 0 else (),
        node=replace(config.node, node_id=worker_node_id(base_id, index)),
    )


def bind_api_socket(listen: str) -> socket.socket:
    """The API's listening socket, bound once by the supervisor and served by every worker."""
    host, port = parse_listen(listen, "api.listen")
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {listen} for the API: {exc.strerror or exc}") from None
    return sock


# --------------------------------------------------------------------------------------------------
# In a worker
# --------------------------------------------------------------------------------------------------


class WorkerHooks:
    """What :func:`vfax.service.serve.run_service` does differently in a worker: serve the API on the
    supervisor's socket, and tell the registration state of worker 0 (the one that registers)."""

    def __init__(
        self, index: int, api_socket: socket.socket, shared: SynchronizedString, registering: Sequence[str]
    ) -> None:
        self.index = index
        self.api_socket = api_socket
        self._shared = shared
        self._registering = frozenset(registering)
        self._task: asyncio.Task[None] | None = None

    def attach(self, controller: Controller) -> Callable[[], list[dict[str, Any]]]:
        """The ``devices_status`` the API serves; in worker 0, start publishing registrations."""
        if self.index == 0:
            self._task = asyncio.ensure_future(self._publish(controller))
            return controller.devices_status

        def status() -> list[dict[str, Any]]:
            devices = controller.devices_status()
            shared = read_registrations(self._shared)
            for dev in devices:
                if dev["name"] in self._registering:
                    seen = shared.get(dev["name"], {})
                    dev["registration"] = seen.get("registration", "unregistered")
                    dev["expires"] = seen.get("expires")
            return devices

        return status

    async def _publish(self, controller: Controller) -> None:
        last = b""
        while True:
            try:
                states = {
                    d["name"]: {"registration": d["registration"], "expires": d["expires"]}
                    for d in controller.devices_status()
                }
                blob = json.dumps(states, sort_keys=True).encode()
                if blob != last:
                    write_registrations(self._shared, blob)
                    last = blob
            except Exception as exc:  # never let the shared state stop the worker
                log.warning("worker 0: registration state not shared: %s", exc)
            await asyncio.sleep(SHARE_SECONDS)


def read_registrations(shared: SynchronizedString) -> dict[str, dict[str, Any]]:
    with shared.get_lock():
        raw = shared.value
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def write_registrations(shared: SynchronizedString, blob: bytes) -> None:
    with shared.get_lock():
        if len(blob) >= len(shared):
            raise ValueError(f"{len(blob)} bytes of registration state do not fit in {len(shared)}")
        shared.value = blob


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to it by multiprocessing)."""

    index: int
    config: ServiceConfig
    supervisor_pid: int
    root_level: int
    as_json: bool
    registering: tuple[str, ...]


class _WorkerJsonFormatter(JsonLogFormatter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        data = json.loads(super().format(record))
        data["worker"] = self.worker
        return json.dumps(data)


def _die_with_supervisor(supervisor_pid: int) -> None:
    """SIGKILL this worker when the supervisor dies (Linux): kill -9 of the supervisor is the node's death."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before the prctl
        os._exit(EXIT_FAILED)


def _setup_worker_logging(spec: WorkerSpec) -> None:
    name = f"w{spec.index}"
    handler = logging.StreamHandler(sys.stderr)
    if spec.as_json:
        handler.setFormatter(_WorkerJsonFormatter(name))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(spec.root_level)
    logging.getLogger("t38.spandsp.lib").setLevel(logging.ERROR if spec.root_level > logging.DEBUG else 0)
    level = spec.config.log_level.upper()
    logging.getLogger("vfax").setLevel(getattr(logging, level, logging.INFO))


def _worker_main(
    spec: WorkerSpec, api_socket: socket.socket, ready: Event, shared: SynchronizedString
) -> None:
    """The entry point of a worker process."""
    _die_with_supervisor(spec.supervisor_pid)
    _setup_worker_logging(spec)
    from vfax.service import runtime
    from vfax.service.serve import StartError

    hooks = WorkerHooks(spec.index, api_socket, shared, spec.registering)
    code = EXIT_FAILED
    try:
        runtime.tune_for_real_time()
        code = asyncio.run(_run_worker(spec.config, hooks, ready))
    except StartError as exc:
        log.error("worker %d cannot start: %s", spec.index, exc)
        code = exc.exit_code
    except OSError as exc:
        log.error("worker %d cannot start: %s", spec.index, exc)
    except KeyboardInterrupt:
        code = 0
    except Exception:
        log.exception("worker %d failed", spec.index)
    sys.exit(code)


async def _run_worker(config: ServiceConfig, hooks: WorkerHooks, ready: Event) -> int:
    from vfax.service.serve import run_service

    up = asyncio.Event()

    async def tell() -> None:
        await up.wait()
        ready.set()

    teller = asyncio.ensure_future(tell())
    try:
        return await run_service(config, ready=up, worker=hooks)
    finally:
        teller.cancel()


# --------------------------------------------------------------------------------------------------
# The supervisor
# --------------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    node_id: str
    process: BaseProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    was_ready: bool = False
    start_failures: int = 0  # deaths in a row before getting ready
    crashes: int = 0  # deaths in a row (for the back-off)
    restart_at: float | None = None


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class Supervisor:
    def __init__(self, config: ServiceConfig, workers: int, *, as_json: bool = False) -> None:
        from vfax.store.model import make_owner

        self.config = config
        self.count = workers
        self.as_json = as_json
        self.base_id = config.node.node_id or make_owner()
        self.ctx = multiprocessing.get_context("spawn")
        self.workers = [_Worker(k, worker_node_id(self.base_id, k)) for k in range(workers)]
        self.registering = tuple(d.name for d in config.devices if d.register)
        self.shared = self.ctx.Array("c", 1024 + 256 * len(config.devices))
        self._reset_registrations()
        self.api_socket: socket.socket | None = None
        self._signal: int | None = None
        self._exit: int | None = None
        self._others_started = False

    # --- start-up checks (before any worker) -----------------------------------------------------
    def prepare(self) -> None:
        """Check what a worker would only find out later: the ports, the store, the API address.

        :class:`ConfigError` (exit 2), ``StartError`` (its code), ``OSError`` (exit 1)."""
        check_worker_ports(self.config, self.count)
        for d in (self.config.data_dir, self.config.inbox, self.config.spool):
            d.mkdir(parents=True, exist_ok=True)
        store = self._open_store()  # migrations run here, once; errors are refused here, once
        with contextlib.suppress(Exception):
            store.close()
        self.api_socket = bind_api_socket(self.config.api.listen)

    def _open_store(self) -> Any:
        from vfax.service.serve import open_configured_store

        return open_configured_store(self.config, f"{self.base_id}-supervisor")

    # --- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        assert self.api_socket is not None, "prepare() first"
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_fd = signal.set_wakeup_fd(wake_w)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        host, port = self.api_socket.getsockname()[:2]
        log.warning(
            "vfax serve: %d workers (nodes %s-w0..w%d), API at http://%s:%d",
            self.count, self.base_id, self.count - 1, host, port,
        )  # fmt: skip
        try:
            self._start(self.workers[0])  # alone first: it recovers and salvages what a crash left
            while self._signal is None and self._exit is None:
                self._tick()
                if self._signal is not None or self._exit is not None:
                    break
                waiting: list[Any] = [w.process.sentinel for w in self.workers if w.process is not None]
                wait_any([*waiting, wake_r], timeout=0.5)
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    os.read(wake_r, 512)
            if self._signal is not None:
                log.warning("vfax serve: %s: stopping the workers", signal.Signals(self._signal).name)
            code = self._stop_all()
            return self._exit if self._exit is not None else code
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, handler in old.items():
                signal.signal(s, handler)
            os.close(wake_r)
            os.close(wake_w)
            self.api_socket.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal is None:
            self._signal = signum

    def _tick(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.process is not None:
                if not w.was_ready and w.ready is not None and w.ready.is_set():
                    w.was_ready = True
                    w.start_failures = 0
                    log.warning("worker %d ready (node %s, pid %s)", w.index, w.node_id, w.process.pid)
                if w.process.exitcode is not None:
                    self._died(w, now)
                    if self._exit is not None:
                        return
            elif w.restart_at is not None and now >= w.restart_at:
                self._start(w)
        if not self._others_started and self.workers[0].was_ready:
            self._others_started = True
            for w in self.workers[1:]:
                self._start(w)

    def _start(self, w: _Worker) -> None:
        spec = WorkerSpec(
            index=w.index,
            config=worker_config(self.config, w.index, self.base_id),
            supervisor_pid=os.getpid(),
            root_level=logging.getLogger().level,
            as_json=self.as_json,
            registering=self.registering,
        )
        w.ready = self.ctx.Event()
        w.process = self.ctx.Process(
            target=_worker_main, args=(spec, self.api_socket, w.ready, self.shared), name=f"w{w.index}"
        )
        w.process.start()
        w.started_at = time.monotonic()
        w.was_ready = False
        w.restart_at = None
        sip = ", ".join(d.listen for d in spec.config.devices) or "no devices"
        log.warning("worker %d started (pid %s, node %s, SIP %s)", w.index, w.process.pid, w.node_id, sip)

    def _died(self, w: _Worker, now: float) -> None:
        assert w.process is not None
        code = w.process.exitcode
        ran = now - w.started_at
        pid = w.process.pid
        w.process.join()
        w.process.close()
        w.process = None
        if w.index == 0:
            self._reset_registrations()
        self._leave(w.node_id)
        if not w.was_ready:
            w.start_failures += 1
            if code == EXIT_BAD_INPUT:
                log.error("worker %d refused to start (%s, see above): stopping", w.index, _how(code))
                self._exit = EXIT_BAD_INPUT
                return
            if w.start_failures >= START_ATTEMPTS:
                log.error(
                    "worker %d keeps failing at start (%d times in a row, last: %s): stopping",
                    w.index, w.start_failures, _how(code),
                )  # fmt: skip
                self._exit = EXIT_FAILED
                return
        w.crashes = 1 if ran >= STABLE_SECONDS else w.crashes + 1
        delay = BACKOFF_SECONDS[min(w.crashes, len(BACKOFF_SECONDS)) - 1]
        log.error(
            "worker %d (node %s, pid %s) died: %s after %.1f s%s; restarting it in %g s",
            w.index, w.node_id, pid, _how(code), ran, "" if w.was_ready else " (before it was ready)", delay,
        )  # fmt: skip
        w.restart_at = now + delay

    def _leave(self, node_id: str) -> None:
        """Mark a dead worker's node left, so that it rejoins under the same id at once (and retries
        the jobs it had in flight) instead of waiting for its lease to expire."""
        try:
            store = self._open_store()
        except Exception as exc:
            log.warning(_NOT_LEFT, node_id, exc)
            return
        try:
            store.leave_node(node_id)
        except Exception as exc:
            log.warning(_NOT_LEFT, node_id, exc)
        finally:
            with contextlib.suppress(Exception):
                store.close()

    def _reset_registrations(self) -> None:
        blob = json.dumps({n: {"registration": "unregistered", "expires": None} for n in self.registering})
        with contextlib.suppress(ValueError):
            write_registrations(self.shared, blob.encode())

    def _stop_all(self) -> int:
        """SIGTERM to every worker, wait for them; 0 when every one stopped cleanly."""
        running = [w for w in self.workers if w.process is not None]
        for w in running:
            assert w.process is not None
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(w.process.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        code = 0
        for w in running:
            assert w.process is not None
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.exitcode is None:
                log.error("worker %d did not stop in %g s: killed", w.index, STOP_SECONDS)
                w.process.kill()
                w.process.join(5)
                self._leave(w.node_id)
                code = EXIT_FAILED
            elif w.process.exitcode != 0:
                log.error("worker %d stopped with %s", w.index, _how(w.process.exitcode))
                code = EXIT_FAILED
            else:
                log.warning("worker %d stopped", w.index)
            w.process.close()
            w.process = None
        return code


def supervise(config: ServiceConfig, workers: int, *, as_json: bool = False) -> int:
    """Run ``workers`` worker processes until SIGTERM/SIGINT; returns the exit code.

    Raises :class:`ConfigError` or ``StartError`` (refused before any worker starts) and ``OSError``."""
    supervisor = Supervisor(config, workers, as_json=as_json)
    supervisor.prepare()
    return supervisor.run()
