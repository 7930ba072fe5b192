"""Referring video segmentation (MeViS, ReVOS, Ref-YouTube-VOS, SA-V
pseudo-referring) on generated sample data and on the real SA-V annotation:
outputs, object-major GT masks against the source files, Sa2VA v1 text
token for token, bad records, load-time errors."""
from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from projects.sa2va.constants import IMG_CONTEXT_TOKEN
from projects.sa2va.datasets import (MeViSDataset, RefYTVOSDataset,
                                     ReVOSDataset, SAVReferringDataset,
                                     sa2va_collate_fn)
from projects.sa2va.datasets.refvos import (ANSWER_LIST, SEG_QUESTIONS,
                                            VideoReferringConversation)
from projects.sa2va.sample_data import make_sample_data
from projects.sa2va.transforms import RecordError
from projects.sa2va.transforms.functional import (image_to_uint8_tensor,
                                                  sam2_pixel_values)
from projects.sa2va.transforms.video import (read_video_frames,
                                             sample_frame_indices)
from tests.conftest import shared_path

META = ('record_id', 'sample_idx', 'object_indices', 'frame_indices',
        'ori_shape', 'video_path')


def _pipeline(tok, first=(), load=None, rule='expression', **encode):
    return list(first) + [
        dict(type='SampleVideoObjects', select_number=5),
        dict(type='SampleVideoFrames', sampled_frames=5),
        load or dict(type='LoadFrames'),
        dict(type='DecodeVideoMasks'),
        dict(type='VideoReferringConversation', question_rule=rule),
        dict(type='ImagesToTensor', key='frames'),
        dict(type='SAM2Input', key='frames'),
        dict(type='EncodeConversation', tokenizer=tok,
             template=encode.get('template', 'internvl2_5'),
             max_length=encode.get('max_length', 8192)),
        dict(type='PackInputs', meta_keys=META),
    ]


SAV_FIRST = [dict(type='LoadSAVAnnotation')]
SAV_LOAD = dict(type='LoadVideoFrames', frame_stride=4,
                check_frame_count=True)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp('refvos_sample')
    make_sample_data(out, families=['refvos'])
    return out / 'video_datas'


@pytest.fixture(scope='module')
def tok(tiny_tokenizer_dir):
    return str(tiny_tokenizer_dir)


def _mevis(root, tok, **kw):
    return MeViSDataset(data_root=str(root / 'mevis/train'),
                        ann_file='meta_expressions.json',
                        mask_file='mask_dict.json',
                        data_prefix=dict(img_path='JPEGImages'),
                        pipeline=_pipeline(tok), **kw)


def _sav(root, tok, ann='sam_v_final_v3.json', **kw):
    return SAVReferringDataset(data_root=str(root), ann_file=ann,
                               data_prefix=dict(video_path='sam_v_full'),
                               pipeline=_pipeline(tok, SAV_FIRST, SAV_LOAD,
                                                  'description'), **kw)


@pytest.fixture(scope='module')
def mevis(root, tok):
    ds = _mevis(root, tok)
    return ds, [ds[0], ds[1]]


# ---------------------------------------------------------------------------
# Frame sampling and decoding
# ---------------------------------------------------------------------------
def test_sample_frame_indices_rules():
    rng = np.random.default_rng(7)
    assert sample_frame_indices(10, 5, rng) == [4, 5, 7, 8, 9]
    # n <= k + 1: with replacement (repeats possible), sorted
    assert sample_frame_indices(6, 5, rng) == [0, 1, 1, 5, 5]
    assert sample_frame_indices(3, 5, rng) == [0, 0, 1, 2, 2]
    # Chat-UniVi: one frame per segment of linspace(0, 100, 6)
    seg = sample_frame_indices(100, 5, rng, 'segments')
    assert seg == [9, 36, 46, 66, 85]
    assert all(lo <= i < hi for i, lo, hi in
               zip(seg, [0, 20, 40, 60, 80], [20, 40, 60, 80, 100]))
    assert sample_frame_indices(4, 5, rng, 'segments') == [0, 1, 2, 3]
    assert sample_frame_indices(7, 5, rng) == [1, 2, 3, 4, 5]
    for _ in range(20):  # distinct whenever n > k + 1
        idx = sample_frame_indices(7, 5, rng)
        assert len(set(idx)) == 5 and idx == sorted(idx)
    with pytest.raises(ValueError, match='unknown frame rule'):
        sample_frame_indices(7, 5, rng, 'uniform')


def _all_frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def test_read_video_frames_sequential_and_seek(root):
    path = root / 'sam_v_full/sav_000/sav_train/sav_000/sav_028944.mp4'
    ref = _all_frames(path)
    assert len(ref) == 30
    idx = [13, 0, 29, 4, 13]
    for gap in (None, 0):
        frames = read_video_frames(str(path), idx, seek_gap=gap)
        assert [f.size for f in frames] == [(96, 160)] * 5
        for f, i in zip(frames, idx):
            np.testing.assert_array_equal(np.asarray(f), ref[i])
    with pytest.raises(RecordError, match='ended before frame 30') as info:
        read_video_frames(str(path), [2, 30])
    assert info.value.reason == 'missing_frame'
    with pytest.raises(RecordError) as info:
        read_video_frames(str(path) + '.none', [0])
    assert info.value.reason == 'missing_video'


# ---------------------------------------------------------------------------
# MeViS / ReVOS
# ---------------------------------------------------------------------------
def _spelled_frames(n):
    block = '<img>' + IMG_CONTEXT_TOKEN * 256 + '</img>'
    return (block + '\n') * n


def _xtuner_ids(conversation, tokenizer, template='qwen_chat'):
    """Sa2VA v1's path: spelled-out strings, template_map_fn + encode_fn."""
    from tests.text_reference import reference_encode
    return reference_encode(conversation, tokenizer, template, 100000)


def _v1_conversation(expressions, seed_idx, n_objects, n_frames):
    """The v1 text for the sample drawn with rng (seed, idx): objects, then
    frames, then per object template and answer."""
    rng = np.random.default_rng(seed_idx)
    chosen = [int(i) for i in rng.choice(n_objects, 5)]
    sample_frame_indices(n_frames, 5, rng)
    conv = []
    for o in chosen:
        template = SEG_QUESTIONS[int(rng.integers(16))]
        answer = ANSWER_LIST[int(rng.integers(5))]
        exp = expressions[o]
        q = exp if '?' in exp else template.format(
            class_name=exp.replace('.', '').strip().lower())
        conv.append(dict(input=q, output=answer))
    # v1: (frame block + '\n') * n, stripped, then the question directly
    conv[0]['input'] = _spelled_frames(5).strip() + conv[0]['input']
    return chosen, conv


def test_mevis_sample_outputs_masks_and_text(root, mevis, tiny_tokenizer):
    ds, samples = mevis
    assert len(ds) == 2  # one item per video
    meta = json.loads((root / 'mevis/train/meta_expressions.json')
                      .read_text())['videos']
    mask_dict = json.loads((root / 'mevis/train/mask_dict.json').read_text())
    enc = ds.pipeline.transforms[7].encoder
    for idx, s in enumerate(samples):
        vid = s['meta']['record_id']
        entry = meta[vid]
        frames = sorted(entry['frames'])
        exp_ids = sorted(entry['expressions'])
        objs, fidx = s['meta']['object_indices'], s['meta']['frame_indices']
        assert len(objs) == 5 and len(fidx) == 5
        h, w = s['meta']['ori_shape']
        assert (h, w) == (120, 160)
        # images
        assert s['pixel_values'].shape == (5, 3, 448, 448)
        assert s['pixel_values'].dtype == torch.uint8
        assert s['g_pixel_values'].shape == (5, 3, 1024, 1024)
        assert s['g_pixel_values'].dtype == torch.uint8
        for k, t in enumerate(fidx):
            img = Image.open(root / 'mevis/train/JPEGImages' / vid /
                             f'{frames[t]}.jpg')
            assert torch.equal(s['pixel_values'][k],
                               image_to_uint8_tensor(img))
            assert torch.equal(s['g_pixel_values'][k],
                               sam2_pixel_values(img))
        # masks: object-major, OR of the anno_ids' RLEs (null = absent)
        assert s['masks'].shape == (25, h, w)
        assert s['masks'].dtype == torch.uint8
        assert set(s['masks'].unique().tolist()) <= {0, 1}
        expected = np.zeros((5, 5, h, w), np.uint8)
        for i, o in enumerate(objs):
            for a in entry['expressions'][exp_ids[o]]['anno_id']:
                for k, t in enumerate(fidx):
                    rle = mask_dict[str(a)][t]
                    if rle is not None:
                        expected[i, k] |= mask_utils.decode(
                            {'size': rle['size'],
                             'counts': rle['counts'].encode()})
        assert np.array_equal(s['masks'].numpy(),
                              expected.reshape(25, h, w))
        assert s['masks'].sum() > 0
        # text: token for token as v1's strings through xtuner
        ids = s['input_ids']
        assert ids.count(enc.context_id) == 256 * 5
        exps = [entry['expressions'][e]['exp'] for e in exp_ids]
        chosen, conv = _v1_conversation(exps, [0, idx], len(exps),
                                        len(frames))
        assert chosen == objs
        ref = _xtuner_ids(conv, tiny_tokenizer)
        assert ids == ref['input_ids']
        assert s['labels'] == ref['labels']
        question0 = conv[0]['input'][len(_spelled_frames(5).strip()):]
        text = enc.decode(ids)
        assert text.startswith('<|im_start|>user\n' + '<img>[256 x 1]</img>\n'
                               * 4 + '<img>[256 x 1]</img>' + question0
                               + '<|im_end|>\n<|im_start|>assistant\n')
        assert text.count('[SEG]') == 5


def test_mevis_short_video_and_collate(root, mevis):
    ds, samples = mevis
    # the generator's second MeViS video has 4 frames: 5 indices drawn with
    # replacement from 4
    short = [s for s in samples if max(s['meta']['frame_indices']) < 4]
    assert short and len(short[0]['meta']['frame_indices']) == 5
    batch = sa2va_collate_fn(samples)
    assert batch['frames_per_batch'] == [5, 5]
    assert len(batch['g_pixel_values']) == 10
    assert batch['pixel_values'].shape == (10, 3, 448, 448)
    assert [m.shape for m in batch['masks']] == [(25, 120, 160)] * 2
    lengths = ds.modality_length
    assert lengths.dtype == np.int32 and (lengths > 256 * 5).all()
    # estimate within 25% of the real length
    for s, n in zip(samples, lengths):
        assert abs(len(s['input_ids']) - n) < 0.25 * len(s['input_ids'])


def test_revos_reasoning_question_verbatim(root, tok):
    ds = ReVOSDataset(data_root=str(root / 'revos'),
                      ann_file='meta_expressions_train_.json',
                      mask_file='mask_dict.json', pipeline=_pipeline(tok))
    assert len(ds) == 2
    info = ds.get_data_info(0)
    questions = [o['exp'] for o in info['objects'] if '?' in o['exp']]
    assert len(questions) == 1
    step = VideoReferringConversation()
    res = step({'objects': info['objects'][-1:] * 2,
                'rng': np.random.default_rng(0)})
    assert res['conversation'][0]['input'] == '<image>' + questions[0]
    assert res['conversation'][1]['input'] == questions[0]
    s = ds[0]
    assert s['masks'].shape == (25, 120, 160)
    assert s['pixel_values'].shape == (5, 3, 448, 448)


class _FirstChoice:
    """rng stand-in: always the first option; coin below 0.5."""

    def integers(self, n):
        return 0

    def random(self):
        return 0.25


def test_question_rules_exact_strings():
    objs = [dict(exp='The Red car.', short_caps=['A red car', 'car']),
            dict(exp='Which car brakes first?', short_caps=['A car'])]
    conv = VideoReferringConversation('expression').transform(
        dict(objects=objs, rng=_FirstChoice()))['conversation']
    assert conv == [
        dict(input='<image>Can you segment the the red car in this image?',
             output='It is [SEG].'),
        dict(input='Which car brakes first?', output='It is [SEG].')]
    conv = VideoReferringConversation('description', frame_newline=True) \
        .transform(dict(objects=objs[:1], rng=_FirstChoice()))['conversation']
    assert conv == [dict(input='<image>\nPlease segment the object according '
                         'to the description: The Red car.',
                         output='It is [SEG].')]
    conv = VideoReferringConversation('short_caption').transform(
        dict(objects=objs, rng=_FirstChoice()))['conversation']
    assert [c['input'] for c in conv] == [
        '<image>Can you segment the red car in this image?',
        'Can you segment the car in this image?']
    # long_short: coin 0.25 < 0.5 -> the long description
    conv = VideoReferringConversation('description_or_short').transform(
        dict(objects=objs[:1], rng=_FirstChoice()))['conversation']
    assert conv[0]['input'].endswith('description: The Red car.')
    with pytest.raises(ValueError, match='unknown question_rule'):
        VideoReferringConversation('long')


# ---------------------------------------------------------------------------
# Ref-YouTube-VOS
# ---------------------------------------------------------------------------
def test_ref_ytvos_counter_keys_and_palette_masks(root, tok):
    ds = RefYTVOSDataset(
        data_root=str(root / 'rvos'),
        ann_file='meta_expressions/train/meta_expressions.json',
        mask_file='mask_dict.pkl',
        data_prefix=dict(img_path='train/JPEGImages'),
        pipeline=_pipeline(tok))
    meta = json.loads((root / 'rvos/meta_expressions/train/'
                       'meta_expressions.json').read_text())['videos']
    # counter over videos (JSON order) and expression ids sorted as strings
    counter = 0
    for v, (vid, entry) in enumerate(meta.items()):
        info = ds.get_data_info(v)
        exp_ids = sorted(entry['expressions'])
        assert [o['anno_ids'] for o in info['objects']] == \
            [[str(counter + j)] for j in range(len(exp_ids))]
        counter += len(exp_ids)
    assert sorted(meta[next(iter(meta))]['expressions'])[:3] == \
        ['0', '1', '10']
    s = ds[0]
    vid = s['meta']['record_id']
    entry = meta[vid]
    exp_ids = sorted(entry['expressions'])
    frames = sorted(entry['frames'])
    expected = []
    for o in s['meta']['object_indices']:
        obj_id = int(entry['expressions'][exp_ids[o]]['obj_id'])
        for t in s['meta']['frame_indices']:
            png = np.asarray(Image.open(root / 'rvos/train/Annotations' / vid
                                        / f'{frames[t]}.png'))
            expected.append((png == obj_id).astype(np.uint8))
    assert np.array_equal(s['masks'].numpy(), np.stack(expected))
    assert s['masks'].sum() > 0


# ---------------------------------------------------------------------------
# SA-V pseudo-referring
# ---------------------------------------------------------------------------
def _masklet_masks(anno, objs, fidx):
    out = []
    for k in objs:
        for t in fidx:
            rle = anno['masklet'][t][k]
            out.append(mask_utils.decode({'size': rle['size'],
                                          'counts': rle['counts'].encode()}))
    return np.stack(out)


def test_sav_sample_data(root, tok, tiny_tokenizer):
    ds = _sav(root, tok)
    entries = json.loads((root / 'sam_v_final_v3.json').read_text())
    assert len(ds) == len(entries) == 2
    for idx in range(2):
        s = ds[idx]
        vid = s['meta']['record_id']
        entry = entries[vid]
        keys = list(entry['objects'])
        anno = json.loads((root / 'sam_v_full' / entry['anno_path'])
                          .read_text())
        objs = [int(keys[o]) for o in s['meta']['object_indices']]
        fidx = s['meta']['frame_indices']
        assert max(fidx) < len(anno['masklet'])
        assert s['masks'].shape == (25, 160, 96)
        assert np.array_equal(s['masks'].numpy(),
                              _masklet_masks(anno, objs, fidx))
        # frames: every 4th video frame, the one of each annotated index
        video = _all_frames(root / 'sam_v_full' / entry['video_path'])
        assert len(anno['masklet']) == math.ceil(len(video) / 4)
        for k, t in enumerate(fidx):
            frame = Image.fromarray(video[4 * t])
            assert torch.equal(s['pixel_values'][k],
                               image_to_uint8_tensor(frame))
            assert torch.equal(s['g_pixel_values'][k],
                               sam2_pixel_values(frame))
        # text: the long description verbatim in v1's template
        rng = np.random.default_rng([0, idx])
        rng.choice(len(keys), 5)
        sample_frame_indices(len(anno['masklet']), 5, rng)
        conv = []
        for k in objs:
            rng.integers(1)
            answer = ANSWER_LIST[int(rng.integers(5))]
            conv.append(dict(input='Please segment the object according to '
                             'the description: '
                             + entry['objects'][str(k)]['formated'],
                             output=answer))
        conv[0]['input'] = _spelled_frames(5).strip() + conv[0]['input']
        ref = _xtuner_ids(conv, tiny_tokenizer)
        assert s['input_ids'] == ref['input_ids']
        assert s['labels'] == ref['labels']


def _write_video(path, n, height, width):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 24,
                             (width, height))
    frame = np.zeros((height, width, 3), np.uint8)
    for i in range(n):
        frame[:] = (40, 80, 120)
        frame[(7 * i) % (height - 40):(7 * i) % (height - 40) + 40,
              100:200] = 255
        writer.write(frame)
    writer.release()


@pytest.fixture(scope='module')
def real_sav(tmp_path_factory):
    """The real SA-V annotation of sav_000001 (483 frames, 848 x 480
    portrait, 121 annotated frames, 5 manual masklets) with a synthesized
    483-frame mp4 of its size, and a one-video pseudo-referring JSON with
    objects 0..4. A second entry points at a 9-frame mp4 of the same size:
    ceil(9 / 4) = 3 != 121 annotated frames, a bad record."""
    manual = shared_path('data', 'real', 'sa-v', 'sav_000001_manual.json')
    base = tmp_path_factory.mktemp('real_sav')
    folder = base / 'sam_v_full/sav_train/sav_000'
    _write_video(folder / 'sav_000001.mp4', 483, 848, 480)
    _write_video(folder / 'sav_000009.mp4', 9, 848, 480)
    shutil.copy(manual, folder / 'sav_000001_manual.json')
    objects = {str(k): {'formated': f'Object number {k} of the video.',
                        'short_caps': [f'object {k}']} for k in range(5)}
    entries = {
        'sav_000009': {'video_path': 'sav_train/sav_000/sav_000009.mp4',
                       'anno_path': 'sav_train/sav_000/sav_000001_manual.json',
                       'objects': objects},
        'sav_000001': {'video_path': 'sav_train/sav_000/sav_000001.mp4',
                       'anno_path': 'sav_train/sav_000/sav_000001_manual.json',
                       'objects': objects}}
    (base / 'sam_v_final_v3.json').write_text(json.dumps(entries))
    return base, json.loads(manual.read_text())


def test_sav_real_annotation_end_to_end(real_sav, tok):
    base, anno = real_sav
    assert len(anno['masklet']) == 121 and anno['video_frame_count'] == 483
    ds = _sav(base, tok, min_bad_checks=1000)
    s = ds[0]  # entry 0 has a 9-frame video: skipped, counted
    assert s['data_stats']['skipped/frame_count_mismatch'] >= 1
    assert s['meta']['record_id'] == 'sav_000001'
    assert s['meta']['ori_shape'] == (848, 480)
    assert s['masks'].shape == (25, 848, 480)
    assert s['pixel_values'].shape == (5, 3, 448, 448)
    assert s['g_pixel_values'].shape == (5, 3, 1024, 1024)
    objs = s['meta']['object_indices']
    assert np.array_equal(
        s['masks'].numpy(),
        _masklet_masks(anno, objs, s['meta']['frame_indices']))
    assert s['masks'].sum() > 0


# ---------------------------------------------------------------------------
# Bad records and bad files
# ---------------------------------------------------------------------------
def _copy_mevis(root, dst):
    shutil.copytree(root / 'mevis', dst / 'mevis')
    return dst / 'mevis/train'


def test_missing_frame_skipped_and_counted(root, tok, tmp_path):
    train = _copy_mevis(root, tmp_path)
    meta = json.loads((train / 'meta_expressions.json').read_text())
    vid0 = next(iter(meta['videos']))
    shutil.rmtree(train / 'JPEGImages' / vid0)
    ds = MeViSDataset(data_root=str(train), ann_file='meta_expressions.json',
                      mask_file='mask_dict.json',
                      data_prefix=dict(img_path='JPEGImages'),
                      pipeline=_pipeline(tok), min_bad_checks=1000)
    s = ds[0]
    assert s['data_stats']['skipped/missing_image'] >= 1
    assert s['meta']['record_id'] != vid0
    assert ds[1]['data_stats'].get('skipped/missing_image') is None


def test_bad_rle_size_is_a_bad_record(root, tok, tmp_path):
    train = _copy_mevis(root, tmp_path)
    masks = json.loads((train / 'mask_dict.json').read_text())
    for track in masks.values():
        for k, rle in enumerate(track):
            if rle is not None:
                track[k] = {'size': [6, 8], 'counts': '`1'}
    (train / 'mask_dict.json').write_text(json.dumps(masks))
    ds = MeViSDataset(data_root=str(train), ann_file='meta_expressions.json',
                      mask_file='mask_dict.json',
                      data_prefix=dict(img_path='JPEGImages'),
                      pipeline=_pipeline(tok))
    with pytest.raises(RecordError, match='differs from the image size') as e:
        ds.prepare_data(0)
    assert e.value.reason == 'bad_mask'


def test_load_time_errors_name_file_and_record(root, tmp_path):
    train = _copy_mevis(root, tmp_path)
    masks = json.loads((train / 'mask_dict.json').read_text())
    meta = json.loads((train / 'meta_expressions.json').read_text())
    vid, entry = next(iter(meta['videos'].items()))
    anno = str(entry['expressions']['0']['anno_id'][0])
    broken = dict(masks)
    del broken[anno]
    (train / 'mask_dict.json').write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=f"no masks for anno_id '{anno}'.*"
                       f"video '{vid}' expression '0'"):
        MeViSDataset(data_root=str(train), ann_file='meta_expressions.json',
                     mask_file='mask_dict.json')
    broken = dict(masks)
    broken[anno] = masks[anno][:-1]
    (train / 'mask_dict.json').write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=f"anno_id '{anno}' has "
                       f"{len(entry['frames']) - 1} mask entries"):
        MeViSDataset(data_root=str(train), ann_file='meta_expressions.json',
                     mask_file='mask_dict.json')
    (tmp_path / 'sav.json').write_text(json.dumps(
        {'sav_1': {'video_path': 'a.mp4', 'anno_path': 'a.json',
                   'objects': {'first': {'formated': 'x'}}}}))
    with pytest.raises(ValueError, match="video 'sav_1'.*'first' is not a "
                       "masklet index"):
        SAVReferringDataset(data_root=str(tmp_path), ann_file='sav.json')
