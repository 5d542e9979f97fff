"""Durable file placement: a received fax is never half-written and never lost.

Everything that lands in an inbox or an output folder is written under a temporary name in the same
directory, fsynced, renamed into place, and the directory is fsynced, so a crash or a full disk
leaves either the old state or the complete new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp: Path, dst: Path) -> Path:
    """fsync ``tmp``, rename it to ``dst`` (same directory), fsync the directory."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    return dst


@contextlib.contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; on success it becomes ``dst``, on error it is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        commit_file(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(dst: Path, data: Any) -> Path:
    with atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return dst


def unique_path(directory: Path, stem: str, suffix: str) -> Path:
    """``stem.suffix`` in ``directory``, or ``stem-2.suffix`` ... if taken: never overwrite a fax."""
    candidate = directory / f"{stem}{suffix}"
    n = 2
    while candidate.exists():
        candidate = directory / f"{stem}-{n}{suffix}"
        n += 1
    return candidate



@contextlib.contextmanager
def reserved_path(directory: Path, stem: str, suffix: str) -> Iterator[Path]:
    """:func:`unique_path` when several processes place files into one directory at once (the workers
    of ``vfax serve --workers`` share the inbox): the name is reserved by a hidden ``.NAME.lock`` created
    exclusively, so no other process picks it before the file is renamed into place (a rename would
    replace its fax). The lock is removed on leaving; one left by a crash only retires that name."""
    n = 1
    while True:
        candidate = directory / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        n += 1
        lock = directory / f".{candidate.name}.lock"
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        if candidate.exists():
            lock.unlink(missing_ok=True)
            continue
        break
    try:
        yield candidate
    finally:
        lock.unlink(missing_ok=True)


def attempt_report_path(reports: Path, job_id: str, attempt: int) -> Path:
    """Where the call report of attempt ``attempt`` (1, 2, ...) of outbound job ``job_id`` is kept."""
    return reports / job_id / f"attempt-{attempt}.json"


def attempt_report_owner(job_id: str, attempt: int) -> str:
    """The owner id of an attempt's call report among the files a cluster's store holds (kind "report")."""
    return f"{job_id}/attempt-{attempt}"
