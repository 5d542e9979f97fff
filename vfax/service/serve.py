"""`vfax serve`: the long-running fax service (devices, controller, job store, HTTP API).

Start-up order matters for durability: the store opens (and recovers from a crash) before any device
listens, so an offered call is always recorded in a consistent store; devices register before the
queue starts; the API comes last, once there is something to serve. Shutdown reverses it, letting
calls in progress finish for a grace period.

Refusals at start-up (one line on stderr, nothing changed): a database that cannot be opened or is of a
newer schema, and a node id that a live node holds, exit 2 (unusable configuration); a PostgreSQL server
that cannot be reached exits 1 (a failure that a restart later may not have).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from vfax.call.device import VirtualFaxDevice
from vfax.process import EXIT_BAD_INPUT, EXIT_FAILED
from vfax.service.config import ServiceConfig, build_sinks, device_line_config
from vfax.service.controller import Controller
from vfax.service.converter import DocumentConverter
from vfax.store.model import (
    DuplicateNodeError,
    JobStore,
    JobStoreError,
    SchemaError,
    StoreUnavailableError,
    make_owner,
)

if TYPE_CHECKING:
    from vfax.service.workers import WorkerHooks

log = logging.getLogger("vfax.service")


class StartError(Exception):
    """The service refused to start; ``exit_code`` is what ``vfax serve`` exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def open_configured_store(config: ServiceConfig, node_id: str) -> JobStore:
    """The configured store, or a :class:`StartError` that names the key and the database."""
    from vfax.store import open_store

    shown = config.database_shown
    if isinstance(config.database, Path):
        try:
            config.database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"database: cannot create the directory of {shown}: {exc}"
            raise StartError(message, EXIT_BAD_INPUT) from None
    try:
        return open_store(
            str(config.database), owner=node_id, lease_seconds=config.node.lease_seconds, policy=config.retry
        )
    except StoreUnavailableError as exc:
        raise StartError(f"database: cannot reach {shown}: {exc}", EXIT_FAILED) from None
    except SchemaError as exc:
        raise StartError(f"database: {shown} refused: {exc}", EXIT_BAD_INPUT) from None
    except ValueError as exc:
        text = str(exc) if str(exc).startswith("database") else f"database: {exc}"
        raise StartError(text, EXIT_BAD_INPUT) from None
    except (sqlite3.Error, OSError, JobStoreError) as exc:
        raise StartError(f"database: cannot open {shown}: {exc}", EXIT_BAD_INPUT) from None


def api_base_url(listen: str) -> str | None:
    """The API's base URL as other nodes and clients reach it; None while the port is not chosen yet."""
    from vfax.service.config import parse_listen

    host, port = parse_listen(listen, "api.listen")
    if port == 0:
        return None
    if host in ("0.0.0.0", "::"):
        import socket

        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_service(
    config: ServiceConfig, *, ready: asyncio.Event | None = None, worker: WorkerHooks | None = None
) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code. :class:`StartError` when it cannot start.

    ``worker``: this process is a worker of ``vfax serve --workers`` (:mod:`vfax.service.workers`)."""
    for d in (config.data_dir, config.inbox, config.spool):
        d.mkdir(parents=True, exist_ok=True)
    node_id = config.node.node_id or make_owner()
    store = await asyncio.to_thread(open_configured_store, config, node_id)
    log.warning("vfax serve: node %s, job store %s", node_id, config.database_shown)
    devices: list[VirtualFaxDevice] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    controller: Controller | None = None
    server = None
    converter: DocumentConverter | None = None
    try:
        for dev in config.devices:
            line_config = device_line_config(dev, None)
            device = await VirtualFaxDevice.open(line_config, register=dev.register)
            devices.append(device)
            reg = device.line.registration
            state = reg.state.value if reg else "not registering"
            log.warning("device %s listening at %s (%s)", dev.name, device.line.uri, state)
        controller = Controller(
            store,
            devices,
            inbox=config.inbox,
            sinks=build_sinks(config.sinks),
            node=config.node,
            api_url=api_base_url(config.api.listen),
            file_cache=config.data_dir / "cache",
            reports=config.data_dir / "reports",
        )
        try:
            await controller.start()
        except DuplicateNodeError as exc:
            controller = None
            raise StartError(f"service.node_id: {exc}", EXIT_BAD_INPUT) from None
        except StoreUnavailableError as exc:
            controller = None
            raise StartError(f"database: cannot reach {config.database_shown}: {exc}", EXIT_FAILED) from None
        from vfax.service.api import create_app, serve_api

        # uploads are rendered in processes of their own: a document that crashes the renderer ends one
        # of those, not the service (spawned on demand, as many as cores up to 4: the threads did as much)
        converter = DocumentConverter(processes=min(4, os.cpu_count() or 1))

        app = create_app(
            store,
            config.api,
            inbox_dir=config.inbox,
            spool_dir=config.spool,
            wake=controller.wake,
            subscribe=controller.subscribe,
            devices_status=controller.devices_status if worker is None else worker.attach(controller),
            file_cache=config.data_dir / "cache",
            reports_dir=config.data_dir / "reports",
            node_id=controller.node_id,
            set_draining=controller.set_draining,
            converter=converter,
        )
        server = await serve_api(app, config.api.listen, sock=worker.api_socket if worker else None)
        host, port = server.address
        if controller.api_url is None:
            controller.api_url = f"http://{host}:{port}"
        log.warning("vfax serve: API at http://%s:%d, inbox %s", host, port, config.inbox)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.warning("vfax serve: stopping")
        return 0
    finally:
        if server is not None:
            await server.stop()
        if converter is not None:
            await asyncio.to_thread(converter.close)
        if controller is not None:
            await controller.stop(grace=30)
        for device in devices:
            await device.close()
        await controller_store_close(store)


async def controller_store_close(store: JobStore) -> None:
    from vfax.store.async_store import AsyncJobStore

    try:
        await AsyncJobStore(store).close()
    except Exception as exc:
        log.warning("closing the job store: %s", exc)
