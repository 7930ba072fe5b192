"""``MixedDataset(pipeline_swaps=...)``: a model config replaces pipeline
steps by type in every child pipeline (nested mixes too), before the mix's
pipeline defaults / overrides apply (issue 21, decision 2); the check tool
builds its children the same way."""
from __future__ import annotations

import pytest

from projects.sa2va.datasets.check import build_leaves
from projects.sa2va.datasets.mixing import (apply_pipeline_defaults,
                                            child_configs, swap_pipeline_steps)
from projects.sa2va.transforms.qwen_vl import qwen_vl_pipeline_swaps


def _image_pipeline():
    return [dict(type='LoadImage'), dict(type='DynamicTiles', max_num=12),
            dict(type='ImagesToTensor'),
            dict(type='PoolPromptMasks', mode='area', min_cells=4),
            dict(type='EncodeConversation'), dict(type='PackInputs')]


def _video_pipeline():
    return [dict(type='LoadFrames'), dict(type='ImagesToTensor', key='frames'),
            dict(type='EncodeConversation')]


def _types(steps):
    return [s['type'] for s in steps]


def _nested_mix():
    return dict(type='MixedDataset', datasets=[
        dict(type='OspreyDataset', dataset_name='a', pipeline=_image_pipeline()),
        dict(type='MixedDataset', datasets=[
            dict(type='ReVOSDataset', dataset_name='b', pipeline=_video_pipeline())])])


SWAPS = qwen_vl_pipeline_swaps('qwen3_vl', max_pixels=64 * 64)


def test_swaps_reach_nested_mixes_and_inherit_the_named_arguments():
    out = swap_pipeline_steps(_nested_mix(), SWAPS)
    image = out['datasets'][0]['pipeline']
    assert _types(image) == ['LoadImage', 'QwenVLImageInput', 'QwenVLPoolPromptMasks',
                             'EncodeConversation', 'PackInputs']
    # ImagesToTensor's key was not set: its default 'tiles' picks the image step
    assert image[1] == dict(type='QwenVLImageInput', backbone='qwen3_vl',
                            max_pixels=64 * 64)
    # the dataset's pooling rule is kept; what it did not set stays default
    assert image[2] == dict(type='QwenVLPoolPromptMasks', backbone='qwen3_vl',
                            mode='area', min_cells=4)
    video = out['datasets'][1]['datasets'][0]['pipeline']
    assert video[1] == dict(type='QwenVLVideoInput', backbone='qwen3_vl', key='frames')
    # the input config is left as it was
    assert _types(_nested_mix()['datasets'][0]['pipeline'])[1] == 'DynamicTiles'


def test_a_list_replaces_one_step_by_several_and_none_drops():
    swaps = dict(PackInputs=[dict(type='SAM2Input', size=64),
                             dict(type='PackInputs', _inherit_=('keys', ))],
                 LoadImage=None)
    steps = swap_pipeline_steps(dict(pipeline=[
        dict(type='LoadImage'), dict(type='PackInputs', keys=('input_ids', ))]), swaps)
    assert steps['pipeline'] == [dict(type='SAM2Input', size=64),
                                 dict(type='PackInputs', keys=('input_ids', ))]


def test_defaults_and_overrides_apply_after_the_swap():
    cfg = apply_pipeline_defaults(
        dict(pipeline=_image_pipeline()),
        defaults=dict(QwenVLImageInput=dict(max_pixels=1, min_pixels=2),
                      DynamicTiles=dict(max_num=2)),
        overrides=dict(QwenVLPoolPromptMasks=dict(mode='nearest')), swaps=SWAPS)
    steps = cfg['pipeline']
    assert 'DynamicTiles' not in _types(steps)  # a default does not bring it back
    assert steps[1]['max_pixels'] == 64 * 64 and steps[1]['min_pixels'] == 2
    assert steps[2]['mode'] == 'nearest' and steps[2]['min_cells'] == 4
    # a nested mix: swapped now, its own defaults / overrides later, at its build
    nested, _ = child_configs([_nested_mix()['datasets'][1]],
                              pipeline_overrides=dict(QwenVLVideoInput=dict(key='x')),
                              pipeline_swaps=SWAPS)[0]
    assert _types(nested['datasets'][0]['pipeline'])[1] == 'QwenVLVideoInput'
    assert nested['pipeline_overrides'] == dict(QwenVLVideoInput=dict(key='x'))


def test_unknown_types_and_cases_raise():
    with pytest.raises(KeyError, match="'ImagesToTensr' is not a registered"):
        swap_pipeline_steps(dict(pipeline=[]), dict(ImagesToTensr=None))
    with pytest.raises(KeyError, match="'QwenImage' is not a registered"):
        swap_pipeline_steps(dict(pipeline=[dict(type='LoadImage')]),
                            dict(LoadImage=dict(type='QwenImage')))
    with pytest.raises(KeyError, match="key='clips'"):
        swap_pipeline_steps(dict(pipeline=[dict(type='ImagesToTensor', key='clips')]), SWAPS)
    with pytest.raises(TypeError, match='must be None, a step dict'):
        swap_pipeline_steps(dict(pipeline=[dict(type='LoadImage')]), dict(LoadImage='x'))


def test_check_tool_builds_children_with_the_swaps(monkeypatch):
    """``tools/check_data.py`` (build_leaves) builds each child as the mix
    would: with the swaps of every enclosing mix."""
    from projects.sa2va.registry import DATASETS
    seen = []

    def fake_build(cfg):
        seen.append((cfg['dataset_name'], _types(cfg['pipeline'])))
        return object()
    monkeypatch.setattr(DATASETS, 'build', fake_build)
    mix = dict(_nested_mix(), pipeline_swaps=SWAPS)
    leaves = build_leaves(mix)
    assert [leaf.error for leaf in leaves] == [None, None]
    assert seen == [('a', ['LoadImage', 'QwenVLImageInput', 'QwenVLPoolPromptMasks',
                           'EncodeConversation', 'PackInputs']),
                    ('b', ['LoadFrames', 'QwenVLVideoInput', 'EncodeConversation'])]
