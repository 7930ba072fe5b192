"""Family 6, the owner's mask <-> caption data (``mask-caption-cycle.md`` 8).

Sources (one dataset class each; ``configs/_base_/datasets/mask_caption.py``
composes them):

* :class:`SAVPairNpzDataset` -- the owner's derived SA-V frame pairs,
  ``<data_root>/**/masklet_data_*.npz`` with ``frame1, mask1, frame2, mask2``;
* :class:`SAVPairReleaseDataset` -- the same pairs made from the official
  SA-V release (``sav_*_manual.json`` / ``_auto.json`` + mp4 or a frame
  folder), two annotated frames of one masklet chosen by
  :class:`SampleSAVFramePair` (a documented, seeded rule);
* :class:`SA1BDataset` -- SA-1B raw (``js/<id>.json`` + ``img/<id>.jpg``),
  one sample per (image, annotation) with ``area >= min_area``;
* :class:`OpenImageSegDataset` -- OpenImage v7 segmentation CSV + mask PNGs,
  one sample per CSV row, the index is the rows' byte offsets;
* :class:`RefCOCOCaptionDataset` -- RefCOCO as (caption, mask) pairs, every
  expression by default (the owner used one per image: an option);
* :class:`DescribeAnythingCaptionDataset` -- Describe Anything regions (the
  shard index and tar loading of ``visual_prompt.py``).

Every sample ends in :class:`MaskCaptionOutputs`, which makes the issue's
tensors for frame 1 and frame 2 (``*2`` is the paired frame, the target; for
single images ``*2`` is the same tensor as ``*1``):

=====================  ==================  ===============================
key                    shape               dtype / range
=====================  ==================  ===============================
``pixel_values{1,2}``  (3, 448, 448)       float32 ImageNet-normalised
                                           (``as_uint8``: uint8 0..255)
``g_pixel_values{1,2}``(3, 1024, 1024)     uint8 0..255, direct resize of
                                           the raw pixels
``prompt_masks{1,2}``  (16, 16)            bool (the configured rule)
``masks{1,2}``         (1024, 1024)        float32 {0, 1} (PIL nearest)
``caption``            str or None
``dataset_type``       str                 ``sav``/``sa1b``/``openimage``/
                                           ``refcoco``/``dam_<SUBSET>``
``has_paired_frame``   bool
=====================  ==================  ===============================

``route='option_a'`` gives the seed's intermediate format instead
(``image{1,2}`` (3, 1024, 1024) float32 normalised bilinear, ``mask{1,2}``
(1024, 1024) float32 {0, 1}, ``g_pixel_values{1,2}``); the data
preprocessor derives the 448 image and the 16 x 16 grid from them.

Compact indexes: the SA-1B, OpenImage and npz indexes are a few numpy arrays
(no per-sample Python objects) shared by forked workers; see
:class:`CompactIndexDataset`.
"""
from __future__ import annotations

import csv
import json
import os
import os.path as osp
import zipfile
from typing import Sequence

import numpy as np
import torch
from mmengine.logging import print_log
from PIL import Image, UnidentifiedImageError

from ..constants import GRID_SIZE, IMAGE_PLACEHOLDER, IMAGE_SIZE, \
    NUM_IMAGE_TOKENS, SAM2_IMAGE_SIZE
from ..registry import DATASETS, TRANSFORMS
from ..transforms.base import BaseTransform, RecordError, bump, require
from ..transforms.functional import (decode_mask, mask_caption_item,
                                     normalize_uint8, pixel_values_from_image,
                                     pool_prompt_masks,
                                     repair_empty_prompt_masks,
                                     resize_mask_nearest, sam2_pixel_values,
                                     stack_uint8_images, visual_prompt_text)
from ..transforms.loading import open_rgb
from .base import Sa2VABaseDataset, estimate_text_tokens
from .refseg import (ANSWER_LIST, SEG_QUESTIONS, RefCOCODataset,
                     referring_turn)
from .visual_prompt import DAM_INSTRUCTION, DescribeAnythingDataset

#: keys a packed mask <-> caption sample carries (direct route).
MASK_CAPTION_KEYS = ('pixel_values1', 'pixel_values2', 'g_pixel_values1',
                     'g_pixel_values2', 'prompt_masks1', 'prompt_masks2',
                     'masks1', 'masks2', 'caption', 'dataset_type',
                     'has_paired_frame')
#: keys of the "option A" route.
MASK_CAPTION_OPTION_A_KEYS = ('image1', 'image2', 'mask1', 'mask2',
                              'g_pixel_values1', 'g_pixel_values2', 'caption',
                              'dataset_type', 'has_paired_frame')

#: token-length estimate of a sample (one image + a caption of ~64 tokens):
#: these samples carry no text, the estimate only feeds length grouping.
_LENGTH_ESTIMATE = NUM_IMAGE_TOKENS + 64

#: the owner's limit on image / mask files (bigger ones got workers killed).
MAX_FILE_BYTES = 50 * 1024 * 1024


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def nearest_mask(mask: np.ndarray, size: int = SAM2_IMAGE_SIZE
                 ) -> torch.Tensor:
    """The owner's 1024 GT mask (``(size, size) float32`` {0, 1}): the
    seed's rule :func:`~projects.sa2va.transforms.functional.
    resize_mask_nearest`, the same as ``mask1`` of ``mask_caption_item``."""
    return resize_mask_nearest(mask, size)


def vision_pixel_values(image: Image.Image, interpolation: str = 'bilinear',
                        image_size: int = IMAGE_SIZE,
                        as_uint8: bool = False) -> torch.Tensor:
    """``(3, s, s)`` vision-tower input of one image.

    * ``'bicubic'``: the seed's rule
      (:func:`~projects.sa2va.transforms.functional.pixel_values_from_image`;
      the owner's Describe Anything path);
    * ``'bilinear'``: the owner's SA-V / SA-1B / OpenImage / RefCOCO path
      (PIL bilinear resize, ToTensor, ImageNet normalisation).

    Returns:
        ``float32`` normalised, or ``uint8`` 0..255 with ``as_uint8`` (then
        the data preprocessor normalises; bit-identical).
    """
    if interpolation == 'bicubic':
        if not as_uint8:
            return pixel_values_from_image(image, image_size)
        resample = Image.BICUBIC
    elif interpolation == 'bilinear':
        resample = Image.BILINEAR
    else:
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', "
                         f'got {interpolation!r}')
    image = image if image.mode == 'RGB' else image.convert('RGB')
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), resample)
    pixel = stack_uint8_images([image])[0]
    return pixel if as_uint8 else normalize_uint8(pixel)


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


def _is_oversized(path: str, limit: int | None) -> bool:
    return limit is not None and osp.getsize(path) > limit


def _check_size(path: str, limit: int | None, what: str) -> None:
    if not osp.isfile(path):
        raise RecordError(f'missing_{what}', f'{what} file not found: {path}')
    if _is_oversized(path, limit):
        raise RecordError('oversized_file', f'{what} file {path} has '
                          f'{osp.getsize(path)} bytes (> {limit})')


def _log_skips(name: str, where: str, skipped: dict) -> None:
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
                 length_estimate: int = _LENGTH_ESTIMATE, **kwargs):
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


def _strings_array(strings: Sequence[str]) -> np.ndarray:
    """Strings as one fixed-width bytes array (UTF-8)."""
    return np.array([s.encode('utf-8') for s in strings], dtype=bytes) \
        if strings else np.zeros(0, dtype='S1')


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
        self.paths = _strings_array(found)
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
        _check_size(path, self.max_file_bytes, 'file')
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


# ---------------------------------------------------------------------------
# SA-V pairs from the official release
# ---------------------------------------------------------------------------
def _rle_area(rle) -> int:
    from pycocotools import mask as mask_utils
    counts = rle['counts']
    return int(mask_utils.area(dict(
        size=[int(v) for v in rle['size']],
        counts=counts.encode('ascii') if isinstance(counts, str) else counts)))


@DATASETS.register_module()
class SAVPairReleaseDataset(Sa2VABaseDataset):
    """Frame pairs from the SA-V release, one sample per masklet.

    On disk (``dataset-formats.md`` 6.2): ``<data_root>/**/sav_<id>_manual.json``
    (and ``_auto.json``) next to ``sav_<id>.mp4``; optionally extracted
    frames ``<data_root>/<frames_folder>/sav_<id>/%05d.jpg`` (every video
    frame). Masklet frame ``t`` is video frame ``4 t``.

    The index reads each annotation file once (``masklet_num``, the frame
    size and which annotated frames show each object); masklets visible in
    fewer than 2 annotated frames cannot make a pair and are left out (a
    logged count, ``index_stats``). The pair itself is drawn per sample by
    :class:`SampleSAVFramePair`.

    Args:
        annotation_types: ``('manual',)`` (every train video has one),
            ``('auto',)`` or both.
        frames_folder: folder (relative to ``data_root``) of extracted
            frames; None: frames are decoded from the mp4.
        min_area: pixels an object needs in a frame to count as visible.
        max_samples: keep the first N masklets (files in sorted order).

    Record: ``record_id`` (``<video>/<type>#<k>``), ``anno_path``,
    ``video_path``, ``frames_dir`` (or absent), ``objects`` (``[{'anno_ids':
    [str(k)]}]``, for ``LoadSAVAnnotation``), ``masklet_index``,
    ``ori_shape`` ((H, W) from the file), ``has_paired_frame=True``,
    ``dataset_type``.
    """

    def __init__(self, *args, annotation_types=('manual', ),
                 frames_folder: str | None = None, min_area: int = 1,
                 max_samples: int | None = None, dataset_type: str = 'sav',
                 **kwargs):
        self.annotation_types = tuple([annotation_types] if isinstance(
            annotation_types, str) else annotation_types)
        bad = set(self.annotation_types) - {'manual', 'auto'}
        if bad or not self.annotation_types:
            raise ValueError(f"annotation_types must be from ('manual', "
                             f"'auto'), got {annotation_types!r}")
        self.frames_folder = frames_folder
        self.min_area = int(min_area)
        self.max_samples = max_samples
        self.dataset_type = dataset_type
        self.index_stats: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def _annotation_files(self) -> list[str]:
        suffixes = tuple(f'_{t}.json' for t in self.annotation_types)
        out = []
        for dirpath, dirnames, filenames in os.walk(self.data_root):
            dirnames.sort()
            for name in filenames:
                if name.startswith('sav_') and name.endswith(suffixes):
                    out.append(osp.join(dirpath, name))
        return sorted(out)

    def load_data_list(self):
        files = self._annotation_files()
        if not files:
            raise ValueError(f'{self.dataset_name}: no sav_*_'
                             f'{{{",".join(self.annotation_types)}}}.json '
                             f'under {self.data_root}')
        skipped = {'masklet_visible_in_fewer_than_2_frames': 0,
                   'unreadable_annotation': 0}
        n = 0
        for path in files:
            stem = osp.basename(path)[:-len('.json')]
            video_id, kind = stem.rsplit('_', 1)
            try:
                with open(path, encoding='utf-8') as f:
                    data = json.load(f)
                masklet = data['masklet']
                h, w = int(data['video_height']), int(data['video_width'])
                num = int(data['masklet_num'])
                visible = [sum(_rle_area(fr[k]) >= self.min_area
                               for fr in masklet) for k in range(num)]
            except (OSError, ValueError, KeyError, TypeError,
                    IndexError) as exc:
                skipped['unreadable_annotation'] += 1
                print_log(f'{self.dataset_name}: cannot index {path}: '
                          f'{type(exc).__name__}: {exc}', logger='current',
                          level=30)
                continue
            for k in range(num):
                if visible[k] < 2:
                    skipped['masklet_visible_in_fewer_than_2_frames'] += 1
                    continue
                info = dict(
                    record_id=f'{video_id}/{kind}#{k}', anno_path=path,
                    video_path=osp.join(osp.dirname(path), f'{video_id}.mp4'),
                    objects=[dict(anno_ids=[str(k)])], masklet_index=k,
                    ori_shape=(h, w), has_paired_frame=True,
                    dataset_type=self.dataset_type)
                if self.frames_folder is not None:
                    info['frames_dir'] = osp.join(
                        self.data_root, self.frames_folder, video_id)
                yield info
                n += 1
                if self.max_samples is not None and n >= self.max_samples:
                    break
            if self.max_samples is not None and n >= self.max_samples:
                break
        self.index_stats = {k: v for k, v in skipped.items() if v}
        _log_skips(self.dataset_name, self.data_root, skipped)

    def modality_length_of(self, info: dict) -> int:
        return _LENGTH_ESTIMATE


PAIR_RULES = ('random', 'first_last')


@TRANSFORMS.register_module()
class SampleSAVFramePair(BaseTransform):
    """Choose the two annotated frames of a masklet (frame 1 -> frame 2).

    Candidates are the annotated frames where the object covers at least
    ``min_area`` pixels (RLE area, no decoding).

    * ``'random'`` (default): uniformly one of the pairs ``(t1, t2)`` of
      candidates with ``t1 < t2`` and ``min_gap <= t2 - t1 <= max_gap``
      (gaps in annotated frames; 1 = 4 video frames), drawn with
      ``results['rng']`` (so a sample is reproducible from the dataset seed
      and its index);
    * ``'first_last'``: the first and the last candidate (largest gap).

    Frame 2 is always the later frame and is the target.

    Args:
        rule, min_gap, max_gap, min_area: see above.
        frame_name: file name of video frame ``i`` inside ``frames_dir``.
        frame_stride: video frames per annotated frame (4).

    Required Keys: ``mask_tracks`` (from ``LoadSAVAnnotation``),
    ``objects``, ``ori_shape``, ``rng``.

    Added Keys: ``pair_frame_indices`` ([t1, t2], annotated-frame indices),
    ``frame_indices`` (same, for ``LoadVideoFrames(frame_stride=4)``),
    ``frame_paths`` (when the record has ``frames_dir``, for
    ``LoadFrames``), ``pair_masks`` (2 x ``(H, W) uint8`` {0, 1}, decoded
    RLEs).

    Raises:
        RecordError: ``'no_frame_pair'`` (fewer than 2 candidates within the
        gaps), ``'bad_mask'``.
    """

    def __init__(self, rule: str = 'random', min_gap: int = 1,
                 max_gap: int | None = None, min_area: int = 1,
                 frame_name: str = '{:05d}.jpg', frame_stride: int = 4):
        if rule not in PAIR_RULES:
            raise ValueError(f'rule must be one of {PAIR_RULES}, got {rule!r}')
        if min_gap < 1 or (max_gap is not None and max_gap < min_gap):
            raise ValueError(f'need 1 <= min_gap <= max_gap, got {min_gap}, '
                             f'{max_gap}')
        self.rule = rule
        self.min_gap, self.max_gap = int(min_gap), max_gap
        self.min_area = int(min_area)
        self.frame_name = frame_name
        self.frame_stride = int(frame_stride)

    def choose(self, visible: Sequence[int], rng) -> tuple[int, int] | None:
        """The pair ``(t1, t2)`` from the sorted candidate frames, or None."""
        v = np.asarray(visible, dtype=np.int64)
        if self.rule == 'first_last':
            ok = len(v) >= 2 and self.min_gap <= v[-1] - v[0] and (
                self.max_gap is None or v[-1] - v[0] <= self.max_gap)
            return (int(v[0]), int(v[-1])) if ok else None
        i, j = np.triu_indices(len(v), k=1)
        gap = v[j] - v[i]
        keep = gap >= self.min_gap
        if self.max_gap is not None:
            keep &= gap <= self.max_gap
        i, j = i[keep], j[keep]
        if len(i) == 0:
            return None
        p = int(rng.integers(len(i)))
        return int(v[i[p]]), int(v[j[p]])

    def transform(self, results: dict) -> dict:
        tracks, objects, (h, w), rng = require(
            results, 'mask_tracks', 'objects', 'ori_shape', 'rng',
            where='SampleSAVFramePair')
        key = objects[0]['anno_ids'][0]
        track = tracks[key]
        try:
            visible = [t for t, rle in enumerate(track)
                       if _rle_area(rle) >= self.min_area]
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError('bad_mask', f'masklet {key}: {exc}') from None
        pair = self.choose(visible, rng)
        if pair is None:
            raise RecordError('no_frame_pair', f'masklet {key} is visible in '
                              f'annotated frames {visible}: no pair with '
                              f'gap in [{self.min_gap}, {self.max_gap}]')
        masks = []
        for t in pair:
            try:
                masks.append(decode_mask(track[t], h, w))
            except (ValueError, TypeError) as exc:
                raise RecordError('bad_mask', f'masklet {key} frame {t}: '
                                  f'{exc}') from None
        results['pair_frame_indices'] = list(pair)
        results['frame_indices'] = list(pair)
        if results.get('frames_dir'):
            results['frame_paths'] = [
                osp.join(results['frames_dir'],
                         self.frame_name.format(t * self.frame_stride))
                for t in pair]
        results['pair_masks'] = masks
        return results


# ---------------------------------------------------------------------------
# SA-1B raw
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class SA1BDataset(CompactIndexDataset):
    """SA-1B raw: ``<data_root>/js/<id>.json`` + ``<data_root>/img/<id>.jpg``,
    one sample per (image, annotation).

    The index reads each JSON once (its own ``image.width`` /
    ``image.height`` and the annotations' ``area``); no image is opened.
    Annotations with ``area < min_area`` are left out (``area`` from the
    JSON, or the RLE's area when the field is missing); the default 1
    drops empty masks, as SAM 2's loader does. JSONs that cannot be read are
    skipped; both counts are logged and kept in ``index_stats``.

    Args:
        data_prefix: ``dict(json='js', img='img')``.
        max_images: keep the first N JSON files in sorted order (the owner's
            ``sa1b_max_samples``: N images, ~100 masks each).
        min_area: see above.

    Index (shared by workers): ``stems`` (n_img,) bytes, ``image_hw``
    (n_img, 2) int32, ``sample_image`` (n,) int32, ``sample_ann`` (n,)
    int32 (position in the JSON's ``annotations``): 8 bytes per sample plus
    the length array.

    Record: ``img_path``, ``json_path``, ``ann_index``, ``ori_shape`` ((H,
    W) from the JSON), ``record_id`` (``<stem>#<ann_index>``).
    """

    INDEX_ARRAYS = ('stems', 'image_hw', 'sample_image', 'sample_ann')
    DATASET_TYPE = 'sa1b'

    def __init__(self, *args, max_images: int | None = None,
                 min_area: int = 1, **kwargs):
        self.max_images = max_images
        self.min_area = int(min_area)
        kwargs.setdefault('data_prefix', dict(json='js', img='img'))
        super().__init__(*args, **kwargs)

    def build_index(self) -> int:
        js_dir = self.data_prefix['json']
        if not osp.isdir(js_dir):
            raise FileNotFoundError(f'{self.dataset_name}: JSON folder not '
                                    f'found: {js_dir}')
        names = sorted(n for n in os.listdir(js_dir) if n.endswith('.json'))
        if self.max_images is not None:
            names = names[:int(self.max_images)]
        stems, hw = [], []
        sample_image, sample_ann = [], []
        skipped = {'unreadable_json': 0, 'annotation_below_min_area': 0}
        for name in names:
            path = osp.join(js_dir, name)
            try:
                with open(path, encoding='utf-8') as f:
                    data = json.load(f)
                h = int(data['image']['height'])
                w = int(data['image']['width'])
                areas = [int(a['area']) if 'area' in a
                         else _rle_area(a['segmentation'])
                         for a in data['annotations']]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                skipped['unreadable_json'] += 1
                print_log(f'{self.dataset_name}: cannot index {path}: '
                          f'{type(exc).__name__}: {exc}', logger='current',
                          level=30)
                continue
            keep = [k for k, a in enumerate(areas) if a >= self.min_area]
            skipped['annotation_below_min_area'] += len(areas) - len(keep)
            if not keep:
                continue
            sample_image.extend([len(stems)] * len(keep))
            sample_ann.extend(keep)
            stems.append(name[:-len('.json')])
            hw.append((h, w))
        self.stems = _strings_array(stems)
        self.image_hw = np.asarray(hw, dtype=np.int32).reshape(-1, 2)
        self.sample_image = np.asarray(sample_image, dtype=np.int32)
        self.sample_ann = np.asarray(sample_ann, dtype=np.int32)
        self.index_stats = {k: v for k, v in skipped.items() if v}
        _log_skips(self.dataset_name, js_dir, skipped)
        if not len(self.sample_image):
            raise ValueError(f'{self.dataset_name}: no annotation with area '
                             f'>= {self.min_area} in {js_dir}')
        return len(self.sample_image)

    def record(self, idx: int) -> dict:
        i = int(self.sample_image[idx])
        k = int(self.sample_ann[idx])
        stem = self.stems[i].decode('utf-8')
        h, w = (int(v) for v in self.image_hw[i])
        return dict(img_path=osp.join(self.data_prefix['img'], stem + '.jpg'),
                    json_path=osp.join(self.data_prefix['json'],
                                       stem + '.json'),
                    ann_index=k, ori_shape=(h, w),
                    record_id=f'{stem}#{k}')


@TRANSFORMS.register_module()
class LoadSA1BAnnotation(BaseTransform):
    """Read one annotation's segmentation from an SA-1B JSON.

    Required Keys: ``json_path`` (str), ``ann_index`` (int), ``ori_shape``
    ((H, W) from the index).

    Added Keys: ``segmentations`` (``[RLE dict]``, for ``DecodeMasks``).

    Raises:
        RecordError: ``'missing_annotation'``, ``'bad_annotation'`` (not
        JSON, no such annotation, the file's size differs from the index).
    """

    def transform(self, results: dict) -> dict:
        path, k, (h, w) = require(results, 'json_path', 'ann_index',
                                  'ori_shape', where='LoadSA1BAnnotation')
        if not osp.isfile(path):
            raise RecordError('missing_annotation', f'not found: {path}')
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            size = (int(data['image']['height']), int(data['image']['width']))
            seg = data['annotations'][k]['segmentation']
        except (OSError, ValueError, KeyError, TypeError,
                IndexError) as exc:
            raise RecordError('bad_annotation', f'{path} annotation {k}: '
                              f'{type(exc).__name__}: {exc}') from None
        if size != (h, w):
            raise RecordError('bad_annotation', f'{path}: image size {size} '
                              f'differs from the index {(h, w)}')
        results['segmentations'] = [seg]
        return results


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
        header = next(csv.reader([head.decode('utf-8-sig')]))
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
        line = self._read_line(idx)
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
        _check_size(img_path, self.max_file_bytes, 'image')
        _check_size(mask_path, self.max_file_bytes, 'mask')
        image = open_rgb(img_path)
        try:
            with Image.open(mask_path) as mk:
                mk.load()
                mask = mk.convert('L')
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
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


# ---------------------------------------------------------------------------
# RefCOCO caption stream, Describe Anything
# ---------------------------------------------------------------------------
EXPRESSION_MODES = ('all', 'one_per_image')


@DATASETS.register_module()
class RefCOCOCaptionDataset(RefCOCODataset):
    """RefCOCO / + / g as (caption, mask) samples: the cycle's GT-caption
    stream.

    Reads the files as :class:`RefCOCODataset` (same arguments). With
    ``expressions='all'`` (default) every (ref, sentence) pair of the split
    is one sample (``text_mode='original'`` by default: every sentence of
    every ref). ``'one_per_image'`` keeps one per image: the image's first
    ref with its sentence (with ``text_mode='random'`` this is the owner's
    wrapper: one sentence drawn once per ref, ``instances[0]``/``text[0]``).

    Record: ``img_path``, ``ori_shape``, ``segmentations`` (``[the object's
    polygon list or RLE]``, decoded as a union of its polygons),
    ``caption`` (the lower-cased ``raw`` sentence), ``record_id``
    (``image_id=<id>#<k>``), ``dataset_type``.
    """

    def __init__(self, *args, expressions: str = 'all',
                 text_mode: str = 'original', dataset_type: str = 'refcoco',
                 **kwargs):
        if expressions not in EXPRESSION_MODES:
            raise ValueError(f'expressions must be one of {EXPRESSION_MODES}'
                             f', got {expressions!r}')
        self.expressions = expressions
        self.dataset_type = dataset_type
        super().__init__(*args, text_mode=text_mode, **kwargs)

    def load_data_list(self):
        for image in super().load_data_list():
            objects = image['objects']
            if self.expressions == 'one_per_image':
                objects = objects[:1]
            for k, obj in enumerate(objects):
                yield dict(img_path=image['img_path'],
                           ori_shape=image['ori_shape'],
                           segmentations=[obj['segmentation']],
                           caption=obj['text'],
                           record_id=f'{image["record_id"]}#{k}',
                           dataset_type=self.dataset_type)

    def modality_length_of(self, info: dict) -> int:
        return NUM_IMAGE_TOKENS + 20 + estimate_text_tokens(info['caption'])


@DATASETS.register_module()
class DescribeAnythingCaptionDataset(DescribeAnythingDataset):
    """Describe Anything regions as (caption, mask) samples (the cycle's
    loop-2 data). The index, shard name cache and tar loading are those of
    :class:`~projects.sa2va.datasets.visual_prompt.DescribeAnythingDataset`;
    each record adds ``caption`` (the stripped caption) and
    ``dataset_type`` ``dam_<SUBSET>``."""

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        info['caption'] = info['conversation'][0]['output']
        info['dataset_type'] = 'dam_' + info['record_id'].split('/', 1)[0]
        return info


# ---------------------------------------------------------------------------
# The outputs
# ---------------------------------------------------------------------------
ROUTES = ('direct', 'option_a')


@TRANSFORMS.register_module()
class MaskCaptionOutputs(BaseTransform):
    """The mask <-> caption tensors of frame 1 and frame 2.

    Input: a pair (``frames`` or ``pair_images``: 2 PIL images, and
    ``pair_masks``: 2 ``(H, W)`` masks at their frame's size), or a single
    image (``image`` and ``masks`` ``(1, H, W)``; then ``*2`` is the same
    tensor object as ``*1``).

    ``route='direct'`` (the owner's HEAD; default), per frame ``k``:

    * ``pixel_values{k}``: ``(3, s, s)`` (:func:`vision_pixel_values`,
      ``interpolation`` 'bilinear' or 'bicubic'), float32 normalised or
      uint8 with ``as_uint8``;
    * ``g_pixel_values{k}``: ``(3, S, S) uint8``, the seed's direct resize of
      the raw pixels (:func:`~projects.sa2va.transforms.functional.
      sam2_pixel_values`);
    * ``prompt_masks{k}``: ``(g, g) bool``, :func:`~projects.sa2va.
      transforms.functional.pool_prompt_masks` of the original-size mask
      with ``prompt_mode`` ('nearest' or 'area' > 0.5) and
      ``ensure_nonempty``;
    * ``masks{k}``: ``(S, S) float32`` {0, 1} (:func:`nearest_mask`).

    ``route='option_a'`` (the seed's intermediate format), per frame:
    ``image{k}`` ``(3, S, S) float32`` normalised (PIL bilinear),
    ``mask{k}`` ``(S, S) float32`` {0, 1}, ``g_pixel_values{k}`` (the same
    as above): :func:`~projects.sa2va.transforms.functional.
    mask_caption_item`; with ``as_uint8`` ``image{k}`` is the resized
    ``uint8`` bytes and ``mask{k}`` ``uint8`` (4 x fewer bytes; normalised on
    device, bit-identical). The data preprocessor derives the 448 image
    (bilinear) and the 16 x 16 grid (nearest from the 1024 mask).

    Both routes add ``caption`` (str or None), ``dataset_type`` (str) and
    ``has_paired_frame`` (bool). Statistics (``data_stats``):
    ``prompt_k0_1`` / ``prompt_k0_2`` count frames whose object vanishes on
    the grid (K = 0; for option A on the grid the preprocessor will make),
    ``prompt_repaired`` the cells given by ``ensure_nonempty``.

    Args:
        route, interpolation, prompt_mode, ensure_nonempty, as_uint8: see
            above.
        image_size, sam2_size, grid: 448, 1024, 16.

    Required Keys: see Input; ``dataset_type`` (default: ``dataset_name``).

    Raises:
        RecordError: ``'size_mismatch'`` (a mask not at its image's size).
    """

    def __init__(self, route: str = 'direct', interpolation: str = 'bilinear',
                 prompt_mode: str = 'nearest', ensure_nonempty: bool = False,
                 as_uint8: bool = False, image_size: int = IMAGE_SIZE,
                 sam2_size: int = SAM2_IMAGE_SIZE, grid: int = GRID_SIZE):
        if route not in ROUTES:
            raise ValueError(f'route must be one of {ROUTES}, got {route!r}')
        if interpolation not in ('bilinear', 'bicubic'):
            raise ValueError(f'interpolation must be bilinear or bicubic, '
                             f'got {interpolation!r}')
        if prompt_mode not in ('nearest', 'area'):
            raise ValueError(f"prompt_mode must be 'nearest' or 'area', got "
                             f'{prompt_mode!r}')
        self.route = route
        self.interpolation = interpolation
        self.prompt_mode = prompt_mode
        self.ensure_nonempty = ensure_nonempty
        self.as_uint8 = as_uint8
        self.image_size = image_size
        self.sam2_size = sam2_size
        self.grid = grid

    def _inputs(self, results: dict):
        if 'pair_masks' in results:
            images = results.get('frames') or results.get('pair_images')
            masks = results['pair_masks']
            if images is None or len(images) != 2 or len(masks) != 2:
                raise KeyError('MaskCaptionOutputs: a pair needs 2 frames '
                               '(frames / pair_images) and 2 pair_masks')
            return list(images), [np.asarray(m) for m in masks], True
        image, masks = require(results, 'image', 'masks',
                               where='MaskCaptionOutputs')
        if masks.shape[0] != 1:
            raise RecordError('bad_mask', f'expected one object mask, got '
                              f'{masks.shape[0]}')
        mask = masks[0].numpy() if isinstance(masks, torch.Tensor) \
            else np.asarray(masks[0])
        return [image], [mask], False

    def _grid_mask(self, mask, results: dict, k: int) -> torch.Tensor:
        masks = torch.as_tensor(mask)[None]
        mode = self.prompt_mode if self.route == 'direct' else 'nearest'
        pooled = pool_prompt_masks(masks, self.grid, mode, self.image_size,
                                   ensure_nonempty=False)
        if not pooled.any():
            bump(results, f'prompt_k0_{k}')
            if self.ensure_nonempty and self.route == 'direct':
                pooled, repaired = repair_empty_prompt_masks(masks, pooled)
                bump(results, 'prompt_repaired', repaired)
        return pooled[0]

    def transform(self, results: dict) -> dict:
        images, masks, paired = self._inputs(results)
        for k, (im, m) in enumerate(zip(images, masks), 1):
            if m.shape != (im.height, im.width):
                raise RecordError('size_mismatch', f'mask {k} is {m.shape}, '
                                  f'its image (H, W) = '
                                  f'{(im.height, im.width)}')
        for k, (im, m) in enumerate(zip(images, masks), 1):
            if self.route == 'direct':
                results[f'pixel_values{k}'] = vision_pixel_values(
                    im, self.interpolation, self.image_size, self.as_uint8)
                results[f'g_pixel_values{k}'] = sam2_pixel_values(
                    im, self.sam2_size)
                results[f'prompt_masks{k}'] = self._grid_mask(m, results, k)
                results[f'masks{k}'] = nearest_mask(m, self.sam2_size)
            else:
                item = mask_caption_item(im, m, size=self.sam2_size,
                                         as_uint8=self.as_uint8)
                results[f'image{k}'] = item['image1']
                results[f'mask{k}'] = item['mask1']
                results[f'g_pixel_values{k}'] = item['g_pixel_values']
                self._grid_mask(item['mask1'].numpy(), results, k)
        if not paired:
            keys = ('pixel_values', 'g_pixel_values', 'prompt_masks',
                    'masks') if self.route == 'direct' else \
                ('image', 'mask', 'g_pixel_values')
            for key in keys:
                results[f'{key}2'] = results[f'{key}1']
        results['caption'] = results.get('caption')
        results['dataset_type'] = results.get(
            'dataset_type', results.get('dataset_name'))
        results['has_paired_frame'] = paired
        return results


#: the supervised forms of a captioned mask <-> caption sample in a Sa2VA mix
SUPERVISED_TASKS = ('describe', 'segment')


def _task_weights(tasks) -> tuple[tuple[str, ...], np.ndarray]:
    items = list(tasks.items()) if isinstance(tasks, dict) else \
        [(t, 1.0) for t in ([tasks] if isinstance(tasks, str) else tasks)]
    names = tuple(str(t) for t, _ in items)
    unknown = set(names) - set(SUPERVISED_TASKS)
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f'tasks must name distinct tasks of '
                         f'{SUPERVISED_TASKS}, got {tasks!r}')
    weights = np.asarray([float(w) for _, w in items])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f'task weights must be >= 0 with a positive sum, '
                         f'got {tasks!r}')
    return names, weights / weights.sum()


@TRANSFORMS.register_module()
class MaskCaptionToSa2VA(BaseTransform):
    """A captioned mask <-> caption sample as a supervised Sa2VA sample.

    The cycle (:class:`~projects.sa2va.models.cycle.MaskCaptionCycleModel`)
    trains family 6 with pseudo captions; in the Sa2VA mix the samples that
    carry a ground-truth caption (RefCOCO captions, Describe Anything) train
    the two loops directly, in Sa2VA's own forms (so they mix with the other
    families in one batch, one model, one loss):

    * ``'describe'`` (loop 1, mask -> caption): frame 1 with its region as a
      visual prompt; ``conversation`` = ``[{input: '<image>\\n' + 'There
      are 1 part regions in the picture: region1<vp>' + K context tokens +
      '</vp>.\\n' + instruction, output: caption}]`` (K = True cells of the
      16 x 16 grid; the text of :class:`~projects.sa2va.transforms.
      formatting.AddVisualPromptText`), ``region_token_counts`` = ``[K]``;
      this is the owner's Describe Anything SFT form, which the cycle's
      caption prompt also uses.
    * ``'segment'`` (loop 2, caption -> mask): frame 2 with a Sa2VA v1
      referring turn about the caption (:func:`~projects.sa2va.datasets.
      refseg.referring_turn`) and frame 2's mask as the ground truth.

    One task per sample, drawn from ``results['rng']`` with the ``tasks``
    weights (no draw when there is one task).

    Output tensors, ``route='direct'`` (``MaskCaptionOutputs`` default):
    ``pixel_values (1, 3, s, s)`` (the frame's tile), ``num_tiles`` 1;
    describe: ``prompt_masks (1, g, g) bool``, ``vp_overall_mask (1,) bool``
    True; segment: ``g_pixel_values (3, S, S) uint8``, ``masks (1, S, S)
    uint8`` {0, 1}.

    ``route='option_a'`` (the seed's intermediate format): the tile and the
    grid are derived on device by the data preprocessor, so the sample
    carries ``option_a_image (3, S, S)`` (float32 normalised, or uint8
    bytes with ``MaskCaptionOutputs(as_uint8=True)``) instead of
    ``pixel_values`` and, for describe, ``option_a_mask (S, S)`` {0, 1}
    (float32 or uint8) instead of ``prompt_masks``; K is counted here with the
    preprocessor's own rule (nearest to 16 x 16), so the text and the grid
    agree. ``sa2va_collate_fn`` leaves a placeholder tile / grid that the
    preprocessor fills.

    The ``*1`` / ``*2`` keys are removed.

    Args:
        tasks: a task name, a list of names (equal weights) or a dict name
            -> weight, names from :data:`SUPERVISED_TASKS`.
        instruction: the describe question (the owner's
            :data:`~projects.sa2va.datasets.visual_prompt.DAM_INSTRUCTION`).
        questions, answers: referring templates (Sa2VA v1's).
        grid: side of the option-A prompt grid (the preprocessor's).

    Required Keys: ``caption`` and the keys of either route;
    ``rng`` when more than one task.

    Added Keys: ``conversation``, ``num_tiles``, ``mc_task`` and the tensors
    above; ``region_token_counts`` for describe.

    Raises:
        ValueError: a sample without a caption (``caption`` None): an
            uncaptioned source (SA-V pairs, SA-1B, OpenImage) has no
            supervised form; train it with the cycle model.
        RecordError: ``'empty_text'`` (a blank caption).
    """

    def __init__(self, tasks=('describe', 'segment'),
                 instruction: str = DAM_INSTRUCTION,
                 questions=SEG_QUESTIONS, answers=ANSWER_LIST,
                 grid: int = GRID_SIZE):
        self.tasks, self.weights = _task_weights(tasks)
        self.grid = int(grid)
        self.instruction = instruction.strip()
        self.questions = tuple(questions)
        self.answers = tuple(answers)

    def _task(self, results: dict) -> str:
        if len(self.tasks) == 1:
            return self.tasks[0]
        rng, = require(results, 'rng', where='MaskCaptionToSa2VA')
        return self.tasks[int(rng.choice(len(self.tasks), p=self.weights))]

    def transform(self, results: dict) -> dict:
        caption = results.get('caption')
        if caption is None:
            raise ValueError(
                f'MaskCaptionToSa2VA: {results.get("dataset_name")!r} gave a '
                f'sample without a caption ({results.get("dataset_type")!r}); '
                f'uncaptioned mask <-> caption sources (SA-V pairs, SA-1B, '
                f'OpenImage) have no supervised Sa2VA form: train them with '
                f'the cycle model (configs/mask_caption_cycle_*.py)')
        option_a = 'image1' in results
        task = self._task(results)
        k = 1 if task == 'describe' else 2
        if option_a:
            results['option_a_image'] = results[f'image{k}']
        else:
            results['pixel_values'] = results[f'pixel_values{k}'][None]
        results['num_tiles'] = 1
        if task == 'describe':
            # the decoded source masks are the prompt here, not a GT
            results.pop('masks', None)
            text = caption.strip()
            if not text:
                raise RecordError('empty_text', 'the caption is empty')
            if option_a:
                mask = results['mask1']
                results['option_a_mask'] = mask
                grid = pool_prompt_masks(mask[None], self.grid, 'nearest')
            else:
                grid = results['prompt_masks1'][None].bool()
                results['prompt_masks'] = grid
                results['vp_overall_mask'] = torch.ones(1, dtype=torch.bool)
            results['region_token_counts'] = [int(grid.sum())]
            results['conversation'] = [dict(
                input=IMAGE_PLACEHOLDER + '\n' + visual_prompt_text(
                    results['region_token_counts'], compact=True)
                + self.instruction,
                output=text)]
        else:
            rng, = require(results, 'rng', where='MaskCaptionToSa2VA')
            _, turn = referring_turn(caption, rng, self.questions,
                                     self.answers, first=True,
                                     what='the caption')
            results['conversation'] = [turn]
            mask = results['mask2'] if option_a else results['masks2']
            results['masks'] = (mask != 0).to(torch.uint8)[None]
            results['g_pixel_values'] = results['g_pixel_values2']
        results['mc_task'] = task
        bump(results, f'mc_{task}')
        for key in MASK_CAPTION_KEYS + MASK_CAPTION_OPTION_A_KEYS:
            if key not in ('caption', 'dataset_type'):
                results.pop(key, None)
        return results


__all__ = [
    'CompactIndexDataset', 'SAVPairNpzDataset', 'SAVPairReleaseDataset',
    'SA1BDataset', 'OpenImageSegDataset', 'RefCOCOCaptionDataset',
    'DescribeAnythingCaptionDataset', 'LoadNpzPair', 'SampleSAVFramePair',
    'LoadSA1BAnnotation', 'LoadImageAndMaskPNG', 'MaskCaptionOutputs',
    'MaskCaptionToSa2VA', 'SUPERVISED_TASKS',
    'MASK_CAPTION_KEYS', 'MASK_CAPTION_OPTION_A_KEYS', 'csv_row_offsets',
    'nearest_mask', 'vision_pixel_values', 'npz_frame_to_image', 'npz_mask'
]
