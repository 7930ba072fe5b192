"""Shared pieces of the mask <-> caption sources: the compact numpy index
base class, file-size checks, skip logging."""
from __future__ import annotations

import os.path as osp
from typing import Sequence

import numpy as np
from mmengine.logging import print_log

from ...constants import NUM_IMAGE_TOKENS
from ...transforms.base import RecordError
from ..base import Sa2VABaseDataset

#: token-length estimate of a sample (one image + a caption of ~64 tokens):
#: these samples carry no text, the estimate only feeds length grouping.
LENGTH_ESTIMATE = NUM_IMAGE_TOKENS + 64

#: the owner's limit on image / mask files (bigger ones got workers killed).
MAX_FILE_BYTES = 50 * 1024 * 1024

def is_oversized(path: str, limit: int | None) -> bool:
    return limit is not None and osp.getsize(path) > limit

def check_size(path: str, limit: int | None, what: str) -> None:
    if not osp.isfile(path):
        raise RecordError(f'missing_{what}', f'{what} file not found: {path}')
    if is_oversized(path, limit):
        raise RecordError('oversized_file', f'{what} file {path} has '
                          f'{osp.getsize(path)} bytes (> {limit})')

def log_skips(name: str, where: str, skipped: dict) -> None:
    for reason, n in sorted(skipped.items()):
        if n:
            print_log(f'{name}: skipped {n} entries of {where} at index '
                      f'time ({reason})', logger='current', level=30)

# ---------------------------------------------------------------------------
# Compact index base
# ---------------------------------------------------------------------------
class CompactIndexDataset(Sa2VABaseDataset):
    """A dataset whose index is a few numpy arrays, not pickled records.

    Subclasses implement :meth:`build_index` (set numpy array attributes,
    return the sample count) and :meth:`record` (the record dict of one
    sample, made from the arrays). Forked dataloader workers share the
    arrays' buffers copy-on-write and never touch per-sample Python objects
    (no reference counts written, so no page copies).

    Every sample has the same ``modality_length`` estimate
    (``length_estimate``); ``index_nbytes()`` counts the arrays named in
    ``INDEX_ARRAYS`` plus that array.

    Args:
        dataset_type: value of the samples' ``dataset_type`` key.
        **kwargs: see :class:`Sa2VABaseDataset` (``indices`` and
            ``filter_cfg`` are not supported).
    """

    INDEX_ARRAYS: tuple = ()
    DATASET_TYPE = ''

    def __init__(self, *args, dataset_type: str | None = None,
                 length_estimate: int = LENGTH_ESTIMATE, **kwargs):
        if kwargs.get('indices') is not None or kwargs.get('filter_cfg'):
            raise ValueError(f'{type(self).__name__} does not support '
                             f'indices / filter_cfg; use its max_* options')
        self.dataset_type = dataset_type or self.DATASET_TYPE
        self.length_estimate = int(length_estimate)
        self._num = 0
        self.index_stats: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def build_index(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def record(self, idx: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_data_list(self):
        return []

    def full_init(self):
        if self._fully_initialized:
            return
        self._num = int(self.build_index())
        self.data_list = []
        self._modality_length = np.full(self._num, self.length_estimate,
                                        dtype=np.int32)
        self._fully_initialized = True

    def __len__(self) -> int:
        if not self._fully_initialized:
            self.full_init()
        return self._num

    def get_data_info(self, idx: int) -> dict:
        if not 0 <= idx < self._num:
            raise IndexError(f'{self.dataset_name}: index {idx} out of range '
                             f'({self._num} samples)')
        info = self.record(int(idx))
        info.setdefault('dataset_type', self.dataset_type)
        info.setdefault('has_paired_frame', False)
        return info

    def index_nbytes(self) -> int:
        total = 0 if self._modality_length is None else \
            int(self._modality_length.nbytes)
        for name in self.INDEX_ARRAYS:
            arr = getattr(self, name, None)
            if isinstance(arr, np.ndarray):
                total += int(arr.nbytes)
        return total

def strings_array(strings: Sequence[str]) -> np.ndarray:
    """Strings as one fixed-width bytes array (UTF-8)."""
    return np.array([s.encode('utf-8') for s in strings], dtype=bytes) \
        if strings else np.zeros(0, dtype='S1')

def rle_area(rle) -> int:
    from pycocotools import mask as mask_utils
    counts = rle['counts']
    return int(mask_utils.area(dict(
        size=[int(v) for v in rle['size']],
        counts=counts.encode('ascii') if isinstance(counts, str) else counts)))
