"""What every benchmark script shares: the code version printed with its figures, resident memory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib() -> int:
    """This process's resident memory in KiB (``/proc/self/statm``: the kernel's VmRSS, cheap to read
    often, as calls.py does while calls run)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


def code_version() -> str:
    """The commit the figures belong to (``+changes`` when the work tree differs from it)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return head + (" +changes" if dirty else "")
