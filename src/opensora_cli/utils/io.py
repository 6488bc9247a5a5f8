"""Atomic file writing: a reader never sees half a file, and a crash leaves no partial output."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname()) or "host"


# .{stem}.{pid}@{host}.{random}.part{suffix}: the writer is named, so a later run can tell a dead writer's
# leftovers from a live writer's file (services.outputs.remove_stale_parts).
_PART_NAME = re.compile(r"\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)\.[^.]+\.part(\.[^.]*)?$")


def part_owner(path: str | os.PathLike) -> tuple[str, int] | None:
    """(host tag, pid) of the process writing a temporary file of `atomic_path`, or None for other names."""
    match = _PART_NAME.search(Path(path).name)
    if match is None:
        return None
    host = match["host"]
    return (socket.gethostname() if host == _host_tag() else host), int(match["pid"])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers pick the right format); on success it is
    renamed onto `path`, on any error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}@{_host_tag()}.", suffix=f".part{target.suffix}",
                               dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
