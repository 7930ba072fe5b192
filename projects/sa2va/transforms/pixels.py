"""Pixel plumbing of the data path: uint8 image buffers, resizing (the
seed's exact PIL rule and an opt-in fast torch resampler), and nearest
resizing of masks by index sampling.

``resampler='pil'`` (default everywhere) is the seed's rule: PIL's resize
with its default filter for RGB (bicubic, with PIL's antialiasing support
when shrinking). ``resampler='torch'`` runs ``F.interpolate(mode='bicubic',
antialias=True)`` on the uint8 pixels instead: the same filter family
(torch's antialiased bicubic follows PIL's, a = -0.5) in torch's uint8
arithmetic, about 2x faster than PIL end to end on one CPU thread (the
kernel alone about 4x), at the price of a few grey levels: measured over
photo-like pictures, at most 2 levels on at most 0.6 % of the values
(``docs/datasets.md``, measurements). Both return PIL images, so every
transform after the resize is unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ['RESAMPLERS', 'resize_image', 'check_resampler',
           'stack_uint8_images', 'nearest_indices', 'nearest_resize_masks']

#: accepted ``resampler`` values.
RESAMPLERS = ('pil', 'torch')


def check_resampler(resampler: str) -> str:
    """Return ``resampler`` or raise ``ValueError`` naming the choices."""
    if resampler not in RESAMPLERS:
        raise ValueError(f'resampler must be one of {RESAMPLERS}, got '
                         f'{resampler!r}')
    return resampler


def resize_image(image: Image.Image, size: tuple[int, int],
                 resampler: str = 'pil') -> Image.Image:
    """Resize an RGB PIL image to ``size = (width, height)``.

    Args:
        image: RGB PIL image.
        size: ``(width, height)`` of the output (PIL's order).
        resampler: ``'pil'``: ``image.resize(size)`` (PIL's default filter,
            bicubic for RGB: the seed's rule, exact). ``'torch'``: uint8
            bicubic with antialias in torch (opt-in; a few grey levels of
            difference, see the module docstring).

    Returns:
        RGB PIL image of ``size``; ``image`` itself when it already has
        that size.
    """
    check_resampler(resampler)
    if image.size == tuple(size):
        return image
    if resampler == 'pil':
        return image.resize(tuple(size))
    if image.mode != 'RGB':
        raise ValueError(f"resampler='torch' needs an RGB image, got mode "
                         f'{image.mode!r}')
    width, height = size
    # Channels-first in and out: torch's uint8 kernel is faster on it, and
    # PIL interleaves the three planes (merge) faster than a torch transpose.
    pixels = torch.from_numpy(
        np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))[None]
    out = F.interpolate(pixels, size=(height, width), mode='bicubic',
                        antialias=True, align_corners=False)[0]
    return Image.merge('RGB', [Image.fromarray(plane.numpy(), 'L')
                               for plane in out])


def stack_uint8_images(images: Sequence[Image.Image]) -> torch.Tensor:
    """Same-size RGB PIL images -> ``(n, 3, H, W) uint8``.

    Each image's bytes are written once into one ``(n, H, W, 3)`` buffer
    (no per-image arrays kept, no stack, no transpose); the result is a
    channels-last view of it: shape ``(n, 3, H, W)``, strides ``(H*W*3, 1,
    W*3, 3)`` (``torch.channels_last``). Values equal the channels-first
    copy exactly; the HWC -> CHW transpose happens where the pixels are
    first read as floats (:func:`~projects.sa2va.transforms.functional.normalize_uint8`, on device in the data
    preprocessor) or on ``.contiguous()``.

    Raises:
        ValueError: no images, or images of different sizes / not RGB.
    """
    images = list(images)
    if not images:
        raise ValueError('stack_uint8_images needs at least one image')
    width, height = images[0].size
    out = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for k, im in enumerate(images):
        if im.mode != 'RGB' or im.size != (width, height):
            raise ValueError(f'image {k} is {im.mode} {im.size[0]}x'
                             f'{im.size[1]}; expected RGB {width}x{height} '
                             f'like image 0')
        out[k] = np.asarray(im)
    return torch.from_numpy(out).permute(0, 3, 1, 2)




def nearest_indices(in_size: int, out_size: int) -> torch.Tensor:
    """Source indices of ``F.interpolate(mode='nearest')`` for one axis.

    Read from torch's own kernel on a float32 ramp ``0 .. in_size - 1``
    (exact up to 2**24), so they are torch's rule by construction.

    Returns:
        ``(out_size,) int64`` on the CPU.
    """
    ramp = torch.arange(in_size, dtype=torch.float32).view(1, 1, in_size, 1)
    return F.interpolate(ramp, size=(out_size, 1),
                         mode='nearest').view(-1).long()


def nearest_resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest resize of masks by index sampling.

    Equal to ``F.interpolate(masks[None].float(), (size, size),
    mode='nearest')[0] != 0`` but reads only the sampled pixels (no float
    copy of the full-size masks).

    Args:
        masks: ``(..., H, W)`` tensor, any dtype, non-zero = object.
        size: output side.

    Returns:
        ``(..., size, size) bool`` on ``masks.device``.
    """
    height, width = masks.shape[-2:]
    rows = nearest_indices(height, size).to(masks.device)
    cols = nearest_indices(width, size).to(masks.device)
    return masks.index_select(-2, rows).index_select(-1, cols) != 0
