"""Bucketed batches for training: every batch holds samples of one size, identical on every rank, resumable.

    sampler = BucketBatchSampler(dataset.bucket_keys, batch_size=2, num_replicas=world, rank=rank, seed=1234)
    sampler.set_position(*sampler.position_after(batches_done))  # resume
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)

Per epoch (the reference's `--group_data`, but repeated every epoch, resumable, and reporting small buckets
instead of dropping them silently):
1. each bucket is permuted with a generator seeded from (seed, epoch), so the order changes every epoch;
2. each bucket is cut into global batches of batch_size * num_replicas; a bucket's incomplete tail sits out this
   epoch only (another permutation puts other samples in the tail next epoch), so no sample is lost for good;
   buckets smaller than one global batch can never be used and are reported in `small_buckets`;
3. the order of the global batches is shuffled with the same generator;
4. rank r takes elements [r * batch_size, (r + 1) * batch_size) of each global batch.
Each rank computes the same plan from (seed, epoch) alone, so no communication is needed, and a batch's contents
depend only on (seed, epoch, batch number, rank): resuming at any batch gives exactly what an uninterrupted run
would have seen. Keys are (epoch, index) so the dataset can seed each item's randomness from both.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import torch

from opensora_cli.errors import InputError
from opensora_cli.utils.seeds import stable_seed


class BucketBatchSampler:
    """Yields per-rank batches of (epoch, index) keys forever, epoch after epoch; each batch from one bucket.

    Args:
        bucket_keys: one bucket key per dataset index (e.g. `VideoTextDataset.bucket_keys`, (T, H, W) tuples).
        batch_size: samples per rank per batch.
        num_replicas, rank: data-parallel world size and this process's rank.
        seed: with the epoch, fixes every permutation.

    Raises:
        InputError: no bucket holds a full global batch (nothing to train on).
    """

    def __init__(self, bucket_keys: Sequence[Hashable], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need batch_size >= 1, num_replicas >= 1 and 0 <= rank < num_replicas, got "
                             f"{batch_size}, {num_replicas}, {rank}")
        self.batch_size, self.num_replicas, self.rank, self.seed = batch_size, num_replicas, rank, seed
        self.global_batch_size = batch_size * num_replicas

        # Buckets in order of first appearance: deterministic for a given key list, whatever the key type.
        self.buckets: dict[Hashable, list[int]] = {}
        for index, key in enumerate(bucket_keys):
            self.buckets.setdefault(key, []).append(index)
        self.small_buckets: dict[Hashable, int] = {
            key: len(members) for key, members in self.buckets.items() if len(members) < self.global_batch_size
        }
        self.batches_per_epoch = sum(len(m) // self.global_batch_size for m in self.buckets.values())
        if self.batches_per_epoch == 0:
            sizes = ", ".join(f"{_key_name(k)}: {len(m)}" for k, m in self.buckets.items()) or "no samples at all"
            raise InputError(f"no bucket can fill one global batch of {self.global_batch_size} samples (batch size "
                             f"{batch_size} x {num_replicas} processes); bucket sizes: {sizes} — lower the batch size "
                             "or add data of the same size")
        self.samples_per_epoch = self.batches_per_epoch * self.global_batch_size  # over all ranks
        self._position = (0, 0)
        self._plan: tuple[int, list[list[int]]] | None = None

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """The global batches of one epoch, in order: lists of batch_size * num_replicas dataset indices."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        generator = torch.Generator().manual_seed(stable_seed("buckets", self.seed, epoch))
        size, batches = self.global_batch_size, []
        for members in self.buckets.values():
            order = torch.randperm(len(members), generator=generator).tolist()
            usable = len(order) // size * size  # a tail short of one global batch sits out this epoch
            batches += [[members[i] for i in order[start : start + size]] for start in range(0, usable, size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        self._plan = (epoch, batches)
        return batches

    def set_position(self, epoch: int, batch: int) -> None:
        """Make the next iteration start at batch `batch` of epoch `epoch` (to resume a run)."""
        if epoch < 0 or not 0 <= batch < self.batches_per_epoch:
            raise ValueError(f"need epoch >= 0 and 0 <= batch < {self.batches_per_epoch}, got ({epoch}, {batch})")
        self._position = (epoch, batch)

    def position_after(self, batches_consumed: int) -> tuple[int, int]:
        """(epoch, batch) reached after `batches_consumed` batches per rank since the very start of training."""
        if batches_consumed < 0:
            raise ValueError(f"batches_consumed must be >= 0, got {batches_consumed}")
        return divmod(batches_consumed, self.batches_per_epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        """Every call starts at the position last given to `set_position` ((0, 0) by default); never ends."""
        epoch, batch = self._position
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        while True:
            plan = self.epoch_plan(epoch)
            for global_batch in plan[batch:]:
                yield [(epoch, index) for index in global_batch[lo:hi]]
            epoch, batch = epoch + 1, 0


def _key_name(key: Hashable) -> str:
    return "x".join(map(str, key)) if isinstance(key, tuple) else str(key)
