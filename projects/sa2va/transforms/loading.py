"""Image loading and image tensors (vision tower tiles, SAM2 input)."""
from __future__ import annotations

import os

from PIL import Image

from ..constants import IMAGE_SIZE, SAM2_IMAGE_SIZE
from ..registry import TRANSFORMS
from .base import BaseTransform, RecordError, require
from .image_io import decode_rgb
from .functional import (dynamic_tiles, normalize_uint8, resize_rgb,
                         sam2_pixel_values, sam2_resize, stack_uint8_images)
from .pixels import check_resampler


def open_rgb(path: str) -> Image.Image:
    """Open an image file fully decoded as 8-bit RGB
    (:func:`~projects.sa2va.transforms.image_io.decode_rgb`: 16-bit images
    scaled, not clipped).

    Raises:
        RecordError: ``'missing_image'``, ``'corrupt_image'``,
            ``'image_too_large'`` (over PIL's decompression-bomb limit) or
            ``'unsupported_image_mode'``, naming the file.
    """
    if not os.path.isfile(path):
        raise RecordError('missing_image', f'image file not found: {path}')
    return decode_rgb(path, path)


def check_stated_size(results: dict, image: Image.Image, path: str) -> None:
    """The annotation's stated ``ori_shape`` must be the image's size.

    Masks are decoded at the stated size (polygons) or carry it (RLE), so an
    image of another size (a resized or rotated copy) would get masks at the
    wrong place: a record error (``'size_mismatch'``), naming the file, both
    sizes, and whether the image is the transposed size.
    """
    stated = results.get('ori_shape')
    if stated is None:
        return
    try:
        stated = (int(stated[0]), int(stated[1]))
    except (TypeError, ValueError, IndexError, OverflowError):
        raise RecordError('size_mismatch', f'{path}: stated image size '
                          f'{stated!r} is not (height, width)') from None
    actual = (image.height, image.width)
    if stated != actual:
        hint = ' (transposed: rotated image or swapped height/width?)' \
            if stated == actual[::-1] else ''
        raise RecordError('size_mismatch',
                          f'{path}: image is {actual[0]}x{actual[1]} (HxW), '
                          f'the annotation states {stated[0]}x{stated[1]}'
                          f'{hint}')


@TRANSFORMS.register_module()
class LoadImage(BaseTransform):
    """Load one image as RGB.

    Args:
        allow_text_only: a record without ``img_path`` is a text-only sample
            (``text_only=True``; the image steps after it do nothing) instead
            of an error.

    Required Keys: ``img_path`` (str).

    Optional Keys: ``ori_shape`` ((H, W) stated by the annotation): the
    image must have this size (:func:`check_stated_size`).

    Added Keys: ``image`` (PIL RGB), ``ori_shape`` ((H, W) ints), or
    ``text_only`` (True).
    """

    def __init__(self, allow_text_only: bool = False):
        self.allow_text_only = allow_text_only

    def transform(self, results: dict) -> dict:
        if not results.get('img_path'):
            if self.allow_text_only:
                results['text_only'] = True
                return results
            raise RecordError('missing_image', 'record has no img_path')
        path = results['img_path']
        image = open_rgb(path)
        check_stated_size(results, image, path)
        results['image'] = image
        results['ori_shape'] = (image.height, image.width)
        return results


@TRANSFORMS.register_module()
class LoadFrames(BaseTransform):
    """Load the sampled frames of a video as RGB images.

    Required Keys: ``frame_paths`` (list of str, the sampled frames in
    order).

    Added Keys: ``frames`` (list of PIL RGB), ``num_frames`` (int),
    ``ori_shape`` ((H, W) of the first frame; every frame must have it).
    """

    def transform(self, results: dict) -> dict:
        paths, = require(results, 'frame_paths', where='LoadFrames')
        if not paths:
            raise RecordError('no_frames', 'record has no frames to load')
        frames = [open_rgb(p) for p in paths]
        sizes = {f.size for f in frames}
        if len(sizes) != 1:
            raise RecordError('frame_size_mismatch',
                              f'frames differ in size {sorted(sizes)}: '
                              f'{paths[0]} ...')
        results['frames'] = frames
        results['num_frames'] = len(frames)
        results['ori_shape'] = (frames[0].height, frames[0].width)
        return results


@TRANSFORMS.register_module()
class DynamicTiles(BaseTransform):
    """InternVL dynamic-resolution tiles of ``image``.

    Args:
        min_num, max_num, image_size, use_thumbnail: see
            :func:`~projects.sa2va.transforms.functional.dynamic_tiles`.
        enabled: ``False`` gives a single tile (the whole image), as the
            single-image mode of Sa2VA.
        resampler: ``'pil'`` (the seed's rule) or ``'torch'`` (opt-in fast
            resize, :mod:`~projects.sa2va.transforms.pixels`).

    Required Keys: ``image`` (PIL RGB).

    Added Keys: ``tiles`` (list of PIL, 1..max_num+1, thumbnail last),
    ``num_tiles`` (int).
    """

    def __init__(self, min_num: int = 1, max_num: int = 12,
                 image_size: int = IMAGE_SIZE, use_thumbnail: bool = True,
                 enabled: bool = True, resampler: str = 'pil'):
        self.min_num, self.max_num = min_num, max_num
        self.resampler = check_resampler(resampler)
        self.image_size = image_size
        self.use_thumbnail = use_thumbnail
        self.enabled = enabled

    def transform(self, results: dict) -> dict:
        if results.get('text_only'):
            return results
        image, = require(results, 'image', where='DynamicTiles')
        if self.enabled:
            tiles = dynamic_tiles(image, self.min_num, self.max_num,
                                  self.image_size, self.use_thumbnail,
                                  self.resampler)
        else:
            tiles = [image]
        results['tiles'] = tiles
        results['num_tiles'] = len(tiles)
        return results


@TRANSFORMS.register_module()
class ImagesToTensor(BaseTransform):
    """Tiles (or frames) -> ``pixel_values`` for the vision tower.

    The seed's rule: bicubic resize to ``image_size``, to [0, 1], ImageNet
    normalisation. With ``as_uint8=True`` (default) the last two steps are
    left to the data preprocessor on device (bit-identical, see
    :func:`~projects.sa2va.transforms.functional.normalize_uint8`); a tile
    then costs 0.6 MB instead of 2.4 MB between worker and trainer.

    Args:
        key: ``'tiles'`` (images) or ``'frames'`` (video).
        image_size: tile side.
        as_uint8: keep bytes (True) or normalise here (False).
        resampler: ``'pil'`` (the seed's rule) or ``'torch'`` (opt-in fast
            resize of images not already ``image_size`` square).

    Required Keys: ``key`` (list of PIL).

    Added Keys: ``pixel_values``: ``(n, 3, s, s) uint8`` in [0, 255]
    (channels-last in memory, see
    :func:`~projects.sa2va.transforms.pixels.stack_uint8_images`), or
    ``float32`` ImageNet-normalised with ``as_uint8=False``.
    """

    def __init__(self, key: str = 'tiles', image_size: int = IMAGE_SIZE,
                 as_uint8: bool = True, resampler: str = 'pil'):
        self.key = key
        self.image_size = image_size
        self.as_uint8 = as_uint8
        self.resampler = check_resampler(resampler)

    def transform(self, results: dict) -> dict:
        if results.get('text_only'):
            return results
        images, = require(results, self.key, where='ImagesToTensor')
        pixel = stack_uint8_images(
            [resize_rgb(im, self.image_size, self.resampler)
             for im in images])
        results['pixel_values'] = pixel if self.as_uint8 else \
            normalize_uint8(pixel)
        return results


@TRANSFORMS.register_module()
class SAM2Input(BaseTransform):
    """The SAM2 input from the raw pixels: direct resize, uint8.

    Required Keys: ``image`` (PIL) or, with ``key='frames'``, ``frames``.

    Added Keys: ``g_pixel_values``: ``(3, size, size) uint8`` for an image,
    ``(n_frames, 3, size, size) uint8`` for frames (channels-last in
    memory).

    Args:
        resampler: ``'pil'`` (the seed's rule) or ``'torch'`` (opt-in fast
            resize).
    """

    def __init__(self, key: str = 'image', size: int = SAM2_IMAGE_SIZE,
                 resampler: str = 'pil'):
        self.key = key
        self.size = size
        self.resampler = check_resampler(resampler)

    def transform(self, results: dict) -> dict:
        if results.get('text_only'):
            return results
        src, = require(results, self.key, where='SAM2Input')
        if isinstance(src, Image.Image):
            results['g_pixel_values'] = sam2_pixel_values(src, self.size,
                                                          self.resampler)
        else:
            results['g_pixel_values'] = stack_uint8_images(
                [sam2_resize(f, self.size, self.resampler) for f in src])
        return results
