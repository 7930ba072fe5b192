"""Mask transforms: decode, ground-truth masks, visual-prompt masks."""
from __future__ import annotations

import numpy as np
import torch

from ..constants import GRID_SIZE, IMAGE_SIZE
from ..registry import TRANSFORMS
from .base import BaseTransform, RecordError, bump, require
from .functional import (decode_mask, pool_prompt_masks,
                         region_token_counts, repair_empty_prompt_masks)


def _is_single_encoding(seg) -> bool:
    """An RLE dict or a polygon list (list of flat coordinate lists)."""
    if isinstance(seg, dict):
        return True
    return (isinstance(seg, (list, tuple)) and len(seg) > 0
            and all(isinstance(p, (list, tuple)) and len(p) > 0
                    and isinstance(p[0], (int, float)) for p in seg))


def check_polygon_coordinates(segmentation, height: int, width: int
                              ) -> None:
    """Refuse polygon coordinates pycocotools cannot rasterise safely.

    pycocotools walks every polygon edge point by point: a NaN coordinate
    crashes the process (SIGSEGV / memory blow-up) and an infinite or huge
    one never finishes. A polygon list (``[[x1, y1, ...], ...]``) must hold
    numbers only, all finite, with ``-W <= x <= 2W`` and ``-H <= y <= 2H``
    (real COCO polygons stay within the image, up to a pixel). RLE dicts
    and other encodings pass unchecked (``decode_mask`` checks them).

    Raises:
        ValueError: names the polygon and the bad coordinate.
    """
    if isinstance(segmentation, dict) or not isinstance(
            segmentation, (list, tuple)):
        return
    for i, poly in enumerate(segmentation):
        if not isinstance(poly, (list, tuple)):
            continue
        try:
            xy = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'polygon {i} has a non-numeric coordinate: '
                             f'{exc}') from None
        if xy.ndim != 1:
            continue
        bad = ~np.isfinite(xy)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(f'polygon {i} has a non-finite coordinate '
                             f'{xy[j]} at position {j}')
        xs, ys = xy[0::2], xy[1::2]
        if len(xs) and (xs.min() < -width or xs.max() > 2 * width
                        or ys.min() < -height or ys.max() > 2 * height):
            raise ValueError(
                f'polygon {i} reaches x in [{xs.min()}, {xs.max()}], y in '
                f'[{ys.min()}, {ys.max()}], far outside the {height}x{width} '
                f'image (annotation for another image size?)')


def decode_object(parts, height: int, width: int,
                  combine: str = 'union') -> np.ndarray:
    """Decode one object made of one or several encoded parts.

    Args:
        parts: one encoding accepted by
            :func:`~projects.sa2va.transforms.functional.decode_mask`, or a
            list of them (several annotations / RLEs forming one object).
        height, width: image size.
        combine: ``'union'`` (default; values stay in {0, 1}) or ``'sum'``
            (Sa2VA's RefCOCO/GCG habit of adding parts: overlaps give 2).

    Returns:
        ``(height, width) uint8``.

    Raises:
        ValueError / TypeError: an undecodable part (non-finite, non-numeric
        or far out-of-image polygon coordinates included, see
        :func:`check_polygon_coordinates`).
    """
    if _is_single_encoding(parts):
        check_polygon_coordinates(parts, height, width)
        return decode_mask(parts, height, width)
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ValueError('object has no mask parts')
    for p in parts:
        check_polygon_coordinates(p, height, width)
    decoded = [decode_mask(p, height, width) for p in parts]
    if combine == 'union':
        return np.maximum.reduce(decoded)
    if combine == 'sum':
        return np.sum(decoded, axis=0).astype(np.uint8)
    raise ValueError(f"combine must be 'union' or 'sum', got {combine!r}")


@TRANSFORMS.register_module()
class DecodeMasks(BaseTransform):
    """Decode the objects' masks at the original image size.

    Args:
        combine: how the parts of one object merge (see
            :func:`decode_object`).
        allow_empty: keep objects whose decoded mask is all zero. Off by
            default: an empty target or region is a bad record.

    Required Keys: ``segmentations`` (list over objects; each one encoding
    or a list of parts), ``ori_shape`` ((H, W)).

    Added Keys: ``masks``: ``(n_obj, H, W) uint8`` in {0, 1} (``'sum'``:
    small non-negative ints).

    An object listed several times (object sampling with replacement draws
    duplicates) is decoded once and copied.

    Raises:
        RecordError: ``'bad_mask'`` (undecodable, names the object) or
        ``'empty_mask'``.
    """

    def __init__(self, combine: str = 'union', allow_empty: bool = False):
        self.combine = combine
        self.allow_empty = allow_empty

    def transform(self, results: dict) -> dict:
        segs, (h, w) = require(results, 'segmentations', 'ori_shape',
                               where='DecodeMasks')
        unique, index = [], []  # distinct encodings, decoded; slot per object
        for i, seg in enumerate(segs):
            slot = _find_equal(segs, i)
            if slot is not None:
                index.append(index[slot])
                continue
            try:
                m = decode_object(seg, h, w, self.combine)
            except (ValueError, TypeError) as exc:
                raise RecordError('bad_mask',
                                  f'object {i}: {exc}') from None
            if not self.allow_empty and not m.any():
                raise RecordError('empty_mask', f'object {i} has an empty '
                                  f'mask at {h}x{w}')
            index.append(len(unique))
            unique.append(m)
        out = np.empty((len(segs), h, w), np.uint8)
        for i, k in enumerate(index):
            out[i] = unique[k]
        results['masks'] = torch.from_numpy(out)
        return results


def _find_equal(segs, i: int):
    """Index of the first ``segs[j] == segs[i]`` with ``j < i``, or None
    (identity first: the sampler usually repeats the same object)."""
    seg = segs[i]
    for j in range(i):
        other = segs[j]
        if other is seg:
            return j
        try:
            if other == seg:
                return j
        except (ValueError, TypeError):  # e.g. arrays inside: not deduped
            continue
    return None


@TRANSFORMS.register_module()
class PoolPromptMasks(BaseTransform):
    """Reduce region masks to the vision grid: the visual-prompt masks.

    Args:
        mode: ``'nearest'`` (Osprey) or ``'area'`` (Describe Anything).
        grid, vision_size: see
            :func:`~projects.sa2va.transforms.functional.pool_prompt_masks`.
        ensure_nonempty: give a vanished region its best cell (default on;
            each repair is counted as ``prompt_mask_repaired``). Off gives
            Sa2VA's exact tensors, where a tiny region gets zero tokens.
        min_cells: reject the sample if any region has fewer cells
            (Sa2VA v2 uses 4); 0 keeps everything.
        keep_gt: keep ``masks`` in the results (the mask <-> caption family
            also uses them as ground truth); by default they are dropped.

    Required Keys: ``masks`` ((n_obj, H, W)), and ``pixel_values`` ((n, 3,
    s, s)) for the tile count.

    Added Keys: ``prompt_masks`` ((n_obj, grid, grid) bool),
    ``region_token_counts`` (list of n_obj ints = True cells per region),
    ``vp_overall_mask`` ((n,) bool, True only for the last tile: the
    thumbnail, or the single tile).
    """

    def __init__(self, mode: str = 'nearest', grid: int = GRID_SIZE,
                 vision_size: int = IMAGE_SIZE, ensure_nonempty: bool = True,
                 min_cells: int = 0, keep_gt: bool = False):
        if mode not in ('nearest', 'area'):
            raise ValueError(f"mode must be 'nearest' or 'area', got {mode!r}")
        self.mode = mode
        self.grid = grid
        self.vision_size = vision_size
        self.ensure_nonempty = ensure_nonempty
        self.min_cells = min_cells
        self.keep_gt = keep_gt

    def _pool(self, masks, results: dict):
        """``(pooled (n_obj, *grid) bool, vp_overall_mask)`` of ``masks``
        (the rule before the repair): the square 16 x 16 grid here; a
        backbone with its own grid overrides this
        (:class:`~projects.sa2va.transforms.qwen_vl.QwenVLPoolPromptMasks`)."""
        pixel, = require(results, 'pixel_values', where='PoolPromptMasks')
        pooled = pool_prompt_masks(masks, self.grid, self.mode,
                                   self.vision_size, ensure_nonempty=False)
        vp = torch.zeros(pixel.shape[0], dtype=torch.bool)
        vp[-1] = True
        return pooled, vp

    def transform(self, results: dict) -> dict:
        masks, = require(results, 'masks', where=type(self).__name__)
        pooled, vp = self._pool(masks, results)
        if self.ensure_nonempty:
            pooled, repaired = repair_empty_prompt_masks(masks, pooled)
            bump(results, 'prompt_mask_repaired', repaired)
        counts = region_token_counts(pooled)
        if self.min_cells and min(counts, default=self.min_cells) < \
                self.min_cells:
            raise RecordError(
                'small_region', f'region token counts {counts}: a region has '
                f'fewer than min_cells={self.min_cells} grid cells')
        results['prompt_masks'] = pooled
        results['region_token_counts'] = counts
        results['vp_overall_mask'] = vp
        if not self.keep_gt:
            results.pop('masks')
        return results
