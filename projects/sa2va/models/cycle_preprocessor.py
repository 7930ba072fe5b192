"""Data preprocessor of mask <-> caption cycle batches (option A derived on
the device; the nested ``dam`` batch of the dual loop)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import MODELS
from ..transforms.functional import derive_mask_caption_batch, normalize_uint8
from .data_preprocessor import Sa2VADataPreprocessor
from .sam2 import normalize_sam2_images


@MODELS.register_module()
class MaskCaptionCycleDataPreprocessor(Sa2VADataPreprocessor):
    """Device move and image rules of cycle batches (and of the nested
    ``dam`` batch of the dual loop).

    * "option A" (``image{k} (B, 3, S, S)`` float ImageNet-normalised,
      ``mask{k} (B, S, S) float`` {0, 1}, k = 1, 2): on the device, batched,
      :func:`derive_mask_caption_batch` gives ``pixel_values{k} (B, 3,
      image_size, image_size)`` (bilinear, ``align_corners=False``),
      ``prompt_masks{k} (B, grid, grid) bool`` (nearest) and ``masks{k}``
      (``mask{k}`` itself, the GT); ``image{k}`` / ``mask{k}`` are removed.
      The batch then has the direct route's keys, shapes and dtypes.
    * ``pixel_values{1,2} (B, 3, s, s)``: uint8 -> /255, ImageNet-normalised
      (float32), then cast to ``dtype``; float -> cast.
    * ``g_pixel_values{1,2} (B, 3, S, S)`` uint8 -> SAM2-normalised
      ``sam2_dtype``.
    * Masks and prompt masks are only moved. ``data_stats`` / ``meta`` are
      dropped.
    * A Sa2VA batch (it has ``input_ids``: the predictor's prompts when the
      student is evaluated) goes through :class:`Sa2VADataPreprocessor`.

    Args as :class:`Sa2VADataPreprocessor` (``image_size``, ``grid``: the
    option-A sizes).

    Raises:
        ValueError: a frame given both ways (``image{k}`` with any of
        ``pixel_values{k}`` / ``prompt_masks{k}`` / ``masks{k}``), or
        ``image{k}`` without ``mask{k}`` (or the reverse).
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        if 'input_ids' in data:
            # an ordinary Sa2VA batch (inference / evaluation of the student)
            return super().forward(data, training)
        data = dict(data)
        if isinstance(data.get('dam'), dict):
            data['dam'] = self.forward(data['dam'], training)
        data.pop('data_stats', None)
        data.pop('meta', None)
        data = self.cast_data(data)
        for k in (1, 2):
            self._derive_option_a(data, k)
        for key in ('pixel_values1', 'pixel_values2'):
            if isinstance(data.get(key), Tensor):
                pixel = data[key]
                if pixel.dtype == torch.uint8:
                    pixel = normalize_uint8(pixel, self.mean, self.std)
                data[key] = pixel.to(self.dtype)
        for key in ('g_pixel_values1', 'g_pixel_values2'):
            if isinstance(data.get(key), Tensor):
                frames = data[key]
                data[key] = (normalize_sam2_images(frames, self.sam2_dtype)
                             if frames.dtype == torch.uint8 else frames.to(self.sam2_dtype))
        return data

    def _derive_option_a(self, data: dict, k: int) -> None:
        """Frame ``k``'s option-A keys -> direct-route keys, in place (the
        cast of ``pixel_values{k}`` to ``dtype`` follows in ``forward``)."""
        image, mask = data.get(f'image{k}'), data.get(f'mask{k}')
        if image is None and mask is None:
            return
        if image is None or mask is None:
            have, lack = ('image', 'mask') if mask is None else ('mask', 'image')
            raise ValueError(f'option-A frame {k}: the batch has {have}{k} but no {lack}{k} '
                             f'(MaskCaptionOutputs(route=\'option_a\') gives both)')
        both = [key for key in (f'pixel_values{k}', f'prompt_masks{k}', f'masks{k}')
                if data.get(key) is not None]
        if both:
            raise ValueError(f'frame {k} is given both ways: option-A image{k} / mask{k} '
                             f'and direct-route {both}; a batch must come from one '
                             f"MaskCaptionOutputs route ('direct' or 'option_a')")
        derived = derive_mask_caption_batch(image, mask, self.image_size, self.grid)
        del data[f'image{k}'], data[f'mask{k}']
        data[f'pixel_values{k}'] = derived['pixel_values']
        data[f'prompt_masks{k}'] = derived['prompt_masks']
        data[f'masks{k}'] = derived['gt_masks']
