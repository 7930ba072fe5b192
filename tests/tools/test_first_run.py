"""A first run without checkpoints says what to download where (it raised
transformers' HFValidationError about a repository id)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from projects.sa2va.downloads import missing_message, require_local

REPO = Path(__file__).resolve().parents[2]


def test_train_without_checkpoints_names_the_download(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'),
         str(REPO / 'configs' / 'sa2va_4b.py')], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'HFValidationError' not in err and 'Repo id' not in err
    assert ('download InternVL2.5-4B (https://huggingface.co/OpenGVLab/'
            'InternVL2_5-4B) into ./pretrained/InternVL2_5-4B') in err


def test_require_local_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match='sam2_hiera_large.pt'):
        require_local(str(tmp_path / 'pretrained' / 'sam2_hiera_large.pt'))
    assert 'dl.fbaipublicfiles.com/segment_anything_2/072824/' \
        in missing_message('./pretrained/sam2_hiera_large.pt')
    assert 'make_sample_data.py' in missing_message('data/sample/tokenizer')
    require_local('OpenGVLab/InternVL2_5-4B')      # a hub id passes
    require_local(str(tmp_path))                    # an existing folder
