"""`vfax serve` on the command line: load the configuration, then run one process or a supervisor of
worker processes (:mod:`vfax.service.serve`, :mod:`vfax.service.workers`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from vfax.cli.common import EXIT_FAILED, err, fail
from vfax.process import use_json_logs
from vfax.service import runtime
from vfax.service.config import ConfigError, load_config
from vfax.service.serve import StartError, run_service


def serve_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The service configuration (TOML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Log as JSON lines on stderr.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=256,
            envvar="VFAX_WORKERS",
            help="Worker processes, each a node with its own SIP ports, one API address (default: one per"
            " core; 1: a single process).",
        ),
    ] = None,
) -> None:
    """Run the fax service: register the devices, receive into the inbox, send queued jobs, serve the API.

    Environment variables override the file (VFAX_API_TOKEN, VFAX_DEVICE_<NAME>_PASSWORD, ...; see
    vfax/samples/vfax.example.toml). Stops cleanly on SIGINT or SIGTERM.
    """
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(f"invalid configuration {config}: {exc}")
    logging.getLogger("vfax").setLevel(getattr(logging, cfg.log_level.upper(), logging.INFO))
    if as_json:
        use_json_logs()
    try:
        from vfax.service.workers import default_workers, supervise

        count = workers or default_workers()
        if count > 1:
            raise typer.Exit(supervise(cfg, count, as_json=as_json))
        runtime.tune_for_real_time()
        code = asyncio.run(run_service(cfg))
    except ConfigError as exc:
        fail(f"invalid configuration {config}: {exc}")
    except StartError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(code)
