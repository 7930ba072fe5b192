"""Batched, on-device preparation of the collated batch."""
from __future__ import annotations

import torch
from mmengine.model import BaseDataPreprocessor

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..registry import MODELS
from ..transforms.functional import normalize_uint8


@MODELS.register_module()
class Sa2VADataPreprocessor(BaseDataPreprocessor):
    """Moves a batch to the model's device and finishes the image rules.

    * ``pixel_values`` that left the workers as uint8 tiles are normalised
      here (``/255``, ImageNet mean/std), bit-identical to the seed's
      ``ToTensor`` + ``Normalize`` in float32, then cast to ``dtype``;
      float tiles are only cast.
    * ``data_stats`` and ``meta`` are removed (the hooks read them from the
      batch before this step).

    Args:
        dtype: floating dtype of the image tensors fed to the model
            (``None`` = float32).
        mean, std: normalisation statistics of the vision tower.
    """

    def __init__(self, dtype: str | torch.dtype | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype or torch.float32
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, data: dict, training: bool = False) -> dict:
        """Args:
            data: the collate function's dict.

        Returns:
            the same dict on device; ``pixel_values (N, 3, s, s)`` float
            ``dtype``, ImageNet-normalised.
        """
        data = dict(data)
        data.pop('data_stats', None)
        data.pop('meta', None)
        data = self.cast_data(data)
        pixel = data.get('pixel_values')
        if isinstance(pixel, torch.Tensor):
            if pixel.dtype == torch.uint8:
                pixel = normalize_uint8(pixel, self.mean, self.std)
            data['pixel_values'] = pixel.to(self.dtype)
        return data
