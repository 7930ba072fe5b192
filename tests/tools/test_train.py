"""tools/train.py wiring: config -> Runner -> real data path -> checkpoints,
--cfg-options, --resume (same losses as an uninterrupted run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'tests' / 'configs' / 'smoke_train.py'


@pytest.fixture(scope='module')
def smoke_dir(tmp_path_factory):
    from tests.smoke_data import write_smoke_data
    cwd = tmp_path_factory.mktemp('smoke')
    write_smoke_data(cwd / 'data' / 'smoke')
    return cwd


def _train(cwd, work_dir, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(CONFIG),
         '--work-dir', str(work_dir), *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _losses(work_dir) -> dict[int, float]:
    out = {}
    for path in Path(work_dir).glob('*/vis_data/scalars.json'):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if 'loss' in rec:
                out[rec['step']] = rec['loss']
    return out


def test_train_resume_matches_uninterrupted(smoke_dir):
    full = smoke_dir / 'full'
    log = _train(smoke_dir, full)
    assert 'data_stats: samples=16' in log
    assert (full / 'iter_8.pth').exists() and (full / 'iter_4.pth').exists()
    part = smoke_dir / 'part'
    _train(smoke_dir, part, '--cfg-options', 'train_cfg.max_iters=4')
    assert (part / 'iter_4.pth').exists() and not (part / 'iter_8.pth').exists()
    log = _train(smoke_dir, part, '--resume')
    assert 'resumed' in log.lower()
    a, b = _losses(full), _losses(part)
    assert sorted(a) == [2, 4, 6, 8]
    for step in (6, 8):
        assert b[step] == pytest.approx(a[step], rel=1e-6), (a, b)


def test_build_config_overrides(tmp_path):
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        from train import build_config, parse_args
    finally:
        sys.path.pop(0)
    args = parse_args([str(CONFIG), '--seed', '7', '--resume', 'x.pth',
                       '--cfg-options', 'train_dataloader.batch_size=5',
                       'model.dim=8'])
    cfg = build_config(args)
    assert cfg.randomness.seed == 7
    assert cfg.resume is True and cfg.load_from == 'x.pth'
    assert cfg.train_dataloader.batch_size == 5 and cfg.model.dim == 8
    assert cfg.work_dir.endswith('smoke_train')
    assert cfg.default_scope == 'sa2va'
    # inherited from the runtime base and overridden in the test config
    assert cfg.default_hooks.logger.interval == 2
    assert cfg.default_hooks.timer.type == 'IterTimerHook'
