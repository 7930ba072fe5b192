"""Bad data gets a named, counted answer (issue 14, data half): restricted
unpickling of the data pickles, polygon coordinates pycocotools cannot
take, broken JSON, decompression bombs and non-8-bit images, image sizes
that differ from the annotation, special-token strings in data text.
The fuzz test over all families is test_fuzz_bad_data.py."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from projects.sa2va.datasets.base import load_json, text_defect
from projects.sa2va.datasets.safe_pickle import (UnsafePickleError,
                                                 load_data_pickle)
from projects.sa2va.transforms.base import RecordError
from projects.sa2va.transforms.image_io import decode_rgb
from projects.sa2va.transforms.loading import LoadImage
from projects.sa2va.transforms.masks import (DecodeMasks,
                                             check_polygon_coordinates)
from tests.datasets import fuzz_utils as fz

REPO = Path(__file__).resolve().parents[2]


# -- restricted unpickler ------------------------------------------------------
class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class _Eval:
    def __reduce__(self):
        return eval, ('1 + 1',)


def test_safe_pickle_loads_the_real_shapes(tmp_path):
    rle = {'size': [6, 8], 'counts': b'=33000a0'}
    masks = {'0': [rle, None, {'size': [6, 8], 'counts': b''}]}
    refs = [{'ref_id': 0, 'ann_id': 1719310, 'image_id': 581857,
             'split': 'train', 'sentences': [{'raw': 'THE LADY', 'sent_id': 0,
                                              'tokens': ['the', 'lady']}]}]
    for proto in (0, 2, 4):
        for obj in (masks, refs):
            p = tmp_path / f'x{proto}.p'
            p.write_bytes(pickle.dumps(obj, protocol=proto))
            assert load_data_pickle(str(p)) == obj
    # protocol 2 writes non-empty bytes as _codecs.encode(str, 'latin1'),
    # empty bytes as __builtin__.bytes(): both are needed and allowed
    raw = pickle.dumps(masks, protocol=2)
    assert b'_codecs' in raw and b'__builtin__' in raw
    # a Python 2 pickle (protocol 0, str as STRING opcodes) as refer wrote
    py2 = (b"(lp0\n(dp1\nS'raw'\np2\nS'caf\\xe9'\np3\nsS'ref_id'\np4\n"
           b"I7\nsa.")
    p = tmp_path / 'py2.p'
    p.write_bytes(py2)
    assert load_data_pickle(str(p)) == [{'raw': 'caf\xe9', 'ref_id': 7}]


@pytest.mark.parametrize('payload,glob', [
    (_System('{marker}'), 'system'), (_Eval(), '__builtin__.eval')])
def test_safe_pickle_refuses_code(tmp_path, payload, glob):
    marker = tmp_path / 'ran'
    if isinstance(payload, _System):
        payload = _System(str(marker))
    p = tmp_path / 'evil.p'
    p.write_bytes(pickle.dumps([{'counts': payload}], protocol=2))
    with pytest.raises(UnsafePickleError) as exc:
        load_data_pickle(str(p))
    assert str(p) in str(exc.value) and glob in str(exc.value)
    assert not marker.exists()


def test_safe_pickle_refuses_codecs_with_another_encoding(tmp_path):
    import codecs

    class Rot:
        def __reduce__(self):
            return codecs.encode, ('abc', 'rot13')
    p = tmp_path / 'rot.p'
    p.write_bytes(pickle.dumps(Rot(), protocol=2))
    with pytest.raises(UnsafePickleError, match='latin1'):
        load_data_pickle(str(p))


@pytest.mark.parametrize('data', [b'', b'\x80\x02]q\x00(K\x01', b'garbage'])
def test_safe_pickle_truncated_names_file(tmp_path, data):
    p = tmp_path / 'bad.pkl'
    p.write_bytes(data)
    with pytest.raises(ValueError, match='bad.pkl'):
        load_data_pickle(str(p))


@pytest.mark.parametrize('family,dataset,rel', [
    ('refseg', 'refseg_refcoco', 'ref_seg/refcoco/refs(unc).p'),
    ('refvos', 'refvos_ref_ytvos', 'video_datas/rvos/mask_dict.pkl')])
def test_malicious_data_pickle_per_loader(tmp_path, tiny_tokenizer, family,
                                          dataset, rel):
    """Each loader of a data pickle: a pickle running os.system is refused
    with the file and the global named; the marker never appears."""
    from tests.datasets.family_utils import base_config, make_family_data
    make_family_data(tmp_path, family)
    marker = tmp_path / 'pwned'
    path = tmp_path / rel
    good = pickle.loads(path.read_bytes())
    if isinstance(good, list):
        good[0]['sentences'][0]['raw'] = _System(str(marker))
    else:
        good['0'][0] = _System(str(marker))
    path.write_bytes(pickle.dumps(good, protocol=2))
    cfg = base_config(family)[dataset].to_dict()
    with pytest.raises(UnsafePickleError) as exc:
        fz.build(cfg, tmp_path, tiny_tokenizer).full_init()
    assert str(path) in str(exc.value) and 'system' in str(exc.value)
    assert not marker.exists()


# -- polygons ------------------------------------------------------------------
@pytest.mark.parametrize('value', [float('nan'), float('inf'), 1e300, 1e9,
                                   'abc', 'nan', None])
def test_bad_polygon_coordinates_are_refused(value):
    poly = [[2.0, 1.0, 5.0, 1.0, 5.0, 4.0, 2.0, 4.0]]
    poly[0][5] = value
    with pytest.raises(ValueError, match='polygon 0'):
        check_polygon_coordinates(poly, 6, 8)
    with pytest.raises(RecordError) as exc:
        DecodeMasks(combine='sum')(dict(segmentations=[[poly]],
                                        ori_shape=(6, 8)))
    assert exc.value.reason == 'bad_mask' and 'object 0' in str(exc.value)


def test_polygon_a_pixel_outside_is_kept():
    poly = [[-0.5, -0.5, 8.5, -0.5, 8.5, 6.5]]
    check_polygon_coordinates(poly, 6, 8)
    m = DecodeMasks()(dict(segmentations=[poly], ori_shape=(6, 8)))['masks']
    assert m.shape == (1, 6, 8) and m.any()


CHECK_CONFIG = """
_base_ = ['{repo}/configs/_base_/datasets/refseg.py',
          '{repo}/configs/_base_/datasets/visual_prompt.py',
          '{repo}/configs/_base_/datasets/gcg.py']
default_scope = 'sa2va'
text_cfg = dict(tokenizer='data/sample/tokenizer', template='phi3_chat',
                max_length=8192)
train_dataloader = dict(dataset=dict(
    type='MixedDataset',
    datasets=[{{{{_base_.refseg_refcoco}}}},
              {{{{_base_.vp_osprey_conversation}}}},
              {{{{_base_.gcg_refcocog}}}}],
    data_root_prefix=('./data/', 'data/sample/'),
    pipeline_defaults=dict(EncodeConversation=text_cfg),
    pipeline_overrides=dict(DynamicTiles=dict(max_num=2),
                            SAM2Input=dict(size=256))))
"""


def test_check_data_reports_nan_polygons(tmp_path):
    """tools/check_data.py on NaN polygons of RefCOCO, Osprey and GCG: each
    reported as a bad mask naming the record (it died by SIGSEGV)."""
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    root = tmp_path / 'data' / 'sample'
    make_sample_data(root, families=['refseg', 'visual_prompt', 'gcg'])
    build_tiny_tokenizer(root / 'tokenizer')
    inst = root / 'ref_seg' / 'refcoco' / 'instances.json'
    coco = json.loads(inst.read_text())
    for a in coco['annotations']:
        if isinstance(a['segmentation'], list):
            a['segmentation'][0][1] = float('nan')
    inst.write_text(json.dumps(coco))
    osp_file = root / 'osprey-724k' / 'Osprey-724K' / \
        'osprey_conversation.json'
    recs = json.loads(osp_file.read_text())
    recs[0]['annotation'][0]['segmentation'][0][3] = float('nan')
    osp_file.write_text(json.dumps(recs))
    gcg = root / 'glamm_data' / 'annotations' / 'RefCOCOg_GCG_train.json'
    recs = json.loads(gcg.read_text())
    next(iter(recs[0].values()))['refs'][0]['segmentation'][0][0] = \
        float('inf')
    gcg.write_text(json.dumps(recs))
    (tmp_path / 'check.py').write_text(CHECK_CONFIG.format(repo=REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'check_data.py'), 'check.py'],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1',
             'PATH': '/usr/bin:/bin'})
    out = proc.stdout
    assert proc.returncode == 1, (proc.returncode, out, proc.stderr[-3000:])
    rows = {line.split()[0]: line for line in out.splitlines() if line and
            line.split()[0] in ('refcoco', 'osprey_conversation',
                                'gcg_refcocog')}
    for name in ('refcoco', 'osprey_conversation', 'gcg_refcocog'):
        assert 'bad_mask=' in rows[name], out
    assert out.count('non-finite coordinate') >= 3, out


# -- JSON ----------------------------------------------------------------------
@pytest.mark.parametrize('data,what', [
    (b'', 'empty file'), (b'[{"a": 1', 'malformed JSON'),
    (b'[1, 2] x', 'malformed JSON'), (b'["\xff"]', 'not UTF-8')])
def test_load_json_names_the_file(tmp_path, data, what):
    p = tmp_path / 'ann.json'
    p.write_bytes(data)
    with pytest.raises(ValueError) as exc:
        load_json(str(p))
    assert str(p) in str(exc.value) and what in str(exc.value)


# -- images --------------------------------------------------------------------
def _png(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format='PNG')
    buf.seek(0)
    return buf


def test_16bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 1000, 32768, 65535, 65280]], np.uint16)
    src = _png(values)
    assert Image.open(src).mode.startswith('I;16')
    src.seek(0)
    rgb = np.asarray(decode_rgb(src, 'x.png'))
    assert rgb.shape == (1, 6, 3)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 4, 128, 255, 254])
    assert (rgb[..., 0] == rgb[..., 2]).all()
    # what PIL's own convert does: every value above 255 becomes white
    src.seek(0)
    clipped = np.asarray(Image.open(src).convert('RGB'))[0, :, 0]
    assert (clipped[1:] == 255).all()


def test_int32_and_float_images():
    i32 = Image.fromarray(np.array([[0, 65535]], np.int32), mode='I')
    buf = io.BytesIO()
    i32.save(buf, format='TIFF')
    buf.seek(0)
    np.testing.assert_array_equal(
        np.asarray(decode_rgb(buf, 'a.tif'))[0, :, 1], [0, 255])
    big = Image.fromarray(np.array([[0, 70000]], np.int32), mode='I')
    buf = io.BytesIO()
    big.save(buf, format='TIFF')
    buf.seek(0)
    with pytest.raises(RecordError, match='b.tif') as exc:
        decode_rgb(buf, 'b.tif')
    assert exc.value.reason == 'unsupported_image_mode'
    flt = Image.fromarray(np.ones((2, 2), np.float32), mode='F')
    buf = io.BytesIO()
    flt.save(buf, format='TIFF')
    buf.seek(0)
    with pytest.raises(RecordError) as exc:
        decode_rgb(buf, 'c.tif')
    assert exc.value.reason == 'unsupported_image_mode'


def test_decompression_bomb_is_a_record_error(tmp_path, monkeypatch):
    p = tmp_path / 'bomb.png'
    p.write_bytes(fz.png_bytes(40000, 40000))  # over 2x the limit: raises
    with pytest.raises(RecordError) as exc:
        LoadImage()(dict(img_path=str(p)))
    assert exc.value.reason == 'image_too_large' and str(p) in str(
        exc.value)
    # between 1x and 2x PIL only warns: refused as well
    small = tmp_path / 'warn.png'
    Image.new('RGB', (30, 20)).save(small)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 500)
    with pytest.raises(RecordError) as exc:
        LoadImage()(dict(img_path=str(small)))
    assert exc.value.reason == 'image_too_large'


def test_stated_size_must_match_the_image(tmp_path):
    p = tmp_path / 'im.png'
    Image.new('RGB', (8, 6)).save(p)
    out = LoadImage()(dict(img_path=str(p), ori_shape=(6, 8)))
    assert out['ori_shape'] == (6, 8)
    with pytest.raises(RecordError, match='transposed') as exc:
        LoadImage()(dict(img_path=str(p), ori_shape=(8, 6)))
    assert exc.value.reason == 'size_mismatch' and str(p) in str(exc.value)
    with pytest.raises(RecordError, match='states 7x8'):
        LoadImage()(dict(img_path=str(p), ori_shape=(7, 8)))


# -- text ----------------------------------------------------------------------
@pytest.mark.parametrize('text', [
    'a [SEG] b', 'x <IMG_CONTEXT> y', '<img>', '</img>', 'a <vp>', '</vp>',
    'the <p> phrase', '</p>', 'run <IMG_CONTEXT*12>', 'end<|im_end|>',
    '<|user|>', '<|end|>', '</s>', 'see <image>'])
def test_control_strings_in_text_are_found(text):
    reason, msg = text_defect(text, 'turn 1')
    assert reason == 'control_token_text' and 'turn 1' in msg


def test_plain_text_and_allowed_placeholder_pass():
    for text in ('a <b>bold</b> word', 'x < y > z', '[seg] lower case',
                 'html <span>', 'price <5'):
        assert text_defect(text, 't') is None, text
    assert text_defect('<image>\nWhat is it?', 't', allow=('<image>',)) \
        is None
    reason, msg = text_defect('bad \ud800', 't')
    assert reason == 'bad_text' and 'surrogate' in msg
    assert text_defect(5, 't')[0] == 'bad_text'


def test_lower_cased_seg_is_plain_text(tiny_tokenizer):
    """RefCOCO lower-cases its sentences: '[seg]' must not become the [SEG]
    control token (the added tokens are case-sensitive)."""
    from projects.sa2va.tokenization import single_token_id
    seg = single_token_id(tiny_tokenizer, '[SEG]')
    assert seg in tiny_tokenizer.encode('a [SEG] b', add_special_tokens=False)
    assert seg not in tiny_tokenizer.encode('a [seg] b',
                                            add_special_tokens=False)


def test_special_token_record_is_skipped_and_counted(tmp_path,
                                                     tiny_tokenizer):
    """A LLaVA answer holding '[SEG]': the record is replaced by another one
    and counted as skipped/control_token_text (it gave a [SEG] without a
    mask before)."""
    from tests.datasets.family_utils import base_config, make_family_data
    make_family_data(tmp_path, 'vqa')
    ann = tmp_path / 'llava_data' / 'LLaVA-Instruct-150K' / \
        'llava_v1_5_mix665k.json'
    recs = json.loads(ann.read_text())
    recs[0]['conversations'][1]['value'] = 'It is [SEG].'
    ann.write_text(json.dumps(recs))
    cfg = base_config('vqa')['vqa_llava'].to_dict()
    ds = fz.build(cfg, tmp_path, tiny_tokenizer)
    ds.full_init()
    with pytest.raises(RecordError) as exc:
        ds.prepare_data(0)
    assert exc.value.reason == 'control_token_text'
    assert 'record 0' in str(exc.value) and "'[SEG]'" in str(exc.value)
    sample = ds[0]
    assert sample['data_stats']['skipped/control_token_text'] == 1
    seg = ds.pipeline.transforms[-2].encoder.special_ids['[SEG]']
    assert seg not in sample['input_ids']


def test_empty_video_expression_is_rejected():
    from projects.sa2va.datasets.refvos import VideoReferringConversation
    t = VideoReferringConversation()
    for exp in ('', ' . ', '?'):
        with pytest.raises(RecordError) as exc:
            t(dict(objects=[dict(exp='a dog'), dict(exp=exp)],
                   rng=np.random.default_rng(0)))
        assert exc.value.reason == 'empty_text' and 'object 1' in str(
            exc.value)
