"""tools/check_data.py reports every problem of every dataset in one pass.

The bug: it built the whole mix first and stopped at the first dataset that
could not be built. Tree here: refseg + gcg + vqa sample data with the
generator's bad records (a LLaVA record without its image), plus a
truncated RefCOCO instances.json, a deleted Flickr GCG annotation file and a
deleted GranDf image."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
_base_ = ['{repo}/configs/_base_/datasets/refseg.py',
          '{repo}/configs/_base_/datasets/gcg.py',
          '{repo}/configs/_base_/datasets/vqa.py']
default_scope = 'sa2va'
text_cfg = dict(tokenizer='data/sample/tokenizer', template='phi3_chat',
            max_length=8192)
train_dataloader = dict(dataset=dict(
    type='MixedDataset',
    datasets=[{{{{_base_.refseg_refcoco}}}}, {{{{_base_.refseg_refcocog}}}},
              {{{{_base_.gcg_grandf}}}}, {{{{_base_.gcg_flickr}}}},
              {{{{_base_.vqa_llava}}}}],
    data_root_prefix=('./data/', 'data/sample/'),
    pipeline_defaults=dict(EncodeConversation=text_cfg,
                           EncodeLLaVAConversation=text_cfg),
    pipeline_overrides=dict(DynamicTiles=dict(max_num=2),
                            SAM2Input=dict(size=256))))
"""


@pytest.fixture(scope='module')
def broken_tree(tmp_path_factory):
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    cwd = tmp_path_factory.mktemp('broken')
    root = cwd / 'data' / 'sample'
    manifest = make_sample_data(root, families=['refseg', 'gcg', 'vqa'],
                                bad_records=True)
    assert [b['dataset'] for b in manifest['bad_records']] == ['llava']
    build_tiny_tokenizer(root / 'tokenizer')
    inst = root / 'ref_seg' / 'refcoco' / 'instances.json'
    inst.write_text(inst.read_text()[:200])
    (root / 'glamm_data' / 'annotations' /
     'flickr_mergedGT_GCG_train.json').unlink()
    grandf = sorted((root / 'glamm_data' / 'images' / 'grandf' /
                     'train').iterdir())
    grandf[0].unlink()
    (cwd / 'check.py').write_text(CONFIG.format(repo=REPO))
    return cwd, grandf[0].name


@pytest.mark.parametrize('extra', [[], ['--workers', '2'], ['--files-only']])
def test_every_broken_dataset_is_reported(broken_tree, extra):
    cwd, missing_image = broken_tree
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'check_data.py'), 'check.py',
         *extra], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1',
             'PATH': '/usr/bin:/bin'})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    rows = {line.split()[0]: line for line in out.splitlines()
            if line and line.split()[0] in ('refcoco', 'refcocog',
                                            'gcg_grandf', 'gcg_flickr',
                                            'llava')}
    assert 'CANNOT BUILD' in rows['refcoco'] and 'CANNOT BUILD' in \
        rows['gcg_flickr']
    assert 'refcoco: cannot build: ValueError' in out and 'instances.json' \
        in out
    assert 'gcg_flickr: cannot build: FileNotFoundError' in out
    assert 'missing_image=1' in rows['gcg_grandf']
    assert missing_image in out
    assert 'missing_image=1' in rows['llava']
    assert rows['refcocog'].rstrip().endswith('-')
    assert 'FAILED: 5 datasets (2 cannot be built)' in out
    assert '2 bad' in out.splitlines()[-1]
    # progress on stderr, one line per finished dataset at least
    assert proc.stderr.count(': done ') == 3, proc.stderr[-2000:]


def test_help_describes_every_option():
    proc = subprocess.run([sys.executable, str(REPO / 'tools' /
                                                'check_data.py'), '--help'],
                          capture_output=True, text=True, timeout=120,
                          env={'PYTHONPATH': str(REPO), 'PATH': '/usr/bin'})
    assert proc.returncode == 0
    for opt in ('--workers', '--files-only', '--limit', '--examples',
                '--quiet', '--cfg-options'):
        assert opt in proc.stdout
