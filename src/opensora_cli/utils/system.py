"""Facts about this machine that several layers need. No torch."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def available_host_memory() -> int | None:
    """Bytes of host memory a new allocation can get without swapping (the cgroup limit counts), or None."""
    available = None
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            available = int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):  # a container's limit (cgroup v2) can be far below the host's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available if available is not None else 2**63, int(limit) - used)
    return available
