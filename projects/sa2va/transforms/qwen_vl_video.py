"""Video frames to a Qwen-VL backbone (Qwen2.5-VL, Qwen3-VL): two layouts.

``video_mode='frames'`` (default) is the official Sa2VA-Qwen rule: every
sampled frame is an *image* (the image processor on each frame with
``min_pixels = 128 * 28 * 28``, ``max_pixels = 512 * 28 * 28``; the frames of
one video share one size), so the text has one image block per frame,
``'\\n'``-joined, and ``image_grid_thw`` one ``(1, gh, gw)`` row per frame
(each frame repeated to the two temporal slices of the patch embedding).

``video_mode='temporal_pairs'`` is Qwen's native video input, as its video
processors build it: consecutive frames stacked in temporal patch pairs (an
odd count padded by repeating the last frame), ``pixel_values_videos`` and
one ``video_grid_thw = (T' / 2, gh, gw)`` row, ``<|video_pad|>`` tokens:

* Qwen2.5-VL: one block ``<|vision_start|>`` + ``<|video_pad|>`` x
  ``t * gh * gw / 4`` + ``<|vision_end|>``; the rotary time index of
  temporal group ``k`` is ``k * tokens_per_second * second_per_grid_ts``
  with ``second_per_grid_ts = 2 / sampled_fps`` (the processor's rule:
  ``sampled_fps = T / num_video_frames * fps``, or ``fps`` when the video's
  length is unknown).
* Qwen3-VL: per temporal group ``k`` the text ``<{s:.1f} seconds>`` and a
  block of ``gh * gw / 4`` ``<|video_pad|>``; ``s`` is the mean time of the
  group's two frames (``frame index / fps``, the padded frame repeating the
  last index), as ``Qwen3VLProcessor`` writes it. Its ``get_rope_index``
  splits ``video_grid_thw`` into one ``t = 1`` grid per group.

Sizes: all frames get ONE size, from the first frame: ``smart_resize`` of
:mod:`~projects.sa2va.transforms.qwen_vl` with the per-frame pixel budget
(Qwen3-VL's video processor bounds the whole clip instead: there the budget
is scaled by the frame count, which for an even count is the per-frame rule,
see :func:`qwen3_video_size`).

Frame times (``temporal_pairs`` only) use the sample's own frame list:
``frame_indices`` (SampleVideoFrames; default ``0 .. T-1``) and
``num_video_frames`` in the same unit, ``fps`` = frames per second of that
list (an argument, or ``results['video_fps']`` when a dataset knows it).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..constants import IMAGE_TOKENS
from ..registry import TRANSFORMS
from .base import BaseTransform, RecordError, require
from .pixels import check_resampler, resize_image
from .qwen_vl import QWEN_VL_PRESETS, image_to_patches, normalize_patches, smart_resize

__all__ = ['QWEN_VL_VIDEO_MODES', 'FRAME_MIN_PIXELS', 'FRAME_MAX_PIXELS',
           'QWEN_VIDEO_TOKENS', 'qwen3_video_size', 'qwen3_timestamps',
           'video_token_text', 'QwenVLVideoInput']

QWEN_VL_VIDEO_MODES = ('frames', 'temporal_pairs')
#: the official Sa2VA-Qwen per-frame budget (``base.py``: min/max_pixels_multi,
#: the same numbers for Qwen2.5-VL and Qwen3-VL).
FRAME_MIN_PIXELS = 128 * 28 * 28
FRAME_MAX_PIXELS = 512 * 28 * 28
#: vision start, video token, vision end of the Qwen-VL tokenizers (the
#: image block's start / end of ``IMAGE_TOKENS['qwen_vl']``).
QWEN_VIDEO_TOKENS = (IMAGE_TOKENS['qwen_vl'][0], '<|video_pad|>', IMAGE_TOKENS['qwen_vl'][2])


def qwen3_video_size(num_frames: int, height: int, width: int, factor: int,
                     temporal: int, min_pixels: int, max_pixels: int) -> Tuple[int, int]:
    """Qwen3-VL's video resize rule: ``(h, w)`` multiples of ``factor`` with
    the clip's ``t' * h * w`` (``t'`` = the frame count rounded to a multiple
    of ``temporal``) kept in ``[min_pixels, max_pixels]``; sides under
    ``factor`` are first scaled up. ``num_frames < temporal`` raises, as in
    the processor."""
    if num_frames < temporal:
        raise ValueError(f'{num_frames} frames: Qwen3-VL video needs >= {temporal}')
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f'aspect ratio of {height} x {width} exceeds 200')
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen3_timestamps(frame_indices: Sequence[int], fps: float, temporal: int = 2) -> List[float]:
    """Seconds of each temporal group: the indices padded to a multiple of
    ``temporal`` by repeating the last, ``index / fps``, the mean of each
    group's first and last frame (``Qwen3VLProcessor``'s rule)."""
    idx = [int(i) for i in frame_indices]
    idx += [idx[-1]] * (-len(idx) % temporal)
    secs = [i / fps for i in idx]
    return [(secs[k] + secs[k + temporal - 1]) / 2 for k in range(0, len(secs), temporal)]


def video_token_text(num_groups: int, tokens_per_group: int,
                     timestamps: Optional[Sequence[float]] = None) -> str:
    """The text of a native Qwen-VL video: one ``<|vision_start|>`` +
    ``<|video_pad|>`` x (``num_groups * tokens_per_group``) +
    ``<|vision_end|>`` block (Qwen2.5-VL), or with ``timestamps`` (one per
    group, Qwen3-VL) ``<s seconds>`` + a block of ``tokens_per_group`` per
    group, concatenated without separator."""
    start, pad, end = QWEN_VIDEO_TOKENS
    if timestamps is None:
        return start + pad * (num_groups * tokens_per_group) + end
    if len(timestamps) != num_groups:
        raise ValueError(f'{len(timestamps)} timestamps for {num_groups} temporal groups')
    return ''.join(f'<{s:.1f} seconds>' + start + pad * tokens_per_group + end
                   for s in timestamps)


@TRANSFORMS.register_module()
class QwenVLVideoInput(BaseTransform):
    """Sampled frames -> Qwen-VL patches, grids and token counts.

    Required Keys: ``key`` (default ``'frames'``: list of T PIL RGB frames
    of one size, from ``LoadFrames`` / ``LoadVideoFrames``). A ``text_only``
    sample is left as it is. ``temporal_pairs`` also reads
    ``frame_indices``, ``num_video_frames`` and ``video_fps`` when present.

    Added Keys, ``video_mode='frames'``: ``pixel_values (T * gh * gw, 3 * 2 *
    p * p) float32`` normalised (per frame the image processor's patches;
    ``uint8`` with ``as_uint8``),
    ``image_grid_thw (T, 3) long`` (rows ``(1, gh, gw)``), ``num_frames``
    (T) and ``num_frame_tokens`` (``gh * gw / merge ** 2``, the merged
    tokens of each frame's image block).

    ``video_mode='temporal_pairs'``: ``pixel_values_videos (t * gh * gw, 3 *
    2 * p * p) float32`` (or ``uint8``), ``video_grid_thw (1, 3) long = (t,
    gh, gw)`` with ``t = ceil(T / 2)``, ``num_frames`` (T),
    ``num_video_tokens`` (``t * gh * gw / merge ** 2``),
    ``video_token_text`` (the text that replaces ``<image>``,
    :func:`video_token_text`) and for Qwen2.5-VL ``second_per_grid_ts (1,)
    float``.

    Args:
        backbone: a key of ``QWEN_VL_PRESETS`` (patch size, merge, mean/std).
        video_mode: ``'frames'`` or ``'temporal_pairs'``.
        min_pixels, max_pixels: per-frame pixel budget (default the
            official Sa2VA-Qwen video numbers).
        fps: frames per second of the sample's frame list
            (``temporal_pairs`` only; ``results['video_fps']`` wins).
        key: results key of the frames.
        resampler: ``'pil'`` (the processors' bicubic through PIL) or
            ``'torch'``.
        as_uint8: keep the patches' bytes (``uint8`` 0..255, 4 x fewer
            bytes to the trainer); ``Sa2VADataPreprocessor(qwen_vl_stats=
            backbone)`` normalises ``pixel_values`` / ``pixel_values_videos``
            on device with the same float32 operations. A batch's images and
            frames must agree (the collate raises on mixed dtypes).
    """

    def __init__(self, backbone: str = 'qwen2_5_vl', video_mode: str = 'frames',
                 min_pixels: int = FRAME_MIN_PIXELS, max_pixels: int = FRAME_MAX_PIXELS,
                 fps: Optional[float] = None, key: str = 'frames', resampler: str = 'pil',
                 as_uint8: bool = False):
        if backbone not in QWEN_VL_PRESETS:
            raise ValueError(f'unknown Qwen-VL backbone {backbone!r}; one of '
                             f'{sorted(QWEN_VL_PRESETS)}')
        if video_mode not in QWEN_VL_VIDEO_MODES:
            raise ValueError(f'unknown video_mode {video_mode!r}; one of {QWEN_VL_VIDEO_MODES}')
        if fps is not None and not fps > 0:
            raise ValueError(f'fps must be > 0, got {fps!r}')
        self.backbone, self.video_mode = backbone, video_mode
        self.cfg = dict(QWEN_VL_PRESETS[backbone], min_pixels=int(min_pixels),
                        max_pixels=int(max_pixels))
        self.fps, self.key, self.as_uint8 = fps, key, as_uint8
        self.resampler = check_resampler(resampler)

    # ---------------------------------------------------------------- sizes
    def frame_size(self, num_frames: int, height: int, width: int) -> Tuple[int, int]:
        """``(h, w)`` every frame is resized to (see the module docstring)."""
        c = self.cfg
        factor = c['patch_size'] * c['merge_size']
        if self.video_mode == 'temporal_pairs' and self.backbone == 'qwen3_vl':
            n = max(num_frames, c['temporal_patch_size'])
            return qwen3_video_size(n, height, width, factor, c['temporal_patch_size'],
                                    c['min_pixels'] * n, c['max_pixels'] * n)
        return smart_resize(height, width, factor, c['min_pixels'], c['max_pixels'])

    def _pixels(self, frames: Sequence[Image.Image]) -> torch.Tensor:
        """``(T, 3, h, w) uint8``: every frame resized to :meth:`frame_size`."""
        first = frames[0]
        if any(f.size != first.size for f in frames):
            raise RecordError('frame_size_mismatch', f'frames differ in size '
                              f'{sorted({f.size for f in frames})}')
        h, w = self.frame_size(len(frames), first.height, first.width)
        arr = np.stack([np.asarray(resize_image(f.convert('RGB'), (w, h), self.resampler),
                                   dtype=np.uint8) for f in frames])
        return torch.from_numpy(arr).permute(0, 3, 1, 2)

    def _patches(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """:func:`image_to_patches` of ``(2 t, 3, h, w) uint8``, normalised
        (:func:`normalize_patches`) unless ``as_uint8``."""
        c = self.cfg
        patches, grid = image_to_patches(pixels, c['patch_size'], c['merge_size'],
                                         c['temporal_patch_size'])
        if not self.as_uint8:
            patches = normalize_patches(patches, c['mean'], c['std'])
        return patches, grid

    def _fps(self, results: dict) -> float:
        fps = results.get('video_fps', self.fps)
        if fps is None:
            raise ValueError("QwenVLVideoInput(video_mode='temporal_pairs') needs fps= (frames "
                             "per second of the sample's frame list) or results['video_fps']")
        return float(fps)

    # ------------------------------------------------------------ transform
    def transform(self, results: dict) -> dict:
        if results.get('text_only'):
            return results
        frames, = require(results, self.key, where='QwenVLVideoInput')
        if not frames:
            raise RecordError('no_frames', f'results[{self.key!r}] has no frames')
        c = self.cfg
        merge, tps = c['merge_size'], c['temporal_patch_size']
        pixels = self._pixels(frames)
        n = pixels.shape[0]
        results['num_frames'] = n
        if self.video_mode == 'frames':
            patches, grid = self._patches(pixels.repeat_interleave(tps, dim=0))
            results['pixel_values'] = patches
            results['image_grid_thw'] = torch.tensor([[1, int(grid[1]), int(grid[2])]] * n)
            results['num_frame_tokens'] = int(grid[1] * grid[2]) // merge ** 2
            return results
        if n % tps:
            pixels = torch.cat([pixels, pixels[-1:].expand(tps - n % tps, -1, -1, -1)])
        patches, grid = self._patches(pixels)
        per_group = int(grid[1] * grid[2]) // merge ** 2
        t = int(grid[0])
        results['pixel_values_videos'] = patches
        results['video_grid_thw'] = grid[None]
        results['num_video_tokens'] = t * per_group
        fps = self._fps(results)
        indices = results.get('frame_indices')
        indices = list(range(n)) if indices is None else [int(i) for i in indices]
        if len(indices) != n:
            raise RecordError('frame_count_mismatch', f'{len(indices)} frame_indices for '
                              f'{n} frames')
        if self.backbone == 'qwen3_vl':
            results['video_token_text'] = video_token_text(
                t, per_group, qwen3_timestamps(indices, fps, tps))
        else:
            total = results.get('num_video_frames')
            sampled_fps = fps if total is None else n / int(total) * fps
            results['second_per_grid_ts'] = torch.tensor([tps / sampled_fps])
            results['video_token_text'] = video_token_text(t, per_group)
        return results
