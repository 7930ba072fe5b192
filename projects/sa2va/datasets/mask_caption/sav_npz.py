"""SA-V frame pairs from the owner's npz files (``mask-caption-cycle.md``
8.1): :class:`SAVPairNpzDataset` + :class:`LoadNpzPair`."""
from __future__ import annotations

import os
import os.path as osp
import zipfile

import numpy as np
from PIL import Image

from ...registry import DATASETS, TRANSFORMS
from ...transforms.base import BaseTransform, RecordError, require
from .common import (MAX_FILE_BYTES, CompactIndexDataset, check_size,
                     strings_array)

def npz_frame_to_image(array: np.ndarray, name: str = 'frame') -> Image.Image:
    """An npz frame as an RGB PIL image.

    Layout: ``(H, W, 3)`` (HWC) or ``(3, H, W)`` (CHW; recognised by a first
    axis of 3 and a last axis other than 3). Range: floating-point arrays
    whose maximum is <= 1 are 0..1 and scaled by 255; everything else is
    0..255. Values are rounded and must lie in [0, 255] (the check is per
    array, as the owner's).

    Raises:
        ValueError: another shape, NaNs or values outside the range.
    """
    a = np.asarray(array)
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[-1]):
        raise ValueError(f'{name}: expected (H, W, 3) or (3, H, W), got '
                         f'{a.shape}')
    if a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f'{name}: has NaN or infinite values')
        if np.issubdtype(array.dtype, np.floating) and a.max() <= 1.0:
            a = a * 255.0
        if a.min() < 0 or a.max() > 255.0 + 1e-6:
            raise ValueError(f'{name}: values outside 0..255 '
                             f'[{a.min()}, {a.max()}]')
        a = np.rint(a).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a), 'RGB')

def npz_mask(array: np.ndarray, name: str = 'mask') -> np.ndarray:
    """An npz mask as ``(H, W) uint8`` {0, 1}: non-zero = object (0/1,
    0/255, bool, 0..1 floats > 0). ``(1, H, W)`` / ``(H, W, 1)`` are
    squeezed."""
    a = np.asarray(array)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:2])
    if a.ndim != 2:
        raise ValueError(f'{name}: expected (H, W), got {array.shape}')
    return (a != 0).astype(np.uint8)

# ---------------------------------------------------------------------------
# SA-V pairs from the owner's npz files
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class SAVPairNpzDataset(CompactIndexDataset):
    """The owner's SA-V frame pairs, one sample per ``masklet_data_*.npz``.

    Files are found recursively under ``data_root`` (``pattern``, matched on
    the file name) and sorted by relative path, so the order (and
    ``max_samples``, which keeps the first N) is reproducible (the owner's
    glob order was unsorted).

    Args:
        pattern: file-name pattern (fnmatch).
        max_samples: keep the first N files (None: all).

    Index: ``paths`` (n,) fixed-width bytes, relative to ``data_root``.
    Record: ``npz_path``, ``record_id``, ``has_paired_frame=True``.
    """

    INDEX_ARRAYS = ('paths', )
    DATASET_TYPE = 'sav'

    def __init__(self, *args, pattern: str = 'masklet_data_*.npz',
                 max_samples: int | None = None, **kwargs):
        self.pattern = pattern
        self.max_samples = max_samples
        super().__init__(*args, **kwargs)

    def build_index(self) -> int:
        import fnmatch
        root = self.data_root
        if not osp.isdir(root):
            raise FileNotFoundError(f'{self.dataset_name}: npz folder not '
                                    f'found: {root}')
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = osp.relpath(dirpath, root)
            for name in sorted(filenames):
                if fnmatch.fnmatch(name, self.pattern):
                    found.append(name if rel == '.' else f'{rel}/{name}')
        found.sort()
        if self.max_samples is not None:
            found = found[:int(self.max_samples)]
        if not found:
            raise ValueError(f'{self.dataset_name}: no file matching '
                             f'{self.pattern!r} under {root}')
        self.paths = strings_array(found)
        return len(found)

    def record(self, idx: int) -> dict:
        rel = self.paths[idx].decode('utf-8')
        return dict(npz_path=osp.join(self.data_root, rel),
                    record_id=rel, has_paired_frame=True)

@TRANSFORMS.register_module()
class LoadNpzPair(BaseTransform):
    """Read an SA-V pair npz (``frame1, mask1, frame2, mask2``).

    Frames are HWC or CHW, 0..255 or 0..1 (:func:`npz_frame_to_image`);
    masks 0/1 or 0/255 (:func:`npz_mask`). ``frame2``/``mask2`` are the
    target (never frame 1 twice).

    Args:
        max_file_bytes: larger files are skipped (``'oversized_file'``).
        allow_empty: accept an all-zero mask (default: ``'empty_mask'``).

    Required Keys: ``npz_path`` (str).

    Added Keys: ``frames`` (list of 2 PIL RGB), ``pair_masks`` (list of 2
    ``(H, W) uint8`` {0, 1}, each at its frame's size), ``ori_shape``
    ((H, W) of frame 1).

    Raises:
        RecordError: ``'missing_file'``, ``'oversized_file'``,
        ``'corrupt_file'`` (not a readable npz, a key missing, a bad
        shape/range), ``'size_mismatch'``, ``'empty_mask'``.
    """

    def __init__(self, max_file_bytes: int | None = MAX_FILE_BYTES,
                 allow_empty: bool = False):
        self.max_file_bytes = max_file_bytes
        self.allow_empty = allow_empty

    def transform(self, results: dict) -> dict:
        path, = require(results, 'npz_path', where='LoadNpzPair')
        check_size(path, self.max_file_bytes, 'file')
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ('frame1', 'mask1', 'frame2',
                                            'mask2')}
            frames = [npz_frame_to_image(arrays[f'frame{k}'], f'frame{k}')
                      for k in (1, 2)]
            masks = [npz_mask(arrays[f'mask{k}'], f'mask{k}') for k in (1, 2)]
        except (OSError, ValueError, KeyError, EOFError,
                zipfile.BadZipFile) as exc:
            raise RecordError('corrupt_file', f'{path}: {type(exc).__name__}'
                              f': {exc}') from None
        for k, (f, m) in enumerate(zip(frames, masks), 1):
            if m.shape != (f.height, f.width):
                raise RecordError('size_mismatch', f'{path}: mask{k} '
                                  f'{m.shape} vs frame{k} {(f.height, f.width)}')
            if not self.allow_empty and not m.any():
                raise RecordError('empty_mask', f'{path}: mask{k} is empty')
        results['frames'] = frames
        results['pair_masks'] = masks
        results['ori_shape'] = (frames[0].height, frames[0].width)
        return results
