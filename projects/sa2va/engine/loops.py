"""Training loops that resume by positioning the sampler.

mmengine's ``IterBasedTrainLoop`` resumes by drawing ``iter`` batches from the
dataloader and throwing them away (every skipped sample is decoded), and its
``EpochBasedTrainLoop`` restarts a half-done epoch from its first batch. These
loops instead compute where the data stream stood (epoch, batch within the
epoch) from the resumed iteration, set the sampler's epoch and start position
(``set_start``, see ``LengthGroupedSampler``) and go on from there, so the
batches after a resume are the ones an uninterrupted run would have seen and
cost nothing to reach. A sampler without ``set_start`` falls back to drawing
and dropping the batches (logged).

Creating a dataloader iterator draws its base seed from the global torch
generator; these loops create iterators under ``torch.random.fork_rng`` so the
training-side random stream (dropout, mask-loss point sampling) depends only
on the training steps, which is what makes the restored RNG state of a
checkpoint give the same losses after a resume.
"""
from __future__ import annotations

import logging

import torch
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import DataLoader

from ..registry import LOOPS


def _sampler(dataloader: DataLoader):
    return getattr(dataloader, 'sampler', None)


def _batch_size(dataloader: DataLoader) -> int:
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    size = getattr(batch_sampler, 'batch_size', None) or dataloader.batch_size
    if not size:
        raise ValueError('cannot position a dataloader without a batch size')
    return int(size)


def _set_epoch(dataloader: DataLoader, epoch: int) -> None:
    sampler = _sampler(dataloader)
    if hasattr(sampler, 'set_epoch'):
        sampler.set_epoch(epoch)


def new_iterator(dataloader: DataLoader):
    """``iter(dataloader)`` without advancing the global CPU torch RNG."""
    with torch.random.fork_rng(devices=[]):
        return iter(dataloader)


def position_dataloader(dataloader: DataLoader, epoch: int,
                        batches: int):
    """An iterator over ``dataloader`` starting at batch ``batches`` of
    epoch ``epoch``.

    Args:
        dataloader: its sampler may have ``set_epoch`` and ``set_start``.
        epoch: the data epoch (sampler order).
        batches: whole batches of that epoch already trained (``>= 0``).

    Returns:
        the iterator; with a sampler lacking ``set_start`` it has already
        drawn and dropped ``batches`` batches (logged as a warning).
    """
    _set_epoch(dataloader, epoch)
    sampler = _sampler(dataloader)
    if batches and hasattr(sampler, 'set_start'):
        start = batches * _batch_size(dataloader)
        sampler.set_start(start)
        print_log(f'resume: data epoch {epoch}, sampler starts at sample '
                  f'{start} of this rank ({batches} batches skipped without '
                  f'loading)', logger='current')
        return new_iterator(dataloader)
    iterator = new_iterator(dataloader)
    if batches:
        print_log(f'resume: {type(sampler).__name__} has no set_start; '
                  f'drawing and dropping {batches} batches', logger='current',
                  level=logging.WARNING)
        for _ in range(batches):
            next(iterator)
    return iterator


class InfiniteDataIterator:
    """Batches of ``dataloader`` forever: at the end of an epoch the sampler
    gets the next epoch (``set_epoch``) and a new iterator is made (without
    touching the global RNG). ``seek(i)`` positions it at global batch ``i``.
    """

    def __init__(self, dataloader: DataLoader) -> None:
        self._dataloader = dataloader
        self._epoch = 0
        self._iterator = None

    @property
    def epoch(self) -> int:
        """The data epoch being read."""
        return self._epoch

    def seek(self, iteration: int) -> None:
        """Continue after ``iteration`` batches (``>= 0``) of training."""
        _set_epoch(self._dataloader, 0)
        per_epoch = len(self._dataloader)
        if per_epoch == 0:
            raise ValueError('the training dataloader is empty')
        self._epoch, batches = divmod(int(iteration), per_epoch)
        self._iterator = position_dataloader(self._dataloader, self._epoch,
                                             batches)

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            self._iterator = new_iterator(self._dataloader)
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            _set_epoch(self._dataloader, self._epoch)
            self._iterator = new_iterator(self._dataloader)
            return next(self._iterator)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` (same arguments) with a cheap,
    exact resume: after ``before_train_epoch`` (where
    ``DistSamplerSeedHook`` sets epoch 0) the data stream is positioned at
    the resumed iteration (``InfiniteDataIterator.seek``)."""

    def run(self):
        """Train ``max_iters`` iterations (from the resumed one)."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        self.dataloader_iterator = InfiniteDataIterator(self.dataloader)
        if self._iter > 0:
            self.dataloader_iterator.seek(self._iter)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` (same arguments) that resumes in
    the middle of an epoch: the batches of the epoch trained before the
    checkpoint (``iter - epoch * len(dataloader)``) are skipped by the
    sampler position instead of being trained again."""

    def run(self):
        """Train the remaining epochs."""
        if self._iter and self._iter == (self._epoch + 1) * len(
                self.dataloader):
            # saved by iteration after the last batch of an epoch
            self._epoch += 1
        return super().run()

    def run_epoch(self) -> None:
        """One epoch, from the resumed batch when the run was resumed."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if not 0 <= done < per_epoch:
            raise ValueError(
                f'iteration {self._iter} is not inside epoch {self._epoch} of '
                f'{per_epoch} batches: did the dataset or batch size change '
                f'since the checkpoint?')
        iterator = position_dataloader(self.dataloader, self._epoch, done)
        for idx, data_batch in enumerate(iterator, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
