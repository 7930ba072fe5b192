"""VQA: LLaVA's text form against Sa2VA v1's LLaVADataset loop (where
<image> stands, stripping, text-only records, no separator between turns)
and Chat-UniVi video chat (OpenCV frames, segment sampling, literal <video>,
.mkv -> .mp4 fallback) on generated sample data; base configs build."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from projects.sa2va.constants import IMG_CONTEXT_TOKEN
from projects.sa2va.datasets import ChatUniViDataset, LLaVADataset
from projects.sa2va.datasets.vqa import (chat_univi_conversation,
                                         llava_conversation)
from projects.sa2va.sample_data import make_sample_data
from projects.sa2va.transforms.functional import image_to_uint8_tensor
from projects.sa2va.transforms.video import sample_frame_indices
from tests.datasets.test_refvos import _all_frames, _xtuner_ids

REPO = Path(__file__).resolve().parents[2]
BLOCK = '<img>' + IMG_CONTEXT_TOKEN * 256 + '</img>'


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp('vqa_sample')
    make_sample_data(out, families=['vqa'])
    return out


@pytest.fixture(scope='module')
def tok(tiny_tokenizer_dir):
    return str(tiny_tokenizer_dir)


# ---------------------------------------------------------------------------
# LLaVA
# ---------------------------------------------------------------------------
def test_llava_conversation_rules():
    turns = [('gpt', 'leading answer is dropped'),
             ('human', '  What is this?\n<image> '), ('human', '\nMore.'),
             ('gpt', ' A cat. '), ('gpt', 'Second answer.'),
             ('human', 'Trailing question')]
    assert llava_conversation(turns, has_image=True) == [
        dict(input='What is this?\n<image>More.', output='A cat.'),
        dict(input='', output='Second answer.')]
    assert llava_conversation(turns, has_image=False) == [
        dict(input='What is this?More.', output='A cat.'),
        dict(input='', output='Second answer.')]


def _v1_llava(turns, image_token_str, tokenizer, template):
    """Sa2VA v1 LLaVADataset.get_inputid_labels, restated."""
    from tests.text_reference import reference_template
    t = reference_template(template)
    while turns and turns[0]['from'] == 'gpt':
        turns = turns[1:]
    pairs, question = [], ''
    for msg in turns:
        value = msg['value']
        if msg['from'] == 'human':
            if image_token_str is None:
                value = value.replace('<image>', '')
            if '<image>' in value:
                value = value.replace('<image>', image_token_str).strip()
            question += value.strip()
        else:
            pairs.append((question, value.strip()))
            question = ''
    ids, labels = [], []
    for i, (q, a) in enumerate(pairs):
        enc = tokenizer.encode(t['INSTRUCTION'].format(input=q, round=i + 1),
                               add_special_tokens=i == 0)
        ids += enc
        labels += [-100] * len(enc)
        out = tokenizer.encode(a + t.get('SUFFIX', ''),
                               add_special_tokens=False)
        ids += out
        labels += out
    return ids, labels


def _llava(root, tok, template):
    return LLaVADataset(
        data_root=str(root / 'llava_data'),
        ann_file='LLaVA-Instruct-150K/llava_v1_5_mix665k.json',
        data_prefix=dict(img_path='llava_images'), max_num_tiles=4,
        pipeline=[dict(type='LoadImage', allow_text_only=True),
                  dict(type='DynamicTiles', max_num=4),
                  dict(type='ImagesToTensor'),
                  dict(type='EncodeLLaVAConversation', tokenizer=tok,
                       template=template, max_length=100000),
                  dict(type='PackInputs')])


@pytest.mark.parametrize('template', ['phi3_chat', 'qwen_chat'])
def test_llava_ids_equal_sa2va_v1(root, tok, tiny_tokenizer, template):
    ds = _llava(root, tok, template)
    records = json.loads((root / 'llava_data/LLaVA-Instruct-150K/'
                          'llava_v1_5_mix665k.json').read_text())
    assert len(ds) == len(records) == 8
    # one image record with <image> at the start, one with it at the end,
    # one text-only record
    at_end = next(i for i, r in enumerate(records) if r.get('image') and
                  r['conversations'][0]['value'].endswith('<image>'))
    at_start = next(i for i, r in enumerate(records) if r.get('image') and
                    r['conversations'][0]['value'].startswith('<image>'))
    text_only = next(i for i, r in enumerate(records) if 'image' not in r)
    ctx = tiny_tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    samples = {}
    for idx in (at_start, at_end, text_only):
        s = samples[idx] = ds[idx]
        rec = records[idx]
        if 'image' in rec:
            n = s['pixel_values'].shape[0]
            assert s['pixel_values'].dtype == torch.uint8
            image_str = '<img>' + IMG_CONTEXT_TOKEN * 256 * n + '</img>'
        else:
            assert 'pixel_values' not in s
            n, image_str = 0, None
        ids, labels = _v1_llava(copy.deepcopy(rec['conversations']),
                                image_str, tiny_tokenizer, template)
        assert s['input_ids'] == ids
        assert s['labels'] == labels
        assert s['input_ids'].count(ctx) == 256 * n
    # <image> at the end stays at the end of the question
    enc = ds.pipeline.transforms[3].encoder
    text = enc.decode(samples[at_end]['input_ids'])
    first_q = records[at_end]['conversations'][0]['value']
    n = samples[at_end]['pixel_values'].shape[0]
    assert first_q.endswith('\n<image>')
    assert '<|user|>\n' * (template == 'phi3_chat') + first_q.replace(
        '<image>', f'<img>[256 x {n}]</img>') + \
        ('<|end|>' if template == 'phi3_chat' else '<|im_end|>') in text
    # no separator between turns: <|end|><|user|> / <|im_end|><|im_start|>
    assert ('<|end|><|user|>' if template == 'phi3_chat' else
            '<|im_end|><|im_start|>user') in text


def test_llava_lengths_and_text_only_negative(root, tok):
    ds = _llava(root, tok, 'qwen_chat')
    lengths = ds.modality_length
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert (lengths[i] < 0) == ('img_path' not in info)
        if 'img_path' in info:
            assert lengths[i] > 256


# ---------------------------------------------------------------------------
# Chat-UniVi
# ---------------------------------------------------------------------------
def _chat_pipeline(tok, **load):
    return [dict(type='SampleVideoFrames', sampled_frames=5, rule='segments',
                 fallback_exts=('.mp4', )),
            dict(type='LoadVideoFrames', fallback_exts=('.mp4', ), **load),
            dict(type='ImagesToTensor', key='frames'),
            dict(type='EncodeConversation', tokenizer=tok,
                 template='phi3_chat', max_length=100000),
            dict(type='PackInputs', meta_keys=('record_id', 'sample_idx',
                                               'video_path',
                                               'frame_indices'))]


def _chat(root, tok, ann='video_chat.json', **kw):
    return ChatUniViDataset(
        data_root=str(root), ann_file=ann,
        data_prefix=dict(video_path='Activity_Videos'),
        pipeline=_chat_pipeline(tok, **kw.pop('load', {})), **kw)


def test_chat_univi_frames_and_text(root, tok, tiny_tokenizer):
    base = root / 'video_datas/chat_univi'
    records = json.loads((base / 'video_chat.json').read_text())
    ds = _chat(base, tok, load=dict(seek_gap=0))
    assert len(ds) == len(records) == 2
    assert records[1]['video'].endswith('.mkv')
    for idx in range(2):
        s = ds[idx]
        assert set(s) == {'input_ids', 'labels', 'pixel_values', 'data_stats',
                          'meta'}
        path = Path(s['meta']['video_path'])
        assert path.suffix == '.mp4' and path.is_file()  # .mkv fell back
        frames = _all_frames(path)
        assert len(frames) == 12
        fidx = s['meta']['frame_indices']
        assert fidx == sample_frame_indices(
            12, 5, np.random.default_rng([0, idx]), 'segments')
        assert s['pixel_values'].shape == (5, 3, 448, 448)
        assert s['pixel_values'].dtype == torch.uint8
        for k, t in enumerate(fidx):  # seeks (seek_gap=0) = exact frames
            assert torch.equal(s['pixel_values'][k], image_to_uint8_tensor(
                Image.fromarray(frames[t])))
        # v1: (block + '\n') * 5 stripped, then the raw question with the
        # literal <video>\n
        turns = records[idx]['conversations']
        conv = [dict(input=q['value'].replace('<image>', ''),
                     output=a['value']) for q, a in zip(turns[::2],
                                                        turns[1::2])]
        assert conv[0]['input'].startswith('<video>\n')
        conv[0]['input'] = ((BLOCK + '\n') * 5).strip() + conv[0]['input']
        ref = _xtuner_ids(conv, tiny_tokenizer, 'phi3_chat')
        assert s['input_ids'] == ref['input_ids']
        assert s['labels'] == ref['labels']
        text = ds.pipeline.transforms[3].encoder.decode(s['input_ids'])
        assert '<img>[256 x 1]</img><video>\nWhat happens' in text


def test_chat_univi_short_missing_strip_and_errors(root, tok, tmp_path):
    base = root / 'video_datas/chat_univi'
    records = json.loads((base / 'video_chat.json').read_text())
    videos = tmp_path / 'Activity_Videos'
    shutil.copytree(base / 'Activity_Videos', videos)
    # a 3-frame video: all 3 frames, 3 frame blocks
    writer = cv2.VideoWriter(str(videos / 'short.mp4'),
                             cv2.VideoWriter_fourcc(*'mp4v'), 24, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    recs = copy.deepcopy(records)
    recs[0]['video'] = 'short.mp4'
    recs[1]['video'] = 'gone.mkv'
    (tmp_path / 'chat.json').write_text(json.dumps(recs))
    ds = _chat(tmp_path, tok, ann='chat.json', min_bad_checks=1000)
    s = ds[0]
    assert s['pixel_values'].shape == (3, 3, 448, 448)
    assert s['meta']['frame_indices'] == [0, 1, 2]
    ctx = ds.pipeline.transforms[3].encoder.context_id
    assert s['input_ids'].count(ctx) == 3 * 256
    # neither gone.mkv nor gone.mp4 exists: skipped and counted
    s = ds[1]
    assert s['data_stats']['skipped/missing_video'] >= 1
    assert s['meta']['record_id'] == recs[0]['id']
    # video_token='strip' removes <video>\n
    strip = _chat(base, tok, video_token='strip')
    assert strip.get_data_info(0)['conversation'][0]['input'] == \
        '<image>' + records[0]['conversations'][0]['value'][len('<video>\n'):]
    # unequal human / gpt turns: load-time error naming the record
    recs = copy.deepcopy(records)
    recs[1]['conversations'].append({'from': 'human', 'value': 'And then?'})
    (tmp_path / 'bad.json').write_text(json.dumps(recs))
    with pytest.raises(ValueError, match=r"record 1 \(id '[^']+'\): 3 human "
                       r"and 2 gpt turns"):
        _chat(tmp_path, tok, ann='bad.json')
    assert chat_univi_conversation([('human', '<image><video>\nQ'),
                                    ('gpt', 'A')]) == \
        [dict(input='<image><video>\nQ', output='A')]


# ---------------------------------------------------------------------------
# Base configs
# ---------------------------------------------------------------------------
def _rebase(cfg, data_root: str, tok: str):
    """The config's dataset dict with ./data/ replaced by the sample root
    and the text settings an experiment gives (``pipeline_defaults``)."""
    from projects.sa2va.datasets.mixing import apply_pipeline_defaults
    cfg = copy.deepcopy(cfg)
    cfg['data_root'] = cfg['data_root'].replace('./data/', data_root + '/')
    text = dict(tokenizer=tok, template='phi3_chat', max_length=8192)
    return apply_pipeline_defaults(cfg, dict(
        EncodeConversation=text, EncodeLLaVAConversation=text))


def test_base_configs_build_on_sample_data(root, tok, tmp_path_factory):
    from mmengine.config import Config

    from projects.sa2va.registry import DATASETS
    vqa = Config.fromfile(str(REPO / 'configs/_base_/datasets/vqa.py'))
    for name in ('vqa_llava', 'vqa_chat_univi'):
        ds = DATASETS.build(_rebase(vqa[name], str(root), tok))
        assert len(ds) > 0
        s = ds[0]
        assert s['pixel_values'].dtype == torch.uint8
    refvos_root = tmp_path_factory.mktemp('refvos_cfg')
    make_sample_data(refvos_root, families=['refvos'])
    cfg = Config.fromfile(str(REPO / 'configs/_base_/datasets/refvos.py'))
    assert cfg.refvos_repeats == dict(revos=10, mevis=4, ref_ytvos=4, sav=4)
    for name in ('refvos_revos', 'refvos_mevis', 'refvos_ref_ytvos',
                 'refvos_sav'):
        ds = DATASETS.build(_rebase(cfg[name], str(refvos_root), tok))
        assert len(ds) == 2
        info = ds.get_data_info(1)
        assert info['objects'] and info['record_id']
    s = ds[1]  # SA-V through the config pipeline
    assert s['masks'].shape == (25, 160, 96)
    assert s['g_pixel_values'].shape == (5, 3, 1024, 1024)
