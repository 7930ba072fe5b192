"""Decoding image files into 8-bit RGB, with a named error for every file
that cannot be used.

Rules (one place for images from folders and from tar shards):

* an image whose pixel count exceeds PIL's decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M pixels by default) is refused
  (``'image_too_large'``). PIL only warns between 1x and 2x the limit and
  raises ``DecompressionBombError`` (not an ``OSError``) above; both are
  refused here, before the pixels are decoded;
* modes with more than 8 bits per sample are scaled, never clipped: 16-bit
  grey (``I;16``, ``I;16B``, ...) and 32-bit integer images whose values fit
  16 bits (``I``, as some PNG/TIFF readers return them) are mapped
  ``v -> round(v * 255 / 65535)``; PIL's own ``convert('RGB')`` would clip
  every value above 255 to white. 16-bit RGB PNGs are read by PIL as 8-bit
  RGB (the high byte), which is already the right scale;
* floating-point images (``F``) and integer images with values beyond
  16 bits have no defined scale and are refused
  (``'unsupported_image_mode'``);
* every other mode (``1``, ``L``, ``P``, ``LA``, ``RGBA``, ``CMYK``,
  ``YCbCr``, ...) goes through ``convert('RGB')``.
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import RecordError

__all__ = ['decode_rgb', 'to_rgb8']

_SIXTEEN_BIT = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I;16S', 'I;16LS',
                'I;16BS')


def to_rgb8(image: Image.Image, name: str) -> Image.Image:
    """Any PIL image -> 8-bit ``RGB`` (rules in the module docstring).

    Args:
        image: a loaded PIL image.
        name: the file, for error messages.

    Raises:
        RecordError: ``'unsupported_image_mode'`` naming the file and mode.
    """
    mode = image.mode
    if mode == 'RGB':
        return image
    if mode in _SIXTEEN_BIT or mode == 'I':
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise RecordError(
                'unsupported_image_mode',
                f'{name}: {mode} image with values in [{values.min()}, '
                f'{values.max()}] (beyond 16 bits: no defined 8-bit scale)')
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, mode='L').convert('RGB')
    if mode == 'F':
        raise RecordError('unsupported_image_mode', f'{name}: floating-point '
                          f'image (mode F) has no defined 8-bit scale')
    try:
        return image.convert('RGB')
    except ValueError as exc:
        raise RecordError('unsupported_image_mode', f'{name}: cannot convert '
                          f'mode {mode} to RGB: {exc}') from None


def decode_rgb(source, name: str) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB.

    Args:
        source: a path or a binary file object.
        name: the file (and shard offset) named in errors.

    Returns:
        PIL ``RGB`` image.

    Raises:
        RecordError: ``'image_too_large'`` (over the decompression-bomb
        limit), ``'corrupt_image'`` (not an image, truncated, undecodable),
        ``'unsupported_image_mode'``; each message names the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(source) as img:
                img.load()
                return to_rgb8(img, name)
    except (Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise RecordError('image_too_large', f'{name}: over PIL\'s '
                          f'decompression-bomb limit of '
                          f'{Image.MAX_IMAGE_PIXELS} pixels: {exc}') from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            EOFError, MemoryError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError('corrupt_image', f'cannot decode image {name}: '
                          f'{type(exc).__name__}: {exc}') from None
