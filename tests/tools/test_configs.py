"""The experiment configs: Sa2VA-4B's recipe as stated, and the tiny demo
(same mix and code path) checking and training on generated data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]


def test_sa2va_4b_recipe():
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    mix = cfg.train_dataloader.dataset
    names = [d['dataset_name'] for d in mix.datasets]
    assert len(names) == 21 and len(mix.repeats) == 21
    repeats = dict(zip(names, mix.repeats))
    # family 6 with ground-truth captions, in Sa2VA's forms (option A)
    assert names[-2:] == ['mc_sa2va_refcoco_describe', 'mc_sa2va_dam_segment']
    assert mix.repeats[-2:] == [1, 1]
    for d, tasks in zip(mix.datasets[-2:], (['describe'], ['segment'])):
        steps = {s['type']: s for s in d['pipeline']}
        assert steps['MaskCaptionOutputs']['route'] == 'option_a'
        assert steps['MaskCaptionToSa2VA']['tasks'] == tasks
    assert repeats['refcoco'] == repeats['refcocog'] == 4
    assert repeats['revos'] == 10 and repeats['gcg_grandf'] == 10
    assert repeats['mevis'] == repeats['sav_pseudo'] == 4
    assert repeats['llava'] == repeats['osprey_conversation'] == 1
    text = mix.pipeline_defaults.EncodeConversation
    assert text.tokenizer == './pretrained/InternVL2_5-4B'
    assert all(d['data_root'].startswith('./data/') for d in mix.datasets)
    opt = cfg.optim_wrapper
    assert opt.type == 'AmpOptimWrapper' and opt.dtype == 'bfloat16'
    assert opt.optimizer.lr == 4e-5 and opt.optimizer.weight_decay == 0.05
    assert tuple(opt.optimizer.betas) == (0.9, 0.999)
    assert opt.clip_grad.max_norm == 1.0 and opt.accumulative_counts == 4
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.default_hooks.checkpoint.interval == 1000
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 2
    assert cfg.model.type == 'Sa2VAModel'
    assert cfg.model.mllm.llm_lora == dict(r=128, lora_alpha=256,
                                           lora_dropout=0.05)
    assert [s.type for s in cfg.param_scheduler] == ['WarmupDecayLR']
    sched = cfg.param_scheduler[0]
    assert (sched.warmup_ratio, sched.start_factor, sched.decay,
            sched.eta_min, sched.by_epoch) == (0.05, 1e-5, 'cosine', 0.0, False)
    assert 'end' not in sched             # the runner sets the run length


def test_tiny_demo_checks_every_dataset(sample_cwd, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import check_data
    finally:
        sys.path.pop(0)
    monkeypatch.chdir(sample_cwd)
    assert check_data.main([str(REPO / 'configs' / 'sa2va_tiny_demo.py')]) \
        == 0
    out = capsys.readouterr().out
    assert 'OK: 21 datasets' in out and ' 0 bad' in out


def test_tiny_demo_trains_on_the_mix(sample_cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    work = sample_cwd / 'work'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'),
         str(REPO / 'configs' / 'sa2va_tiny_demo.py'), '--work-dir',
         str(work), '--cfg-options', 'train_cfg.max_iters=4',
         'default_hooks.logger.interval=1'],
        cwd=sample_cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for p in work.glob('*/vis_data/scalars.json')
            for line in p.read_text().splitlines()]
    losses = [r for r in rows if 'loss' in r]
    assert [r['step'] for r in losses] == [1, 2, 3, 4]
    for r in losses:
        for key in ('loss', 'loss_llm', 'loss_mask', 'loss_dice'):
            assert key in r and r[key] == r[key] and abs(r[key]) < 1e4
    assert any(r['loss_mask'] > 0 for r in losses)
    assert (work / 'iter_4.pth').exists()


@pytest.mark.parametrize('iters', [2, 3, 5, 6, 100])
def test_demo_iters_give_a_valid_schedule(iters):
    """A bug: `tools/demo.py --iters 3` built a cosine phase that begins
    after it ends (begin 5, end 3)."""
    import argparse

    import torch
    from mmengine.config import DictAction
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    from projects.sa2va.registry import PARAM_SCHEDULERS
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import demo
    finally:
        sys.path.pop(0)
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_tiny_demo.py'))
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(
        ['--cfg-options', *demo.iters_options(iters)]).cfg_options)
    assert cfg.train_cfg.max_iters == iters
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = []
    # the runner gives a scheduler without `end` the run's length
    scheds = [PARAM_SCHEDULERS.build(dict(dict(end=iters, **s), optimizer=opt))
              for s in cfg.param_scheduler]
    for _ in range(iters):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        for s in scheds:
            s.step()
    assert lrs[0] == pytest.approx(0.1)                  # warm-up starts at 0.1 x
    assert all(0 < lr <= 1.0 + 1e-9 for lr in lrs)
    if iters > 6:                                        # full warm-up, then decay
        assert lrs[5] == pytest.approx(1.0) and lrs[-1] < lrs[5]
    with pytest.raises(ValueError, match='>= 2'):
        demo.iters_options(1)
