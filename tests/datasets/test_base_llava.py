"""Base dataset machinery on the LLaVA loader: compact index, length
estimates, bad records skipped with a count (never silently), too many bad
records fail loudly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from projects.sa2va.datasets import LLaVADataset, sa2va_collate_fn
from tests.smoke_data import write_smoke_data


def _pipeline(tok):
    return [dict(type='LoadImage', allow_text_only=True),
            dict(type='DynamicTiles', max_num=2, image_size=28),
            dict(type='ImagesToTensor', image_size=28),
            dict(type='EncodeConversation', tokenizer=tok,
                 template='internvl2_5', max_length=1024, tokens_per_tile=4),
            dict(type='PackInputs')]


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    return write_smoke_data(tmp_path_factory.mktemp('d') / 'smoke')


def _dataset(root, **kw):
    return LLaVADataset(data_root=str(root), ann_file='llava.json',
                        data_prefix=dict(img_path='images'), max_num_tiles=2,
                        pipeline=_pipeline(str(root / 'tokenizer')), **kw)


def test_llava_samples_and_lengths(smoke):
    ds = _dataset(smoke)
    assert len(ds) == 12
    assert ds.data_bytes.dtype == np.uint8  # serialized, shared by workers
    lengths = ds.modality_length
    assert lengths.dtype == np.int32
    # records 2, 5, 8, 11 are text-only -> negative; 60x30 images tile 2+1
    assert (lengths[[2, 5, 8, 11]] < 0).all()
    assert lengths[1] > lengths[0] > 0
    img, txt = ds[0], ds[2]
    assert img['pixel_values'].shape == (1, 3, 28, 28)
    assert img['pixel_values'].dtype == torch.uint8
    assert ds[1]['pixel_values'].shape == (3, 3, 28, 28)
    assert 'pixel_values' not in txt
    ctx = ds.pipeline.transforms[3].encoder.context_id
    assert img['input_ids'].count(ctx) == 4
    assert ds[1]['input_ids'].count(ctx) == 12
    assert txt['input_ids'].count(ctx) == 0
    batch = sa2va_collate_fn([img, txt, ds[1]])
    assert batch['image_flags'].tolist() == [1, 0, 1, 1, 1]


def test_bad_record_skipped_logged_and_counted(smoke, tmp_path, caplog):
    recs = json.loads((smoke / 'llava.json').read_text())
    recs[0]['image'] = 'missing.jpg'
    (tmp_path / 'images').symlink_to(smoke / 'images')
    (tmp_path / 'tokenizer').symlink_to(smoke / 'tokenizer')
    (tmp_path / 'llava.json').write_text(json.dumps(recs))
    ds = _dataset(tmp_path, min_bad_checks=1000)
    sample = ds[0]
    assert sample['data_stats']['skipped/missing_image'] == 1
    assert sample['meta']['sample_idx'] != 0
    assert ds[1]['data_stats'].get('skipped/missing_image') is None
    # more than max_bad_fraction of the records tried are bad: raise
    strict = _dataset(tmp_path, min_bad_checks=1, max_bad_fraction=0.1)
    with pytest.raises(RuntimeError, match='max_bad_fraction'):
        strict[0]


def test_bad_annotation_file_names_the_record(tmp_path):
    (tmp_path / 'llava.json').write_text(json.dumps(
        [{'id': 'a', 'conversations': [{'from': 'robot', 'value': 'x'}]}]))
    with pytest.raises(ValueError, match=r"record 0 \(id 'a'\).*unknown role"):
        LLaVADataset(data_root=str(tmp_path), ann_file='llava.json')
