"""What each node removes after a received fax was deleted through the API of any node.

Why here and not in the API: in a cluster the node whose API deletes a fax is not always the node that
received it, and that node's inbox is on another host. The store keeps the paths of such a fax (its
``owner`` is the receiving node) until the owner's next heartbeat runs :func:`sweep_deleted_faxes`, which
removes the files and then forgets the paths; every node also drops the copies it fetched or rendered
(``cache/faxes/<id>``, ``cache/pages/<id>``) of faxes deleted recently.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from vfax.store.model import JobStore

log = logging.getLogger(__name__)

#: How far back a node looks for deleted faxes whose cached copies it may hold (seconds).
CACHE_LOOKBACK = 7 * 86400


def sweep_deleted_faxes(store: JobStore, *, inbox: Path, cache: Path, now: float) -> int:
    """Remove this node's files and cached copies of deleted faxes; returns how many things went."""
    removed = 0
    root = inbox.resolve()
    for fax in store.deleted_inbound(now - CACHE_LOOKBACK):
        for cached in (cache / "faxes" / fax.id, cache / "pages" / fax.id):
            if cached.exists():
                shutil.rmtree(cached, ignore_errors=True)
                removed += 1
        recorded = [p for p in (fax.tiff_path, fax.pdf_path, fax.report_path) if p]
        if fax.owner != store.owner or not recorded:
            continue
        left = False
        for value in recorded:
            path = Path(value).resolve()
            if not path.is_relative_to(root):
                log.warning("deleted fax %s: %s is outside the inbox; not removed", fax.id, value)
                continue
            try:
                path.unlink(missing_ok=True)
                removed += 1
            except OSError as exc:  # tried again at the next heartbeat
                log.error("deleted fax %s: cannot remove %s: %s", fax.id, path, exc)
                left = True
        if not left:
            store.forget_inbound_paths(fax.id)
            log.info("deleted fax %s: its files on this node are removed", fax.id)
    return removed
