"""Page images for the console: PNGs of the pages of a fax TIFF (received, queued or previewed), and
previews of uploads converted before they are queued.

A page PNG is rendered from the TIFF the first time it is asked for and kept in the node's file cache
(``<data_dir>/cache/pages/<owner id>/``), named after a hash of the source file's identity (size, mtime,
inode) and the rendering (page, width, rotation): the same hash is the HTTP ETag, so a browser that has
the image gets 304 and a changed source never serves an old picture. Measured (``bench/page_images.py``,
2-core VM): an A4 fine page renders in about 21 ms at 800 pixels, 8 ms as a 160-pixel thumbnail and 93 ms
at 2000 pixels; from the cache 0.1 ms. Rendering on the fly would do; the cache spares the shared CPU (the
one that carries calls) the repeats of an inbox listing and of a page viewer going back and forth.

A preview is an upload converted exactly as ``POST /v1/jobs`` converts it, kept under
``<spool>/.previews/<id>/`` with a small JSON record, for :data:`PREVIEW_TTL` seconds. ``POST /v1/jobs``
with its id moves that directory into the spool (one rename: the previewed pages are the faxed ones, no
second conversion). Expired previews are deleted by the next preview or job request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vfax import documents
from vfax.storage import fsync_dir

log = logging.getLogger("vfax.api.pages")

__all__ = [
    "DEFAULT_WIDTH",
    "MAX_WIDTH",
    "MIN_WIDTH",
    "PREVIEW_TTL",
    "PageImages",
    "Preview",
    "PreviewNotFoundError",
    "Previews",
]

MIN_WIDTH = 64
MAX_WIDTH = 2000
DEFAULT_WIDTH = 800
#: Seconds a preview is kept for the job that may follow it.
PREVIEW_TTL = 900.0
_PNG_END = b"IEND\xaeB`\x82"
_PREVIEW_ID = re.compile(r"^[0-9a-f]{20}$")
_META = "preview.json"


class PageImages:
    """Rendered page PNGs, cached on disk per owner (fax, job or preview id)."""

    def __init__(self, cache: Path) -> None:
        self.root = cache / "pages"

    @staticmethod
    def etag(src: Path, number: int, width: int, rotate: int) -> str:
        """A strong ETag of one rendering of one page of ``src`` as it is on disk now."""
        st = src.stat()
        key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{number}:{width}:{rotate}"
        return '"' + hashlib.sha256(key.encode()).hexdigest()[:24] + '"'

    def png(self, owner: str, src: Path, number: int, width: int, rotate: int) -> tuple[bytes, str]:
        """The PNG and its ETag. Raises IndexError for a page the TIFF does not have and DocumentError for
        an unreadable TIFF. Blocking: call it from a worker thread."""
        tag = self.etag(src, number, width, rotate)
        path = self.root / owner / f"{tag.strip(chr(34))}.png"
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            if data.endswith(_PNG_END):  # a cache file cut short by a crash is rendered again
                return data, tag
        data = documents.render_tiff_page(src, number, width=width, rotate=rotate)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)  # readers see the whole file or none (a cache: no fsync)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # a full disk costs the cache, not the answer
            log.warning("page image cache %s not written: %s", path.parent, exc)
        return data, tag

    def forget(self, owner: str) -> None:
        """Delete every cached image of ``owner``."""
        shutil.rmtree(self.root / owner, ignore_errors=True)


class PreviewNotFoundError(Exception):
    """No such preview, or it expired."""


@dataclass(frozen=True)
class Preview:
    id: str
    directory: Path
    original: str
    pages: int
    resolution: str
    paper: str
    created_at: float
    expires_at: float

    @property
    def tiff(self) -> Path:
        return self.directory / "fax.tif"


class Previews:
    """Converted uploads waiting to be queued (or to expire). Thread-safe within a process."""

    def __init__(
        self, directory: Path, *, ttl: float = PREVIEW_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()

    def register(self, spooled: Path, original: str, pages: int, resolution: str, paper: str) -> Preview:
        """Record a directory made by the API's spooling (``<directory>/<key>/``) as a preview."""
        now = self.clock()
        meta = {"original": original, "pages": pages, "resolution": resolution, "paper": paper, "at": now}
        (spooled / _META).write_text(json.dumps(meta))
        return self._preview(spooled.name, spooled, meta)

    def _preview(self, preview_id: str, directory: Path, meta: dict[str, object]) -> Preview:
        at = float(meta["at"])  # type: ignore[arg-type]
        return Preview(
            id=preview_id,
            directory=directory,
            original=str(meta["original"]),
            pages=int(meta["pages"]),  # type: ignore[call-overload]
            resolution=str(meta["resolution"]),
            paper=str(meta["paper"]),
            created_at=at,
            expires_at=at + self.ttl,
        )

    def _load(self, preview_id: str) -> Preview | None:
        if not _PREVIEW_ID.match(preview_id):
            return None
        directory = self.directory / preview_id
        try:
            meta = json.loads((directory / _META).read_text())
            return self._preview(preview_id, directory, meta)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def get(self, preview_id: str) -> Preview:
        """The preview, or PreviewNotFoundError (also once it expired; it is then deleted)."""
        with self._lock:
            preview = self._load(preview_id)
            if preview is None:
                raise PreviewNotFoundError(preview_id)
            if self.clock() >= preview.expires_at:
                shutil.rmtree(preview.directory, ignore_errors=True)
                raise PreviewNotFoundError(preview_id)
            return preview

    def take(self, preview_id: str, dest: Path) -> Preview:
        """Move the preview's directory to ``dest`` (same filesystem: one rename) and return it as it is
        there; it is no longer a preview."""
        with self._lock:
            preview = self._load(preview_id)
            if preview is None or self.clock() >= preview.expires_at:
                raise PreviewNotFoundError(preview_id)
            preview.directory.rename(dest)
            (dest / _META).unlink(missing_ok=True)
            fsync_dir(dest.parent)
            return Preview(**{**preview.__dict__, "directory": dest})

    def give_back(self, preview: Preview, taken: Path) -> None:
        """Undo :meth:`take` (queueing failed): the preview is there again for a retry."""
        with self._lock:
            meta = {"original": preview.original, "pages": preview.pages, "resolution": preview.resolution,
                    "paper": preview.paper, "at": preview.created_at}  # fmt: skip
            (taken / _META).write_text(json.dumps(meta))
            taken.rename(self.directory / preview.id)

    def sweep(self) -> int:
        """Delete expired previews and conversions left half done; returns how many were deleted."""
        if not self.directory.is_dir():
            return 0
        now = self.clock()
        removed = 0
        with self._lock:
            for entry in self.directory.iterdir():
                preview = self._load(entry.name)
                if preview is not None:
                    expired = now >= preview.expires_at
                else:  # a staging directory of a conversion in progress, or debris: by its age
                    try:
                        expired = now - entry.stat().st_mtime >= self.ttl
                    except OSError:
                        continue
                if expired:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("deleted %d expired preview(s)", removed)
        return removed
