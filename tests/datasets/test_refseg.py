"""RefCOCO / RefCOCO+ / RefCOCOg from the real formats (refs pickle +
instances.json) on generated data, through the base config's pipeline:
outputs, masks, and Sa2VA v1's ids for a fixed rng."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from projects.sa2va.datasets.refseg import (ANSWER_LIST, SEG_QUESTIONS,
                                            RefCOCODataset,
                                            SampleReferringObjects)
from projects.sa2va.transforms import RecordError, sam2_pixel_values
from tests.datasets.family_utils import (base_config, build_dataset,
                                         encoder_of, make_family_data,
                                         sa2va_v1_refcoco_encode, spell)

NAMES = {'refcoco': ('refseg_refcoco', 'refs(unc).p'),
         'refcoco+': ('refseg_refcoco_plus', 'refs(unc).p'),
         'refcocog': ('refseg_refcocog', 'refs(umd).p')}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('refseg')
    make_family_data(root, 'refseg')
    return root


@pytest.fixture(scope='module')
def cfg():
    return base_config('refseg')


def _dataset(cfg, data, name, tok, **kw):
    kw.setdefault('data_root', str(data / 'ref_seg' / name) + '/')
    return build_dataset(cfg[NAMES[name][0]], tok, **kw)


def _truth(data, name):
    base = data / 'ref_seg' / name
    refs = pickle.loads((base / NAMES[name][1]).read_bytes())
    inst = json.loads((base / 'instances.json').read_text())
    return refs, inst


def _decode_sum(segmentation, h, w):
    out = np.zeros((h, w), np.uint8)
    for poly in segmentation:
        out += mask_utils.decode(mask_utils.frPyObjects([poly], h, w))[..., 0]
    return out


@pytest.mark.parametrize('name', list(NAMES))
def test_index_groups_train_refs_by_image(cfg, data, name, tiny_tokenizer):
    ds = _dataset(cfg, data, name, tiny_tokenizer, text_mode='select_first')
    refs, inst = _truth(data, name)
    train = [r for r in refs if r['split'] == 'train']
    images = {im['id']: im for im in inst['images']}
    assert len(ds) == len({r['image_id'] for r in train})
    anns = {a['id']: a for a in inst['annotations']}
    seen = 0
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        image_id = int(info['record_id'].split('=')[1])
        mine = [r for r in train if r['image_id'] == image_id]
        assert info['img_path'].endswith(
            'coco2014/train2014/' + images[image_id]['file_name'])
        assert info['ori_shape'] == (images[image_id]['height'],
                                     images[image_id]['width'])
        assert [o['text'] for o in info['objects']] == [
            r['sentences'][0]['raw'].lower() for r in mine]
        assert [o['segmentation'] for o in info['objects']] == [
            anns[r['ann_id']]['segmentation'] for r in mine]
        seen += len(mine)
        assert ds.modality_length[i] > 256 * 13
    assert seen == len(train)
    # ref 0 has its raw sentence in capitals: lower-cased
    first = ds.get_data_info(0)['objects'][0]['text']
    assert first == first.lower() and first == \
        refs[0]['sentences'][0]['raw'].lower()


@pytest.mark.parametrize('name', list(NAMES))
def test_sample_is_sa2va_v1(cfg, data, name, tiny_tokenizer):
    """Outputs of one sample equal Sa2VA v1's for the same random draws."""
    ds = _dataset(cfg, data, name, tiny_tokenizer)
    idx = 1
    info = ds.get_data_info(idx)
    objects = info['objects']
    sample = ds[idx]
    assert set(sample) == {'input_ids', 'labels', 'pixel_values',
                           'g_pixel_values', 'masks', 'data_stats', 'meta'}
    # the random draws, replayed: 5 objects, then per turn question, answer
    rng = np.random.default_rng([0, idx])
    picks = rng.choice(len(objects), 5, replace=True)
    conv = []
    for t, k in enumerate(picks):
        phrase = objects[k]['text']
        phrase = phrase[:-1] if phrase.endswith('.') else phrase
        q = SEG_QUESTIONS[rng.integers(16)].format(class_name=phrase)
        a = ANSWER_LIST[rng.integers(5)]
        conv.append(dict(input=('<image>\n' if t == 0 else '') + q, output=a))
    image = Image.open(info['img_path'])
    h, w = image.height, image.width
    # images: 160 x 120 -> a 4 x 3 grid + thumbnail
    pv = sample['pixel_values']
    assert pv.shape == (13, 3, 448, 448) and pv.dtype == torch.uint8
    assert torch.equal(sample['g_pixel_values'], sam2_pixel_values(image))
    assert sample['g_pixel_values'].shape == (3, 1024, 1024)
    masks = sample['masks']
    assert masks.shape == (5, h, w) and masks.dtype == torch.uint8
    for m, k in zip(masks, picks):
        want = _decode_sum(objects[k]['segmentation'], h, w)
        assert np.array_equal(m.numpy(), want) and want.any()
    ref = sa2va_v1_refcoco_encode(
        [dict(input=spell(t['input'], 13).strip(), output=t['output'])
         for t in conv], tiny_tokenizer,
        '<|user|>\n{input}<|end|><|assistant|>\n', '<|end|>')
    assert sample['input_ids'] == ref['input_ids']
    assert sample['labels'] == ref['labels']
    enc = encoder_of(ds)
    assert sample['input_ids'].count(enc.context_id) == 256 * 13
    seg = tiny_tokenizer.convert_tokens_to_ids('[SEG]')
    assert sample['input_ids'].count(seg) == 5
    text = enc.decode(sample['input_ids'])
    assert text.startswith('<|user|>\n<img>[256 x 13]</img>\n' + conv[0]
                           ['input'][len('<image>\n'):] + '<|end|>'
                           '<|assistant|>\n' + conv[0]['output'] + '<|end|>'
                           '<|user|>\n')


def test_two_polygon_object_is_summed(cfg, data, tiny_tokenizer):
    """A referred object made of two polygons: each decoded and added."""
    ds = _dataset(cfg, data, 'refcoco', tiny_tokenizer)
    refs, inst = _truth(data, 'refcoco')
    anns = {a['id']: a for a in inst['annotations']}
    seg = anns[refs[0]['ann_id']]['segmentation']
    assert len(seg) == 2
    t = SampleReferringObjects(num=3)
    out = t(dict(objects=[dict(segmentation=seg, text='the pair.')],
                 rng=np.random.default_rng(0)))
    assert out['segmentations'] == [[[p] for p in seg]] * 3
    assert out['phrases'] == ['the pair'] * 3
    assert out['conversation'][0]['input'].startswith('<image>\n')
    assert all('<image>' not in c['input'] for c in out['conversation'][1:])
    with pytest.raises(RecordError, match='no referred object') as e:
        t(dict(objects=[], rng=np.random.default_rng(0)))
    assert e.value.reason == 'no_objects'


def test_random_text_mode_draws_once_from_the_sentences(cfg, data,
                                                       tiny_tokenizer):
    a = _dataset(cfg, data, 'refcocog', tiny_tokenizer)
    b = _dataset(cfg, data, 'refcocog', tiny_tokenizer)
    refs, _ = _truth(data, 'refcocog')
    by_text = {s['raw'].lower() for r in refs for s in r['sentences']}
    for i in range(len(a)):
        ta = [o['text'] for o in a.get_data_info(i)['objects']]
        assert ta == [o['text'] for o in b.get_data_info(i)['objects']]
        assert set(ta) <= by_text


def test_missing_image_is_skipped_and_counted(cfg, data, tmp_path,
                                              tiny_tokenizer):
    import shutil
    root = tmp_path / 'refcoco'
    shutil.copytree(data / 'ref_seg' / 'refcoco', root)
    ds = _dataset(cfg, data, 'refcoco', tiny_tokenizer,
                  data_root=str(root) + '/', min_bad_checks=1000)
    gone = ds.get_data_info(0)['img_path']
    (root / 'coco2014' / 'train2014' / gone.rsplit('/', 1)[1]).unlink()
    sample = ds[0]
    assert sample['data_stats']['skipped/missing_image'] == 1
    assert sample['meta']['sample_idx'] != 0


def test_malformed_refs_raise_naming_file_and_ref(data, tmp_path):
    refs, inst = _truth(data, 'refcoco')
    refs = [dict(r) for r in refs]
    refs[2]['ann_id'] = 999999999
    (tmp_path / 'refs(unc).p').write_bytes(pickle.dumps(refs, protocol=2))
    (tmp_path / 'instances.json').write_text(json.dumps(inst))
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p: ref 2 \(ref_id "
                       r"2\) names ann_id 999999999"):
        RefCOCODataset(data_root=str(tmp_path), ann_file='instances.json',
                       split_file='refs(unc).p')
    (tmp_path / 'instances.json').write_text('[]')
    with pytest.raises(ValueError, match='COCO dict'):
        RefCOCODataset(data_root=str(tmp_path), ann_file='instances.json',
                       split_file='refs(unc).p')


def _py2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 writes it: text as byte strings
    (SHORT_BINSTRING), so that only ``encoding='latin1'`` reads it."""
    import struct

    def emit(o):
        if isinstance(o, dict):
            return b'}(' + b''.join(emit(k) + emit(v) for k, v in o.items()) \
                + b'u'
        if isinstance(o, list):
            return b'](' + b''.join(emit(v) for v in o) + b'e'
        if isinstance(o, str):
            raw = o.encode('latin1')
            return b'U' + bytes([len(raw)]) + raw
        if isinstance(o, float):
            return b'G' + struct.pack('>d', o)
        return b'J' + struct.pack('<i', o)
    return b'\x80\x02' + emit(obj) + b'.'


def test_python2_refs_pickle_with_the_real_ref_0(tmp_path, tiny_tokenizer):
    """RefCOCO's real ref 0 (values quoted by the refer API), written as a
    Python 2 pickle; raw text in capitals."""
    ref = {'sent_ids': [0, 1], 'file_name':
           'COCO_train2014_000000581857_16.jpg', 'ann_id': 1719310,
           'ref_id': 0, 'image_id': 581857, 'split': 'train',
           'sentences': [{'tokens': ['the', 'lady', 'with', 'the', 'blue',
                                     'shirt'],
                          'raw': 'THE LADY WITH THE BLUE SHIRT',
                          'sent_id': 0,
                          'sent': 'the lady with the blue shirt'}],
           'category_id': 1}
    (tmp_path / 'refs(unc).p').write_bytes(_py2_pickle([ref]))
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 5.0, 1.0, 5.0]]
    (tmp_path / 'instances.json').write_text(json.dumps({
        'images': [{'id': 581857, 'height': 6, 'width': 8,
                    'file_name': 'COCO_train2014_000000581857.jpg'}],
        'annotations': [{'id': 1719310, 'image_id': 581857,
                         'segmentation': poly, 'iscrowd': 0,
                         'category_id': 1, 'area': 20.0,
                         'bbox': [1.0, 1.0, 5.0, 4.0]}]}))
    ds = RefCOCODataset(data_root=str(tmp_path), ann_file='instances.json',
                        split_file='refs(unc).p', pipeline=[])
    info = ds.get_data_info(0)
    assert len(ds) == 1
    assert info['objects'] == [dict(segmentation=poly,
                                    text='the lady with the blue shirt')]
    assert info['img_path'].endswith(
        'coco2014/train2014/COCO_train2014_000000581857.jpg')
    assert info['ori_shape'] == (6, 8)
