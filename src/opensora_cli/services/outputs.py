"""The output folder of `opensora sample`: what a rerun may skip, claims that share work, stale parts, room.

No torch here. Four rules, each checked before any model loads:

1. **Skip only the same request.** Every sidecar holds the request that made its video (`request_of`): the
   model folders and their config hashes, the prompt, the conditions' SHA-256, the seed and every generation
   parameter. A rerun skips an output only when its sidecar's request equals the new one; any other finished
   output is refused with the fields that differ (`steps 5 -> 7`), unless `--overwrite`.
2. **One maker per video.** Before generating an output, a process claims it by creating
   `.{stem}.claim` with O_EXCL (atomic on local and network file systems). A second process, on this
   machine or another sharing the folder, skips a claimed output. The owner refreshes the claim's mtime
   while it works; a claim whose process is gone (same host: pid and start time) or whose mtime is older
   than `CLAIM_STALE_SECONDS` (another host) is released and taken over.
3. **No debris.** Hidden `.part` files that a killed run left (see `utils.io.atomic_path`) are removed when
   their writer is dead.
4. **Room first.** The folder must be a writable directory (or creatable) with free space for the outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensora_cli.schemas.problems import Problem
from opensora_cli.utils.io import file_sha256, part_owner

# Fields of a sidecar that decide what its video looks like. Run facts (time, device, process count) are
# left out, and so are options with equal results by design (--vae-tiling is lossless, the process count and
# --sp do not change a video).
REQUEST_FIELDS = (
    "prompt", "line", "sample", "seed", "mask_type", "conds", "frame_indices", "num_frames", "height", "width",
    "crop_for_hw", "max_hxw", "steps", "guidance_scale", "guidance_rescale", "sampler", "negative_prompt",
    "prompt_template", "noise_strength", "sample_posterior", "fps", "dtype", "models", "windows",
    "step_cache", "quantize", "lora", "replace_kept_latents",
)
# A claim not refreshed for this long, by a process on another host, is taken to be abandoned. Owners
# refresh at every denoising step, far more often.
CLAIM_STALE_SECONDS = 600.0
_HOST = socket.gethostname()


def model_fingerprints(model_dirs: dict[str, Path]) -> dict[str, dict[str, str]]:
    """{kind: {"path": resolved folder, "config_sha256": hash of its config.json}} for each model folder."""
    return {
        kind: {"path": str(Path(folder).resolve()), "config_sha256": file_sha256(Path(folder) / "config.json")}
        for kind, folder in sorted(model_dirs.items())
    }


def request_of(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The request part of a sidecar (fields it lacks, from older versions, are None)."""
    return {name: sidecar.get(name) for name in REQUEST_FIELDS}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _window_differences(before: list[dict], after: list[dict]) -> list[str]:
    """`window 2 seed 1 -> 2`, `windows 2-5 adain 0.5 -> 0.0`: what differs inside a long video's windows, the
    same change in consecutive windows said once."""
    runs: list[list] = []  # [first window, last window, field, old, new]
    for index, (b, a) in enumerate(zip(before, after), start=1):
        for key in sorted(set(b) | set(a)):
            change = (key, _short(b.get(key)), _short(a.get(key)))
            if change[1] == change[2]:
                continue
            run = next((r for r in runs if tuple(r[2:]) == change and r[1] == index - 1), None)
            if run is not None:
                run[1] = index
            else:
                runs.append([index, index, *change])
    return [f"window {first} {key} {old} -> {new}" if first == last else
            f"windows {first}-{last} {key} {old} -> {new}" for first, last, key, old, new in runs]


def _lora_difference(before: list[dict], after: list[dict]) -> str:
    """`lora none -> a:1`, `lora a:1 -> a:0.5`, `lora a (other weights)`: the adapters by folder name and scale."""
    def show(records: list[dict]) -> str:
        return ", ".join(f"{Path(r['path']).name}:{r['scale']:g}" for r in records) or "none"

    if [(r["path"], r["scale"]) for r in before] == [(r["path"], r["scale"]) for r in after]:
        return f"lora {show(after)} (other weights)"
    return f"lora {show(before)} -> {show(after)}"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`field old -> new` for each request field that differs; for the models, which folder or config."""
    changed = []
    for name in REQUEST_FIELDS:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "models" and isinstance(before, dict) and isinstance(after, dict):
            for kind in sorted(set(before) | set(after)):
                if before.get(kind) != after.get(kind):
                    what = "config" if (before.get(kind) or {}).get("path") == (after.get(kind) or {}).get("path") \
                        else "folder"
                    changed.append(f"{kind} {what} changed")
        elif name == "conds" and isinstance(before, list) and isinstance(after, list) and \
                [c.get("path") for c in before] == [c.get("path") for c in after]:
            changed.append("condition file contents changed")
        elif name == "windows" and isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
            changed += _window_differences(before, after)
        elif name == "lora":
            changed.append(_lora_difference(before or [], after or []))
        else:
            changed.append(f"{name} {_short(before)} -> {_short(after)}")
    return changed


# ------------------------------------------------------------------------------------------------------------
# Claims
# ------------------------------------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The start time of a process on this host (field 22 of /proc/PID/stat), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started  # a reused pid has another start time


def _owner() -> dict[str, Any]:
    return {"host": _HOST, "pid": os.getpid(), "started": _start_time(os.getpid())}


def _owner_alive(owner: dict[str, Any], mtime: float) -> bool:
    if owner.get("host") == _HOST and isinstance(owner.get("pid"), int):
        return _alive(owner["pid"], owner.get("started"))
    return time.time() - mtime < CLAIM_STALE_SECONDS


def claim_path(video: Path) -> Path:
    return video.with_name(f".{video.stem}.claim")


@dataclass
class Claim:
    """A held claim on one output; `refresh` while working, `release` when the output is written (or not)."""

    path: Path
    _last: float = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last >= 5.0:  # a heartbeat for other hosts; no need to touch the file every step
            with contextlib.suppress(OSError):
                os.utime(self.path)
            self._last = now

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def try_claim(video: Path) -> tuple[Claim | None, str | None]:
    """Claim `video` for this process.

    Returns:
        (claim, None) when this process now owns it; (None, "host:pid") when a live process does.
    """
    path = claim_path(video)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a dead owner's claim is removed, then taken; another process may win that race
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
                mtime = path.stat().st_mtime
            except (OSError, ValueError):  # being written this instant, or vanished: look again
                owner, mtime = {}, time.time()
            if owner and _owner_alive(owner, mtime):
                return None, f"{owner.get('host')}:{owner.get('pid')}"
            if not owner and time.time() - mtime < CLAIM_STALE_SECONDS:
                time.sleep(0.05)
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(_owner(), handle)
        return Claim(path, time.monotonic()), None
    return None, "another process"


# ------------------------------------------------------------------------------------------------------------
# Debris and room
# ------------------------------------------------------------------------------------------------------------


def remove_stale_parts(output_dir: Path) -> list[Path]:
    """Remove hidden partial files and claims whose writer is gone; returns what was removed."""
    removed = []
    if not output_dir.is_dir():
        return removed
    for path in output_dir.glob(".*"):
        if path.name.endswith(".claim"):
            try:
                owner = json.loads(path.read_text() or "{}")
                stale = bool(owner) and not _owner_alive(owner, path.stat().st_mtime)
            except (OSError, ValueError):
                continue
        elif ".part" in path.name:
            owner = part_owner(path)
            if owner is None:
                continue
            host, pid = owner
            stale = host == _HOST and not _alive(pid, None)
        else:
            continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def check_output_dir(output_dir: Path, needed_bytes: int) -> list[Problem]:
    """Problems with writing `needed_bytes` of outputs into `output_dir` (created later if missing)."""
    where = "--output-dir"
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == output_dir else f"cannot be created: '{existing}' is a file"
        return [Problem.of(where, None, f"'{output_dir}' {what}", "pass a folder path to --output-dir")]
    try:  # a real write: permission bits say nothing to root, nor about a read-only mount
        fd, probe = tempfile.mkstemp(prefix=".opensora-write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return [Problem.of(where, None, f"'{existing}' is not writable ({exc.strerror})",
                           "pick a folder you can write to, or fix its permissions")]
    free = shutil.disk_usage(existing).free
    if needed_bytes > free:
        return [Problem.of(where, None, f"not enough free space in '{existing}': the outputs need about "
                           f"{_mib(needed_bytes)}, {_mib(free)} free", "free some space or use another --output-dir")]
    return []


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size < 2**30 else f"{size / 2**30:.2f} GiB"


def estimate_output_bytes(frames: int, height: int, width: int) -> int:
    """A generous size of one output: 2 bits per pixel for H.264 at CRF 18 (several times what smooth clips
    take; noise from a random model takes about that), an uncompressed PNG for one frame, plus the sidecar."""
    pixels = height * width
    return (pixels * 3 if frames == 1 else frames * pixels * 2 // 8) + 64 * 1024
