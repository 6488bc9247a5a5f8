"""Seeds derived from values, stable across processes and runs (Python's `hash` is salted per process)."""

from __future__ import annotations

import hashlib

_MASK_63 = 2**63 - 1


def stable_seed(*parts: object, namespace: str | None = None) -> int:
    """A 63-bit seed for `parts` (ints, strings, tuples of them).

    With `namespace`, the seed is the first 8 bytes of sha256("namespace:part:part..."); without, the 8-byte
    blake2b of `repr(parts)`. Both forms stay because seeds already in use (videos, training runs and their
    goldens) were drawn with them: same inputs, same numbers.
    """
    if namespace is not None:
        digest = hashlib.sha256(":".join(map(str, (namespace, *parts))).encode()).digest()[:8]
    else:
        digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK_63
