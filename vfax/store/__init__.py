"""Where jobs, received faxes and events live: the store interface (:mod:`vfax.store.model`), its SQLite
implementation (embedded, one host) and its PostgreSQL implementation (a cluster of nodes), the names of
job options, and the retry policy the store applies. :func:`open_store` picks the backend from the
``database`` setting."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from vfax.store.model import JobStore

__all__ = ["is_postgres_url", "open_store"]

_POSTGRES = re.compile(r"^postgres(ql)?://", re.IGNORECASE)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(//|$)")


def is_postgres_url(database: str | os.PathLike[str]) -> bool:
    return isinstance(database, str) and _POSTGRES.match(database) is not None


def _sqlite_path(database: str | os.PathLike[str]) -> Path:
    """``database`` as a usable SQLite file path, or a ValueError naming the setting."""
    if not isinstance(database, str | os.PathLike):
        raise ValueError(f"database must be a SQLite file path or a postgresql:// URL, not {database!r}")
    text = os.fspath(database)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("database is empty: give a SQLite file path or a postgresql:// URL")
    if "\x00" in text:
        raise ValueError("database contains a NUL byte: not a file path")
    if _URL.match(text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        scheme = text.partition(":")[0]
        raise ValueError(
            f"database must be a SQLite file path or a PostgreSQL URL (postgresql://USER@HOST[:PORT]/DB),"
            f" not a {scheme}: URL"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"database {path} is a directory, not a SQLite database file")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"database {path} is not usable: directory {parent} does not exist")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ValueError(f"database {path} is not writable by this process")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"database {path} cannot be created: directory {parent} is not writable")
    return path


def open_store(
    database: str | os.PathLike[str], *, owner: str | None = None, lease_seconds: float = 60.0, **kw: Any
) -> JobStore:
    """The job store named by ``database``: a ``postgresql://`` (or ``postgres://``) URL opens
    :class:`~vfax.store.postgres.PostgresJobStore`, anything else must be a usable SQLite file path
    (:class:`~vfax.store.sqlite.SqliteJobStore`). ``kw`` goes to the store (``policy``, ``clock``...).

    Errors: ValueError naming ``database`` for a value that is neither; StoreUnavailableError naming the
    address for an unreachable PostgreSQL; SchemaError for a database newer than this code."""
    if is_postgres_url(database):
        from vfax.store.postgres import PostgresJobStore  # psycopg only where PostgreSQL is used

        return PostgresJobStore(str(database), owner=owner, lease_seconds=lease_seconds, **kw)
    path = _sqlite_path(database)
    from vfax.store.sqlite import SqliteJobStore

    try:
        return SqliteJobStore(path, owner=owner, lease_seconds=lease_seconds, **kw)
    except sqlite3.DatabaseError as exc:  # not a database, cannot open or write it
        raise ValueError(f"database {path} is not a usable SQLite database: {exc}") from None
