"""Video families: MeViS, ReVOS, Ref-YouTube-VOS, SA-V (release and
pseudo-referring, against the real example files) and Chat-UniVi."""
from __future__ import annotations

import json
import math
import pickle

import cv2
import numpy as np
from PIL import Image

from tests.conftest import shared_path

from .helpers import assert_color, check_rle, load_json, rgb_image


def _read_mp4(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_mevis_and_revos(sample):
    root, manifest = sample
    for name in ('mevis', 'revos'):
        entry = manifest['datasets'][name]
        meta = load_json(root, entry['expression_file'])
        masks = load_json(root, entry['mask_file'])
        n_null = 0
        for key, video in meta['videos'].items():
            frames = video['frames']
            assert frames == sorted(frames) and all(len(f) == 5
                                                    for f in frames)
            imgs = [rgb_image(root / entry['image_folder'] / key / f'{f}.jpg')
                    for f in frames]
            h, w = imgs[0].shape[:2]
            if name == 'revos':
                assert (video['height'], video['width']) == (h, w)
                fg = load_json(root, entry['foreground_file'])[key]
                assert len(fg['masks_rle']) == len(frames)
            for exp in video['expressions'].values():
                assert isinstance(exp['exp'], str) and exp['anno_id']
                assert all(isinstance(a, int) for a in exp['anno_id'])
                assert all(isinstance(o, int) for o in exp['obj_id'])
                if name == 'revos':
                    assert exp['type_id'] == int('?' in exp['exp'])
                for aid in exp['anno_id']:
                    per_frame = masks[str(aid)]
                    assert len(per_frame) == len(frames)
                    for t, rle in enumerate(per_frame):
                        if rle is None:
                            n_null += 1
                            continue
                        m = check_rle(rle, h, w)
                        assert m.any()
                        if len(exp['anno_id']) == 1 and '?' not in exp['exp']:
                            assert_color(imgs[t], m, exp['exp'])
        assert n_null > 0                  # the late object
    mevis = load_json(root, 'video_datas/mevis/train/meta_expressions.json')
    assert sorted(len(v['frames']) for v in mevis['videos'].values()) == [4, 8]


def test_ref_youtube_vos(sample):
    root, manifest = sample
    entry = manifest['datasets']['ref_ytvos']
    meta = load_json(root, entry['expression_file'])
    with open(root / entry['mask_file'], 'rb') as f:
        mask_dict = pickle.load(f)
    keys = list(meta['videos'])
    assert keys == sorted(keys)
    counter = 0
    n_none = 0
    for key in keys:
        video = meta['videos'][key]
        assert [int(f) for f in video['frames']] == \
            list(range(0, 5 * len(video['frames']), 5))
        labels = [np.asarray(Image.open(root / entry['annotations_folder'] /
                                        key / f'{f}.png'))
                  for f in video['frames']]
        assert all(Image.open(root / entry['annotations_folder'] / key /
                              f'{f}.png').mode == 'P' for f in video['frames'])
        for eid in sorted(video['expressions']):
            exp = video['expressions'][eid]
            assert isinstance(exp['obj_id'], str) and 'anno_id' not in exp
            per_frame = mask_dict[str(counter)]
            counter += 1
            assert len(per_frame) == len(video['frames'])
            for lab, rle in zip(labels, per_frame):
                want = lab == int(exp['obj_id'])
                if rle is None:
                    n_none += 1
                    assert not want.any()
                else:
                    m = check_rle(rle, *lab.shape, counts_type=bytes)
                    assert np.array_equal(m, want)
    assert counter == len(mask_dict) == entry['num_expressions']
    assert n_none > 0
    big = max(meta['videos'].values(), key=lambda v: len(v['expressions']))
    assert len(big['expressions']) >= 11   # "10" sorts before "2"
    ytmeta = load_json(root, entry['meta_file'])
    assert list(ytmeta['videos']) == keys


def _types(d):
    return {k: type(v).__name__ for k, v in d.items()}


def test_sav_json_matches_real_example(sample):
    root, manifest = sample
    real = {kind: json.loads(shared_path(
        'data', 'real', 'sa-v', f'sav_000001_{kind}.json').read_text())
        for kind in ('manual', 'auto')}
    videos = manifest['datasets']['sav_release']['videos']
    assert len(videos) == 2
    for v in videos:
        for kind in ('manual', 'auto'):
            gen = load_json(root, v[kind])
            ref = real[kind]
            assert list(gen) == list(ref)              # same keys, same order
            assert _types(gen) == _types(ref)
            for key in ('masklet_id', 'masklet_size_rel', 'masklet_size_abs',
                        'masklet_size_bucket', 'masklet_visibility_changes',
                        'masklet_frame_count', 'masklet_edited_frame_count',
                        'masklet_type'):
                assert {type(x) for x in gen[key]} == \
                    {type(x) for x in ref[key]}, key
                assert len(gen[key]) == gen['masklet_num']
            assert {type(x) for x in gen['masklet_first_appeared_frame']} == \
                {type(x) for x in ref['masklet_first_appeared_frame']}
            n = int(gen['video_frame_count'])
            assert len(gen['masklet']) == math.ceil(n / 4)
            if kind == 'manual':
                assert gen['masklet_stability_score'] == \
                    [None] * gen['masklet_num']
            else:
                assert len(gen['masklet_stability_score']) == \
                    len(gen['masklet'])
            h, w = int(gen['video_height']), int(gen['video_width'])
            assert h > w                                   # portrait
            frames = _read_mp4(root / v['mp4'])
            assert len(frames) == n and frames[0].shape[:2] == (h, w)
            jpgs = sorted((root / v['frames_dir']).iterdir())
            assert [p.name for p in jpgs] == [f'{t:05d}.jpg'
                                              for t in range(n)]
            for t, per_obj in enumerate(gen['masklet']):
                assert len(per_obj) == gen['masklet_num']
                for rle in per_obj:
                    assert isinstance(rle['counts'], str)
                    check_rle(rle, h, w)
            # an absent object is an all-zero RLE (not null), as in the real file
            late = [k for k in range(gen['masklet_num'])
                    if not check_rle(gen['masklet'][0][k], h, w).any()]
            assert late


def test_sav_pseudo_referring(sample):
    root, manifest = sample
    entry = manifest['datasets']['sav_pseudo']
    data = load_json(root, entry['ann_file'])
    vroot = root / entry['video_folder']
    dup = 0
    for vid, item in data.items():
        assert set(item) == {'video_path', 'anno_path', 'objects'}
        dup += item['video_path'].startswith('sav_000/sav_train/')
        anno = json.loads((vroot / item['anno_path']).read_text())
        frames = _read_mp4(vroot / item['video_path'])
        assert len(anno['masklet']) == math.ceil(len(frames) / 4)
        h, w = frames[0].shape[:2]
        jpg_dir = vroot / 'JPEGImages_24fps' / vid
        for key, obj in item['objects'].items():
            k = int(key)
            assert 0 <= k < anno['masklet_num']
            assert set(obj) == {'formated', 'short_caps'}
            for t, per_obj in enumerate(anno['masklet']):
                m = check_rle(per_obj[k], h, w)
                if m.sum() > 20:
                    img = rgb_image(jpg_dir / f'{4 * t:05d}.jpg')
                    assert_color(img, m, obj['short_caps'][0])
    assert dup == 1


def test_chat_univi(sample):
    root, manifest = sample
    entry = manifest['datasets']['chat_univi']
    recs = load_json(root, entry['ann_file'])
    for rec in recs:
        assert rec['conversations'][0]['from'] == 'human'
        assert rec['conversations'][0]['value'].startswith('<video>\n')
        path = root / entry['video_folder'] / rec['video']
        if not path.exists():
            assert path.suffix == '.mkv'
            path = path.with_suffix('.mp4')
        frames = _read_mp4(path)
        assert len(frames) == 12 and frames[0].shape == (120, 160, 3)
