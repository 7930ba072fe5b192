"""The registered transforms compose into a family's pipeline: outputs equal
the rules applied to the decoded source, and the text's context-token count
equals 256 x tiles + the regions' token counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from projects.sa2va.datasets.base import build_pipeline
from projects.sa2va.transforms import (RecordError, decode_mask,
                                       dynamic_tiles, pixel_values_from_image,
                                       pool_prompt_masks, sam2_pixel_values)


@pytest.fixture()
def scene(tmp_path):
    h, w = 120, 200
    arr = np.full((h, w, 3), 40, np.uint8)
    arr[20:80, 30:110] = (200, 30, 30)
    arr[90:92, 180:183] = (30, 200, 30)   # tiny object: vanishes on 16x16
    path = tmp_path / 'img.jpg'
    Image.fromarray(arr).save(path)
    segs = [
        [[30.0, 20.0, 109.0, 20.0, 109.0, 79.0, 30.0, 79.0]],
        {'size': [h, w], 'counts': None},
    ]
    tiny = np.zeros((h, w), np.uint8)
    tiny[90:92, 180:183] = 1
    from pycocotools import mask as mu
    segs[1]['counts'] = mu.encode(np.asfortranarray(tiny))['counts'].decode()
    return dict(path=str(path), segs=segs, h=h, w=w)


def _osprey_pipeline(tok, ensure_nonempty=True):
    return build_pipeline([
        dict(type='LoadImage'),
        dict(type='DynamicTiles', max_num=4),
        dict(type='ImagesToTensor'),
        dict(type='DecodeMasks'),
        dict(type='PoolPromptMasks', mode='nearest',
             ensure_nonempty=ensure_nonempty),
        dict(type='AddVisualPromptText'),
        dict(type='EncodeConversation', tokenizer=tok,
             template='internvl2_5', max_length=8192),
        dict(type='PackInputs'),
    ])


def _run(pipeline, results):
    for t in pipeline:
        results = t(results)
    return results


def test_visual_prompt_pipeline(scene, tiny_tokenizer):
    conv = [dict(input='<image>\nWhat is region1 next to region2?',
                 output='region1 is a red box.')]
    out = _run(_osprey_pipeline(tiny_tokenizer), dict(
        img_path=scene['path'], segmentations=scene['segs'],
        conversation=conv))
    image = Image.open(scene['path']).convert('RGB')
    tiles = dynamic_tiles(image, max_num=4)
    pv = out['pixel_values']
    assert pv.dtype == torch.uint8 and pv.shape == (len(tiles), 3, 448, 448)
    from projects.sa2va.transforms import normalize_uint8
    assert torch.equal(normalize_uint8(pv[-1]),
                       pixel_values_from_image(tiles[-1]))
    masks = np.stack([decode_mask(s, scene['h'], scene['w'])
                      for s in scene['segs']])
    ref = pool_prompt_masks(masks, mode='nearest', ensure_nonempty=True)
    assert torch.equal(out['prompt_masks'], ref)
    assert out['prompt_masks'][1].sum() == 1       # repaired, counted
    assert out['data_stats']['prompt_mask_repaired'] == 1
    assert out['vp_overall_mask'].tolist() == [False] * (len(tiles) - 1) \
        + [True]
    assert 'masks' not in out and 'g_pixel_values' not in out
    ctx = tiny_tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>')
    assert out['input_ids'].count(ctx) == 256 * len(tiles) + int(ref.sum())
    text = tiny_tokenizer.decode(out['input_ids'])
    k0 = int(ref[0].sum())
    assert ('<img>' + '<IMG_CONTEXT>' * 256 * len(tiles) + '</img>\n'
            'There are 2 part regions in the picture: region1<vp>'
            + '<IMG_CONTEXT>' * k0 + '</vp>, region2<vp><IMG_CONTEXT></vp>.\n'
            'What is region1 next to region2?') in text


def test_exact_sa2va_mode_keeps_empty_region(scene, tiny_tokenizer):
    conv = [dict(input='<image>\nDescribe region2.', output='Green.')]
    out = _run(_osprey_pipeline(tiny_tokenizer, ensure_nonempty=False), dict(
        img_path=scene['path'], segmentations=scene['segs'],
        conversation=conv))
    assert out['prompt_masks'][1].sum() == 0
    assert 'prompt_mask_repaired' not in out['data_stats']
    assert 'region2<vp></vp>' in tiny_tokenizer.decode(out['input_ids'])


def test_grounding_pipeline_outputs(scene, tiny_tokenizer):
    pipeline = build_pipeline([
        dict(type='LoadImage'), dict(type='DynamicTiles', max_num=4),
        dict(type='ImagesToTensor', as_uint8=False), dict(type='SAM2Input'),
        dict(type='DecodeMasks'),
        dict(type='EncodeConversation', tokenizer=tiny_tokenizer,
             template='phi3_chat'),
        dict(type='PackInputs')])
    out = _run(pipeline, dict(
        img_path=scene['path'], segmentations=scene['segs'][:1],
        conversation=[dict(input='<image>\nSegment the red box.',
                           output='It is [SEG].')]))
    image = Image.open(scene['path']).convert('RGB')
    assert out['pixel_values'].dtype == torch.float32
    assert torch.equal(out['pixel_values'][0],
                       pixel_values_from_image(dynamic_tiles(image, 1, 4)[0]))
    assert torch.equal(out['g_pixel_values'], sam2_pixel_values(image))
    assert out['masks'].dtype == torch.uint8
    assert out['masks'].shape == (1, scene['h'], scene['w'])
    assert np.array_equal(out['masks'][0].numpy(),
                          decode_mask(scene['segs'][0][0:1], scene['h'],
                                      scene['w']))
    assert out['meta']['img_path'] == scene['path']


@pytest.mark.parametrize('bad,reason', [
    (dict(img_path='/nonexistent.jpg'), 'missing_image'),
    (dict(segmentations=[{'size': [1, 1], 'counts': '0'}]), 'bad_mask'),
    (dict(segmentations=[[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]]), 'empty_mask'),
])
def test_bad_records_raise_record_error(scene, tiny_tokenizer, bad, reason,
                                        tmp_path):
    results = dict(img_path=scene['path'], segmentations=scene['segs'],
                   conversation=[dict(input='<image>\nQ', output='A')])
    results.update(bad)
    with pytest.raises(RecordError) as info:
        _run(_osprey_pipeline(tiny_tokenizer), results)
    assert info.value.reason == reason


def test_corrupt_image(tmp_path, tiny_tokenizer):
    path = tmp_path / 'broken.jpg'
    path.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    with pytest.raises(RecordError, match='cannot decode') as info:
        _run(_osprey_pipeline(tiny_tokenizer), dict(img_path=str(path)))
    assert info.value.reason == 'corrupt_image'
