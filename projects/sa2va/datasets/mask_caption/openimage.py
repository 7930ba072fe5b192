"""OpenImage v7 segmentation (``mask-caption-cycle.md`` 8.3):
:class:`OpenImageSegDataset` + :class:`LoadImageAndMaskPNG`."""
from __future__ import annotations

import csv
import os
import os.path as osp

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ...registry import DATASETS, TRANSFORMS
from ...transforms.base import BaseTransform, RecordError, bump, require
from ...transforms.loading import open_rgb
from .common import MAX_FILE_BYTES, CompactIndexDataset, check_size

# ---------------------------------------------------------------------------
# OpenImage v7 segmentation
# ---------------------------------------------------------------------------
def csv_row_offsets(path: str, max_rows: int | None = None,
                    chunk_size: int = 1 << 24) -> tuple[list[str], np.ndarray]:
    """Header fields and the byte offset of every data row of a CSV file.

    Rows are lines (the OpenImage CSVs have no quoted newlines); empty lines
    are not rows. Offsets are ``uint32`` when the file is smaller than 4 GiB,
    else ``int64``.

    Returns:
        ``(header, offsets)``, offsets ``(n_rows,)``.
    """
    size = osp.getsize(path)
    dtype = np.uint32 if size < 2 ** 32 else np.int64
    parts = []
    n = 0
    with open(path, 'rb') as f:
        head = f.readline()
        try:
            header = next(csv.reader([head.decode('utf-8-sig')]))
        except (UnicodeDecodeError, StopIteration) as exc:
            raise ValueError(f'{path}: the header line is not UTF-8 CSV: '
                             f'{exc!r}') from None
        base = len(head)
        prev_newline = True  # the header ended with a newline
        while max_rows is None or n < max_rows:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            buf = np.frombuffer(chunk, dtype=np.uint8)
            nl = np.flatnonzero(buf == 10)
            starts = np.concatenate([[0] if prev_newline else [],
                                     nl + 1]).astype(np.int64)
            starts = starts[starts < len(buf)]
            # a row starts at a non-newline byte (skips empty lines, \r\n)
            starts = starts[(buf[starts] != 10) & (buf[starts] != 13)]
            parts.append((starts + base).astype(dtype))
            n += len(starts)
            prev_newline = buf[-1] == 10
            base += len(chunk)
    offsets = np.concatenate(parts) if parts else np.zeros(0, dtype)
    if max_rows is not None:
        offsets = offsets[:int(max_rows)]
    return header, offsets

@DATASETS.register_module()
class OpenImageSegDataset(CompactIndexDataset):
    """OpenImage v7 segmentation, one sample per CSV row.

    On disk (``mask-caption-cycle.md`` 8.3): ``<data_root>/<ann_file>``
    (``train-annotations-object-segmentation.csv``; columns found by header
    name: ``MaskPath``, ``ImageID``, ``LabelName``),
    ``<data_root>/images/train/<ImageID>.jpg``,
    ``<data_root>/masks/train/<MaskPath>`` (binary PNG).

    Index: ``offsets`` (n,) uint32 byte offsets of the rows (int64 for a
    CSV over 4 GiB): 4 bytes per sample plus the length array. A row is
    read and parsed when its sample is made.

    Args:
        data_prefix: ``dict(img='images/train', mask='masks/train')``.
        max_samples: keep the first N rows (the owner's
            ``openimage_max_samples``).

    Record: ``img_path``, ``mask_path``, ``label``, ``record_id``
    (``<csv>:row <i>``), or ``row_error`` for a malformed row (the loading
    transform raises it as ``'bad_row'``).
    """

    INDEX_ARRAYS = ('offsets', )
    DATASET_TYPE = 'openimage'
    COLUMNS = ('MaskPath', 'ImageID', 'LabelName')

    def __init__(self, *args,
                 ann_file: str = 'train-annotations-object-segmentation.csv',
                 max_samples: int | None = None, **kwargs):
        self.max_samples = max_samples
        kwargs.setdefault('data_prefix', dict(img='images/train',
                                              mask='masks/train'))
        self._file = None
        self._pid = None
        super().__init__(*args, ann_file=ann_file, **kwargs)

    def build_index(self) -> int:
        header, self.offsets = csv_row_offsets(self.ann_file,
                                               self.max_samples)
        missing = [c for c in self.COLUMNS if c not in header]
        if missing:
            raise ValueError(f'{self.ann_file}: header {header} lacks the '
                             f'columns {missing}')
        self._columns = {c: header.index(c) for c in self.COLUMNS}
        self._num_fields = len(header)
        return len(self.offsets)

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_file'] = None
        return state

    def _read_line(self, idx: int) -> str:
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.ann_file, 'rb')
            self._pid = os.getpid()
        self._file.seek(int(self.offsets[idx]))
        return self._file.readline().decode('utf-8').rstrip('\r\n')

    def record(self, idx: int) -> dict:
        info = dict(record_id=f'{osp.basename(self.ann_file)}:row {idx}')
        try:
            line = self._read_line(idx)
        except UnicodeDecodeError as exc:
            info['row_error'] = f'{self.ann_file} row {idx}: not UTF-8: {exc}'
            return info
        fields = next(csv.reader([line]), [])
        if len(fields) != self._num_fields:
            info['row_error'] = (f'{self.ann_file} row {idx}: '
                                 f'{len(fields)} fields, header has '
                                 f'{self._num_fields}: {line[:200]!r}')
            return info
        col = self._columns
        info.update(
            img_path=osp.join(self.data_prefix['img'],
                              fields[col['ImageID']] + '.jpg'),
            mask_path=osp.join(self.data_prefix['mask'],
                               fields[col['MaskPath']]),
            label=fields[col['LabelName']])
        return info

@TRANSFORMS.register_module()
class LoadImageAndMaskPNG(BaseTransform):
    """Load an image and its binary mask PNG (OpenImage), with a file-size
    limit.

    Args:
        max_file_bytes: larger image or mask files are skipped
            (``'oversized_file'``; the owner's 50 MB, after huge files got
            workers killed). None: no limit.
        mask_size_mismatch: ``'resize'`` (a mask of another size is resized
            to the image with NEAREST, counted as ``mask_resized``) or
            ``'error'`` (``'size_mismatch'``).

    Required Keys: ``img_path``, ``mask_path`` (str), or ``row_error``.

    Added Keys: ``image`` (PIL RGB), ``ori_shape`` ((H, W)), ``masks``
    (``(1, H, W) uint8`` {0, 1}).

    Raises:
        RecordError: ``'bad_row'``, ``'missing_image'``, ``'missing_mask'``,
        ``'oversized_file'``, ``'corrupt_image'``, ``'corrupt_mask'``,
        ``'empty_mask'``, ``'size_mismatch'``.
    """

    def __init__(self, max_file_bytes: int | None = MAX_FILE_BYTES,
                 mask_size_mismatch: str = 'resize'):
        if mask_size_mismatch not in ('resize', 'error'):
            raise ValueError(f"mask_size_mismatch must be 'resize' or "
                             f"'error', got {mask_size_mismatch!r}")
        self.max_file_bytes = max_file_bytes
        self.mask_size_mismatch = mask_size_mismatch

    def transform(self, results: dict) -> dict:
        if results.get('row_error'):
            raise RecordError('bad_row', results['row_error'])
        img_path, mask_path = require(results, 'img_path', 'mask_path',
                                      where='LoadImageAndMaskPNG')
        check_size(img_path, self.max_file_bytes, 'image')
        check_size(mask_path, self.max_file_bytes, 'mask')
        image = open_rgb(img_path)
        try:
            with Image.open(mask_path) as mk:
                mk.load()
                mask = mk.convert('L')
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError) as exc:
            raise RecordError('corrupt_mask', f'cannot decode mask '
                              f'{mask_path}: {exc}') from None
        if mask.size != image.size:
            if self.mask_size_mismatch == 'error':
                raise RecordError('size_mismatch', f'mask {mask_path} is '
                                  f'{mask.size}, image {image.size}')
            mask = mask.resize(image.size, Image.NEAREST)
            bump(results, 'mask_resized')
        array = (np.asarray(mask) != 0).astype(np.uint8)
        if not array.any():
            raise RecordError('empty_mask', f'mask {mask_path} is empty')
        results['image'] = image
        results['ori_shape'] = (image.height, image.width)
        results['masks'] = torch.from_numpy(array[None].copy())
        return results
