"""RefCOCO interleaving of the cycle's batches and the cycle collate."""
from __future__ import annotations

import pytest
import torch

from projects.sa2va.datasets.collate import mask_caption_cycle_collate
from projects.sa2va.datasets.samplers import CycleInterleaveSampler, interleave_kinds


class _Concat:
    def __init__(self, p, r):
        self.cumulative_sizes = [p, p + r]


def test_interleave_kinds_even_with_one_first():
    assert interleave_kinds(6, 3) == ['r', 'p', 'p', 'r', 'p', 'p', 'r', 'p', 'p']
    assert interleave_kinds(4, 0) == ['p'] * 4
    kinds = interleave_kinds(100, 7)
    assert kinds[0] == 'r' and kinds.count('r') == 7 and kinds.count('p') == 100
    gaps = [i for i, k in enumerate(kinds) if k == 'r']
    assert max(b - a for a, b in zip(gaps, gaps[1:])) <= 16


def test_sampler_blocks_are_homogeneous_and_deterministic():
    s = CycleInterleaveSampler(_Concat(20, 9), batch_size=3, seed=5)
    order = list(s)
    assert len(order) == len(s) == (6 + 3) * 3
    blocks = [order[i:i + 3] for i in range(0, len(order), 3)]
    kinds = ['r' if all(j >= 20 for j in b) else 'p' for b in blocks]
    assert all(all(j >= 20 for j in b) or all(j < 20 for j in b) for b in blocks)
    assert kinds == interleave_kinds(6, 3)
    assert len(set(order)) == len(order)                 # no repeats in one pass
    assert order == list(CycleInterleaveSampler(_Concat(20, 9), batch_size=3, seed=5))
    s.set_epoch(1)
    assert list(s) != order


def test_sampler_ratio_cycles_refcoco():
    s = CycleInterleaveSampler(_Concat(40, 4), batch_size=2, refcoco_ratio=0.5, seed=0)
    assert s.kinds.count('p') == 20 and s.kinds.count('r') == 10
    ref = [i for i in s if i >= 40]
    assert len(ref) == 20 and set(ref) == {40, 41, 42, 43}
    with pytest.raises(ValueError, match=r'got sizes \[\]'):
        CycleInterleaveSampler(object(), batch_size=1)


def _sample(cap=None, size=8):
    return dict(pixel_values1=torch.zeros(3, size, size), pixel_values2=torch.ones(3, size, size),
                prompt_masks1=torch.zeros(16, 16, dtype=torch.bool),
                masks2=torch.zeros(32, 32), caption=cap, dataset_type='sav',
                data_stats={'samples': 1})


def test_cycle_collate_stacks_and_checks():
    b = mask_caption_cycle_collate([_sample(), _sample()])
    assert b['pixel_values2'].shape == (2, 3, 8, 8) and b['pixel_values2'].sum() == 2 * 192
    assert b['captions'] == [None, None] and b['data_stats'] == {'samples': 2}
    with pytest.raises(ValueError, match='pixel_values1'):
        mask_caption_cycle_collate([_sample(), _sample(size=4)])
    bad = _sample()
    del bad['masks2']
    with pytest.raises(ValueError, match="samples \\[1\\] have no 'masks2'"):
        mask_caption_cycle_collate([_sample(), bad])


# ------------------------------------------------------------------- resume
class _Dual:
    def __init__(self, p, r, d):
        self.cumulative_sizes = [p, p + r, p + r + d]


@pytest.mark.parametrize('dam', [False, True])
def test_set_start_gives_the_uninterrupted_tail(dam):
    def make():
        if dam:
            return CycleInterleaveSampler(_Dual(20, 9, 5), batch_size=3, seed=5,
                                          dam_datasets=1)
        return CycleInterleaveSampler(_Concat(20, 9), batch_size=3, seed=5)

    s = make()
    s.set_epoch(2)
    full = list(s)
    assert len(full) == len(s) == s.num_samples == 9 * 3 * (2 if dam else 1)
    for start in (0, 4 * 3 * (2 if dam else 1), 7, len(full)):   # 0, mid-epoch, any, end
        other = make()
        other.set_epoch(2)
        other.set_start(start)
        assert len(other) == len(full) - start
        assert list(other) == full[start:], start
        assert list(other) == full[start:]            # the start stays until set_epoch
    other.set_epoch(3)
    assert other.start == 0 and len(other) == len(full) and list(other) != full
    with pytest.raises(ValueError, match='outside'):
        other.set_start(len(full) + 1)
    with pytest.raises(ValueError, match='outside'):
        other.set_start(-1)


class _Counting(torch.utils.data.Dataset):
    """Indices as samples; records which were loaded."""

    def __init__(self, p, r):
        self.cumulative_sizes = [p, p + r]
        self.calls = []

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, i):
        self.calls.append(i)
        return i


@pytest.mark.parametrize('skip', [0, 4, 9, 13])
def test_resume_loop_positions_the_sampler_without_loading(skip):
    from torch.utils.data import DataLoader

    from projects.sa2va.engine.loops import InfiniteDataIterator, position_dataloader

    def loader():
        ds = _Counting(20, 9)
        sampler = CycleInterleaveSampler(ds, batch_size=3, seed=5)
        return ds, DataLoader(ds, batch_size=3, sampler=sampler, num_workers=0,
                              collate_fn=list)

    _, ref = loader()
    assert hasattr(ref.sampler, 'set_start')        # what position_dataloader checks
    ref_it = InfiniteDataIterator(ref)
    stream = [next(ref_it) for _ in range(skip + 6)]   # 9 batches per epoch
    ds, dl = loader()
    it = InfiniteDataIterator(dl)
    it.seek(skip)
    assert [next(it) for _ in range(6)] == stream[skip:]
    assert len(ds.calls) == 18                      # only the batches trained were loaded
    ds, dl = loader()
    batches = list(position_dataloader(dl, 1, 5))
    assert len(ds.calls) == 4 * 3 and len(batches) == 4
    dl.sampler.set_epoch(1)
    assert sum(batches, []) == list(dl.sampler)[15:]
