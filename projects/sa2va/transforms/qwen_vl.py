"""The image path to a Qwen-VL backbone (Qwen2.5-VL, Qwen3-VL): dynamic grids.

Where InternVL cuts an image into 448 x 448 tiles of 256 tokens each, a
Qwen-VL processor keeps one picture per image at a size of its own:

* :func:`smart_resize`: both sides rounded to a multiple of ``factor =
  patch_size * merge_size`` (28 for Qwen2.5-VL, 32 for Qwen3-VL), the area
  kept inside ``[min_pixels, max_pixels]`` (the processor's rule).
* :func:`image_to_patches`: the normalised picture repeated to
  ``temporal_patch_size`` (2) frames and cut into flattened patches in the
  processor's order, so that each run of ``merge_size ** 2`` consecutive
  patches is one merged token; ``image_grid_thw = (1, H / p, W / p)``.
  The LLM sees ``(H / p / merge) * (W / p / merge)`` merged tokens, row-major
  over the merged grid.
* :func:`pool_prompt_masks_grid`: a visual prompt's region mask pooled to
  that merged grid by the seed's two rules (``nearest`` / ``area > 0.5``,
  optional ``ensure_nonempty``); the region's ``<IMG_CONTEXT>`` count is its
  True cells on that grid.

:class:`QwenVLImageInput` is the pipeline step that replaces
``DynamicTiles`` + ``ImagesToTensor`` for these backbones (chosen by the
model config's ``QWEN_VL_PRESETS`` entry, never inside a dataset).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..registry import TRANSFORMS
from .base import BaseTransform
from .functional import _as_mask_stack
from .pixels import nearest_indices, resize_image

__all__ = ['QWEN_VL_PRESETS', 'smart_resize', 'image_to_patches',
           'pool_prompt_masks_grid', 'QwenVLImageInput']

#: processor settings of each backbone (the released preprocessor_config.json
#: values: Qwen2.5-VL uses the OpenAI CLIP statistics and 14 px patches,
#: Qwen3-VL 0.5 / 0.5 and 16 px patches; both merge 2 x 2 patches and pair
#: frames; max_pixels is the processor default).
QWEN_VL_PRESETS = {
    'qwen2_5_vl': dict(patch_size=14, merge_size=2, temporal_patch_size=2,
                       min_pixels=56 * 56, max_pixels=28 * 28 * 1280,
                       mean=(0.48145466, 0.4578275, 0.40821073),
                       std=(0.26862954, 0.26130258, 0.27577711)),
    'qwen3_vl': dict(patch_size=16, merge_size=2, temporal_patch_size=2,
                     min_pixels=64 * 64, max_pixels=32 * 32 * 1280,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
}


def smart_resize(height: int, width: int, factor: int, min_pixels: int,
                 max_pixels: int) -> Tuple[int, int]:
    """The Qwen-VL processor's output size ``(h, w)`` for an image.

    Both sides are multiples of ``factor``; ``h * w`` lies in
    ``[min_pixels, max_pixels]`` (scaled keeping the aspect ratio when the
    rounded size falls outside). An aspect ratio over 200 raises, as in the
    processor.
    """
    if height < 1 or width < 1:
        raise ValueError(f'image size {height} x {width} is empty')
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f'aspect ratio of {height} x {width} exceeds 200')
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_to_patches(pixels: torch.Tensor, patch_size: int, merge_size: int,
                     temporal_patch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flattened patches of one normalised picture (or of T frames).

    Args:
        pixels: ``(3, H, W)`` or ``(T, 3, H, W)`` float, normalised; ``H``
            and ``W`` multiples of ``patch_size * merge_size``; a single
            picture is repeated to ``temporal_patch_size`` frames, ``T`` must
            be a multiple of it.

    Returns:
        ``patches (t * h * w, 3 * temporal_patch_size * p * p)`` in the
        processor's order (merged blocks row-major, the ``merge_size ** 2``
        patches of a block consecutive) and ``grid_thw (3,) long = (t, h,
        w)`` with ``t = T / temporal_patch_size``, ``h = H / p``, ``w = W /
        p``.
    """
    if pixels.ndim == 3:
        pixels = pixels[None].expand(temporal_patch_size, -1, -1, -1)
    n, c, height, width = pixels.shape
    unit = patch_size * merge_size
    if height % unit or width % unit or n % temporal_patch_size:
        raise ValueError(f'pixels {tuple(pixels.shape)}: sides must be multiples of {unit} '
                         f'and frames of {temporal_patch_size}')
    t, gh, gw = n // temporal_patch_size, height // patch_size, width // patch_size
    x = pixels.reshape(t, temporal_patch_size, c, gh // merge_size, merge_size, patch_size,
                       gw // merge_size, merge_size, patch_size)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = x.reshape(t * gh * gw, c * temporal_patch_size * patch_size * patch_size)
    return patches.contiguous(), torch.tensor([t, gh, gw], dtype=torch.long)


def _cell_coverage_hw(mask: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Pixels of ``mask (H, W)`` in each cell of a ``grid_h x grid_w`` grid
    (pixel row ``y`` in cell row ``y * grid_h // H``): ``(grid_h, grid_w)``."""
    h, w = mask.shape
    rows = F.one_hot(torch.arange(h) * grid_h // h, grid_h).to(torch.float64)
    cols = F.one_hot(torch.arange(w) * grid_w // w, grid_w).to(torch.float64)
    return rows.T @ (mask != 0).to(torch.float64).cpu() @ cols


def pool_prompt_masks_grid(masks, grid_hw: Tuple[int, int], mode: str = 'nearest',
                           vision_hw: Optional[Tuple[int, int]] = None,
                           ensure_nonempty: bool = False) -> torch.Tensor:
    """Region masks on a rectangular merged-token grid (the seed's two rules).

    * ``'nearest'``: torch's nearest rule from ``(H, W)`` to ``grid_hw``.
    * ``'area'``: nearest resize to the resized image ``vision_hw``, mean
      over each cell (``adaptive_avg_pool2d``), ``> 0.5``.

    With a square grid both equal :func:`~projects.sa2va.transforms.
    functional.pool_prompt_masks`. ``ensure_nonempty`` gives a non-empty
    region whose pooled mask vanished the one cell it covers most.

    Args:
        masks: ``(n_obj, H, W)`` tensor / ndarray, non-zero = region.
        grid_hw: ``(grid_h / merge, grid_w / merge)`` of the resized image.
        vision_hw: ``(H', W')`` of the resized image (``'area'`` only).

    Returns:
        ``(n_obj, gh, gw) bool``.
    """
    masks = _as_mask_stack(masks)
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    height, width = masks.shape[-2:]
    if mode == 'nearest':
        pooled = masks.index_select(-2, nearest_indices(height, gh).to(masks.device)) \
            .index_select(-1, nearest_indices(width, gw).to(masks.device)) != 0
    elif mode == 'area':
        if vision_hw is None:
            raise ValueError("mode='area' needs vision_hw (the resized image's size)")
        vh, vw = int(vision_hw[0]), int(vision_hw[1])
        resized = (masks.index_select(-2, nearest_indices(height, vh).to(masks.device))
                   .index_select(-1, nearest_indices(width, vw).to(masks.device)) != 0)
        pooled = F.adaptive_avg_pool2d(resized.to(torch.float32)[None], (gh, gw))[0] > 0.5
    else:
        raise ValueError(f"unknown pooling mode {mode!r} (expected 'nearest' or 'area')")
    pooled = pooled.cpu()
    if ensure_nonempty:
        for i in range(masks.shape[0]):
            if not pooled[i].any() and masks[i].any():
                cell = int(torch.argmax(_cell_coverage_hw(masks[i], gh, gw).flatten()))
                pooled[i].view(-1)[cell] = True
    return pooled


@TRANSFORMS.register_module()
class QwenVLImageInput(BaseTransform):
    """One image -> Qwen-VL patches, grid and token counts (and prompt grids).

    Required Keys: ``img`` (RGB PIL image). Optional: ``prompt_regions``
    ``(n_obj, H, W)`` region masks of a visual-prompt sample.

    Added Keys: ``pixel_values (n_patches, 3 * 2 * p * p) float`` normalised,
    ``image_grid_thw (1, 3) long``, ``num_image_tokens`` (int, merged tokens
    of the image block), and with ``prompt_regions``: ``prompt_masks
    (n_obj, gh, gw) bool`` on the merged grid, ``vp_overall_mask (1,)`` True
    and ``region_token_counts`` (list of ints).

    Args:
        backbone: a key of :data:`QWEN_VL_PRESETS`; the other arguments
            override the preset.
        pool_mode, ensure_nonempty: the prompt pooling rule.
    """

    def __init__(self, backbone: str = 'qwen2_5_vl', min_pixels: Optional[int] = None,
                 max_pixels: Optional[int] = None, pool_mode: str = 'nearest',
                 ensure_nonempty: bool = True, resampler: str = 'pil'):
        if backbone not in QWEN_VL_PRESETS:
            raise ValueError(f'unknown Qwen-VL backbone {backbone!r}; one of '
                             f'{sorted(QWEN_VL_PRESETS)}')
        self.cfg = dict(QWEN_VL_PRESETS[backbone])
        if min_pixels is not None:
            self.cfg['min_pixels'] = int(min_pixels)
        if max_pixels is not None:
            self.cfg['max_pixels'] = int(max_pixels)
        self.pool_mode = pool_mode
        self.ensure_nonempty = ensure_nonempty
        self.resampler = resampler

    def transform(self, results: dict) -> dict:
        image = results['img']
        if not isinstance(image, Image.Image):
            raise TypeError(f'QwenVLImageInput needs a PIL image in results["img"], '
                            f'got {type(image).__name__}')
        c = self.cfg
        merge = c['merge_size']
        h, w = smart_resize(image.height, image.width, c['patch_size'] * merge,
                            c['min_pixels'], c['max_pixels'])
        resized = resize_image(image.convert('RGB'), (w, h), self.resampler)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)
        mean = torch.tensor(c['mean']).view(3, 1, 1)
        std = torch.tensor(c['std']).view(3, 1, 1)
        pixels = (pixels.to(torch.float32) / 255.0 - mean) / std
        patches, grid = image_to_patches(pixels, c['patch_size'], merge,
                                         c['temporal_patch_size'])
        results['pixel_values'] = patches
        results['image_grid_thw'] = grid[None]
        gh, gw = int(grid[1]) // merge, int(grid[2]) // merge
        results['num_image_tokens'] = gh * gw
        regions = results.get('prompt_regions')
        if regions is not None:
            pm = pool_prompt_masks_grid(regions, (gh, gw), self.pool_mode, (h, w),
                                        self.ensure_nonempty)
            results['prompt_masks'] = pm
            results['vp_overall_mask'] = torch.tensor([True])
            results['region_token_counts'] = pm.flatten(1).sum(1).tolist()
        return results
