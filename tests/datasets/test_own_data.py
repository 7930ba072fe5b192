"""The own-data format (OwnDataset): the three tasks on the generated
sample (data/sample/my_data/: PNG masks for even records, RLE for odd
ones), structural errors named at index time, and a few training iterations
of configs/sa2va_tiny_finetune_own_data.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from projects.sa2va.datasets.inspect import check_dataset, find_encoder
from projects.sa2va.registry import DATASETS

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'sa2va_tiny_finetune_own_data.py'


def _children(root: Path):
    cfg = Config.fromfile(str(CONFIG))
    mix = cfg.train_dataloader.dataset
    out = {}
    for d in mix.datasets:
        d = dict(d, data_root=str(root) + '/')
        for step in d['pipeline']:
            if step['type'] == 'EncodeConversation':
                step.update(mix.pipeline_defaults.EncodeConversation)
            if step['type'] == 'SAM2Input':
                step['size'] = 256
            if step['type'] == 'DynamicTiles':
                step['max_num'] = 2
        out[d['task']] = d
    return out


@pytest.fixture
def own(sample_cwd, monkeypatch):
    monkeypatch.chdir(sample_cwd)
    return sample_cwd / 'data' / 'sample' / 'my_data'


def test_each_task_makes_its_samples(own):
    records = json.loads((own / 'annotations.json').read_text())
    cfgs = _children(own)
    ref = DATASETS.build(cfgs['referring'])
    assert len(ref) == len(records)
    s = ref[0]
    assert s['masks'].shape[0] == 5 and s['masks'].dtype == torch.uint8
    assert set(torch.unique(s['masks']).tolist()) <= {0, 1}
    assert s['g_pixel_values'].shape == (3, 256, 256)
    # region captions: one prompt mask per described object
    cap = DATASETS.build(cfgs['region_caption'])
    s = cap[1]                                   # an RLE record
    assert s['prompt_masks'].shape == (len(records[1]['objects']), 16, 16)
    text = find_encoder(cap).decode(s['input_ids'])
    assert 'region1' in text and records[1]['objects'][0]['description'] in text
    # conversation: only the records with one; one mask per [SEG], in order
    conv = DATASETS.build(cfgs['conversation'])
    with_conv = [r for r in records if 'conversation' in r]
    assert len(conv) == len(with_conv)
    s = conv[0]
    text = find_encoder(conv).decode(s['input_ids'])
    assert text.count('[SEG]') == len(with_conv[0]['objects']) \
        == s['masks'].shape[0]
    # the PNG mask of object 0 is the mask the sample carries
    from PIL import Image
    png = np.asarray(Image.open(own / with_conv[0]['objects'][0]['mask'])) > 0
    assert np.array_equal(s['masks'][0].numpy().astype(bool), png)


def _write(root: Path, records):
    root.mkdir(parents=True, exist_ok=True)
    (root / 'annotations.json').write_text(json.dumps(records))


def test_structural_errors_name_the_record(own, tmp_path):
    records = json.loads((own / 'annotations.json').read_text())
    rec = dict(records[0], image=str(own / records[0]['image']))
    rec['objects'] = [dict(o, mask=str(own / o['mask']))
                      for o in rec['objects']]
    bad_seg = dict(rec, conversation=[
        {'from': 'human', 'value': 'Segment it.'},
        {'from': 'gpt', 'value': 'Here [SEG].'}])
    cfgs = _children(tmp_path / 'a')      # absolute paths in the records
    _write(tmp_path / 'a', [rec, bad_seg])
    with pytest.raises(ValueError, match=r'record 1: the answers hold 1 '
                       r'\[SEG\] but the record has \d+ objects'):
        DATASETS.build(cfgs['conversation'])
    _write(tmp_path / 'a', [dict(rec, objects=[{'text': ['x']}])])
    with pytest.raises(ValueError, match="record 0: malformed: KeyError: 'mask'"):
        DATASETS.build(cfgs['referring'])
    _write(tmp_path / 'a', [dict(rec, objects=[{'mask': 3}])])
    with pytest.raises(ValueError, match='record 0 object 0: "mask" must be'):
        DATASETS.build(cfgs['referring'])


def test_missing_mask_file_is_a_named_bad_record(own, tmp_path):
    records = json.loads((own / 'annotations.json').read_text())
    rec = dict(records[0], image=str(own / records[0]['image']))
    rec['objects'] = [dict(o, mask=str(tmp_path / 'nowhere.png'))
                      for o in rec['objects']]
    _write(tmp_path / 'b', [rec])
    ds = DATASETS.build(dict(_children(tmp_path / 'b')['referring'],
                             data_root=str(tmp_path / 'b') + '/',
                             ann_file='annotations.json'))
    report = check_dataset(ds)
    assert report.problems == {'missing_mask': 1}
    assert 'nowhere.png' in report.examples[0]


def test_finetune_config_trains_a_few_iterations(sample_cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    work = sample_cwd / 'work_own'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(CONFIG),
         '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=3',
         'default_hooks.logger.interval=1'],
        cwd=sample_cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for p in work.glob('*/vis_data/scalars.json')
            for line in p.read_text().splitlines()]
    losses = [r for r in rows if 'loss' in r]
    assert [r['step'] for r in losses] == [1, 2, 3]
    assert all(np.isfinite(r['loss']) for r in losses)
    assert any(r['loss_mask'] > 0 for r in losses)
    log = next(work.glob('*/*.log')).read_text()
    for name in ('own_referring', 'own_region_caption', 'own_conversation'):
        assert name in log.split('run summary')[1]
