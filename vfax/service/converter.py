"""Uploaded documents are converted to TIFF-F in separate processes.

The renderer (pdfium, Pillow) is C that reads whatever a client uploads: a document that crashes it
must end a converter process, not the service and its calls in progress. The upload is then refused
with a clear error, and the next one gets a fresh process. (Measured with ``bench/upload_burst.py``:
converting in the service's own threads did not hold its media clock back, so this is about isolation,
not timing.)
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from vfax import documents

log = logging.getLogger(__name__)

Convert = Callable[..., documents.PreparedDocument]


class DocumentConverter:
    """``convert(src, dst, resolution=, paper=)`` as :func:`vfax.documents.prepare_fax_tiff`, run in one of
    ``processes`` spawned worker processes (0: in the calling thread). Blocking: call it from a thread."""

    def __init__(self, processes: int = 1, *, fn: Convert = documents.prepare_fax_tiff) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self._fn = fn
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:  # spawn, not fork: the service has threads and an event loop
                spawn = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.processes, mp_context=spawn)
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def convert(self, src: Path, dst: Path, **kw: Any) -> documents.PreparedDocument:
        """The prepared document; :class:`~vfax.documents.DocumentError` for a bad document, also for one
        that crashed its converter process."""
        if self.processes == 0:
            return self._fn(src, dst, **kw)
        pool = self._executor()
        try:
            return pool.submit(self._fn, src, dst, **kw).result()
        except BrokenProcessPool:
            self._discard(pool)
            log.error("converting %s crashed its converter process; the upload is refused", src.name)
            Path(dst).unlink(missing_ok=True)
            raise documents.DocumentError(
                f"{src}: the document crashed the converter (a damaged or hostile file?); nothing was queued"
            ) from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
