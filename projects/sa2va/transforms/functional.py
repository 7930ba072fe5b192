"""The seed's data rules as small pure functions.

Every rule of ``seed-rules.md`` lives in exactly one function here; the
registered pipeline transforms (``loading.py``, ``masks.py``) and the data
preprocessor (on device, batched) call these, never a copy.

Conventions: images are ``PIL.Image`` on the way in; tensors are channels
first. Shapes, dtypes and ranges are stated per function.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..constants import (GRID_SIZE, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD,
                         IMG_CONTEXT_TOKEN, SAM2_IMAGE_SIZE, VP_END_TOKEN,
                         VP_START_TOKEN)
from .pixels import (check_resampler, nearest_indices, nearest_resize_masks,
                     resize_image, stack_uint8_images)
from .rle import rle_counts_from_string

__all__ = [
    'pixel_values_from_image', 'image_to_uint8_tensor', 'normalize_uint8',
    'stack_uint8_images', 'resize_rgb', 'sam2_resize',
    'find_closest_grid', 'dynamic_tiles', 'sam2_pixel_values', 'decode_mask',
    'rle_counts_from_string', 'pool_prompt_masks', 'repair_empty_prompt_masks',
    'nearest_indices', 'nearest_resize_masks',
    'region_token_counts', 'visual_prompt_text', 'mask_caption_item',
    'resize_mask_nearest',
    'derive_mask_caption_batch', 'option_a_tiles', 'option_a_prompt_masks'
]


# ---------------------------------------------------------------------------
# Images for the vision tower
# ---------------------------------------------------------------------------
def _to_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(
            f'expected a PIL.Image.Image, got {type(image).__name__}')
    return image if image.mode == 'RGB' else image.convert('RGB')


def image_to_uint8_tensor(image: Image.Image, image_size: int = IMAGE_SIZE,
                          resampler: str = 'pil') -> torch.Tensor:
    """RGB-convert and bicubic-resize a PIL image, keep it as bytes.

    This is steps 1-2 of the seed's vision-tower rule (``convert('RGB')``,
    torchvision ``Resize((s, s), BICUBIC)`` on a PIL image, which is PIL's
    bicubic resize); :func:`normalize_uint8` does steps 3-4 later, on device.
    A 448 x 448 tile is returned without resampling (torchvision's Resize is
    an identity then as well).

    Args:
        image: any PIL mode (L, P, RGBA, ... are converted to RGB).
        image_size: side ``s`` of the square output.
        resampler: ``'pil'`` (the rule, exact) or ``'torch'`` (opt-in fast
            resize, :func:`~projects.sa2va.transforms.resample.resize_image`).

    Returns:
        ``(3, s, s) uint8`` tensor, values 0..255, channels-last in memory
        (see :func:`stack_uint8_images`).
    """
    return stack_uint8_images([resize_rgb(image, image_size, resampler)])[0]


def resize_rgb(image: Image.Image, image_size: int = IMAGE_SIZE,
               resampler: str = 'pil') -> Image.Image:
    """``convert('RGB')`` + torchvision ``Resize((s, s), BICUBIC)`` on a PIL
    image (PIL's bicubic); a no-op for an RGB image already ``s`` square.
    ``resampler='torch'``: the opt-in fast resize instead."""
    image = _to_rgb(image)
    if image.size != (image_size, image_size):
        if check_resampler(resampler) == 'pil':
            image = TF.resize(image, [image_size, image_size],
                              interpolation=InterpolationMode.BICUBIC)
        else:
            image = resize_image(image, (image_size, image_size), resampler)
    return image


def normalize_uint8(images: torch.Tensor,
                    mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    dtype: torch.dtype = torch.float32,
                    chunk: int = 1 << 22) -> torch.Tensor:
    """ToTensor + Normalize applied to uint8 images, batched, on any device.

    Bit-identical to torchvision's ``ToTensor()`` then ``Normalize(mean,
    std)`` on the same pixels: the same float32 operations in the same order
    (``x / 255``, ``- mean``, ``/ std``), done in place on one float32
    buffer (the uint8 -> float copy also makes channels-last input
    channels-first). The cast to ``dtype`` happens last; for another dtype
    the float32 buffer holds at most ``chunk`` elements (whole leading
    rows), reused, so no full-size float32 temporary exists.

    Args:
        images: ``(..., 3, H, W) uint8`` in [0, 255].
        mean, std: per-channel statistics (ImageNet by default).
        dtype: output dtype (float32 keeps bit-identity with the seed).
        chunk: float32 elements per step when ``dtype`` is not float32.

    Returns:
        ``(..., 3, H, W)`` float tensor, ImageNet-normalised, contiguous.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f'normalize_uint8 expects uint8 images, got '
                        f'{images.dtype}')
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f'expected (..., 3, H, W) images, got shape '
                         f'{tuple(images.shape)}')
    m = torch.as_tensor(mean, dtype=torch.float32,
                        device=images.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32,
                        device=images.device).view(-1, 1, 1)

    def normalise_into(out: torch.Tensor, pixels: torch.Tensor) -> None:
        out.copy_(pixels)
        out.div_(255).sub_(m).div_(s)

    if dtype == torch.float32 or images.ndim == 3:
        x = torch.empty(images.shape, dtype=torch.float32,
                        device=images.device)
        normalise_into(x, images)
        return x if dtype == torch.float32 else x.to(dtype)
    flat = images.reshape(-1, *images.shape[-3:])
    out = torch.empty(flat.shape, dtype=dtype, device=images.device)
    rows = max(1, chunk // flat[0].numel())
    buf = torch.empty((min(rows, len(flat)), *flat.shape[1:]),
                      dtype=torch.float32, device=images.device)
    for start in range(0, len(flat), rows):
        part = flat[start:start + rows]
        x = buf[:len(part)]
        normalise_into(x, part)
        out[start:start + len(part)].copy_(x)
    return out.view(images.shape)


def pixel_values_from_image(image: Image.Image,
                            image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """The seed's vision-tower image rule.

    ``convert('RGB')`` -> ``Resize((s, s), BICUBIC)`` (PIL) -> ``ToTensor``
    -> ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.

    Args:
        image: PIL image of any mode and size.
        image_size: output side ``s`` (448 for InternViT).

    Returns:
        ``(3, s, s) float32``, ImageNet-normalised (about [-2.2, 2.7]).
    """
    return normalize_uint8(image_to_uint8_tensor(image, image_size))


# ---------------------------------------------------------------------------
# InternVL dynamic tiling
# ---------------------------------------------------------------------------
def find_closest_grid(width: int, height: int, min_num: int = 1,
                      max_num: int = 12,
                      image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """InternVL's grid choice for dynamic resolution.

    Candidates are all ``(cols, rows)`` with ``min_num <= cols * rows <=
    max_num``, walked by ascending tile count. The grid whose ``cols / rows``
    is closest to ``width / height`` wins; on an exact tie the later (larger)
    grid wins only if ``width * height > 0.5 * image_size**2 * cols * rows``.

    Returns:
        ``(cols, rows)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f'image size must be positive, got {width}x{height}')
    if not 1 <= min_num <= max_num:
        raise ValueError(f'need 1 <= min_num <= max_num, got {min_num}, '
                         f'{max_num}')
    aspect = width / height
    grids = sorted({(i, j)
                    for n in range(min_num, max_num + 1)
                    for i in range(1, n + 1) for j in range(1, n + 1)
                    if min_num <= i * j <= max_num},
                   key=lambda g: g[0] * g[1])
    best, best_diff = (1, 1), float('inf')
    area = width * height
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size \
                * cols * rows:
            best = (cols, rows)
    return best


def dynamic_tiles(image: Image.Image, min_num: int = 1, max_num: int = 12,
                  image_size: int = IMAGE_SIZE, use_thumbnail: bool = True,
                  resampler: str = 'pil') -> list[Image.Image]:
    """Cut an image into InternVL dynamic-resolution tiles.

    The image is resized (PIL default filter, bicubic) to ``(image_size *
    cols, image_size * rows)`` for the grid of :func:`find_closest_grid` and
    cut into ``cols * rows`` tiles in row-major order. With
    ``use_thumbnail`` and more than one tile, the whole image resized to
    ``image_size`` is appended as the last tile.

    Args:
        image: PIL image (converted to RGB).
        resampler: ``'pil'`` (the rule) or ``'torch'`` (opt-in fast resize,
            :func:`~projects.sa2va.transforms.resample.resize_image`).

    Returns:
        list of ``1 .. max_num + 1`` RGB PIL images of ``image_size`` square.
    """
    image = _to_rgb(image)
    width, height = image.size
    cols, rows = find_closest_grid(width, height, min_num, max_num,
                                   image_size)
    resized = resize_image(image, (image_size * cols, image_size * rows),
                           resampler)
    tiles = []
    for k in range(cols * rows):
        left, top = (k % cols) * image_size, (k // cols) * image_size
        tiles.append(
            resized.crop((left, top, left + image_size, top + image_size)))
    if use_thumbnail and len(tiles) > 1:
        tiles.append(resize_image(image, (image_size, image_size),
                                  resampler))
    return tiles


# ---------------------------------------------------------------------------
# SAM2 input
# ---------------------------------------------------------------------------
def sam2_pixel_values(image: Image.Image, size: int = SAM2_IMAGE_SIZE,
                      resampler: str = 'pil') -> torch.Tensor:
    """SAM2 input: direct resize (aspect ratio not kept), raw bytes.

    ``image.convert('RGB').resize((size, size))`` with PIL's default filter
    (bicubic for RGB), channels first, no normalisation (the model does it).
    Always made from the raw pixels, never from a normalised tensor.

    ``resampler='torch'``: the opt-in fast resize instead
    (:func:`~projects.sa2va.transforms.resample.resize_image`).

    Returns:
        ``(3, size, size) uint8``, values 0..255, channels-last in memory
        (see :func:`stack_uint8_images`).
    """
    return stack_uint8_images([sam2_resize(image, size, resampler)])[0]


def sam2_resize(image: Image.Image, size: int = SAM2_IMAGE_SIZE,
                resampler: str = 'pil') -> Image.Image:
    """``convert('RGB').resize((size, size))``, PIL's default filter (or the
    opt-in fast ``resampler='torch'``)."""
    return resize_image(_to_rgb(image), (size, size), resampler)


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------
def _check_rle_size(segmentation: dict, height: int, width: int) -> None:
    size = segmentation.get('size')
    if size is None:
        raise ValueError('RLE dict has no "size" field')
    if len(size) != 2 or (int(size[0]), int(size[1])) != (height, width):
        raise ValueError(f'RLE size {list(size)} differs from the image size '
                         f'[{height}, {width}] (size is [height, width])')


def decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Decode one COCO-style object mask at the image size.

    Accepted encodings (``docs/datasets.md``):

    * polygon list: ``[[x1, y1, x2, y2, ...], ...]``, each polygon at least
      3 points; several polygons are merged (union);
    * uncompressed RLE: ``{'size': [h, w], 'counts': [int, ...]}``
      (column-major runs starting with 0s, summing to ``h * w``);
    * compressed RLE: ``{'size': [h, w], 'counts': str | bytes}``.

    Args:
        segmentation: one of the encodings above.
        height, width: the image size the mask belongs to.

    Returns:
        ``(height, width) uint8`` with values in {0, 1}.

    Raises:
        ValueError: size mismatch, counts not summing to ``h * w``,
            unparseable counts, degenerate polygon, empty polygon list.
        TypeError: an encoding of unknown type.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f'image size must be positive, got {height}x{width}')
    if isinstance(segmentation, dict):
        _check_rle_size(segmentation, height, width)
        counts = segmentation.get('counts')
        if isinstance(counts, (list, tuple, np.ndarray)):
            runs = np.asarray(counts)
            if runs.ndim != 1 or not np.issubdtype(runs.dtype, np.integer):
                raise ValueError('uncompressed RLE counts must be a flat list '
                                 'of integers')
            if (runs < 0).any():
                raise ValueError('uncompressed RLE counts has a negative run')
            if int(runs.sum()) != height * width:
                raise ValueError(
                    f'uncompressed RLE counts sum to {int(runs.sum())}, '
                    f'expected height * width = {height * width}')
            rle = mask_utils.frPyObjects(
                {'size': [height, width], 'counts': [int(r) for r in runs]},
                height, width)
        elif isinstance(counts, (str, bytes, bytearray)):
            runs = rle_counts_from_string(counts)
            if int(runs.sum()) != height * width:
                raise ValueError(
                    f'compressed RLE counts decode to {int(runs.sum())} '
                    f'pixels, expected height * width = {height * width}')
            raw = counts.encode('ascii') if isinstance(counts, str) \
                else bytes(counts)
            rle = {'size': [height, width], 'counts': raw}
        else:
            raise TypeError(f'RLE counts must be a list, str or bytes, got '
                            f'{type(counts).__name__}')
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)
    if isinstance(segmentation, (list, tuple)):
        if len(segmentation) == 0:
            raise ValueError('polygon list is empty')
        polygons = []
        for i, poly in enumerate(segmentation):
            if not isinstance(poly, (list, tuple, np.ndarray)) or \
                    any(isinstance(v, (list, tuple)) for v in poly):
                raise TypeError(f'polygon {i} must be a flat list of '
                                f'coordinates [x1, y1, x2, y2, ...]')
            if len(poly) % 2 != 0:
                raise ValueError(f'polygon {i} has an odd number of '
                                 f'coordinates ({len(poly)})')
            if len(poly) < 6:
                raise ValueError(f'polygon {i} is degenerate: '
                                 f'{len(poly) // 2} points, need at least 3')
            polygons.append([float(v) for v in poly])
        rles = mask_utils.frPyObjects(polygons, height, width)
        rle = mask_utils.merge(rles)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)
    raise TypeError(f'unknown segmentation type {type(segmentation).__name__}'
                    f' (expected a polygon list or an RLE dict)')


def _as_mask_stack(masks) -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f'masks must be a tensor or ndarray, got '
                        f'{type(masks).__name__}')
    if masks.ndim != 3:
        raise ValueError(f'masks must be (n_obj, H, W), got shape '
                         f'{tuple(masks.shape)}')
    return masks


def _cell_coverage(mask: torch.Tensor, grid_h: int,
                   grid_w: int | None = None) -> torch.Tensor:
    """Pixels of ``mask (H, W)`` falling in each of ``grid_h x grid_w``
    cells (``grid_w`` defaults to ``grid_h``: a square grid).

    Pixel row ``y`` belongs to cell row ``y * grid_h // H`` (and likewise
    for columns), so cells tile the original image exactly.

    Returns:
        ``(grid_h, grid_w) float64`` pixel counts.
    """
    grid_w = grid_h if grid_w is None else grid_w
    h, w = mask.shape
    rows = torch.arange(h, device=mask.device) * grid_h // h
    cols = torch.arange(w, device=mask.device) * grid_w // w
    row_onehot = F.one_hot(rows, grid_h).to(torch.float64)  # (H, gh)
    col_onehot = F.one_hot(cols, grid_w).to(torch.float64)  # (W, gw)
    return row_onehot.T @ (mask != 0).to(torch.float64) @ col_onehot


def repair_empty_prompt_masks(masks, pooled: torch.Tensor
                              ) -> tuple[torch.Tensor, int]:
    """Give every non-empty object whose pooled mask vanished one grid cell.

    The cell chosen is the one the object covers with the most pixels at
    the original resolution (ties: first in row-major order). Objects that
    are empty at the original size, and objects whose pooled mask has any
    True cell, are left unchanged.

    Args:
        masks: ``(n_obj, H, W)`` source masks (any dtype, non-zero = object).
        pooled: ``(n_obj, g, g) bool`` result of the pooling rule (or
            ``(n_obj, gh, gw)``: a rectangular grid, Qwen-VL's merged grid).

    Returns:
        ``(pooled, n_repaired)``: a new tensor of ``pooled``'s shape and the
        number of objects that got a cell.
    """
    masks = _as_mask_stack(masks)
    grid_h, grid_w = pooled.shape[-2:]
    out = pooled.clone()
    repaired = 0
    for i in range(masks.shape[0]):
        if out[i].any() or not masks[i].any():
            continue
        coverage = _cell_coverage(masks[i], grid_h, grid_w).flatten()
        cell = int(torch.argmax(coverage))
        out[i].view(-1)[cell] = True
        repaired += 1
    return out, repaired


def pool_prompt_masks(masks, grid: int = GRID_SIZE, mode: str = 'nearest',
                      vision_size: int = IMAGE_SIZE,
                      ensure_nonempty: bool = False) -> torch.Tensor:
    """Reduce object masks to the vision feature grid (visual prompts).

    * ``'nearest'`` (Osprey): ``F.interpolate(masks[None], (g, g),
      mode='nearest')[0]``, True where non-zero.
    * ``'area'`` (Describe Anything): NEAREST resize to ``(vision_size,
      vision_size)``, ``F.adaptive_avg_pool2d`` to ``(g, g)``, ``> 0.5``.

    The nearest resizes sample the pixels torch's rule reads
    (:func:`nearest_resize_masks`) instead of interpolating a float copy of
    the full-size masks: the same cells, a fraction of the work.

    Both are bit-exact to the seed with ``ensure_nonempty=False``. With
    ``ensure_nonempty=True``, a non-empty object whose pooled mask came out
    empty gets the single cell it covers most
    (:func:`repair_empty_prompt_masks`); nothing else changes.

    Args:
        masks: ``(n_obj, H, W)`` tensor or ndarray, any dtype, non-zero =
            object (uint8 {0, 1} from :func:`decode_mask`).
        grid: output side ``g`` (16 for InternVL2.5 at 448 px).
        mode: ``'nearest'`` or ``'area'``.
        vision_size: side of the vision input for the ``'area'`` rule.
        ensure_nonempty: see above.

    Returns:
        ``(n_obj, g, g) bool``.
    """
    masks = _as_mask_stack(masks)
    if masks.shape[0] == 0:
        return torch.zeros((0, grid, grid), dtype=torch.bool)
    if mode == 'nearest':
        pooled = nearest_resize_masks(masks, grid)
    elif mode == 'area':
        resized = nearest_resize_masks(masks, vision_size).to(torch.float32)
        pooled = F.adaptive_avg_pool2d(resized[None], (grid, grid))[0] > 0.5
    else:
        raise ValueError(f"unknown pooling mode {mode!r} (expected 'nearest' "
                         f"or 'area')")
    if ensure_nonempty:
        pooled, _ = repair_empty_prompt_masks(masks, pooled)
    return pooled


def region_token_counts(prompt_masks) -> list[int]:
    """``<IMG_CONTEXT>`` count of each region: its True cells.

    Args:
        prompt_masks: ``(n_obj, g, g)`` bool / uint8.

    Returns:
        list of ``n_obj`` ints.
    """
    prompt_masks = _as_mask_stack(prompt_masks)
    return [int(v) for v in (prompt_masks != 0).flatten(1).sum(1).tolist()]


def visual_prompt_text(counts: Sequence[int], compact: bool = False) -> str:
    """Sa2VA's region prompt for ``len(counts)`` regions.

    ``There are {N} part regions in the picture: region1<vp>{K1 x
    <IMG_CONTEXT>}</vp>, region2<vp>...</vp>.\\n`` ("regions" even for
    N = 1). With ``compact=True`` each run of ``K`` context tokens is
    written as the run marker of :mod:`projects.sa2va.transforms.text`
    (``<IMG_CONTEXT*K>``), which the conversation encoder expands to ids
    without tokenizing ``K`` strings.
    """
    from .text import context_run  # local: text imports transformers
    parts = []
    for i, k in enumerate(counts):
        if k < 0:
            raise ValueError(f'region {i + 1} has a negative token count {k}')
        run = context_run(k) if compact else IMG_CONTEXT_TOKEN * k
        parts.append(f'region{i + 1}{VP_START_TOKEN}{run}{VP_END_TOKEN}')
    return (f'There are {len(counts)} part regions in the picture: '
            + ', '.join(parts) + '.\n')


# ---------------------------------------------------------------------------
# The owner's mask <-> caption "option A" pair
# ---------------------------------------------------------------------------
def _mask_to_array(mask) -> np.ndarray:
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    elif mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f'mask must be (H, W), got shape {mask.shape}')
    return mask


def resize_mask_nearest(mask, size: int = SAM2_IMAGE_SIZE) -> torch.Tensor:
    """A GT mask at ``(size, size)``: binarise, PIL NEAREST resize.

    Args:
        mask: ``(H, W)`` array / tensor / PIL image, non-zero = object (0/1,
            0/255 or bool; an 8-bit mask is never divided by 255).

    Returns:
        ``(size, size) float32`` in {0, 1}.
    """
    binary = Image.fromarray((_mask_to_array(mask) != 0).astype(np.uint8))
    out = np.asarray(binary.resize((size, size), Image.NEAREST))
    return torch.from_numpy(out.astype(np.float32))


def mask_caption_item(image: Image.Image, mask, caption: str | None = None,
                      size: int = SAM2_IMAGE_SIZE, as_uint8: bool = False
                      ) -> dict:
    """One sample of the owner's mask <-> caption data ("option A").

    * ``image1``: RGB, PIL bilinear resize to ``(size, size)``, ToTensor,
      ImageNet Normalize -> ``(3, size, size) float32``; with ``as_uint8``
      the resized bytes ``(3, size, size) uint8`` 0..255 instead (a quarter
      of the bytes; :func:`option_a_tiles` normalises them on device,
      bit-identical to ToTensor + Normalize).
    * ``mask1``: PIL nearest resize to ``(size, size)`` of the binarised
      mask -> ``(size, size) float32`` in {0, 1} (``uint8`` with
      ``as_uint8``; an 8-bit 0/1 mask is not divided by 255; a 0/255 mask
      gives the same result).
    * ``g_pixel_values``: the SAM2 input from the raw pixels
      (:func:`sam2_pixel_values`) -> ``(3, size, size) uint8``; never made
      by scaling ``image1``.
    * ``caption``: passed through.

    Args:
        image: PIL image, original size ``(W, H)``.
        mask: ``(H, W)`` array / tensor / PIL image, non-zero = object
            (0/1, 0/255 or bool).
    """
    image = _to_rgb(image)
    array = _mask_to_array(mask)
    if array.shape != (image.height, image.width):
        raise ValueError(f'mask shape {array.shape} differs from the image '
                         f'size (H, W) = {(image.height, image.width)}')
    resized = image.resize((size, size), Image.BILINEAR)
    if as_uint8:
        image1 = stack_uint8_images([resized])[0]
        mask1 = resize_mask_nearest(array, size).to(torch.uint8)
    else:
        image1 = TF.normalize(TF.to_tensor(resized), IMAGENET_MEAN,
                              IMAGENET_STD)
        mask1 = resize_mask_nearest(array, size)
    return dict(image1=image1, mask1=mask1,
                g_pixel_values=sam2_pixel_values(image, size),
                caption=caption)


def option_a_tiles(images: torch.Tensor, image_size: int = IMAGE_SIZE,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Option A's vision tiles: ``(B, 3, S, S)`` float ImageNet-normalised,
    or uint8 0..255 (normalised here first, :func:`normalize_uint8`) ->
    ``(B, 3, image_size, image_size)`` (bilinear, ``align_corners=False``),
    float (float32 for uint8 input)."""
    if images.ndim != 4:
        raise ValueError(f'expected images (B, 3, S, S), got '
                         f'{tuple(images.shape)}')
    if images.dtype == torch.uint8:
        images = normalize_uint8(images, mean, std)
    return F.interpolate(images, size=(image_size, image_size),
                         mode='bilinear', align_corners=False)


def option_a_prompt_masks(masks: torch.Tensor,
                          grid: int = GRID_SIZE) -> torch.Tensor:
    """Option A's prompt grids: ``(B, S, S)`` {0, 1} -> ``(B, grid, grid)
    bool`` (nearest; the same rule as :func:`pool_prompt_masks` 'nearest',
    :func:`nearest_resize_masks`)."""
    if masks.ndim != 3:
        raise ValueError(f'expected masks (B, S, S), got {tuple(masks.shape)}')
    return nearest_resize_masks(masks, grid)


def derive_mask_caption_batch(image1: torch.Tensor, mask1: torch.Tensor,
                              image_size: int = IMAGE_SIZE,
                              grid: int = GRID_SIZE) -> dict:
    """Batch-side "option A" derivation (runs on device).

    Args:
        image1: ``(B, 3, S, S)`` float ImageNet-normalised, or uint8 0..255
            (S = 1024).
        mask1: ``(B, S, S)`` float or uint8 in {0, 1}.

    Returns:
        dict with ``pixel_values (B, 3, image_size, image_size)``
        (:func:`option_a_tiles`), ``prompt_masks (B, grid, grid) bool``
        (:func:`option_a_prompt_masks`) and ``gt_masks (B, S, S)`` float
        (``mask1`` itself when float, for the loss after resizing to the
        prediction size).
    """
    if image1.ndim != 4 or mask1.ndim != 3:
        raise ValueError(f'expected image1 (B, 3, S, S) and mask1 (B, S, S), '
                         f'got {tuple(image1.shape)} and {tuple(mask1.shape)}')
    return dict(pixel_values=option_a_tiles(image1, image_size),
                prompt_masks=option_a_prompt_masks(mask1, grid),
                gt_masks=mask1 if mask1.is_floating_point() else mask1.float())
