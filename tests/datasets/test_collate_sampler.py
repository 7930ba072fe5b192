"""Collate function and length-grouped sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from projects.sa2va.datasets import (LengthGroupedSampler, length_grouped_indices,
                                     sa2va_collate_fn)


def _sample(n_ids, tiles=None, g=None, masks=None, pm=None, stats=None):
    s = dict(input_ids=list(range(1, n_ids + 1)),
             labels=[-100] * (n_ids - 1) + [7])
    if tiles is not None:
        s['pixel_values'] = torch.full((tiles, 3, 4, 4), tiles,
                                       dtype=torch.uint8)
    if g is not None:
        s['g_pixel_values'] = g
    if masks is not None:
        s['masks'] = masks
    if pm is not None:
        s['prompt_masks'] = pm
        s['vp_overall_mask'] = torch.arange(tiles) == tiles - 1
    s['data_stats'] = stats or {}
    return s


def test_collate_mixed_families():
    vp = torch.zeros(2, 16, 16, dtype=torch.bool)
    vp[0, 1, 1] = vp[1, 2, 2] = True
    batch = sa2va_collate_fn([
        _sample(5, tiles=3, pm=vp, stats={'samples': 1}),          # Osprey
        _sample(3),                                                # text only
        _sample(4, tiles=1, g=torch.zeros(3, 8, 8, dtype=torch.uint8),
                masks=torch.ones(2, 5, 6, dtype=torch.uint8),
                stats={'samples': 1, 'skipped/missing_image': 2}),  # RefCOCO
        _sample(2, tiles=2, g=torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
                masks=torch.ones(4, 5, 6, dtype=torch.uint8)),     # video
    ], pad_index=9, image_size=4)
    assert batch['input_ids'].shape == (4, 5)
    assert batch['input_ids'][1].tolist() == [1, 2, 3, 9, 9]
    assert batch['labels'][1].tolist() == [-100, -100, 7, -100, -100]
    assert batch['attention_mask'][3].tolist() == [True, True, False, False,
                                                   False]
    assert batch['position_ids'][0].tolist() == [0, 1, 2, 3, 4]
    assert batch['position_ids'][3].tolist() == [0, 1, 0, 0, 0]
    # 3 + 1 (dummy) + 1 + 2 tiles in sample order
    assert batch['pixel_values'].shape == (7, 3, 4, 4)
    assert batch['pixel_values'][:, 0, 0, 0].tolist() == [3, 3, 3, 0, 1, 2, 2]
    assert batch['image_flags'].tolist() == [1, 1, 1, 0, 1, 1, 1]
    assert batch['num_tiles'] == [3, 1, 1, 2]
    assert batch['vp_overall_mask'].tolist() == [False, False, True, False,
                                                 False, False, False]
    assert len(batch['prompt_masks']) == 1
    assert torch.equal(batch['prompt_masks'][0], vp)
    assert len(batch['g_pixel_values']) == 3
    assert batch['frames_per_batch'] == [1, 2]
    assert batch['grounding_index'] == [2, 3]
    assert [m.shape[0] for m in batch['masks']] == [2, 4]
    assert batch['data_stats'] == {'samples': 2, 'skipped/missing_image': 2}


def test_collate_errors():
    with pytest.raises(ValueError, match='labels'):
        sa2va_collate_fn([dict(input_ids=[1, 2], labels=[1])])
    a = _sample(3, tiles=1)
    b = _sample(3, tiles=1)
    b['pixel_values'] = b['pixel_values'].float()
    with pytest.raises(TypeError, match='dtypes'):
        sa2va_collate_fn([a, b])
    c = _sample(3, tiles=2)
    c['prompt_masks'] = torch.zeros(1, 16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match='vp_overall_mask'):
        sa2va_collate_fn([c])
    d = _sample(3, tiles=1, masks=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match='g_pixel_values'):
        sa2va_collate_fn([d])


def test_length_grouped_indices_groups_and_separates_text_only():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(100, 5000, 200),
                              -rng.integers(10, 300, 56)])
    order = length_grouped_indices(lengths, group_size=16,
                                   rng=np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(256))
    assert abs(lengths[order[0]]) == np.abs(lengths).max()
    # every mega-batch except the tail is all multimodal or all text-only
    chunks = [order[i:i + 16] for i in range(0, 256 - 16, 16)]
    mixed = [c for c in chunks[1:] if len(set(np.sign(lengths[c]))) > 1]
    assert len(mixed) <= 1


class _DS:
    def __init__(self, lengths):
        self.modality_length = np.asarray(lengths)

    def __len__(self):
        return len(self.modality_length)


def test_sampler_reduces_padding_and_is_seeded():
    rng = np.random.default_rng(2)
    lengths = rng.integers(10, 3000, 400)
    ds = _DS(lengths)

    def padding_fraction(sampler):
        idx = np.array(list(sampler))
        batches = idx[:len(idx) // 4 * 4].reshape(-1, 4)
        lens = lengths[batches]
        return 1 - lens.sum() / (lens.max(1).sum() * 4)

    grouped = LengthGroupedSampler(ds, per_device_batch_size=4, seed=3)
    plain = LengthGroupedSampler(ds, per_device_batch_size=4, seed=3,
                                 group_by_length=False)
    assert list(grouped) == list(LengthGroupedSampler(ds, 4, seed=3))
    assert padding_fraction(grouped) < 0.5 * padding_fraction(plain)
    grouped.set_epoch(1)
    assert list(grouped) != list(LengthGroupedSampler(ds, 4, seed=3))


def test_sampler_round_up_and_ranks(monkeypatch):
    import projects.sa2va.datasets.samplers as samplers
    ds = _DS(np.arange(1, 11))
    seen = []
    for rank in range(3):
        monkeypatch.setattr(samplers, 'get_dist_info', lambda r=rank: (r, 3))
        s = LengthGroupedSampler(ds, per_device_batch_size=2, seed=0)
        assert len(s) == 4  # ceil(10 / 6) = 2 iters x 2
        seen.extend(list(s))
    assert set(seen) == set(range(10)) and len(seen) == 12


def test_mixed_dataset_repeats_and_lengths():
    from projects.sa2va.datasets import MixedDataset

    class _Items(_DS):
        def __getitem__(self, i):
            return ('item', int(self.modality_length[i]))

    a, b = _Items(np.arange(1, 11)), _Items(-np.arange(1, 5))
    mix = MixedDataset([a, b], repeats=[2.5, 1], seed=0)
    assert len(mix) == 25 + 4
    assert mix.modality_length.tolist()[:10] == list(range(1, 11))
    assert mix[28] == ('item', -4)
    counts = np.bincount(mix._local[mix._which == 0], minlength=10)
    assert set(counts.tolist()) == {2, 3} and counts.sum() == 25
    assert [s['samples'] for s in mix.summary()] == [25, 4]
    with pytest.raises(ValueError, match='repeats'):
        MixedDataset([a], repeats=[1, 2])


def test_pipeline_defaults_fill_missing_arguments_only():
    from projects.sa2va.datasets.mixing import apply_pipeline_defaults
    cfg = dict(type='X', pipeline=[
        dict(type='LoadImage'),
        dict(type='EncodeConversation', template='phi3_chat'),
        dict(type='sa2va.EncodeConversation')])
    out = apply_pipeline_defaults(cfg, dict(EncodeConversation=dict(
        tokenizer='tok', template='qwen_chat', max_length=10)))
    assert out['pipeline'][0] == dict(type='LoadImage')
    assert out['pipeline'][1] == dict(type='EncodeConversation',
                                      template='phi3_chat', tokenizer='tok',
                                      max_length=10)
    assert out['pipeline'][2]['template'] == 'qwen_chat'
    assert cfg['pipeline'][1] == dict(type='EncodeConversation',
                                      template='phi3_chat')  # not mutated
    nested = apply_pipeline_defaults(
        dict(type='MixedDataset', datasets=[],
             pipeline_defaults=dict(EncodeConversation=dict(max_length=5))),
        dict(EncodeConversation=dict(tokenizer='tok', max_length=10)))
    assert nested['pipeline_defaults'] == dict(
        EncodeConversation=dict(tokenizer='tok', max_length=5))


def test_pipeline_overrides_and_data_root_prefix():
    from projects.sa2va.datasets.mixing import apply_pipeline_defaults
    cfg = dict(type='X', data_root='./data/ref_seg/refcoco/', pipeline=[
        dict(type='DynamicTiles', max_num=12), dict(type='SAM2Input')])
    out = apply_pipeline_defaults(
        cfg, defaults=dict(SAM2Input=dict(size=256)),
        overrides=dict(DynamicTiles=dict(max_num=2)),
        data_root=('./data/', 'data/sample/'))
    assert out['data_root'] == 'data/sample/ref_seg/refcoco/'
    assert out['pipeline'] == [dict(type='DynamicTiles', max_num=2),
                               dict(type='SAM2Input', size=256)]
    other = apply_pipeline_defaults(dict(cfg, data_root='/abs/x/'),
                                    data_root=('./data/', 'y/'))
    assert other['data_root'] == '/abs/x/'
    nested = apply_pipeline_defaults(
        dict(type='MixedDataset', datasets=[],
             pipeline_overrides=dict(DynamicTiles=dict(max_num=6))),
        overrides=dict(DynamicTiles=dict(max_num=2)),
        data_root=('./data/', 'y/'))
    assert nested['pipeline_overrides'] == dict(DynamicTiles=dict(max_num=2))
    assert nested['data_root_prefix'] == ('./data/', 'y/')


def test_dataset_pipeline_overrides_reach_only_the_named_dataset(sample_cwd,
                                                                 monkeypatch):
    from mmengine.config import Config

    from projects.sa2va.datasets.inspect import (build_dataset_from_config,
                                                 find_encoder, leaf_datasets)
    from tests.conftest import REPO_ROOT
    monkeypatch.chdir(sample_cwd)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'sa2va_tiny_demo.py'))
    mix_cfg = cfg.train_dataloader.dataset
    template = dict(INSTRUCTION='<|user|>\n{input}<|end|><|assistant|>\n',
                    SUFFIX='<|im_end|>', SUFFIX_AS_EOS=True, SEP='')
    mix_cfg.dataset_pipeline_overrides = {
        'refcoco+': dict(EncodeConversation=dict(template=template))}
    suffix = {d.dataset_name: find_encoder(d).template['SUFFIX']
              for d in leaf_datasets(build_dataset_from_config(cfg))}
    assert suffix['refcoco+'] == '<|im_end|>'
    assert suffix['refcoco'] == suffix['llava'] == '<|end|>'
    mix_cfg.dataset_pipeline_overrides = {'no_such_dataset': {}}
    with pytest.raises(KeyError, match='no_such_dataset'):
        build_dataset_from_config(cfg)


def test_repeated_copies_are_different_reproducible_draws():
    """A bug: every copy of a repeated record (RefCOCO x4, ReVOS x10 in the
    4B mix) was the same draw, because the sample's generator was seeded by
    (seed, index) only; Sa2VA draws objects / questions / frames afresh for
    each copy."""
    from projects.sa2va.datasets import MixedDataset
    from projects.sa2va.datasets.base import Sa2VABaseDataset

    class _Draws(Sa2VABaseDataset):
        def load_data_list(self):
            return [dict(record=i) for i in range(4)]

        def modality_length_of(self, info):
            return 1

    def draw(results):
        results['value'] = results['rng'].integers(1 << 62)
        return results

    ds = _Draws(pipeline=[draw])
    mix = MixedDataset([ds], repeats=[3.5], seed=0)
    assert mix._copy.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 2
    values = [mix[i]['value'] for i in range(len(mix))]
    assert values[:4] == [ds[i]['value'] for i in range(4)]    # copy 0 = the record's draw
    assert len(set(values)) == len(values)                     # every copy differs
    assert values == [mix[i]['value'] for i in range(len(mix))]  # reproducible
    assert mix[5]['value'] == ds.get_sample(1, (1, ))['value']
    # nested mixes: copy numbers compose, (outer, inner) pairs stay distinct
    outer = MixedDataset([mix], repeats=[2])
    nested = [outer[i]['value'] for i in range(len(outer))]
    assert nested[:len(mix)] == values and len(set(nested)) == len(nested)
