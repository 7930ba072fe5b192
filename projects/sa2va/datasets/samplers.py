"""Length-grouped sampling driven by each dataset's ``modality_length``.

Why not xtuner's ``LengthGroupedSampler``: it asserts the lengths are a
Python list (ours are compact int32 arrays, millions of records), reads only
torch ``ConcatDataset`` children, and sorts in Python. The grouping rule is
the same (LLaVA's): shuffle, cut into mega-batches, sort each by length,
keep multimodal (positive) and text-only (negative) samples in separate
mega-batches, shuffle the mega-batches, longest first.

The mask <-> caption cycle's :class:`CycleInterleaveSampler` (homogeneous
pseudo / RefCOCO / Describe Anything blocks, interleaved) shares the resume
contract of :class:`ResumableSampler`.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Sized

import numpy as np
import torch
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


# ------------------------------------------------ mask <-> caption cycle order
def interleave_kinds(n_pseudo: int, n_ref: int) -> List[str]:
    """The owner's per-epoch schedule: one RefCOCO batch first, the other
    ``n_ref - 1`` inserted before pseudo batch ``floor((j + 1) * n_pseudo /
    n_ref)`` (j = 0 .. n_ref - 2), i.e. evenly. Returns ``'r'`` / ``'p'`` per
    batch (``n_pseudo + n_ref`` entries)."""
    if n_ref <= 0:
        return ['p'] * n_pseudo
    before = [0] * (n_pseudo + 1)
    for j in range(n_ref - 1):
        before[(j + 1) * n_pseudo // n_ref] += 1
    kinds = ['r']
    for i in range(n_pseudo):
        kinds += ['r'] * before[i] + ['p']
    return kinds + ['r'] * before[n_pseudo]


@DATA_SAMPLERS.register_module()
class CycleInterleaveSampler(ResumableSampler):
    """Index order for ``MixedDataset([pseudo_mix, refcoco])``: homogeneous
    blocks of ``batch_size`` indices (one block = one batch), RefCOCO blocks
    interleaved evenly with one first (:func:`interleave_kinds`).

    Every rank gets its own shard of both parts but the same sequence of
    batch kinds (counts come from the global sizes), so collectives in the
    model line up. Deterministic given ``seed`` and the epoch
    (``set_epoch``).

    Resume: :class:`~projects.sa2va.datasets.samplers.ResumableSampler`
    (``set_start(k)``, ``k`` = batches trained x the dataloader's batch
    size, so with ``dam_datasets`` the DAM blocks count too; the rest equals
    the uninterrupted epoch's tail).

    Args:
        dataset: a ``MixedDataset`` whose last ``ref_datasets`` parts are
            the RefCOCO stream, or any dataset with ``cumulative_sizes``
            ``[P, P + R]``.
        batch_size: the dataloader's batch size (blocks are this long).
        refcoco_ratio: RefCOCO batches per pseudo batch; None = one pass
            over the RefCOCO shard per epoch (the owner). A ratio asking for
            more batches than the shard holds cycles through new permutations.
        shuffle: permute each part per epoch.
        seed: base seed (None = mmengine's synced random seed).
        ref_datasets: how many parts (after the pseudo ones) are RefCOCO.
        dam_datasets: dual loop: the last this many parts are Describe
            Anything; every block is then followed by ``batch_size`` indices
            of this rank's DAM shard (cycling through new permutations), so
            the dataloader's batch size must be ``2 * batch_size`` (the
            collate splits them into ``batch['dam']``).
    """

    def __init__(self, dataset, batch_size: int, refcoco_ratio: Optional[float] = None,
                 shuffle: bool = True, seed: Optional[int] = None, ref_datasets: int = 1,
                 dam_datasets: int = 0):
        from mmengine.dist import get_dist_info, sync_random_seed
        n_tail = ref_datasets + dam_datasets
        if hasattr(dataset, '_which'):      # MixedDataset: parts in order
            counts = torch.bincount(torch.as_tensor(dataset._which, dtype=torch.long),
                                    minlength=len(dataset.datasets)).tolist()
            sizes = [sum(counts[:-n_tail]), sum(counts[:len(counts) - dam_datasets])]
            sizes += [sum(counts)] if dam_datasets else []
        else:
            sizes = list(getattr(dataset, 'cumulative_sizes', []))
        if (len(sizes) != 2 + bool(dam_datasets) or not 0 < ref_datasets
                or dam_datasets < 0):
            raise ValueError('CycleInterleaveSampler needs a MixedDataset whose last '
                             '`ref_datasets` (+ `dam_datasets`) parts are RefCOCO (+ '
                             'Describe Anything), or a dataset with cumulative_sizes '
                             f'(pseudo, refcoco[, dam]); got sizes {sizes}')
        self.n_pseudo_samples, self.n_ref_samples = sizes[0], sizes[1] - sizes[0]
        self.n_dam_samples = sizes[2] - sizes[1] if dam_datasets else 0
        if dam_datasets and self.n_dam_samples < get_dist_info()[1]:
            raise ValueError(f'{self.n_dam_samples} Describe Anything samples: fewer than '
                             f'one per rank')
        self.batch_size = int(batch_size)
        self.rank, self.world = get_dist_info()
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.start = 0
        self.n_p = self.n_pseudo_samples // self.world // self.batch_size
        ref_batches = self.n_ref_samples // self.world // self.batch_size
        if refcoco_ratio is None:
            self.n_r = ref_batches
        else:
            self.n_r = max(1, round(float(refcoco_ratio) * self.n_p))
        if self.n_p == 0:
            raise ValueError(f'{self.n_pseudo_samples} pseudo samples give no batch of '
                             f'{self.batch_size} per rank ({self.world} ranks)')
        if self.n_r and self.n_ref_samples < self.world * self.batch_size:
            raise ValueError(f'{self.n_ref_samples} RefCOCO samples give no batch of '
                             f'{self.batch_size} per rank')
        self.kinds = interleave_kinds(self.n_p, self.n_r)

    def _order(self, n: int, count: int, offset: int, g: torch.Generator) -> List[int]:
        """``count`` indices of this rank's shard of a part, cycling epochs
        of permutations when more are needed."""
        out: List[int] = []
        while len(out) < count:
            perm = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            shard = perm[self.rank::self.world][:n // self.world]
            out += (shard + offset).tolist()
        return out[:count]

    def epoch_indices(self) -> List[int]:
        """This rank's whole order of the current epoch (``start``
        ignored)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        bs = self.batch_size
        pseudo = iter(self._order(self.n_pseudo_samples, self.n_p * bs, 0, g))
        ref = iter(self._order(self.n_ref_samples, self.n_r * bs, self.n_pseudo_samples, g)
                   if self.n_r else [])
        dam = iter(self._order(self.n_dam_samples, len(self.kinds) * bs,
                               self.n_pseudo_samples + self.n_ref_samples, g)
                   if self.n_dam_samples else [])
        out: List[int] = []
        for kind in self.kinds:
            source = ref if kind == 'r' else pseudo
            out += [next(source) for _ in range(bs)]
            if self.n_dam_samples:
                out += [next(dam) for _ in range(bs)]
        return out

    @property
    def num_samples(self) -> int:
        """Indices of a whole epoch on this rank."""
        return len(self.kinds) * self.batch_size * (2 if self.n_dam_samples else 1)
