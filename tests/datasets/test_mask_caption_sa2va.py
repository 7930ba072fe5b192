"""Family 6 in the Sa2VA mix: captioned mask <-> caption samples as Sa2VA
samples (MaskCaptionToSa2VA), option A through collate and preprocessor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from projects.sa2va.constants import IMAGE_PLACEHOLDER
from projects.sa2va.datasets.mask_caption import (MaskCaptionOutputs,
                                                  MaskCaptionToSa2VA)
from projects.sa2va.datasets.refseg import ANSWER_LIST, SEG_QUESTIONS
from projects.sa2va.datasets.visual_prompt import DAM_INSTRUCTION
from projects.sa2va.transforms.base import RecordError
from projects.sa2va.transforms.functional import (mask_caption_item,
                                                  option_a_prompt_masks,
                                                  pool_prompt_masks)
from projects.sa2va.transforms import image_block, visual_prompt_text
from tests.datasets.test_mask_caption import build, cfg, data  # noqa: F401
from tests.transforms.test_text import _xtuner_reference


@pytest.fixture(scope='module')
def text_defaults(tiny_tokenizer_dir):
    return dict(EncodeConversation=dict(tokenizer=str(tiny_tokenizer_dir),
                                        template='phi3_chat', max_length=8192))


def build_sa2va(cfg, data, name, defaults, **kw):  # noqa: F811
    return build(cfg, data, name, pipeline_defaults=defaults, **kw)


def _refcoco_record(ds, idx):
    info = ds.get_data_info(idx)
    h, w = info['ori_shape']
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(
        info['segmentations'][0], h, w)))
    return info, Image.open(info['img_path']).convert('RGB'), mask


def _ids_of(conversation, tokenizer):
    return _xtuner_reference(conversation, tokenizer, 'phi3_chat', 8192)


def test_describe_is_the_region_prompt_with_the_caption_as_answer(
        cfg, data, text_defaults, tiny_tokenizer):  # noqa: F811
    ds = build_sa2va(cfg, data, 'mc_sa2va_refcoco_describe', text_defaults)
    for idx in (0, len(ds) - 1):
        s = ds.prepare_data(idx)
        info, image, mask = _refcoco_record(ds, idx)
        item = mask_caption_item(image, mask, as_uint8=True)
        # option A: the worker sends the 1024 image and mask, no tile / grid
        assert torch.equal(s['option_a_image'], item['image1'])
        assert torch.equal(s['option_a_mask'], item['mask1'])
        assert not {'pixel_values', 'prompt_masks', 'masks', 'g_pixel_values',
                    'image1', 'mask1'} & set(s)
        k = int(option_a_prompt_masks(item['mask1'][None]).sum())
        assert k == int(pool_prompt_masks(item['mask1'][None], mode='nearest').sum())
        conv = [dict(input=image_block(1) + '\n' + visual_prompt_text([k], True)
                     + DAM_INSTRUCTION, output=info['caption'].strip())]
        ref = _ids_of(conv, tiny_tokenizer)
        assert s['input_ids'] == ref['input_ids'] and s['labels'] == ref['labels']
        assert s['data_stats']['mc_describe'] == 1


def test_segment_is_a_referring_turn_with_frame_2_mask(cfg, data, text_defaults,
                                                       tiny_tokenizer):  # noqa: F811
    ds = build_sa2va(cfg, data, 'mc_sa2va_dam_segment', text_defaults)
    s = ds.prepare_data(0)
    caption = ds.get_data_info(0)['caption']
    # the same draws as the transform: task (none: one task), question, answer
    rng = np.random.default_rng([ds.seed, 0])
    q = SEG_QUESTIONS[int(rng.integers(len(SEG_QUESTIONS)))]
    a = ANSWER_LIST[int(rng.integers(len(ANSWER_LIST)))]
    phrase = caption[:-1] if caption.endswith('.') else caption
    conv = [dict(input=(image_block(1) + '\n' + q.format(class_name=phrase)).strip(),
                 output=a.strip())]
    ref = _ids_of(conv, tiny_tokenizer)
    assert s['input_ids'] == ref['input_ids'] and s['labels'] == ref['labels']
    assert s['option_a_image'].shape == (3, 1024, 1024)
    assert 'option_a_mask' not in s and 'prompt_masks' not in s
    assert s['g_pixel_values'].shape == (3, 1024, 1024)
    assert s['g_pixel_values'].dtype == torch.uint8
    assert s['masks'].shape == (1, 1024, 1024) and s['masks'].dtype == torch.uint8
    assert set(s['masks'].unique().tolist()) <= {0, 1} and s['masks'].sum() > 0


def _pair_results(caption='a red ball.', seed=0, route='option_a'):
    g = np.random.default_rng(seed)
    image = Image.fromarray(g.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    mask = np.zeros((1, 40, 60), np.uint8)
    mask[0, 10:30, 20:50] = 1
    results = dict(image=image, masks=mask, caption=caption, dataset_name='t',
                   rng=np.random.default_rng([7, seed]))
    return MaskCaptionOutputs(route=route, sam2_size=64)(results)


def test_tasks_drawn_per_sample_and_direct_route():
    both = MaskCaptionToSa2VA(tasks=dict(describe=1, segment=1))
    drawn = [both(_pair_results(seed=i))['mc_task'] for i in range(40)]
    assert {'describe', 'segment'} == set(drawn)
    again = [both(_pair_results(seed=i))['mc_task'] for i in range(40)]
    assert drawn == again                                 # per-sample rng
    only = MaskCaptionToSa2VA(tasks=dict(describe=0, segment=2))
    assert {only(_pair_results(seed=i))['mc_task'] for i in range(10)} == {'segment'}
    # the direct route gives the tile and grid from the worker
    r = _pair_results(route='direct')
    p1, g1 = r['pixel_values1'], r['prompt_masks1']
    out = MaskCaptionToSa2VA(tasks='describe')(r)
    assert torch.equal(out['pixel_values'], p1[None])
    assert torch.equal(out['prompt_masks'], g1[None])
    assert out['vp_overall_mask'].tolist() == [True]
    assert out['region_token_counts'] == [int(g1.sum())]
    assert out['conversation'][0]['input'].startswith(IMAGE_PLACEHOLDER + '\n')
    assert out['conversation'][0]['output'] == 'a red ball.'
    seg = MaskCaptionToSa2VA(tasks=['segment'])(_pair_results(route='direct'))
    assert seg['masks'].shape == (1, 64, 64) and seg['masks'].dtype == torch.uint8
    assert seg['g_pixel_values'].shape == (3, 64, 64)
    assert 'pixel_values1' not in seg and 'masks2' not in seg


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match='cycle model'):
        MaskCaptionToSa2VA()(_pair_results(caption=None))
    with pytest.raises(RecordError, match='empty') as err:
        MaskCaptionToSa2VA(tasks='describe')(_pair_results(caption='  '))
    assert err.value.reason == 'empty_text'
    with pytest.raises(RecordError, match='empty'):
        MaskCaptionToSa2VA(tasks='segment')(_pair_results(caption='.'))
    for bad in (['caption'], dict(describe=-1, segment=2), dict(describe=0), [],
                ['describe', 'describe']):
        with pytest.raises(ValueError, match='tasks|weights'):
            MaskCaptionToSa2VA(tasks=bad)


def test_direct_route_by_override_gives_ordinary_samples(cfg, data, text_defaults):  # noqa: F811
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    direct = dict(MaskCaptionOutputs=dict(route='direct', as_uint8=True))
    describe = build(cfg, data, 'mc_sa2va_refcoco_describe', pipeline_overrides=direct,
                     pipeline_defaults=text_defaults).prepare_data(0)
    segment = build(cfg, data, 'mc_sa2va_dam_segment', pipeline_overrides=direct,
                    pipeline_defaults=text_defaults).prepare_data(0)
    for s in (describe, segment):
        assert not any(k.startswith('option_a') for k in s)
        assert s['pixel_values'].shape == (1, 3, 448, 448)
        assert s['pixel_values'].dtype == torch.uint8
    assert describe['prompt_masks'].shape == (1, 16, 16)
    assert describe['vp_overall_mask'].tolist() == [True]
    batch = sa2va_collate_fn([describe, segment])
    assert 'option_a_images' not in batch and batch['num_tiles'] == [1, 1]
    assert batch['frames_per_batch'] == [1] and batch['grounding_index'] == [1]


def test_browse_derives_option_a_as_the_preprocessor(cfg, data, text_defaults):  # noqa: F811
    """tools/browse_dataset.py drew an empty panel for option-A samples."""
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    from projects.sa2va.datasets.inspect import derive_option_a_sample
    from projects.sa2va.models import Sa2VADataPreprocessor
    s = build(cfg, data, 'mc_sa2va_refcoco_describe',
              pipeline_defaults=text_defaults).prepare_data(0)
    shown = derive_option_a_sample(s)
    trained = Sa2VADataPreprocessor()(sa2va_collate_fn([s]))
    assert torch.equal(shown['pixel_values'], trained['pixel_values'])
    assert torch.equal(shown['prompt_masks'], trained['prompt_masks'][0])
    assert shown['vp_overall_mask'].tolist() == trained['vp_overall_mask'].tolist()
