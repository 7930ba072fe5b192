"""Collate for a Qwen-VL MLLM: images of their own sizes (dynamic grids).

Samples come from pipelines with :class:`~projects.sa2va.transforms.qwen_vl.
QwenVLImageInput` instead of ``DynamicTiles`` + ``ImagesToTensor``. Text,
SAM2 frames, GT masks and bookkeeping are collated by
:func:`~projects.sa2va.datasets.collate.sa2va_collate_fn`; the image side is
concatenated per image instead of per 448 tile.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FUNCTIONS
from .collate import sa2va_collate_fn

#: per-sample keys of the Qwen-VL image path.
QWEN_VL_IMAGE_KEYS = ('pixel_values', 'image_grid_thw', 'vp_overall_mask', 'prompt_masks')


@FUNCTIONS.register_module()
def sa2va_qwen_vl_collate_fn(instances: Sequence[dict], pad_index: int = 0) -> dict:
    """Collate Sa2VA samples for ``QwenVLChat``.

    Per sample, besides the keys of ``sa2va_collate_fn``: ``pixel_values
    (n_patches_i, 3 * 2 * p * p)`` float, ``image_grid_thw (n_img_i, 3)
    long``; a visual-prompt sample also ``vp_overall_mask (n_img_i,) bool``
    and ``prompt_masks (n_obj, gh, gw) bool``. Text-only samples have none.

    Returns:
        ``sa2va_collate_fn``'s dict (no dummy tile) with ``pixel_values
        (sum n_patches, 3 * 2 * p * p)``, ``image_grid_thw (N_img, 3)``,
        ``image_flags (N_img,)`` ones, ``vp_overall_mask (N_img,) bool`` and
        ``prompt_masks`` (list, batch order); no image keys when no sample has
        an image.

    Raises:
        ValueError: naming the sample whose patches and grid disagree.
    """
    rest, pixels, grids, vp, prompts = [], [], [], [], []
    for i, s in enumerate(instances):
        rest.append({k: v for k, v in s.items() if k not in QWEN_VL_IMAGE_KEYS})
        pv, grid = s.get('pixel_values'), s.get('image_grid_thw')
        if pv is None and grid is None:
            continue
        if pv is None or grid is None or pv.ndim != 2 or grid.ndim != 2 \
                or int(grid.prod(-1).sum()) != pv.shape[0]:
            raise ValueError(
                f'sample {i}: pixel_values {None if pv is None else tuple(pv.shape)} and '
                f'image_grid_thw {None if grid is None else grid.tolist()} do not match '
                f'(a Qwen-VL batch needs QwenVLImageInput in every image pipeline)')
        pixels.append(pv)
        grids.append(grid.long())
        if s.get('prompt_masks') is not None:
            vp.append(s['vp_overall_mask'].bool().reshape(-1))
            prompts.append(s['prompt_masks'].bool())
        else:
            vp.append(torch.zeros(grid.shape[0], dtype=torch.bool))
    batch = sa2va_collate_fn(rest, pad_index=pad_index, dummy_image_for_text_only=False)
    batch['prompt_masks'] = prompts
    if pixels:
        batch['pixel_values'] = torch.cat(pixels)
        batch['image_grid_thw'] = torch.cat(grids)
        batch['image_flags'] = torch.ones(batch['image_grid_thw'].shape[0], dtype=torch.long)
        batch['vp_overall_mask'] = torch.cat(vp)
    return batch
