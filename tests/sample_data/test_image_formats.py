"""Image families: the generated files parse with the real structures and
their masks decode at the image size onto the painted objects."""
from __future__ import annotations

import pickle
import re
import tarfile

import numpy as np
from pycocotools.coco import COCO

from projects.sa2va.transforms.functional import decode_mask, pool_prompt_masks

from .helpers import (assert_color, check_polygons, check_rle, load_json,
                      rgb_image)

OSPREY = 'osprey-724k/Osprey-724K/'


def _osprey_image(root, file_name):
    for folder in ('train2014', 'val2014', 'train2017', 'val2017'):
        path = root / 'osprey-724k/coco' / folder / file_name
        if path.exists():
            return rgb_image(path)
    raise AssertionError(f'{file_name} not found')


def test_osprey_files(sample):
    root, manifest = sample
    for name in ('conversation', 'detail_description', 'short_form',
                 'part_level', 'lvis_positive_negative'):
        records = load_json(root, f'{OSPREY}osprey_{name}.json')
        assert isinstance(records, list) and len(records) == 3
        for rec in records:
            fn = rec['file_name']
            if name in ('conversation', 'detail_description'):
                assert re.fullmatch(r'COCO_train2014_\d{12}\.jpg', fn)
                assert isinstance(rec['id'], int)
            else:
                assert re.fullmatch(r'\d{12}\.jpg', fn)
            img = _osprey_image(root, fn)
            h, w = rec['height'], rec['width']
            assert img.shape == (h, w, 3)
            masks = np.stack([decode_mask(a['segmentation'], h, w)
                              for a in rec['annotation']])
            assert masks.any(axis=(1, 2)).all()
            cells = pool_prompt_masks(masks, mode='nearest').flatten(1).sum(1)
            assert int(cells.min()) >= 4       # v2 keeps every record
            if name == 'detail_description':
                assert 'conversations' not in rec
                assert len(rec['description']) == len(rec['annotation'])
                for k, d in enumerate(rec['description']):
                    assert re.match(r'<(region|Region|regin)\s?%d>: ' % (k + 1),
                                    d)
            else:
                turns = rec['conversations']
                assert turns[0]['from'] == 'human'
                assert [t['from'] for t in turns] == \
                    ['human', 'gpt'] * (len(turns) // 2)
            for a in rec['annotation']:
                seg = a['segmentation']
                if isinstance(seg, list):
                    check_polygons(seg, h, w)
                elif isinstance(seg['counts'], list):
                    assert sum(seg['counts']) == h * w
                else:
                    check_rle(seg, h, w)
    conv = load_json(root, f'{OSPREY}osprey_conversation.json')
    assert conv[1]['conversations'][0]['value'].count('<region1]') == 1
    short = load_json(root, f'{OSPREY}osprey_short_form.json')
    assert isinstance(short[0]['annotation'][1]['segmentation']['counts'],
                      list)
    # the region text names the painted object: colour check on record 0
    rec = conv[0]
    img = _osprey_image(root, rec['file_name'])
    m = decode_mask(rec['annotation'][0]['segmentation'], rec['height'],
                    rec['width'])
    assert_color(img, m, rec['conversations'][1]['value'])


def test_describe_anything(sample):
    root, manifest = sample
    entry = manifest['datasets']['describe_anything']
    for split, info in entry['splits'].items():
        ann = load_json(root, info['ann_file'])
        assert isinstance(ann, dict) and len(ann) == info['num_samples']
        members = {}
        for shard in info['shards']:
            with tarfile.open(root / shard) as tar:
                for m in tar.getmembers():
                    assert m.mtime == 0
                    members[m.name] = (shard, tar.extractfile(m).read())
        for sid, value in ann.items():
            assert pickle.loads(members[f'{sid}.pickle'][1]) == value
            regions = value if isinstance(value, list) else [value]
            jpg = f'{sid}.0.jpg' if split == 'SAV' else f'{sid}.jpg'
            img = rgb_image(members[jpg][1])
            for r in regions:
                assert set(r) == {'img_id', 'image', 'ann_id', 'mask_rle',
                                  'caption', 'tar_file'}
                assert members[jpg][0].endswith(r['tar_file'])
                h, w = img.shape[:2]
                mask = check_rle(r['mask_rle'], h, w)
                assert mask.any()
                assert_color(img, mask, r['caption'])
            if split != 'SAV':
                assert regions[0]['image'] == f'{int(sid):012d}.jpg'
    lvis = load_json(root, entry['splits']['LVIS']['ann_file'])
    assert sum(isinstance(v, dict) for v in lvis.values()) == 1


def test_refcoco_family(sample):
    root, manifest = sample
    for name, split_file in (('refcoco', 'refs(unc).p'),
                             ('refcoco+', 'refs(unc).p'),
                             ('refcocog', 'refs(umd).p')):
        base = root / 'ref_seg' / name
        with open(base / split_file, 'rb') as f:
            refs = pickle.load(f)
        coco = COCO(str(base / 'instances.json'))
        inst = load_json(root, f'ref_seg/{name}/instances.json')
        assert set(inst) == {'info', 'images', 'licenses', 'annotations',
                             'categories'}
        splits = {r['split'] for r in refs}
        assert 'train' in splits and splits <= {'train', 'val', 'testA',
                                                'testB', 'test'}
        for ref in refs:
            assert set(ref) == {'ref_id', 'ann_id', 'image_id', 'split',
                                'sentences', 'sent_ids', 'category_id',
                                'file_name'}
            assert ref['sent_ids'] == [s['sent_id'] for s in ref['sentences']]
            for s in ref['sentences']:
                assert s['tokens'] == s['sent'].split()
                assert s['sent'] == s['sent'].lower()
            ann = coco.anns[ref['ann_id']]
            img_info = coco.imgs[ref['image_id']]
            assert ann['image_id'] == ref['image_id'] and ann['iscrowd'] == 0
            assert re.fullmatch(r'COCO_train2014_%012d_\d+\.jpg'
                                % ref['image_id'], ref['file_name'])
            img = rgb_image(base / 'coco2014/train2014' /
                            img_info['file_name'])
            h, w = img.shape[:2]
            assert (h, w) == (img_info['height'], img_info['width'])
            mask = check_polygons(ann['segmentation'], h, w)
            assert mask.sum() == ann['area']
            assert_color(img, mask, ref['sentences'][0]['sent'])
        crowd = [a for a in inst['annotations'] if a['iscrowd']]
        assert len(crowd) == 1
        h, w = crowd[0]['segmentation']['size']
        assert sum(crowd[0]['segmentation']['counts']) == h * w
        assert decode_mask(crowd[0]['segmentation'], h, w).sum() == \
            crowd[0]['area']
        assert any(len(a['segmentation']) == 2 for a in inst['annotations']
                   if not a['iscrowd'])
        assert refs[0]['sentences'][0]['raw'].isupper()


def _span_ok(caption, phrase, span):
    assert caption[span[0]:span[1]] == phrase


def test_gcg_files(sample):
    root, manifest = sample
    ann = 'glamm_data/annotations/'
    img_root = root / 'glamm_data/images'
    refg = load_json(root, ann + 'RefCOCOg_GCG_train.json')
    unmatched = 0
    for item in refg:
        (key, rec), = item.items()
        assert set(rec) == {'img_file_name', 'caption', 'refs'}
        img = rgb_image(img_root / 'coco2014/train2014' / rec['img_file_name'])
        cap = rec['caption'].strip('"').lower()
        for ref in rec['refs']:
            assert ref['sentence'] == ref['sentence'].lower()
            mask = check_polygons(ref['segmentation'], *img.shape[:2])
            if ref['sentence'] in cap:
                assert_color(img, mask, ref['sentence'])
            else:
                unmatched += 1
    assert unmatched == 1 and refg[0][next(iter(refg[0]))]['caption'][0] == '"'
    for fname, folder, pattern in (
            ('GranDf_HA_GCG_train.json', 'grandf/train', r'sa_\d+\.jpg'),
            ('OpenPsgGCG_train.json', 'coco2017', r'\d{12}\.jpg')):
        recs = load_json(root, ann + fname)
        for rec in recs:
            assert re.fullmatch(pattern, rec['file_name'])
            img = rgb_image(img_root / folder / rec['file_name'])
            assert img.shape[:2] == (rec['height'], rec['width'])
            assert isinstance(rec['image_id'], str)
            for phrase, g in rec['groundings'].items():
                assert g is not None
                _span_ok(rec['caption'], phrase, g['token_positives'])
                total = sum(check_rle(r, rec['height'], rec['width'])
                            for r in g['rle_masks'])
                assert total.any() and total.max() == 1
        assert len(recs[0]['groundings']['the ' + recs[0]['caption'].split(
            'the ')[1].split(' shapes')[0] + ' shapes']['rle_masks']) == 2
    fl = load_json(root, ann + 'flickr_mergedGT_GCG_train.json')
    coco = COCO(str(root / ann / 'flickr_mergedGT_GCG_train.json'))
    for a in fl['annotations']:
        info = coco.imgs[a['image_id']]
        assert re.fullmatch(r'\d+\.jpg', info['file_name'])
        (s, e), = a['tokens_positive']
        img = rgb_image(img_root / 'flickr30k/Flickr30K' / info['file_name'])
        mask = check_rle(a['sam_mask'], info['height'], info['width'])
        assert mask.sum() == a['area']
        phrase = info['caption'][s:e]
        if phrase != 'Two shapes':
            assert_color(img, mask, phrase)
    assert sum(len(i['caption'].split()) < 3 for i in fl['images']) == 1
    assert sum(a.get('ignore', 0) for a in fl['annotations']) == 1


def test_llava(sample):
    root, manifest = sample
    recs = load_json(root, 'llava_data/LLaVA-Instruct-150K/'
                           'llava_v1_5_mix665k.json')
    text_only = [r for r in recs if 'image' not in r]
    assert len(text_only) == 2 and len(recs) == 8
    prefixes = set()
    for r in recs:
        assert isinstance(r['id'], str)
        turns = r['conversations']
        assert turns[0]['from'] == 'human'
        assert all('<image>' not in t['value'] for t in turns[1:])
        if 'image' in r:
            assert '<image>' in turns[0]['value']
            rgb_image(root / 'llava_data/llava_images' / r['image'])
            prefixes.add(r['image'].rsplit('/', 1)[0])
        else:
            assert '<image>' not in turns[0]['value']
    assert prefixes == {'coco/train2017', 'gqa/images', 'ocr_vqa/images',
                        'textvqa/train_images', 'vg/VG_100K', 'vg/VG_100K_2'}
    assert sum(r['conversations'][0]['value'].endswith('\n<image>')
               for r in recs) == 1
