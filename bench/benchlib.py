"""What every benchmark script shares: the code version printed with its figures, resident memory, CPU
time of processes and of the whole machine (from /proc, so no psutil is needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib() -> int:
    """This process's resident memory in KiB (``/proc/self/statm``: the kernel's VmRSS, cheap to read
    often, as calls.py does while calls run)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime of process ``pid`` (all its threads) so far, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 counted after the ") " of the name


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have spent so far (/proc/stat, all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


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


def session_cpu_seconds(sid: int) -> float:
    """utime+stime of every process in session ``sid`` (Kamailio forks its workers into its own)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 (session id), counted after the ") " of the name
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / CLK_TCK
