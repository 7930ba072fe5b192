"""Batched, on-device preparation of the collated batch."""
from __future__ import annotations

from typing import Optional

import torch
from mmengine.model import BaseDataPreprocessor

from ..constants import GRID_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from ..registry import MODELS
from ..transforms.functional import (normalize_uint8, option_a_prompt_masks,
                                     option_a_tiles)
from .sam2 import normalize_sam2_images


def _as_dtype(dtype) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f'unknown floating dtype {dtype!r}')
    return value


@MODELS.register_module()
class Sa2VADataPreprocessor(BaseDataPreprocessor):
    """Moves a batch to the model's device and finishes the image rules.

    * ``pixel_values`` that left the workers as uint8 tiles are normalised
      here (``/255``, ImageNet mean/std), bit-identical to the seed's
      ``ToTensor`` + ``Normalize`` in float32, then cast to ``dtype``;
      float tiles are only cast. Qwen-VL patches (``pixel_values`` /
      ``pixel_values_videos`` ``(n, 3 * 2 * p * p)``) left as uint8
      (``QwenVLImageInput(as_uint8=True)``) are normalised with the
      statistics of ``qwen_vl_stats`` (:func:`~projects.sa2va.transforms.
      qwen_vl.normalize_patches`, the worker's own float rule), then cast.
    * ``g_pixel_values`` (the collate's flat list of ``(3, S, S) uint8``
      frames) become one ``(F, 3, S, S)`` tensor, SAM2-normalised
      (``/255``, ImageNet mean/std, in float32) and cast to ``sam2_dtype``;
      an empty list becomes None.
    * mask <-> caption "option A" (the seed's derivation, batched): the
      collate's ``option_a_images (B', 3, S, S)`` (normalised float, or
      uint8 normalised here first) become
      448 tiles (:func:`option_a_tiles`, bilinear) written into
      ``pixel_values`` at ``option_a_tile_index``; ``option_a_masks (B'', S,
      S)`` {0, 1} become ``(1, 16, 16) bool`` grids
      (:func:`option_a_prompt_masks`, nearest) put into ``prompt_masks`` at
      ``option_a_prompt_index``; the four keys are removed. The GT masks of
      option-A samples are already in ``masks`` (the 1024 mask).
    * ``masks`` (GT, list of ``(n_obj * T, H, W)``) are only moved, never
      resized here (the loss resizes them to the prediction size).
    * ``data_stats`` and ``meta`` are removed (the hooks read them from the
      batch before this step).

    Args:
        dtype: floating dtype of the vision-tower tiles (None = float32).
        sam2_dtype: floating dtype of the SAM2 frames (None = ``dtype``).
        mean, std: normalisation statistics of the vision tower.
        image_size, grid: option-A sizes (448 tiles, 16 x 16 prompt grid).
        qwen_vl_stats: a key of ``QWEN_VL_PRESETS`` (``'qwen2_5_vl'``,
            ``'qwen3_vl'``): the mean / std of uint8 Qwen-VL patches. None:
            uint8 patches raise (they must not meet another backbone's
            statistics).
    """

    def __init__(self, dtype: str | torch.dtype | None = None,
                 sam2_dtype: str | torch.dtype | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 image_size: int = IMAGE_SIZE, grid: int = GRID_SIZE,
                 qwen_vl_stats: Optional[str] = None):
        super().__init__()
        self.qwen_vl_stats = None
        if qwen_vl_stats is not None:
            from ..transforms.qwen_vl import QWEN_VL_PRESETS
            if qwen_vl_stats not in QWEN_VL_PRESETS:
                raise ValueError(f'qwen_vl_stats must be one of '
                                 f'{sorted(QWEN_VL_PRESETS)}, got {qwen_vl_stats!r}')
            preset = QWEN_VL_PRESETS[qwen_vl_stats]
            self.qwen_vl_stats = (preset['mean'], preset['std'])
        self.dtype = _as_dtype(dtype) or torch.float32
        self.sam2_dtype = _as_dtype(sam2_dtype) or self.dtype
        self.mean, self.std = tuple(mean), tuple(std)
        self.image_size, self.grid = image_size, grid

    def forward(self, data: dict, training: bool = False) -> dict:
        """Args:
            data: the collate function's dict.

        Returns:
            the same dict on device: ``pixel_values (N, 3, s, s)`` float
            ``dtype``, ImageNet-normalised; ``g_pixel_values (F, 3, S, S)``
            float ``sam2_dtype`` or None; option-A tiles and grids in place
            (see above).
        """
        data = dict(data)
        data.pop('data_stats', None)
        data.pop('meta', None)
        data = self.cast_data(data)
        for key in ('pixel_values', 'pixel_values_videos'):
            pixel = data.get(key)
            if isinstance(pixel, torch.Tensor):
                data[key] = self._pixels(pixel, key)
        if 'g_pixel_values' in data:
            data['g_pixel_values'] = self._sam2_frames(data['g_pixel_values'])
        if 'option_a_images' in data:
            self._fill_option_a(data)
        return data

    def _pixels(self, pixel: torch.Tensor, key: str) -> torch.Tensor:
        """InternVL tiles ``(N, 3, s, s)`` or Qwen-VL patches ``(n, D)``:
        uint8 normalised, then cast to ``dtype``."""
        if pixel.dtype == torch.uint8 and pixel.ndim == 2:
            if self.qwen_vl_stats is None:
                raise ValueError(
                    f'{key} are uint8 Qwen-VL patches {tuple(pixel.shape)} but the data '
                    f'preprocessor has no qwen_vl_stats: set data_preprocessor='
                    f"dict(qwen_vl_stats='qwen2_5_vl' | 'qwen3_vl')")
            from ..transforms.qwen_vl import normalize_patches
            return normalize_patches(pixel, *self.qwen_vl_stats, self.dtype)
        if pixel.dtype == torch.uint8:
            pixel = normalize_uint8(pixel, self.mean, self.std, self.dtype)
        return pixel.to(self.dtype)

    def _fill_option_a(self, data: dict) -> None:
        """Derive option-A tiles and grids and put them in their places."""
        images = data.pop('option_a_images')
        rows = data.pop('option_a_tile_index')
        masks = data.pop('option_a_masks', None)
        slots = data.pop('option_a_prompt_index', None)
        pixel = data['pixel_values']
        tiles = option_a_tiles(images, self.image_size, self.mean, self.std)
        if tuple(tiles.shape[1:]) != tuple(pixel.shape[1:]):
            raise ValueError(
                f'option-A tiles are {tuple(tiles.shape[1:])} but the '
                f"batch's tiles are {tuple(pixel.shape[1:])}: the data "
                f'preprocessor image_size must match the tile size of the '
                f'other datasets')
        data['pixel_values'] = pixel.index_copy(0, rows.to(pixel.device),
                                                tiles.to(pixel.dtype))
        if masks is not None:
            grids = option_a_prompt_masks(masks, self.grid)
            prompt_masks = list(data['prompt_masks'])
            for j, slot in enumerate(slots.tolist()):
                prompt_masks[slot] = grids[j:j + 1]
            data['prompt_masks'] = prompt_masks

    def _sam2_frames(self, frames) -> Optional[torch.Tensor]:
        """List of ``(3, S, S) uint8`` (or a stacked tensor) -> ``(F, 3, S,
        S)`` normalised ``sam2_dtype``; floats are taken as normalised."""
        if frames is None or (isinstance(frames, (list, tuple))
                              and len(frames) == 0):
            return None
        if isinstance(frames, (list, tuple)):
            shapes = {tuple(f.shape) for f in frames}
            if len(shapes) != 1:
                raise ValueError(f'g_pixel_values frames differ in shape: '
                                 f'{sorted(shapes)}; every SAM2 input must '
                                 f'have the same size (SAM2Input(size=...))')
            frames = torch.stack(list(frames))
        if frames.dtype == torch.uint8:
            return normalize_sam2_images(frames, self.sam2_dtype)
        return frames.to(self.sam2_dtype)
