"""Length-grouped sampling driven by each dataset's ``modality_length``.

Why not xtuner's ``LengthGroupedSampler``: it asserts the lengths are a
Python list (ours are compact int32 arrays, millions of records), reads only
torch ``ConcatDataset`` children, and sorts in Python. The grouping rule is
the same (LLaVA's): shuffle, cut into mega-batches, sort each by length,
keep multimodal (positive) and text-only (negative) samples in separate
mega-batches, shuffle the mega-batches, longest first.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence, Sized

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from ..registry import DATA_SAMPLERS


def get_modality_lengths(dataset) -> np.ndarray:
    """``(len(dataset),) int64`` lengths of a dataset or a concatenation."""
    if hasattr(dataset, 'modality_length'):
        return np.asarray(dataset.modality_length, dtype=np.int64)
    if hasattr(dataset, 'datasets'):
        return np.concatenate(
            [get_modality_lengths(d) for d in dataset.datasets])
    raise AttributeError(f'{type(dataset).__name__} has no modality_length; '
                         f'length grouping needs it on every dataset')


def length_grouped_indices(lengths: np.ndarray, group_size: int,
                           rng: np.random.Generator) -> np.ndarray:
    """LLaVA-style grouped order of ``range(len(lengths))``.

    Args:
        lengths: ``(n,)`` non-zero ints; negative = text-only.
        group_size: mega-batch size (a multiple of the global batch).
        rng: numpy generator (seeded by the caller).

    Returns:
        ``(n,) int64`` permutation.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths == 0).any():
        raise ValueError('modality_length must be non-zero for every sample')

    def megabatches(idx: np.ndarray) -> list[np.ndarray]:
        idx = idx[rng.permutation(len(idx))]
        out = []
        for start in range(0, len(idx), group_size):
            chunk = idx[start:start + group_size]
            order = np.argsort(-np.abs(lengths[chunk]), kind='stable')
            out.append(chunk[order])
        return out

    mm = np.flatnonzero(lengths > 0)
    lang = np.flatnonzero(lengths < 0)
    if len(mm) == 0 or len(lang) == 0:
        groups = megabatches(np.arange(len(lengths)))
    else:
        mm_groups, lang_groups = megabatches(mm), megabatches(lang)
        tail = np.concatenate([mm_groups[-1], lang_groups[-1]])
        groups = mm_groups[:-1] + lang_groups[:-1]
        groups = [groups[i] for i in rng.permutation(len(groups))]
        groups.append(tail[np.argsort(-np.abs(lengths[tail]),
                                      kind='stable')])
    # The longest sample goes first so an out-of-memory shows at once.
    maxima = [np.abs(lengths[g[0]]) for g in groups]
    k = int(np.argmax(maxima))
    groups[0] = groups[0].copy()
    groups[k] = groups[k].copy()
    groups[0][0], groups[k][0] = groups[k][0], groups[0][0]
    return np.concatenate(groups)


class ResumableSampler(Sampler):
    """The epoch / resume contract of this project's samplers.

    A subclass gives ``num_samples`` (indices per rank and epoch) and
    ``epoch_indices()`` (this rank's whole order of epoch ``self.epoch``, a
    pure function of the seed and the epoch) and sets ``epoch = start = 0``.
    ``set_start(k)`` makes the current epoch's iteration begin at this
    rank's ``k``-th index (what a run that stopped after ``k`` samples per
    rank would see next) without producing the skipped ones; ``set_epoch``
    starts a new epoch from its beginning. ``engine.loops.
    position_dataloader`` uses ``set_start`` when it is there.
    """

    epoch: int
    start: int
    num_samples: int

    def epoch_indices(self) -> Sequence[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_indices()[self.start:]
        return iter(order.tolist() if isinstance(order, np.ndarray) else order)

    def __len__(self) -> int:
        """Indices the next ``__iter__`` yields (``num_samples - start``)."""
        return self.num_samples - self.start

    def set_epoch(self, epoch: int) -> None:
        """A new order per epoch (called by mmengine's loops); resets the
        start position to 0."""
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Begin this epoch at this rank's index ``start`` (``0 <= start <=
        num_samples``; a multiple of the dataloader's batch size for whole
        batches)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f'start {start} outside [0, {self.num_samples}] '
                             f'for a sampler of {self.num_samples} samples '
                             f'per rank')
        self.start = int(start)


@DATA_SAMPLERS.register_module()
class LengthGroupedSampler(ResumableSampler):
    """Distributed, seeded, resumable length-grouped sampler.

    Args:
        dataset: has ``modality_length`` (or ``datasets`` that have it).
        per_device_batch_size: micro-batch size per rank.
        mega_batch_mult: mega-batch = this x global batch (default
            ``min(len // (4 * global batch), 50)``, at least 1).
        seed: shared across ranks (synced when None).
        round_up: pad the order by repetition so every rank gets the same
            number of full batches.
        group_by_length: ``False`` gives a plain seeded shuffle (for
            comparisons).

    Resume: :class:`ResumableSampler` (``set_start``, ``set_epoch``).
    """

    def __init__(self, dataset: Sized, per_device_batch_size: int,
                 mega_batch_mult: int | None = None, seed: int | None = None,
                 round_up: bool = True, group_by_length: bool = True):
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.start = 0
        self.round_up = round_up
        self.group_by_length = group_by_length
        self.lengths = get_modality_lengths(dataset)
        n = len(self.lengths)
        if n != len(dataset):
            raise ValueError(f'{n} modality lengths for a dataset of '
                             f'{len(dataset)} samples')
        global_batch = per_device_batch_size * self.world_size
        if mega_batch_mult is None:
            mega_batch_mult = max(1, min(n // (global_batch * 4), 50))
        self.group_size = mega_batch_mult * global_batch
        if round_up:
            iters = math.ceil(n / global_batch)
            self.num_samples = iters * per_device_batch_size
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((n - self.rank) / self.world_size)
            self.total_size = n

    def epoch_indices(self) -> np.ndarray:
        """This rank's whole order of the current epoch (``start``
        ignored), ``(num_samples,) int64``."""
        rng = np.random.default_rng(self.seed + self.epoch)
        if self.group_by_length:
            order = length_grouped_indices(self.lengths, self.group_size, rng)
        else:
            order = rng.permutation(len(self.lengths))
        if self.round_up and len(order) < self.total_size:
            reps = math.ceil(self.total_size / len(order))
            order = np.tile(order, reps)[:self.total_size]
        return order[self.rank:self.total_size:self.world_size]
