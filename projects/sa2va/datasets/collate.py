"""Batching: one dict of model inputs from a list of samples."""
from __future__ import annotations

from typing import Sequence

import torch

from ..constants import IGNORE_INDEX, IMAGE_SIZE
from ..registry import FUNCTIONS


def _as_long(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(
        x, dtype=torch.long)


_OPTION_A_HINT = ('every option-A sample of a batch must have the same size '
                  'and dtype (MaskCaptionOutputs sam2_size, as_uint8)')


@FUNCTIONS.register_module()
def sa2va_collate_fn(instances: Sequence[dict], pad_index: int = 0,
                     dummy_image_for_text_only: bool = True,
                     image_size: int = IMAGE_SIZE) -> dict:
    """Collate Sa2VA samples of any family into one batch.

    Per sample (keys present depend on the family): ``input_ids``,
    ``labels`` (lists or 1-D tensors), ``pixel_values (n_i, 3, s, s)``
    (uint8 or float, the same for every sample of a batch),
    ``g_pixel_values`` ``(3, S, S)`` or ``(T, 3, S, S)`` uint8, ``masks``
    ``(n_obj * T, H, W)``, ``prompt_masks (n_obj, g, g)``,
    ``vp_overall_mask (n_i,)``, ``option_a_image``/``option_a_mask``
    (mask <-> caption, option A),
    ``data_stats`` (dict of counters), ``meta`` (dict).

    Args:
        instances: samples from the dataset pipelines.
        pad_index: id used to pad ``input_ids`` (the tokenizer's pad id).
        dummy_image_for_text_only: give each text-only sample one zero tile
            with ``image_flags`` 0 (InternVL's convention), so the vision
            tower and projector take part in every step (no unused
            parameters under DDP) while contributing nothing.
        image_size: side of the dummy tile when no sample of the batch has
            tiles (otherwise it takes their shape).

    Returns:
        dict with

        * ``input_ids (B, L) long`` padded with ``pad_index``;
          ``labels (B, L) long`` padded with -100;
          ``attention_mask (B, L) bool`` (from the lengths, not from the pad
          id, which may occur inside a sequence); ``position_ids (B, L)
          long`` (0..len-1, 0 on padding);
        * ``pixel_values (N, 3, s, s)``: all tiles/frames, sample 0 first;
          ``image_flags (N,) long`` (0 on dummy tiles); ``num_tiles`` list
          of B ints;
        * ``vp_overall_mask (N,) bool`` (all False for samples without a
          visual prompt) and ``prompt_masks``: list of ``(n_obj, g, g)
          bool``, one per visual-prompt sample, in batch order;
        * ``g_pixel_values``: list of ``(3, S, S) uint8`` (every frame of
          every grounding sample, flattened), ``frames_per_batch``: list of
          frame counts (1 for an image) per grounding sample, ``masks``:
          list of GT masks, one per grounding sample; ``grounding_index``:
          the batch row of each grounding sample;
        * option A (:class:`~projects.sa2va.datasets.mask_caption.
          MaskCaptionToSa2VA`): a sample with ``option_a_image (3, S, S)``
          instead of ``pixel_values`` gets one zero placeholder tile
          (``image_flags`` 1) that the data preprocessor fills:
          ``option_a_images (B', 3, S, S)`` with ``option_a_tile_index
          (B',) long`` (rows of ``pixel_values``); with ``option_a_mask (S,
          S)`` its ``vp_overall_mask`` is True and its ``prompt_masks``
          entry is None until the preprocessor puts the derived grid there:
          ``option_a_masks (B'', S, S)``, ``option_a_prompt_index (B'',)
          long`` (positions in ``prompt_masks``);
        * ``data_stats``: counters summed over the batch; ``meta``: list.
    """
    if not instances:
        raise ValueError('cannot collate an empty batch')
    for i, s in enumerate(instances):
        if s.get('input_ids') is None:
            raise ValueError(
                f'sample {i} ({(s.get("meta") or {}).get("dataset_name")}) has '
                f'no input_ids: every Sa2VA sample needs its text (a mask <-> '
                f'caption sample needs MaskCaptionToSa2VA in its pipeline, '
                f'or the cycle model and mask_caption_cycle_collate)')
    batch: dict = {}
    ids = [_as_long(s['input_ids']) for s in instances]
    labels = [_as_long(s['labels']) for s in instances]
    for i, (a, b) in enumerate(zip(ids, labels)):
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f'sample {i}: input_ids {tuple(a.shape)} and '
                             f'labels {tuple(b.shape)} must be equal 1-D')
    lengths = torch.tensor([len(a) for a in ids])
    max_len = int(lengths.max())
    bsz = len(instances)
    input_ids = torch.full((bsz, max_len), pad_index, dtype=torch.long)
    label_t = torch.full((bsz, max_len), IGNORE_INDEX, dtype=torch.long)
    for i, (a, b) in enumerate(zip(ids, labels)):
        input_ids[i, :len(a)] = a
        label_t[i, :len(b)] = b
    attention_mask = torch.arange(max_len)[None] < lengths[:, None]
    position_ids = torch.arange(max_len)[None].expand(bsz, -1) * attention_mask
    batch.update(input_ids=input_ids, labels=label_t,
                 attention_mask=attention_mask, position_ids=position_ids)

    # Vision tiles / frames.
    tiles, flags, vp, num_tiles, prompt_masks = [], [], [], [], []
    dtypes = {s['pixel_values'].dtype for s in instances
              if s.get('pixel_values') is not None}
    if len(dtypes) > 1:
        raise TypeError(f'samples mix pixel_values dtypes {sorted(map(str, dtypes))}'
                        f'; use one ImagesToTensor(as_uint8=...) setting for '
                        f'all datasets')
    tile_dtype = dtypes.pop() if dtypes else torch.uint8
    shapes = [tuple(s['pixel_values'].shape[1:]) for s in instances
              if s.get('pixel_values') is not None]
    tile_shape = shapes[0] if shapes else (3, image_size, image_size)
    oa_images, oa_tile_index, oa_masks, oa_prompt_index = [], [], [], []
    for i, s in enumerate(instances):
        pv = s.get('pixel_values')
        if pv is None and s.get('option_a_image') is not None:
            # filled by the data preprocessor (option A)
            oa_images.append(s['option_a_image'])
            oa_tile_index.append(sum(num_tiles))
            pv = torch.zeros((1, ) + tile_shape, dtype=tile_dtype)
            flags.append(torch.ones(1, dtype=torch.long))
            tiles.append(pv)
            num_tiles.append(1)
            has_prompt = s.get('option_a_mask') is not None
            vp.append(torch.full((1, ), has_prompt, dtype=torch.bool))
            if has_prompt:
                oa_masks.append(s['option_a_mask'])
                oa_prompt_index.append(len(prompt_masks))
                prompt_masks.append(None)
            continue
        if pv is None:
            if not dummy_image_for_text_only:
                num_tiles.append(0)
                continue
            pv = torch.zeros((1, ) + tile_shape, dtype=tile_dtype)
            flags.append(torch.zeros(1, dtype=torch.long))
        else:
            if pv.ndim != 4:
                raise ValueError(f'sample {i}: pixel_values must be '
                                 f'(n, 3, s, s), got {tuple(pv.shape)}')
            flags.append(torch.ones(pv.shape[0], dtype=torch.long))
        tiles.append(pv)
        num_tiles.append(pv.shape[0])
        if s.get('prompt_masks') is not None:
            vmask = s.get('vp_overall_mask')
            if vmask is None or vmask.shape != (pv.shape[0],):
                raise ValueError(f'sample {i}: prompt_masks need a '
                                 f'vp_overall_mask of shape ({pv.shape[0]},)')
            vp.append(vmask.bool())
            prompt_masks.append(s['prompt_masks'].bool())
        else:
            vp.append(torch.zeros(pv.shape[0], dtype=torch.bool))
    if tiles:
        batch['pixel_values'] = torch.cat(tiles)
        batch['image_flags'] = torch.cat(flags)
        batch['vp_overall_mask'] = torch.cat(vp)
    batch['num_tiles'] = num_tiles
    batch['prompt_masks'] = prompt_masks
    if oa_images:
        batch['option_a_images'] = stack_same(oa_images, 'option_a_image',
                                              _OPTION_A_HINT)
        batch['option_a_tile_index'] = torch.tensor(oa_tile_index)
    if oa_masks:
        batch['option_a_masks'] = stack_same(oa_masks, 'option_a_mask',
                                             _OPTION_A_HINT)
        batch['option_a_prompt_index'] = torch.tensor(oa_prompt_index)

    # SAM2 inputs and ground-truth masks.
    g_pixels, frames_per_batch, masks, grounding_index = [], [], [], []
    for i, s in enumerate(instances):
        g = s.get('g_pixel_values')
        if g is None:
            if s.get('masks') is not None:
                raise ValueError(f'sample {i} has masks but no '
                                 f'g_pixel_values')
            continue
        frames = [g] if g.ndim == 3 else list(g)
        g_pixels.extend(frames)
        frames_per_batch.append(len(frames))
        grounding_index.append(i)
        if s.get('masks') is not None:
            masks.append(s['masks'])
    batch['g_pixel_values'] = g_pixels
    batch['frames_per_batch'] = frames_per_batch
    batch['masks'] = masks
    batch['grounding_index'] = grounding_index

    batch.update(collate_bookkeeping(instances))
    return batch


def stack_same(tensors: Sequence[torch.Tensor], key: str,
               hint: str = '') -> torch.Tensor:
    """``torch.stack`` of per-sample tensors that must agree in shape and
    dtype; otherwise a ValueError naming ``key``, each sample's shape and
    dtype, and ``hint``."""
    tensors = [torch.as_tensor(t) for t in tensors]
    kinds = {(tuple(t.shape), t.dtype) for t in tensors}
    if len(kinds) != 1:
        raise ValueError(f'{key!r} differs between samples: '
                         f'{[(tuple(t.shape), str(t.dtype)) for t in tensors]}'
                         + (f'; {hint}' if hint else ''))
    return torch.stack(tensors)


def collate_bookkeeping(instances: Sequence[dict]) -> dict:
    """``data_stats`` summed over the samples and ``meta`` as a list: the
    part of every collate function that is not model input."""
    stats: dict[str, int] = {}
    for s in instances:
        for k, v in (s.get('data_stats') or {}).items():
            stats[k] = stats.get(k, 0) + int(v)
    return dict(data_stats=stats, meta=[s.get('meta', {}) for s in instances])


# ------------------------------------------------- mask <-> caption cycle batches
#: per-frame keys of a mask <-> caption cycle batch (direct route).
CYCLE_BATCH_KEYS = ('pixel_values1', 'pixel_values2', 'g_pixel_values1', 'g_pixel_values2',
               'prompt_masks1', 'prompt_masks2', 'masks1', 'masks2')
#: "option A" keys (``MaskCaptionOutputs(route='option_a')``): stacked by the
#: collate, turned into ``pixel_values{k}`` / ``prompt_masks{k}`` / ``masks{k}``
#: by :class:`MaskCaptionCycleDataPreprocessor`; the model never sees them.
CYCLE_OPTION_A_KEYS = ('image1', 'image2', 'mask1', 'mask2')


@FUNCTIONS.register_module()
def mask_caption_cycle_collate(instances: Sequence[dict]) -> dict:
    """Stack mask <-> caption samples into one cycle batch.

    Per sample (``MaskCaptionOutputs``), ``route='direct'``:
    ``pixel_values{1,2} (3, s, s)`` float32 normalised or uint8,
    ``g_pixel_values{1,2} (3, S, S) uint8``, ``prompt_masks{1,2} (16, 16)
    bool``, ``masks{1,2} (S, S) float32`` {0, 1}; ``route='option_a'``:
    ``image{1,2} (3, S, S) float32`` ImageNet-normalised, ``mask{1,2} (S,
    S) float32`` {0, 1} and ``g_pixel_values{1,2}`` (the preprocessor
    derives the rest); both: ``caption`` (str or None), ``dataset_type``
    (str), ``data_stats`` (dict), ``meta`` (dict).

    Returns:
        dict with every present ``*1`` / ``*2`` key (either route's)
        stacked to ``(B, ...)``,
        ``captions`` (list of B str or None), ``dataset_types`` (list),
        ``data_stats`` (counters summed), ``meta`` (list). Dual loop:
        samples whose ``dataset_type`` starts with ``dam_`` (the Describe
        Anything part, :class:`CycleInterleaveSampler` with ``dam_datasets``)
        are stacked the same way into ``batch['dam']``; the rest form the
        batch.

    Raises:
        ValueError: empty batch, a batch of Describe Anything samples only,
        a sample missing a key another sample has, or shapes / dtypes that
        differ between samples (named).

    Text is built by the model, so there is nothing to pad here (unlike
    ``sa2va_collate_fn``).
    """
    if not instances:
        raise ValueError('cannot collate an empty batch')
    dam = [s for s in instances if str(s.get('dataset_type') or '').startswith('dam_')]
    if dam:
        main = [s for s in instances if not str(s.get('dataset_type') or '').startswith('dam_')]
        if not main:
            raise ValueError(f'a batch of {len(dam)} Describe Anything samples only: the '
                             f'dual-loop loader batch must hold the step batch + the dam '
                             f'batch (batch_size = 2 x the sampler\'s)')
        batch = _stack_cycle(main)
        batch['dam'] = _stack_cycle(dam)
        return batch
    return _stack_cycle(instances)


def _stack_cycle(instances: Sequence[dict]) -> dict:
    batch: dict = {}
    for key in CYCLE_BATCH_KEYS + CYCLE_OPTION_A_KEYS:
        have = [i for i, s in enumerate(instances) if s.get(key) is not None]
        if not have:
            continue
        if len(have) != len(instances):
            missing = sorted(set(range(len(instances))) - set(have))
            raise ValueError(f'samples {missing} have no {key!r} but samples {have} do')
        batch[key] = stack_same([s[key] for s in instances], key)
    batch['captions'] = [s.get('caption') for s in instances]
    batch['dataset_types'] = [s.get('dataset_type') for s in instances]
    batch.update(collate_bookkeeping(instances))
    return batch
