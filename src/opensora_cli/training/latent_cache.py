"""An in-memory cache of VAE latents for training on small data (`opensora train --latent-cache-mib N`).

The frozen VAE's posterior mean is a pure function of its input clip, and a small dataset shows the same clips
(and, for the deterministic mask types i2v, transition and t2iv, the same masked clips) every epoch. Keyed by
a digest of the input's bytes, a cached latent is exactly what encoding would give again, so the cache changes
no number of the run; on a CPU it removes most of a step's VAE work (on the demo recipe about half the step).
It is for CPU and small data: hashing reads each clip once on the host, and the cache lives in host memory,
bounded by `max_bytes` (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch


def digest(sample: torch.Tensor) -> bytes:
    """A 16-byte digest of one sample's dtype, shape and values (a CPU tensor)."""
    sample = sample.detach().contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{sample.dtype}:{tuple(sample.shape)}".encode())
    h.update(sample.view(torch.uint8).numpy())  # the raw bytes of any dtype (numpy has no bf16), no copy
    return h.digest()


class LatentCache:
    """Encode batches through `encode`, reusing the latents of inputs seen before.

    Args:
        encode: (N, 3, T, H, W) on the compute device -> (N, C, T', h, w); must be deterministic (posterior mean).
        max_bytes: the most host memory the cached latents may take.
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], max_bytes: int):
        self.encode = encode
        self.max_bytes = max_bytes
        self.bytes = self.hits = self.misses = 0
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, *batches: torch.Tensor, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Latents of each (B, 3, T, H, W) host batch, as float32 on `device`. All misses of all batches go through
        one `encode` call (moved to `device` in `dtype`), so a step with a few new clips still costs one VAE pass."""
        keys = [[digest(sample) for sample in batch] for batch in batches]
        found: dict[bytes, torch.Tensor] = {}
        missing: dict[bytes, torch.Tensor] = {}
        for batch, batch_keys in zip(batches, keys):
            for sample, key in zip(batch, batch_keys):
                if key not in found and key in self._entries:
                    self._entries.move_to_end(key)
                    found[key] = self._entries[key]
                elif key not in found:
                    missing.setdefault(key, sample)
        self.misses += len(missing)
        self.hits += sum(len(k) for k in keys) - len(missing)
        if missing:
            inputs = torch.stack(list(missing.values())).to(device, dtype)
            latents = self.encode(inputs).float()
            for key, latent in zip(missing, latents):
                found[key] = latent
                self._store(key, latent)
        # hits live on the host, misses on `device`: move each before stacking (no-ops on a CPU)
        return [torch.stack([found[key].to(device) for key in batch_keys]) for batch_keys in keys]

    def _store(self, key: bytes, latent: torch.Tensor) -> None:
        size = latent.numel() * latent.element_size()
        if size > self.max_bytes:
            return
        self._entries[key] = latent.detach().to("cpu", copy=True)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
