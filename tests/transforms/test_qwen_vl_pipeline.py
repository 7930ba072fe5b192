"""The Qwen-VL image steps on the keys the real pipelines write (``image``,
``masks``, the mask <-> caption pair): QwenVLImageInput, QwenVLPoolPromptMasks
(PoolPromptMasks' rules on the merged grid), QwenVLMaskCaptionOutputs ->
MaskCaptionToSa2VA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from projects.sa2va.datasets.mask_caption.supervised import MaskCaptionToSa2VA
from projects.sa2va.transforms import RecordError
from projects.sa2va.transforms.qwen_vl import (QWEN_VL_PRESETS, QwenVLImageInput,
                                               QwenVLMaskCaptionOutputs,
                                               QwenVLPoolPromptMasks,
                                               pool_prompt_masks_grid)


def _picture(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g,
                                         dtype=torch.uint8).numpy())


@pytest.mark.parametrize('backbone,size', [('qwen2_5_vl', (84, 112)), ('qwen3_vl', (96, 128))])
def test_image_step_equals_the_processor(backbone, size):
    """Patches and grid of ``results['image']`` equal transformers'
    Qwen2VLImageProcessor with the backbone's preprocessor values (Qwen3-VL:
    16 px patches, mean / std 0.5)."""
    tv = pytest.importorskip('transformers')
    proc_cls = getattr(tv, 'Qwen2VLImageProcessor', None)
    if proc_cls is None:
        pytest.skip('no Qwen2VLImageProcessor')
    c = QWEN_VL_PRESETS[backbone]
    img = _picture(*size)
    ref = proc_cls(min_pixels=c['min_pixels'], max_pixels=c['max_pixels'],
                   patch_size=c['patch_size'], merge_size=2, temporal_patch_size=2,
                   image_mean=list(c['mean']), image_std=list(c['std']))(
        images=[img], return_tensors='pt')
    out = QwenVLImageInput(backbone).transform({'image': img})
    p = c['patch_size']
    assert out['image_grid_thw'].tolist() == ref['image_grid_thw'].tolist() == \
        [[1, size[0] // p, size[1] // p]]
    torch.testing.assert_close(out['pixel_values'], ref['pixel_values'].float(),
                               atol=1e-5, rtol=1e-5)
    assert out['pixel_values'].dtype == torch.float32
    assert out['num_image_tokens'] == size[0] // p // 2 * (size[1] // p // 2)


def test_image_step_reads_the_image_for_tiles_and_skips_text_only():
    img = _picture(90, 130)
    a = QwenVLImageInput('qwen2_5_vl', max_pixels=112 * 112, key='tiles')({'image': img})
    b = QwenVLImageInput('qwen2_5_vl', max_pixels=112 * 112)({'image': img})
    assert a['pixel_values'].equal(b['pixel_values'])
    # 90 x 130 -> 84 x 140 (sides rounded to 28, inside the budget)
    assert a['image_grid_thw'].tolist() == [[1, 6, 10]] and a['num_image_tokens'] == 15
    res = QwenVLImageInput()({'text_only': True})
    assert res == {'text_only': True}
    with pytest.raises(ValueError, match='QwenVLVideoInput'):
        QwenVLImageInput(key='frames')
    with pytest.raises(KeyError, match='image'):
        QwenVLImageInput()({'img': img})


def _regions():
    masks = torch.zeros(3, 90, 130, dtype=torch.uint8)
    masks[0, :45, :65] = 1      # top-left quarter
    masks[1, 60:, 100:] = 1     # bottom-right block
    masks[2, 50, 70] = 1        # one pixel: vanishes on the grid
    return masks


def test_prompt_pooling_on_the_merged_grid_by_hand():
    """90 x 130 resized to 84 x 140 (budget 84 * 140): merged grid 3 x 5;
    'nearest' samples rows (0, 30, 60) and columns (0, 26, 52, 78, 104)."""
    res = QwenVLImageInput('qwen2_5_vl', max_pixels=84 * 140)({'image': _picture(90, 130)})
    assert res['image_grid_thw'].tolist() == [[1, 6, 10]]
    res['masks'] = _regions()
    out = QwenVLPoolPromptMasks('qwen2_5_vl', keep_gt=True)(dict(res))
    expected = torch.zeros(3, 3, 5, dtype=torch.bool)
    expected[0, :2, :3] = True          # rows 0, 30 < 45; columns 0, 26, 52 < 65
    expected[1, 2, 4] = True            # row 60, column 104
    expected[2, 1, 2] = True            # repaired: pixel (50, 70) lies in cell (1, 2)
    assert out['prompt_masks'].equal(expected)
    assert out['region_token_counts'] == [6, 1, 1]
    assert out['vp_overall_mask'].tolist() == [True]
    assert out['data_stats']['prompt_mask_repaired'] == 1
    assert out['masks'] is res['masks']  # keep_gt
    # without the repair the one-pixel region has no cell; min_cells rejects
    bare = QwenVLPoolPromptMasks('qwen2_5_vl', ensure_nonempty=False)(dict(res))
    assert bare['region_token_counts'] == [6, 1, 0] and 'masks' not in bare
    with pytest.raises(RecordError) as err:
        QwenVLPoolPromptMasks('qwen2_5_vl', min_cells=2)(dict(res))
    assert err.value.reason == 'small_region'
    # 'area': nearest to the resized 84 x 140 image, mean per 28 x 28 cell > 0.5
    area = QwenVLPoolPromptMasks('qwen2_5_vl', mode='area', ensure_nonempty=False)(dict(res))
    assert area['prompt_masks'].equal(
        pool_prompt_masks_grid(_regions(), (3, 5), 'area', (84, 140)))
    assert area['region_token_counts'][0] == 2  # cells fully inside the quarter


def test_mask_caption_pair_to_sa2va_describe_and_segment():
    """Family 6 on Qwen-VL: frame 1 as a visual prompt on its merged grid
    (describe), frame 2 as a referring sample with its GT mask (segment)."""
    frames = [_picture(64, 96, 1), _picture(64, 96, 2)]
    masks = [np.zeros((64, 96), np.uint8), np.zeros((64, 96), np.uint8)]
    masks[0][:32, :48] = 1
    masks[1][32:, 48:] = 1
    step = QwenVLMaskCaptionOutputs('qwen2_5_vl', max_pixels=56 * 84, sam2_size=32)
    out = step(dict(frames=frames, pair_masks=masks, caption='a red ball'))
    assert out['image_grid_thw1'].tolist() == [[1, 4, 6]]  # 64 x 96 -> 56 x 84
    # nearest from 64 x 96 to 2 x 3: rows (0, 32), columns (0, 32, 64)
    assert out['prompt_masks1'].tolist() == [[True, True, False], [False, False, False]]
    assert out['g_pixel_values2'].shape == (3, 32, 32) and out['masks2'].shape == (32, 32)
    describe = MaskCaptionToSa2VA(tasks='describe')(dict(out))
    assert describe['pixel_values'].equal(out['pixel_values1'])
    assert describe['num_image_tokens'] == 6 and 'num_tiles' not in describe
    assert describe['prompt_masks'].shape == (1, 2, 3)
    assert describe['region_token_counts'] == [2]
    assert '<vp><IMG_CONTEXT*2></vp>' in describe['conversation'][0]['input']
    assert not [k for k in describe if k[-1] in '12' and k != 'region_token_counts']
    segment = MaskCaptionToSa2VA(tasks='segment')(dict(out, rng=np.random.default_rng(0)))
    assert segment['image_grid_thw'].tolist() == [[1, 4, 6]]
    assert segment['pixel_values'].equal(out['pixel_values2'])
    assert segment['masks'].shape == (1, 32, 32) and segment['masks'].dtype == torch.uint8
    assert 'prompt_masks' not in segment


@pytest.mark.parametrize('backbone', ['qwen2_5_vl', 'qwen3_vl'])
def test_uint8_patches_normalised_on_device_equal_the_float_ones(backbone):
    """``as_uint8``: the worker sends the patches' bytes; the data
    preprocessor with the backbone's statistics gives the float patches bit
    for bit (which equal the processor's, test above); uint8 patches without
    statistics, and a batch mixing dtypes, raise."""
    from projects.sa2va.datasets import sa2va_qwen_vl_collate_fn
    from projects.sa2va.models.data_preprocessor import Sa2VADataPreprocessor
    img = _picture(90, 130, 3)
    ref = QwenVLImageInput(backbone, max_pixels=128 * 128)({'image': img})
    raw = QwenVLImageInput(backbone, max_pixels=128 * 128, as_uint8=True)({'image': img})
    assert raw['pixel_values'].dtype == torch.uint8
    assert raw['image_grid_thw'].equal(ref['image_grid_thw'])
    out = Sa2VADataPreprocessor(qwen_vl_stats=backbone)(
        dict(pixel_values=raw['pixel_values'], image_grid_thw=raw['image_grid_thw']))
    assert out['pixel_values'].dtype == torch.float32
    assert out['pixel_values'].equal(ref['pixel_values'])
    bf16 = Sa2VADataPreprocessor(dtype='bfloat16', qwen_vl_stats=backbone)(
        dict(pixel_values=raw['pixel_values']))['pixel_values']
    assert bf16.equal(ref['pixel_values'].to(torch.bfloat16))
    with pytest.raises(ValueError, match='qwen_vl_stats'):
        Sa2VADataPreprocessor()(dict(pixel_values=raw['pixel_values']))
    samples = [dict(input_ids=[1, 2], labels=[1, 2], **{k: s[k] for k in (
        'pixel_values', 'image_grid_thw')}) for s in (ref, raw)]
    with pytest.raises(TypeError, match='mix dtypes'):
        sa2va_qwen_vl_collate_fn(samples)
    pair = QwenVLMaskCaptionOutputs(backbone, max_pixels=128 * 128, as_uint8=True)(
        dict(image=img, masks=torch.ones(1, 90, 130, dtype=torch.uint8), caption='x'))
    assert pair['pixel_values1'].equal(raw['pixel_values'])
