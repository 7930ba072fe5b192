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
  optional ``ensure_nonempty``); the region's ``<|image_pad|>`` count is its
  True cells on that grid.

Pipeline steps (a Qwen-VL model config swaps them in for the InternVL steps
of every dataset pipeline, ``MixedDataset(pipeline_swaps=...)``, never
inside a dataset): :class:`QwenVLImageInput` for ``DynamicTiles`` +
``ImagesToTensor`` (frames: ``qwen_vl_video.QwenVLVideoInput``),
:class:`QwenVLPoolPromptMasks` for ``PoolPromptMasks``,
:class:`QwenVLMaskCaptionOutputs` for ``MaskCaptionOutputs``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..registry import TRANSFORMS
from .base import BaseTransform, bump, require
from .functional import (_as_mask_stack, normalize_uint8,
                         repair_empty_prompt_masks, sam2_pixel_values)
from .mask_caption import MaskCaptionOutputs, nearest_mask
from .masks import PoolPromptMasks
from .pixels import check_resampler, nearest_indices, resize_image

__all__ = ['QWEN_VL_PRESETS', 'smart_resize', 'image_to_patches',
           'pool_prompt_masks_grid', 'normalize_patches', 'qwen_vl_image', 'QwenVLImageInput',
           'QwenVLPoolPromptMasks', 'QwenVLMaskCaptionOutputs', 'qwen_vl_pipeline_swaps',
           'tiny_qwen_vl_pipeline_swaps']

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
        pooled, _ = repair_empty_prompt_masks(masks.cpu(), pooled)
    return pooled


def normalize_patches(patches: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 patches -> the processor's normalised patches.

    Args:
        patches: ``(n, 3 * L) uint8`` (channel-major features, as
            :func:`image_to_patches` lays out ``(3, T, p, p)``).
        mean, std: per-channel statistics of the backbone.

    Returns:
        ``(n, 3 * L)`` ``dtype``: ``(x / 255 - mean) / std`` in float32 (the
        float32 operations of :func:`~projects.sa2va.transforms.functional.
        normalize_uint8`, so the data preprocessor gives the same bits as a
        worker that normalises).
    """
    n = patches.shape[0]
    return normalize_uint8(patches.reshape(n, 3, -1, 1), mean, std, dtype).reshape(n, -1)


def qwen_vl_image(image: Image.Image, cfg: dict, resampler: str = 'pil',
                  as_uint8: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """One RGB image -> the processor's ``(patches (n, 3 * 2 * p * p),
    grid_thw (3,) long)``: :func:`smart_resize` with ``cfg``'s budget,
    resize (``resampler``), patches; float32 ``/ 255``, mean / std
    (:func:`normalize_patches`), or the uint8 bytes with ``as_uint8``."""
    merge, patch = cfg['merge_size'], cfg['patch_size']
    h, w = smart_resize(image.height, image.width, patch * merge,
                        cfg['min_pixels'], cfg['max_pixels'])
    resized = resize_image(image.convert('RGB'), (w, h), resampler)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)
    patches, grid = image_to_patches(pixels, patch, merge, cfg['temporal_patch_size'])
    if not as_uint8:
        patches = normalize_patches(patches, cfg['mean'], cfg['std'])
    return patches, grid


def _preset(backbone: str, min_pixels: Optional[int], max_pixels: Optional[int]) -> dict:
    if backbone not in QWEN_VL_PRESETS:
        raise ValueError(f'unknown Qwen-VL backbone {backbone!r}; one of '
                         f'{sorted(QWEN_VL_PRESETS)}')
    cfg = dict(QWEN_VL_PRESETS[backbone])
    if min_pixels is not None:
        cfg['min_pixels'] = int(min_pixels)
    if max_pixels is not None:
        cfg['max_pixels'] = int(max_pixels)
    return cfg


def _merged_grid(grid_thw, cfg: dict) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((gh, gw) merged grid, (H', W') resized image)`` of one image's
    ``grid_thw`` row ``(1, H' / p, W' / p)``."""
    _, gh, gw = (int(v) for v in grid_thw)
    merge, patch = cfg['merge_size'], cfg['patch_size']
    return (gh // merge, gw // merge), (gh * patch, gw * patch)


@TRANSFORMS.register_module()
class QwenVLImageInput(BaseTransform):
    """One image -> Qwen-VL patches, grid and token count.

    Replaces ``DynamicTiles`` + ``ImagesToTensor`` of an image pipeline for
    a Qwen-VL backbone (``MixedDataset(pipeline_swaps=...)``, see
    ``configs/_base_/models/sa2va_qwen2_5_vl_tiny.py``). A ``text_only``
    sample (LLaVA without image) is left as it is.

    Required Keys: ``image`` (PIL RGB, from ``LoadImage``).

    Added Keys: ``pixel_values (n_patches, 3 * 2 * p * p) float32``
    normalised (the processor's patches: a picture of ``H' x W'`` after
    :func:`smart_resize` gives ``n_patches = H' / p * W' / p``; ``uint8``
    0..255 with ``as_uint8``),
    ``image_grid_thw (1, 3) long = (1, H' / p, W' / p)``,
    ``num_image_tokens`` (int, ``H' * W' / (p * merge) ** 2``: the merged
    tokens of the image block).

    Args:
        backbone: a key of :data:`QWEN_VL_PRESETS`.
        min_pixels, max_pixels: the resize budget (default: the preset's,
            i.e. the processor's defaults; the official Sa2VA-Qwen single
            image uses ``512 * 28 * 28`` / ``2048 * 28 * 28``).
        key: ``'image'``, or ``'tiles'`` (the key of the ``ImagesToTensor``
            this step replaces: for Qwen-VL the tiles are the image itself,
            which is read from ``image``). Frames go to
            :class:`~projects.sa2va.transforms.qwen_vl_video.QwenVLVideoInput`.
        resampler: ``'pil'`` (the processors' bicubic) or ``'torch'``.
        as_uint8: keep the patches' bytes (4 x fewer bytes from worker to
            trainer); ``Sa2VADataPreprocessor(qwen_vl_stats=backbone)``
            normalises them on device, bit-identical. Every image and frame
            of a batch must agree (the collate raises on mixed dtypes).
    """

    KEYS = ('image', 'tiles')

    def __init__(self, backbone: str = 'qwen2_5_vl', min_pixels: Optional[int] = None,
                 max_pixels: Optional[int] = None, key: str = 'image',
                 resampler: str = 'pil', as_uint8: bool = False):
        if key not in self.KEYS:
            raise ValueError(f'QwenVLImageInput reads one image: key must be one of '
                             f'{self.KEYS}, got {key!r} (frames: QwenVLVideoInput)')
        self.cfg = _preset(backbone, min_pixels, max_pixels)
        self.backbone = backbone
        self.resampler = check_resampler(resampler)
        self.as_uint8 = as_uint8

    def transform(self, results: dict) -> dict:
        if results.get('text_only'):
            return results
        image, = require(results, 'image', where='QwenVLImageInput')
        if not isinstance(image, Image.Image):
            raise TypeError(f'QwenVLImageInput needs a PIL image in results["image"], '
                            f'got {type(image).__name__}')
        patches, grid = qwen_vl_image(image, self.cfg, self.resampler, self.as_uint8)
        results['pixel_values'] = patches
        results['image_grid_thw'] = grid[None]
        (gh, gw), _ = _merged_grid(grid, self.cfg)
        results['num_image_tokens'] = gh * gw
        return results


@TRANSFORMS.register_module()
class QwenVLPoolPromptMasks(PoolPromptMasks):
    """:class:`~projects.sa2va.transforms.masks.PoolPromptMasks` on the
    image's merged-token grid (Qwen-VL): the same rules and arguments, the
    grid ``(gh, gw) = image_grid_thw[0, 1:] / merge`` of the resized image
    instead of 16 x 16.

    * ``mode='nearest'``: torch's nearest rule from ``(H, W)`` to ``(gh,
      gw)``; ``'area'``: nearest to the resized image ``(H', W')``, mean
      per cell, ``> 0.5`` (:func:`pool_prompt_masks_grid`);
    * ``ensure_nonempty``: a region that vanished gets the cell it covers
      most (counted as ``prompt_mask_repaired``); ``min_cells``: a region
      with fewer cells rejects the sample (``RecordError('small_region')``);
      ``keep_gt``: keep ``masks``.

    Required Keys: ``masks (n_obj, H, W)``, ``image_grid_thw (1, 3)`` (from
    :class:`QwenVLImageInput`).

    Added Keys: ``prompt_masks (n_obj, gh, gw) bool``, ``region_token_counts``
    (list of n_obj ints: True cells, the ``<|image_pad|>`` count of each
    ``<vp>`` block), ``vp_overall_mask (1,) bool`` True.

    Args:
        backbone: a key of :data:`QWEN_VL_PRESETS` (patch and merge size).
        mode, ensure_nonempty, min_cells, keep_gt: as ``PoolPromptMasks``.
    """

    def __init__(self, backbone: str = 'qwen2_5_vl', mode: str = 'nearest',
                 ensure_nonempty: bool = True, min_cells: int = 0,
                 keep_gt: bool = False):
        super().__init__(mode=mode, ensure_nonempty=ensure_nonempty,
                         min_cells=min_cells, keep_gt=keep_gt)
        self.cfg = _preset(backbone, None, None)

    def _pool(self, masks, results: dict):
        grid, = require(results, 'image_grid_thw', where='QwenVLPoolPromptMasks')
        if grid.shape[0] != 1:
            raise ValueError(f'QwenVLPoolPromptMasks pools on one image, got '
                             f'image_grid_thw {grid.tolist()}')
        grid_hw, vision_hw = _merged_grid(grid[0], self.cfg)
        pooled = pool_prompt_masks_grid(masks, grid_hw, self.mode, vision_hw)
        return pooled, torch.ones(1, dtype=torch.bool)


@TRANSFORMS.register_module()
class QwenVLMaskCaptionOutputs(MaskCaptionOutputs):
    """The mask <-> caption tensors of frame 1 and frame 2 for a Qwen-VL
    backbone (replaces :class:`~projects.sa2va.transforms.mask_caption.
    MaskCaptionOutputs` in the Sa2VA mix; same inputs).

    Per frame ``k``: ``pixel_values{k} (n_patches, 3 * 2 * p * p) float32``,
    ``image_grid_thw{k} (1, 3) long``, ``num_image_tokens{k}`` (int), as
    :class:`QwenVLImageInput`; ``prompt_masks{k} (gh, gw) bool``, the
    frame's mask pooled to its merged grid (``prompt_mode``, and with
    ``ensure_nonempty`` the repair; ``prompt_k0_{k}`` / ``prompt_repaired``
    counted as in ``MaskCaptionOutputs``); ``g_pixel_values{k} (3, S, S)
    uint8`` and ``masks{k} (S, S) float32`` {0, 1} as its direct route. A
    single image gives ``*2`` = ``*1``. Plus ``caption``, ``dataset_type``,
    ``has_paired_frame``. ``MaskCaptionToSa2VA`` then takes one frame.

    Args:
        backbone, min_pixels, max_pixels, resampler, as_uint8: as
            :class:`QwenVLImageInput`.
        prompt_mode, ensure_nonempty, sam2_size: as ``MaskCaptionOutputs``.
    """


    def __init__(self, backbone: str = 'qwen2_5_vl', min_pixels: Optional[int] = None,
                 max_pixels: Optional[int] = None, prompt_mode: str = 'nearest',
                 ensure_nonempty: bool = False, sam2_size: int = 1024,
                 resampler: str = 'pil', as_uint8: bool = False):
        super().__init__(route='direct', prompt_mode=prompt_mode,
                         ensure_nonempty=ensure_nonempty, sam2_size=sam2_size,
                         as_uint8=as_uint8)
        self.cfg = _preset(backbone, min_pixels, max_pixels)
        self.resampler = check_resampler(resampler)

    def frame_keys(self) -> tuple:
        return ('pixel_values', 'image_grid_thw', 'num_image_tokens',
                'g_pixel_values', 'prompt_masks', 'masks')

    def frame_outputs(self, image, mask, results: dict, k: int) -> None:
        patches, grid = qwen_vl_image(image, self.cfg, self.resampler, self.as_uint8)
        grid_hw, vision_hw = _merged_grid(grid, self.cfg)
        masks = torch.as_tensor(mask)[None]
        pooled = pool_prompt_masks_grid(masks, grid_hw, self.prompt_mode, vision_hw)
        if not pooled.any():
            bump(results, f'prompt_k0_{k}')
            if self.ensure_nonempty:
                pooled, repaired = repair_empty_prompt_masks(masks, pooled)
                bump(results, 'prompt_repaired', repaired)
        results[f'pixel_values{k}'] = patches
        results[f'image_grid_thw{k}'] = grid[None]
        results[f'num_image_tokens{k}'] = grid_hw[0] * grid_hw[1]
        results[f'g_pixel_values{k}'] = sam2_pixel_values(image, self.sam2_size)
        results[f'prompt_masks{k}'] = pooled[0]
        results[f'masks{k}'] = nearest_mask(mask, self.sam2_size)


def qwen_vl_pipeline_swaps(backbone: str, min_pixels: Optional[int] = None,
                           max_pixels: Optional[int] = None,
                           video: Optional[dict] = None, as_uint8: bool = False) -> dict:
    """The ``MixedDataset(pipeline_swaps=...)`` table of a Qwen-VL backbone:
    the InternVL image steps of every family's pipeline -> the Qwen-VL ones.

    * ``DynamicTiles`` -> dropped (one picture per image);
    * ``ImagesToTensor`` -> by its ``key``: ``'tiles'`` (an image)
      :class:`QwenVLImageInput` (``min_pixels`` / ``max_pixels``),
      ``'frames'`` (a video) ``QwenVLVideoInput`` (``video``: its
      arguments, e.g. ``video_mode``, ``min_pixels``, ``max_pixels``);
    * ``PoolPromptMasks`` -> :class:`QwenVLPoolPromptMasks`, keeping the
      dataset's ``mode``, ``ensure_nonempty``, ``min_cells``, ``keep_gt``;
    * ``MaskCaptionOutputs`` -> :class:`QwenVLMaskCaptionOutputs` (same
      budget as images), keeping ``prompt_mode``, ``ensure_nonempty``,
      ``sam2_size``.

    Args:
        backbone: a key of :data:`QWEN_VL_PRESETS`.
        min_pixels, max_pixels: the image budget (None: the preset's).
        video: extra ``QwenVLVideoInput`` arguments.
        as_uint8: images, family 6 and video frames as uint8 patches,
            normalised by ``Sa2VADataPreprocessor(qwen_vl_stats=backbone)``
            (``video`` may not set it otherwise: the collate raises on a mix).

    Returns:
        a dict for the mix's ``pipeline_swaps``.
    """
    _preset(backbone, min_pixels, max_pixels)  # an unknown backbone fails here
    image_args = {k: v for k, v in (('min_pixels', min_pixels), ('max_pixels', max_pixels))
                  if v is not None}
    if as_uint8:
        image_args['as_uint8'] = True
    image = dict(type='QwenVLImageInput', backbone=backbone, **image_args,
                 _inherit_=('key', ))
    frames = dict(type='QwenVLVideoInput', backbone=backbone,
                  **dict(dict(as_uint8=True) if as_uint8 else {}, **(video or {})),
                  _inherit_=('key', ))
    return dict(
        DynamicTiles=None,
        ImagesToTensor=dict(_by_='key', _cases_=dict(tiles=image, frames=frames)),
        PoolPromptMasks=dict(type='QwenVLPoolPromptMasks', backbone=backbone,
                             _inherit_=('mode', 'ensure_nonempty', 'min_cells', 'keep_gt')),
        MaskCaptionOutputs=dict(type='QwenVLMaskCaptionOutputs', backbone=backbone, **image_args,
                                _inherit_=('prompt_mode', 'ensure_nonempty', 'sam2_size')))


def tiny_qwen_vl_pipeline_swaps(backbone: str) -> dict:
    """:func:`qwen_vl_pipeline_swaps` with the tiny configs' budget: at most
    4 x 4 merged tokens per image or frame (videos at least 2 x 2), so a CPU
    step stays short."""
    cfg = _preset(backbone, None, None)
    unit = cfg['patch_size'] * cfg['merge_size']
    return qwen_vl_pipeline_swaps(
        backbone, max_pixels=(4 * unit) ** 2,
        video=dict(min_pixels=(2 * unit) ** 2, max_pixels=(4 * unit) ** 2))
