"""Atomic file writing (a reader never sees half a file, and a crash leaves no partial output) and file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(paths: list[Path], book_path: Path | None = None, writable: bool = True) -> str:
    """SHA-256 over the (name, SHA-256) of each file of `paths`, in order: the identity of a model's files.

    Hashing a big model's weights (tens of GB) takes a minute or more at disk speed, so each file's hash is
    remembered in the JSON file `book_path` by its resolved path, size and mtime (ns), and only a new or
    changed file is hashed again. Concurrent writers of the book may lose each other's new lines (it is
    replaced whole, atomically): those files are hashed again next time, nothing worse.

    Raises:
        OSError: a file cannot be read.
    """
    book: dict[str, list] = {}
    if book_path is not None:
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(book_path.read_text(encoding="utf-8"))
            book = loaded if isinstance(loaded, dict) else {}
    parts, changed = [], False
    for path in paths:
        real = Path(path).resolve()  # a Hugging Face snapshot links to its blobs: the blob's size and mtime count
        stat = real.stat()
        known = book.get(str(real))
        if isinstance(known, list) and known[:2] == [stat.st_size, stat.st_mtime_ns] and len(known) == 3:
            digest = known[2]
        else:
            digest, changed = file_sha256(real), True
            book[str(real)] = [stat.st_size, stat.st_mtime_ns, digest]
        parts.append([Path(path).name, digest])
    if changed and book_path is not None and writable:
        with contextlib.suppress(OSError), atomic_path(book_path) as tmp:
            tmp.write_text(json.dumps(book, indent=1, sort_keys=True), encoding="utf-8")
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
