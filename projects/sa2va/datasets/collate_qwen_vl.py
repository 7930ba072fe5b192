"""Collate for a Qwen-VL MLLM: images of their own sizes (dynamic grids).

Samples come from pipelines with :class:`~projects.sa2va.transforms.qwen_vl.
QwenVLImageInput` / :class:`~projects.sa2va.transforms.qwen_vl_video.
QwenVLVideoInput` instead of ``DynamicTiles`` + ``ImagesToTensor``. Text,
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
#: per-sample keys of a native Qwen-VL video (``QwenVLVideoInput(video_mode=
#: 'temporal_pairs')``; the ``'frames'`` mode uses the image keys).
QWEN_VL_VIDEO_KEYS = ('pixel_values_videos', 'video_grid_thw', 'second_per_grid_ts')


def _with_patches(instances: Sequence[dict], pixel_key: str, grid_key: str):
    """``(i, sample, patches, grid)`` of each sample that has ``pixel_key`` /
    ``grid_key``; raises naming sample ``i`` when they disagree."""
    dtypes = {}
    for i, s in enumerate(instances):
        pv, grid = s.get(pixel_key), s.get(grid_key)
        if pv is None and grid is None:
            continue
        if pv is not None:
            dtypes.setdefault(str(pv.dtype), i)
            if len(dtypes) > 1:  # torch.cat would promote uint8 bytes silently
                raise TypeError(f'{pixel_key}: samples mix dtypes (dtype -> first sample: '
                                f'{dtypes}); the image / video steps of a batch must agree '
                                f'on as_uint8')
        if pv is None or grid is None or pv.ndim != 2 or grid.ndim != 2 \
                or int(grid.prod(-1).sum()) != pv.shape[0]:
            raise ValueError(
                f'sample {i}: {pixel_key} {None if pv is None else tuple(pv.shape)} and '
                f'{grid_key} {None if grid is None else grid.tolist()} do not match (a '
                f'Qwen-VL batch needs QwenVLImageInput / QwenVLVideoInput in every '
                f'image pipeline)')
        yield i, s, pv, grid.long()


def _collate_videos(instances: Sequence[dict], batch: dict) -> None:
    """Concatenate the native-video keys of the samples that have them into
    ``batch`` (``pixel_values_videos``, ``video_grid_thw``, and
    ``second_per_grid_ts`` when the videos carry it: all or none)."""
    pixels, grids, seconds = [], [], []
    for i, s, pv, grid in _with_patches(instances, 'pixel_values_videos', 'video_grid_thw'):
        pixels.append(pv)
        grids.append(grid)
        sec = s.get('second_per_grid_ts')
        if sec is not None and sec.numel() != grid.shape[0]:
            raise ValueError(f'sample {i}: {sec.numel()} second_per_grid_ts for '
                             f'{grid.shape[0]} videos')
        seconds.append(sec)
    if not pixels:
        return
    if len({s is None for s in seconds}) > 1:
        raise ValueError('second_per_grid_ts is given for some videos of the batch and not '
                         'for others (one backbone per batch: Qwen2.5-VL has it, Qwen3-VL not)')
    batch['pixel_values_videos'] = torch.cat(pixels)
    batch['video_grid_thw'] = torch.cat(grids)
    if seconds[0] is not None:
        batch['second_per_grid_ts'] = torch.cat([s.reshape(-1).float() for s in seconds])


@FUNCTIONS.register_module()
def sa2va_qwen_vl_collate_fn(instances: Sequence[dict], pad_index: int = 0) -> dict:
    """Collate Sa2VA samples for ``QwenVLChat``.

    Per sample, besides the keys of ``sa2va_collate_fn``: ``pixel_values
    (n_patches_i, 3 * 2 * p * p)`` float, ``image_grid_thw (n_img_i, 3)
    long`` (a ``'frames'`` video: one row per frame); a visual-prompt sample
    also ``vp_overall_mask (n_img_i,) bool`` and ``prompt_masks (n_obj, gh,
    gw) bool``; a native video ``pixel_values_videos (n_vpatches_i, 3 * 2 *
    p * p)``, ``video_grid_thw (n_vid_i, 3)`` and (Qwen2.5-VL)
    ``second_per_grid_ts (n_vid_i,)``. Text-only samples have none.

    Returns:
        ``sa2va_collate_fn``'s dict (no dummy tile) with ``pixel_values
        (sum n_patches, 3 * 2 * p * p)``, ``image_grid_thw (N_img, 3)``,
        ``image_flags (N_img,)`` ones, ``vp_overall_mask (N_img,) bool`` and
        ``prompt_masks`` (list, batch order); no image keys when no sample has
        an image; the video keys concatenated in batch order when a sample
        has a native video.

    Raises:
        ValueError: naming the sample whose patches and grid disagree.
    """
    rest = [{k: v for k, v in s.items() if k not in QWEN_VL_IMAGE_KEYS + QWEN_VL_VIDEO_KEYS}
            for s in instances]
    pixels, grids, vp, prompts = [], [], [], []
    for _, s, pv, grid in _with_patches(instances, 'pixel_values', 'image_grid_thw'):
        pixels.append(pv)
        grids.append(grid)
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
    _collate_videos(instances, batch)
    return batch
