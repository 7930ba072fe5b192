"""tools/check_data.py and tools/browse_dataset.py on the smoke config."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / 'tests' / 'configs' / 'smoke_train.py')
sys.path.insert(0, str(REPO / 'tools'))
import browse_dataset  # noqa: E402
import check_data  # noqa: E402

sys.path.pop(0)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    from tests.smoke_data import write_smoke_data
    return write_smoke_data(tmp_path_factory.mktemp('tools') / 'smoke')


def _opts(root):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}',
            f'train_dataloader.dataset.pipeline.3.tokenizer={root}/tokenizer']


def test_check_data_ok_and_failing(smoke, tmp_path, capsys):
    assert check_data.main([CONFIG, *_opts(smoke)]) == 0
    out = capsys.readouterr().out
    assert 'LLaVADataset' in out and 'OK: 1 datasets, 12 records' in out
    recs = json.loads((smoke / 'llava.json').read_text())
    recs[3]['image'] = 'gone.jpg'
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'images').symlink_to(smoke / 'images')
    (bad / 'tokenizer').symlink_to(smoke / 'tokenizer')
    (bad / 'llava.json').write_text(json.dumps(recs))
    assert check_data.main([CONFIG, *_opts(bad)]) == 1
    out = capsys.readouterr().out
    assert 'missing_image=1' in out
    assert "LLaVADataset[3] img_path=" in out and 'gone.jpg' in out
    # an annotation file that cannot be parsed fails the check too
    (bad / 'llava.json').write_text('{"not": "a list"}')
    assert check_data.main([CONFIG, *_opts(bad)]) == 1
    out = capsys.readouterr().out
    assert 'CANNOT BUILD' in out and 'cannot build: ValueError' in out
    assert 'llava.json' in out


def test_browse_dataset_writes_pngs(smoke, tmp_path):
    out = tmp_path / 'vis'
    assert browse_dataset.main([CONFIG, '--out', str(out), '-n', '2',
                                *_opts(smoke)]) == 0
    pngs = sorted(out.glob('*.png'))
    assert [p.name for p in pngs] == ['LLaVADataset_0.png',
                                      'LLaVADataset_1.png']
    assert all(p.read_bytes()[:4] == b'\x89PNG' and p.stat().st_size > 5000
               for p in pngs)
