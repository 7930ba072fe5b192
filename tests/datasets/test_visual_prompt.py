"""Visual prompts: the five Osprey-724K files and Describe Anything from
their real formats on generated data, through the base config's pipelines:
prompt masks by the 'nearest' / 'area' rules, region token counts, and
Sa2VA's ids for a fixed rng."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils

from projects.sa2va.datasets.visual_prompt import (DETAILED_QUESTIONS,
                                                   DescribeAnythingDataset,
                                                   LoadImageFromTar,
                                                   OspreyDataset)
from projects.sa2va.transforms import RecordError, image_to_uint8_tensor
from tests.datasets.family_utils import (base_config, build_dataset,
                                         encoder_of, make_family_data,
                                         region_prompt, spell, xtuner_encode)

OSPREY = {  # config variable: (file, kind)
    'vp_osprey_conversation': ('osprey_conversation', 'conversation'),
    'vp_osprey_description': ('osprey_detail_description', 'description'),
    'vp_osprey_short_form': ('osprey_short_form', 'short'),
    'vp_osprey_part_level': ('osprey_part_level', 'conversation'),
    'vp_osprey_lvis': ('osprey_lvis_positive_negative', 'conversation'),
}
DAM = 'describe-anything-dataset/describe-anything-dataset'
SHORT = ' Answer the question using a single word or phrase.'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('vp')
    make_family_data(root, 'visual_prompt')
    return root


@pytest.fixture(scope='module')
def cfg():
    return base_config('visual_prompt')


def _osprey(cfg, data, var, tok, **kw):
    kw.setdefault('data_root', str(data / 'osprey-724k') + '/')
    return build_dataset(cfg[var], tok, **kw)


def _dam(cfg, data, tok, **kw):
    kw.setdefault('data_root', str(data / DAM) + '/')
    kw.setdefault('index_cache_dir', None)
    return build_dataset(cfg['vp_describe_anything'], tok, **kw)


def _decode(seg, h, w):
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg['counts'], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = dict(size=seg['size'], counts=seg['counts'].encode())
    return torch.from_numpy(mask_utils.decode(rle))


def _nearest(masks):
    return F.interpolate(masks[None].float(), size=(16, 16),
                         mode='nearest')[0] > 0


def _expected_osprey_conv(rec, kind, counts, rng):
    """Sa2VA v1's Osprey conversation, re-stated from the raw record."""
    head = '<image>\n' + region_prompt(counts)
    if kind == 'description':
        conv = []
        for i, d in enumerate(rec['description']):
            q = DETAILED_QUESTIONS[rng.integers(30)].strip().replace(
                '<region>', f'region{i + 1}')
            conv.append(dict(input=(head if i == 0 else '') + q,
                             output=d.replace('<', '').replace('>', '')))
        return conv
    conv, pending = [], ''
    for k, turn in enumerate(rec['conversations']):
        v = turn['value'].replace('<', '').replace('>', '')
        if turn['from'] == 'human':
            v += SHORT if kind == 'short' else ''
            pending += (head + v.rstrip()) if k == 0 else v
        else:
            conv.append(dict(input=pending, output=v))
            pending = ''
    return conv


@pytest.mark.parametrize('var', list(OSPREY))
def test_osprey_samples_are_sa2va(cfg, data, var, tiny_tokenizer):
    fname, kind = OSPREY[var]
    ds = _osprey(cfg, data, var, tiny_tokenizer)
    records = json.loads((data / 'osprey-724k/Osprey-724K' /
                          f'{fname}.json').read_text())
    assert len(ds) == len(records)
    enc = encoder_of(ds)
    for idx in (1, 2):
        rec = records[idx]
        info = ds.get_data_info(idx)
        assert info['ori_shape'] == (rec['height'], rec['width'])
        assert info['img_path'].endswith('/' + rec['file_name'])
        sample = ds[idx]
        assert set(sample) == {'input_ids', 'labels', 'pixel_values',
                               'prompt_masks', 'vp_overall_mask',
                               'data_stats', 'meta'}
        pv = sample['pixel_values']
        assert pv.shape == (13, 3, 448, 448) and pv.dtype == torch.uint8
        assert sample['vp_overall_mask'].tolist() == [False] * 12 + [True]
        masks = torch.stack([_decode(a['segmentation'], rec['height'],
                                     rec['width'])
                             for a in rec['annotation']])
        want = _nearest(masks)
        pm = sample['prompt_masks']
        assert pm.dtype == torch.bool and pm.shape == (len(masks), 16, 16)
        assert torch.equal(pm, want)
        counts = want.flatten(1).sum(1).tolist()
        assert min(counts) >= 4
        conv = _expected_osprey_conv(rec, kind, counts,
                                     np.random.default_rng([0, idx]))
        ref = xtuner_encode([dict(input=spell(t['input'], 13),
                                  output=t['output']) for t in conv],
                            tiny_tokenizer, 'phi3_chat')
        assert sample['input_ids'] == ref['input_ids']
        assert sample['labels'] == ref['labels']
        assert sample['input_ids'].count(enc.context_id) == \
            256 * 13 + sum(counts)
        assert ds.modality_length[idx] > 256 * 13


def test_osprey_text_details(cfg, data, tiny_tokenizer):
    conv = _osprey(cfg, data, 'vp_osprey_conversation', tiny_tokenizer)
    text = encoder_of(conv).decode(conv[1]['input_ids'])
    # malformed tags lose their brackets like every other tag
    assert 'region1<vp>[' in text and 'What is region1]?<|end|>' in text
    assert 'relative to region 2?' in text
    assert '<region' not in text
    short = _osprey(cfg, data, 'vp_osprey_short_form', tiny_tokenizer)
    info = short.get_data_info(0)
    assert all(t['input'].endswith(SHORT) for t in info['conversation'])
    # region 2 of short-form record 0 is an uncompressed RLE
    assert isinstance(info['segmentations'][1]['counts'], list)
    lvis = _osprey(cfg, data, 'vp_osprey_lvis', tiny_tokenizer)
    assert '/coco/val2017/' in lvis.get_data_info(2)['img_path']
    assert '/coco/train2017/' in lvis.get_data_info(0)['img_path']


def test_osprey_bad_records(cfg, data, tmp_path, tiny_tokenizer):
    root = tmp_path / 'osprey'
    shutil.copytree(data / 'osprey-724k', root)
    path = root / 'Osprey-724K/osprey_detail_description.json'
    recs = json.loads(path.read_text())
    recs[0]['description'] = recs[0]['description'][:1]
    path.write_text(json.dumps(recs))
    ds = _osprey(cfg, data, 'vp_osprey_description', tiny_tokenizer,
                 data_root=str(root) + '/', min_bad_checks=1000)
    assert ds[0]['data_stats']['skipped/description_mismatch'] == 1
    conv = _osprey(cfg, data, 'vp_osprey_conversation', tiny_tokenizer,
                   data_root=str(root) + '/', min_bad_checks=1000)
    img = conv.get_data_info(0)['img_path']
    (root / 'coco/train2014' / img.rsplit('/', 1)[1]).unlink()
    sample = conv[0]
    assert sample['data_stats']['skipped/missing_image'] == 1
    assert sample['meta']['sample_idx'] != 0
    # structural errors raise at load time, naming file and record
    recs = json.loads((root / 'Osprey-724K/osprey_conversation.json')
                      .read_text())
    recs[1]['conversations'] = recs[1]['conversations'][1:]
    (root / 'bad.json').write_text(json.dumps(recs))
    with pytest.raises(ValueError, match=r'bad\.json: record 1 \(id '
                       r'\d+\): the first turn must be from "human"'):
        OspreyDataset(data_root=str(root), ann_file='bad.json')
    recs[1]['conversations'] = recs[2]['conversations']
    recs[1]['annotation'] = []
    (root / 'bad.json').write_text(json.dumps(recs))
    with pytest.raises(ValueError, match=r'record 1 .*"annotation" has no '
                       r'region'):
        OspreyDataset(data_root=str(root), ann_file='bad.json')
    recs[1]['annotation'] = recs[2]['annotation']
    del recs[1]['conversations']
    (root / 'bad.json').write_text(json.dumps(recs))
    with pytest.raises(ValueError, match=r"record 1 .*KeyError: "
                       r"'conversations'"):
        OspreyDataset(data_root=str(root), ann_file='bad.json')


def _area(mask):
    x = F.interpolate(mask[None, None].float(), size=(448, 448),
                      mode='nearest')
    return F.adaptive_avg_pool2d(x, (16, 16))[0, 0] > 0.5


def test_describe_anything_samples(cfg, data, tiny_tokenizer):
    ds = _dam(cfg, data, tiny_tokenizer)
    regions, firsts, single = [], [], None
    for subset in ('COCOStuff', 'LVIS', 'PACO', 'SAV'):
        ann = json.loads((data / DAM / subset / 'annotations.json')
                         .read_text())
        firsts.append(len(regions))
        for sid, value in ann.items():
            if isinstance(value, dict):
                single = len(regions)
            for r in value if isinstance(value, list) else [value]:
                regions.append((subset, sid, r))
    assert len(ds) == len(regions)
    assert single is not None
    enc = encoder_of(ds)
    instruction = ('Please generate a detailed description for the given '
                   'image region.')
    for idx in firsts + [single]:
        subset, sid, region = regions[idx]
        info = ds.get_data_info(idx)
        assert info['record_id'].startswith(f'{subset}/{sid}#')
        sample = ds[idx]
        assert set(sample) == {'input_ids', 'labels', 'pixel_values',
                               'prompt_masks', 'vp_overall_mask',
                               'data_stats', 'meta'}
        import tarfile
        with tarfile.open(info['tar_path']) as tf:
            member = f'{sid}.0.jpg' if subset == 'SAV' else f'{sid}.jpg'
            image = Image.open(tf.extractfile(member)).convert('RGB')
        assert torch.equal(sample['pixel_values'],
                           image_to_uint8_tensor(image)[None])
        assert sample['vp_overall_mask'].tolist() == [True]
        h, w = region['mask_rle']['size']
        assert (h, w) == (image.height, image.width)
        want = _area(_decode(region['mask_rle'], h, w))
        assert torch.equal(sample['prompt_masks'], want[None])
        k = int(want.sum())
        ref = xtuner_encode(
            [dict(input=spell('<image>\n' + region_prompt([k])
                              + instruction, 1),
                  output=region['caption'].strip())],
            tiny_tokenizer, 'phi3_chat')
        assert sample['input_ids'] == ref['input_ids']
        assert sample['labels'] == ref['labels']
        assert sample['input_ids'].count(enc.context_id) == 256 + k
        assert ds.modality_length[idx] > 256


def test_describe_anything_index_cache_and_bad_shards(cfg, data, tmp_path,
                                                      tiny_tokenizer,
                                                      monkeypatch):
    root = tmp_path / 'dam'
    shutil.copytree(data / DAM, root)
    cache = tmp_path / 'cache'
    ds = _dam(cfg, data, tiny_tokenizer, data_root=str(root) + '/',
              index_cache_dir=str(cache), min_bad_checks=1000)
    assert len(list(cache.glob('dam_shards_*.json'))) == 4
    # the second build reads the cache, not the shards
    import projects.sa2va.datasets.visual_prompt as vp

    def boom(path):
        raise AssertionError(f'shard {path} re-read')
    monkeypatch.setattr(vp, 'tar_member_index', boom)
    again = _dam(cfg, data, tiny_tokenizer, data_root=str(root) + '/',
                 index_cache_dir=str(cache))
    assert [again.get_data_info(i)['tar_offset'] for i in range(len(ds))] \
        == [ds.get_data_info(i)['tar_offset'] for i in range(len(ds))]
    monkeypatch.undo()
    # corrupt bytes of one image -> corrupt_image, skipped and counted
    info = ds.get_data_info(0)
    with open(info['tar_path'], 'r+b') as f:
        f.seek(info['tar_offset'])
        f.write(b'\0' * 64)
    assert ds[0]['data_stats']['skipped/corrupt_image'] == 1
    # an image no shard holds -> missing_image at sample time
    ann_path = root / 'COCOStuff/annotations.json'
    ann = json.loads(ann_path.read_text())
    ann['999'] = [dict(r, image='gone.jpg') for r in ann[next(iter(ann))]]
    ann['998'] = [dict(r, caption='  ') for r in ann[next(iter(ann))]]
    ann_path.write_text(json.dumps(ann))
    ds2 = _dam(cfg, data, tiny_tokenizer, data_root=str(root) + '/',
               subsets=['COCOStuff'], min_bad_checks=1000)
    # the empty-caption regions of '998' are not in the index
    assert len(ds2) == sum(len(v) for k, v in ann.items() if k != '998')
    last = len(ds2) - 1
    assert ds2.get_data_info(last)['tar_path'] is None
    assert ds2[last]['data_stats']['skipped/missing_image'] == 1


def test_load_image_from_tar_lru(data):
    shards = sorted((data / DAM / 'COCOStuff/images').glob('*.tar'))
    import tarfile
    t = LoadImageFromTar(max_open=1)
    for shard in shards + shards[:1]:
        with tarfile.open(shard) as tf:
            m = next(x for x in tf if x.name.endswith('.jpg'))
            want = Image.open(tf.extractfile(m)).convert('RGB')
        out = t(dict(tar_path=str(shard), tar_offset=m.offset_data,
                     tar_size=m.size))
        assert np.array_equal(np.asarray(out['image']), np.asarray(want))
        assert out['ori_shape'] == (want.height, want.width)
        assert list(t._files) == [str(shard)]
    with pytest.raises(RecordError, match='no tar shard') as e:
        t(dict(tar_path=None, tar_offset=-1, tar_size=-1))
    assert e.value.reason == 'missing_image'


def test_describe_anything_missing_subset_raises(data):
    with pytest.raises(FileNotFoundError, match='OpenImages'):
        DescribeAnythingDataset(data_root=str(data / DAM),
                                subsets=['OpenImages'])
