"""The mask <-> caption tensors of frame 1 and frame 2 (family 6,
``mask-caption-cycle.md`` 8.0): :class:`MaskCaptionOutputs` and the image
rules it uses."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..constants import GRID_SIZE, IMAGE_SIZE, SAM2_IMAGE_SIZE
from ..registry import TRANSFORMS
from .base import BaseTransform, RecordError, bump, require
from .functional import (mask_caption_item, normalize_uint8,
                         pixel_values_from_image, pool_prompt_masks,
                         repair_empty_prompt_masks, resize_mask_nearest,
                         sam2_pixel_values, stack_uint8_images)

#: keys a packed mask <-> caption sample carries (direct route).
MASK_CAPTION_KEYS = ('pixel_values1', 'pixel_values2', 'g_pixel_values1',
                     'g_pixel_values2', 'prompt_masks1', 'prompt_masks2',
                     'masks1', 'masks2', 'caption', 'dataset_type',
                     'has_paired_frame')
#: keys of the "option A" route.
MASK_CAPTION_OPTION_A_KEYS = ('image1', 'image2', 'mask1', 'mask2',
                              'g_pixel_values1', 'g_pixel_values2', 'caption',
                              'dataset_type', 'has_paired_frame')

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

    #: per-frame keys (``{key}{k}``) of each route
    ROUTE_KEYS = dict(direct=('pixel_values', 'g_pixel_values',
                              'prompt_masks', 'masks'),
                      option_a=('image', 'mask', 'g_pixel_values'))

    def frame_keys(self) -> tuple:
        """The per-frame keys written by :meth:`frame_outputs` (a single
        image copies them from frame 1 to frame 2)."""
        return self.ROUTE_KEYS[self.route]

    def frame_outputs(self, im, m, results: dict, k: int) -> None:
        """Write frame ``k``'s keys (image ``im``, mask ``m`` at its size)."""
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

    def transform(self, results: dict) -> dict:
        images, masks, paired = self._inputs(results)
        for k, (im, m) in enumerate(zip(images, masks), 1):
            if m.shape != (im.height, im.width):
                raise RecordError('size_mismatch', f'mask {k} is {m.shape}, '
                                  f'its image (H, W) = '
                                  f'{(im.height, im.width)}')
        for k, (im, m) in enumerate(zip(images, masks), 1):
            self.frame_outputs(im, m, results, k)
        if not paired:
            for key in self.frame_keys():
                results[f'{key}2'] = results[f'{key}1']
        results['caption'] = results.get('caption')
        results['dataset_type'] = results.get(
            'dataset_type', results.get('dataset_name'))
        results['has_paired_frame'] = paired
        return results
