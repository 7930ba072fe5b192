"""``data_root_prefix`` moves only the datasets it names (the tiny configs'
sample datasets), and a moved dataset that misses a file names both roots.

The bug: the tiny demo's ``('./data/', 'data/sample/')`` rewrote a user's
``./data/my_refs/`` (added to the inherited mix) into
``data/sample/my_refs/``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mmengine.config import Config

from projects.sa2va.datasets.mixing import MixedDataset, move_data_root

REPO = Path(__file__).resolve().parents[2]


def test_named_prefix_moves_only_the_named_datasets():
    prefix = ('./data/', 'data/sample/', ['refcoco'])
    assert move_data_root(dict(data_root='./data/ref_seg/refcoco/',
                               dataset_name='refcoco'), prefix) \
        == 'data/sample/ref_seg/refcoco/'
    assert move_data_root(dict(data_root='./data/my_refs/',
                               dataset_name='my_refs'), prefix) is None
    with pytest.raises(ValueError, match='data_root_prefix must be'):
        move_data_root(dict(data_root='./data/x/'), './data/')


def test_tiny_demo_names_its_sample_datasets():
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_tiny_demo.py'))
    mix = cfg.train_dataloader.dataset
    old, new, names = mix.data_root_prefix
    assert (old, new) == ('./data/', 'data/sample/')
    assert names == [d['dataset_name'] for d in mix.datasets]


def _refcoco_cfg(root, name):
    base = Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' /
                               'refseg.py'))
    return dict(base.refseg_refcoco, data_root=root, dataset_name=name,
                pipeline=[])


def test_user_dataset_added_to_a_prefixed_mix_keeps_its_root(
        sample_cwd, monkeypatch, tmp_path):
    work = tmp_path / 'cwd'
    (work / 'data').mkdir(parents=True)
    (work / 'data' / 'sample').symlink_to(sample_cwd / 'data' / 'sample')
    shutil.copytree(sample_cwd / 'data' / 'sample' / 'ref_seg' / 'refcoco',
                    work / 'data' / 'my_refs')
    monkeypatch.chdir(work)
    mix = MixedDataset(
        [_refcoco_cfg('./data/ref_seg/refcoco/', 'refcoco'),
         _refcoco_cfg('./data/my_refs/', 'my_refs')],
        data_root_prefix=('./data/', 'data/sample/', ['refcoco']))
    roots = [d.data_root for d in mix.datasets]
    assert roots[0].rstrip('/') == 'data/sample/ref_seg/refcoco'
    assert roots[1].rstrip('/') == './data/my_refs'


def test_missing_moved_dataset_names_both_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        MixedDataset([_refcoco_cfg('./data/ref_seg/refcoco/', 'refcoco')],
                     data_root_prefix=('./data/', 'data/sample/',
                                       ['refcoco']))
    text = str(info.value)
    assert "'./data/ref_seg/refcoco/'" in text
    assert "'data/sample/ref_seg/refcoco/'" in text
