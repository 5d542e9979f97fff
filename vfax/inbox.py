"""Where received faxes land: TIFF as spandsp wrote it, a PDF made from it, and the call report.

A reception starts as a hidden part file in the inbox (same filesystem, so the final rename is
atomic); when the call ends, whatever pages arrived are kept, complete or not, and the three files
are placed with fsync + rename. A reception with no page leaves only its report.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfax import documents, storage

log = logging.getLogger("vfax.inbox")


@dataclass(frozen=True)
class PlacedFax:
    tiff: Path | None
    pdf: Path | None
    report: Path | None
    pages: int
    complete: bool
    kept_part: Path | None = None  # placing failed (disk full...): the pages are still here
    error: str = ""


class Inbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def new_part_file(self) -> Path:
        """Where spandsp writes a reception in progress (never mistaken for a finished fax)."""
        return self.directory / f".rx-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.tif.part"

    def place(self, part: Path, report: dict[str, Any], pages: int, complete: bool) -> PlacedFax:
        """Move a finished (or partial) reception into place; returns the final paths.

        If the disk is full (or any other I/O error), the part file with the received pages stays
        where it is (``PlacedFax.kept_part``) and is salvaged by the service at its next start: a
        received page is never deleted to make room for a failure."""
        stem = f"fax-{time.strftime('%Y%m%d-%H%M%S')}" + ("" if complete else "-partial")
        tiff = pdf = None
        try:
            if pages > 0 and part.exists():
                with storage.reserved_path(self.directory, stem, ".tif") as dst:  # workers share the inbox
                    tiff = storage.commit_file(part, dst)
                stem = tiff.stem
                try:
                    pdf = documents.tiff_to_pdf(tiff, tiff.with_suffix(".pdf"))
                except (documents.DocumentError, OSError) as exc:  # the TIFF stays: it is the fax
                    log.error("received fax %s kept as TIFF only: %s", tiff, exc)
            else:
                part.unlink(missing_ok=True)  # nothing was received: nothing to keep
        except OSError as exc:
            log.error("received fax could not be placed (%s); its pages stay in %s", exc, part)
            return PlacedFax(None, None, None, pages, complete, kept_part=part, error=str(exc))
        report = dict(report, files={"tiff": str(tiff) if tiff else None, "pdf": str(pdf) if pdf else None})
        try:
            path: Path | None = storage.write_json(storage.unique_path(self.directory, stem, ".json"), report)
        except OSError as exc:  # the fax itself is placed; only its report is missing
            log.error("report of %s not written: %s", tiff, exc)
            path = None
        return PlacedFax(tiff, pdf, path, pages, complete)
