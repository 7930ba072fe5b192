"""GCG: RefCOCOg-GCG, GranDf, Flickr30k-GCG, OpenPSG-GCG from their four
real annotation formats on generated data, through the base config's
pipeline: outputs, masks in [SEG] order, and Sa2VA's ids."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from projects.sa2va.datasets.gcg import (GCG_QUESTIONS, GCGDataset,
                                         adapt_refcocog)
from projects.sa2va.transforms import sam2_pixel_values
from tests.datasets.family_utils import (base_config, build_dataset,
                                         encoder_of, make_family_data, spell,
                                         xtuner_encode)

VARS = {'refcocog': 'gcg_refcocog', 'grandf': 'gcg_grandf',
        'flickr': 'gcg_flickr', 'openpsg': 'gcg_openpsg'}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('gcg')
    make_family_data(root, 'gcg')
    return root / 'glamm_data'


@pytest.fixture(scope='module')
def cfg():
    return base_config('gcg')


def _dataset(cfg, data, fmt, tok, **kw):
    kw.setdefault('data_root', str(data) + '/')
    return build_dataset(cfg[VARS[fmt]], tok, **kw)


def _tag_forward(caption, spans):
    """The tagged answer built front to back (independent of the loader)."""
    out, pos = '', 0
    for s, e in spans:
        out += caption[pos:s] + '<p> ' + caption[s:e] + ' </p> [SEG]'
        pos = e
    return out + caption[pos:]


def _decode(rle):
    return mask_utils.decode(dict(size=rle['size'],
                                  counts=rle['counts'].encode()))


def _polys(segmentation, h, w):
    out = np.zeros((h, w), np.uint8)
    for p in segmentation:
        out += mask_utils.decode(mask_utils.frPyObjects([p], h, w))[..., 0]
    return out


def _truth(data, fmt):
    """``[(file_name, answer, [mask (H, W) uint8])]`` from the raw file."""
    ann = data / 'annotations'
    out = []
    if fmt == 'refcocog':
        for entry in json.loads((ann / 'RefCOCOg_GCG_train.json')
                                .read_text()):
            (rec,) = entry.values()
            cap = rec['caption'].strip('"').lower()
            img = Image.open(data / 'images/coco2014/train2014' /
                             rec['img_file_name'])
            used = sorted((cap.index(r['sentence']), r) for r in rec['refs']
                          if r['sentence'] in cap)
            spans = [(s, s + len(r['sentence'])) for s, r in used]
            out.append((rec['img_file_name'], _tag_forward(cap, spans),
                        [_polys(r['segmentation'], img.height, img.width)
                         for _, r in used]))
    elif fmt == 'flickr':
        coco = json.loads((ann / 'flickr_mergedGT_GCG_train.json')
                          .read_text())
        for im in coco['images']:
            if len(im['caption'].split()) < 3:
                continue
            anns = sorted((a['tokens_positive'][0], a)
                          for a in coco['annotations']
                          if a['image_id'] == im['id'] and not
                          a.get('ignore'))
            out.append((im['file_name'],
                        _tag_forward(im['caption'], [t for t, _ in anns]),
                        [_decode(a['sam_mask']) for _, a in anns]))
    else:
        name = {'grandf': 'GranDf_HA_GCG_train.json',
                'openpsg': 'OpenPsgGCG_train.json'}[fmt]
        for rec in json.loads((ann / name).read_text()):
            items = sorted(rec['groundings'].values(),
                           key=lambda g: g['token_positives'][0])
            out.append((rec['file_name'],
                        _tag_forward(rec['caption'],
                                     [g['token_positives'] for g in items]),
                        [sum(_decode(r) for r in g['rle_masks'])
                         for g in items]))
    return out


@pytest.mark.parametrize('fmt', list(VARS))
def test_samples_are_sa2va(cfg, data, fmt, tiny_tokenizer):
    ds = _dataset(cfg, data, fmt, tiny_tokenizer)
    truth = _truth(data, fmt)
    assert len(ds) == len(truth)
    enc = encoder_of(ds)
    seg_id = tiny_tokenizer.convert_tokens_to_ids('[SEG]')
    p_id = tiny_tokenizer.convert_tokens_to_ids('<p>')
    for idx in range(len(ds)) if fmt == 'grandf' else [len(ds) - 1]:
        file_name, answer, masks = truth[idx]
        info = ds.get_data_info(idx)
        assert info['img_path'].endswith('/' + file_name)
        assert info['answer'] == answer
        sample = ds[idx]
        assert set(sample) == {'input_ids', 'labels', 'pixel_values',
                               'g_pixel_values', 'masks', 'data_stats',
                               'meta'}
        image = Image.open(info['img_path'])
        assert sample['pixel_values'].shape == (13, 3, 448, 448)
        assert sample['pixel_values'].dtype == torch.uint8
        assert torch.equal(sample['g_pixel_values'],
                           sam2_pixel_values(image))
        m = sample['masks']
        assert m.dtype == torch.uint8
        assert m.shape == (len(masks), image.height, image.width)
        for got, want in zip(m, masks):
            assert np.array_equal(got.numpy(), want) and want.any()
        q = GCG_QUESTIONS[np.random.default_rng([0, idx]).integers(6)]
        ref = xtuner_encode([dict(input=spell('<image>\n' + q, 13),
                                  output=answer)], tiny_tokenizer,
                            'phi3_chat')
        assert sample['input_ids'] == ref['input_ids']
        assert sample['labels'] == ref['labels']
        ids = sample['input_ids']
        assert ids.count(seg_id) == ids.count(p_id) == len(masks)
        assert ids.count(enc.context_id) == 256 * 13
        assert ds.modality_length[idx] > 256 * 13


def test_formats_specifics(cfg, data, tiny_tokenizer):
    # RefCOCOg-GCG: quotes stripped, lower case, unmentioned ref unused
    ref = _dataset(cfg, data, 'refcocog', tiny_tokenizer)
    assert not ref.get_data_info(0)['answer'].startswith('"')
    raw = json.loads((data / 'annotations/RefCOCOg_GCG_train.json')
                     .read_text())
    (rec1,) = raw[1].values()
    assert len(ref.get_data_info(1)['segmentations']) == \
        len(rec1['refs']) - 1
    # RefCOCOg parts: one polygon per part (summed by DecodeMasks)
    (rec0,) = raw[0].values()
    assert ref.get_data_info(0)['segmentations'][0] == [
        [p] for p in rec0['refs'][0]['segmentation']]
    # GranDf record 0: one phrase grounded by two RLEs
    grandf = _dataset(cfg, data, 'grandf', tiny_tokenizer)
    assert len(grandf.get_data_info(0)['segmentations'][0]) == 2
    # Flickr: 2-word caption dropped; 'ignore' annotation dropped
    flickr = _dataset(cfg, data, 'flickr', tiny_tokenizer)
    coco = json.loads((data / 'annotations/flickr_mergedGT_GCG_train.json')
                      .read_text())
    assert len(flickr) == len(coco['images']) - 1
    assert [len(flickr.get_data_info(i)['segmentations'])
            for i in range(len(flickr))] == [
        sum(1 for a in coco['annotations']
            if a['image_id'] == im['id'] and not a.get('ignore'))
        for im in coco['images'] if len(im['caption'].split()) >= 3]


def test_refcocog_overlap_trimming_is_v1s():
    rec = {'img_file_name': 'x.jpg',
           'caption': '"A man riding a horse on the beach."',
           'refs': [{'sentence': 'a man riding a horse', 'segmentation': []},
                    {'sentence': 'the beach', 'segmentation': []},
                    {'sentence': 'a horse', 'segmentation': []},
                    {'sentence': 'a zebra', 'segmentation': []}]}
    _, caption, spans, _, _ = adapt_refcocog(rec)
    assert caption == 'a man riding a horse on the beach.'
    # ref 0 overlaps ref 2: cut to end one character before it starts
    assert spans == [[0, 12], [13, 20], [24, 33]]
    from projects.sa2va.datasets.gcg import tag_caption
    assert tag_caption(caption, spans) == (
        '<p> a man riding </p> [SEG] <p> a horse </p> [SEG] on '
        '<p> the beach </p> [SEG].')


def test_bad_records_skipped_and_counted(data, tmp_path, cfg,
                                         tiny_tokenizer):
    root = tmp_path / 'glamm'
    shutil.copytree(data, root)
    path = root / 'annotations/GranDf_HA_GCG_train.json'
    recs = json.loads(path.read_text())
    recs[0]['groundings'] = {}
    first = next(iter(recs[1]['groundings'].values()))
    first['token_positives'] = [5, 5]
    path.write_text(json.dumps(recs))
    ds = _dataset(cfg, data, 'grandf', tiny_tokenizer,
                  data_root=str(root) + '/', min_bad_checks=1000)
    assert ds.get_data_info(0)['defect'] == 'no grounded phrase'
    # only record 2 is usable: every draw ends there, each skip counted
    for idx, reason in ((0, 'no_phrases'), (1, 'bad_span')):
        sample = ds[idx]
        assert sample['meta']['sample_idx'] == 2
        stats = sample['data_stats']
        assert stats[f'skipped/{reason}'] >= 1
        assert set(stats) <= {'samples', 'skipped/no_phrases',
                              'skipped/bad_span'}
    # a structurally wrong file raises at load time, naming the record
    bad = root / 'annotations/RefCOCOg_GCG_train.json'
    bad.write_text(json.dumps([{'a': {}, 'b': {}}]))
    with pytest.raises(ValueError, match=r'record 0 must be a single-key'):
        GCGDataset(data_root=str(root), format='refcocog',
                   ann_file='annotations/RefCOCOg_GCG_train.json')
    bad.write_text(json.dumps([{'7': {'caption': 'x'}}]))
    with pytest.raises(ValueError, match=r"record 0 \(7\) is malformed: "
                       r"KeyError"):
        GCGDataset(data_root=str(root), format='refcocog',
                   ann_file='annotations/RefCOCOg_GCG_train.json')
