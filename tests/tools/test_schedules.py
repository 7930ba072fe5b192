"""The LR schedule of every shipped config, stepped by the real runner.

Each config's optimiser, ``param_scheduler``, train loop and default hooks
(the start summary included) run in ``Sa2VARunner`` with a one-weight model
and a dataset of a chosen length; a hook reads the LR from the optimizer's
parameter groups before every iteration. Bugs this guards: the tiny demo's
cosine ended at iteration 100 whatever ``max_iters``; the 4B schedule with 6
iterations per epoch raised ``end should be larger than begin``; with 21 per
epoch and 3 epochs, epochs 2-3 trained at 1.2e-10.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from projects.sa2va.engine import Sa2VARunner
from projects.sa2va.engine.schedules import (warmup_decay_factor,
                                             warmup_iters_for)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / 'configs').glob('*.py'))


class OneWeight(BaseModel):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(self.w * inputs.float()).pow(2).mean())


class Items(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        return dict(inputs=torch.ones(1))


class RecordLR(Hook):
    priority = 'VERY_HIGH'

    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.param_groups[0]['lr'])


def run_schedule(cfg, tmp_path, n_items, train_cfg):
    """Train the config's optimiser + schedule + loop on ``n_items``
    one-item batches; the LR applied at every iteration."""
    optim = dict(cfg.optim_wrapper)
    optim = dict(type='OptimWrapper', optimizer=dict(optim['optimizer']),
                 accumulative_counts=optim.get('accumulative_counts', 1))
    hooks = {k: v for k, v in cfg.default_hooks.items()}
    hooks['checkpoint'] = None
    hooks['logger'] = dict(type='LoggerHook', interval=1000)
    record = RecordLR()
    runner = Sa2VARunner(
        model=OneWeight(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=Items(n_items), batch_size=1,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate'),
                              num_workers=0),
        optim_wrapper=optim, param_scheduler=cfg.param_scheduler,
        train_cfg=train_cfg, default_hooks=hooks, custom_hooks=[record],
        default_scope='sa2va', env_cfg=dict(dist_cfg=dict(backend='gloo')),
        # its own logger (runners made in the same second share one)
        experiment_name=f'{tmp_path.parent.name}_{tmp_path.name}',
        log_level='INFO')
    runner.train()
    return record.lrs, cfg.optim_wrapper['optimizer']['lr']


def expected_lrs(cfg, total):
    """The curve each config states: WarmupDecayLR's arguments, or a
    warm-up of ``warmup_iters`` then the constant LR (the cycle runs)."""
    base = cfg.optim_wrapper['optimizer']['lr']
    scheds = cfg.param_scheduler
    if [s['type'] for s in scheds] == ['WarmupDecayLR']:
        s = scheds[0]
        warm = warmup_iters_for(total, s.get('warmup_ratio', 0.0),
                                s.get('warmup_iters'))
        eta = s.get('eta_min_ratio')
        eta = (s.get('eta_min') or 0.0) / base if eta is None else eta
        return [base * warmup_decay_factor(t, total, warm,
                                           s.get('start_factor', 1e-5),
                                           s.get('decay', 'cosine'), eta)
                for t in range(total)]
    warm = cfg.get('warmup_iters', 0)
    start = scheds[0].get('start_factor', 1.0) if scheds else 1.0
    return [base * (start + (1 - start) * t / warm if t < warm else 1.0)
            for t in range(total)]


def scenarios(cfg):
    """(items per epoch, train_cfg) pairs: the config's loop shrunk."""
    loop = dict(cfg.train_cfg)
    if 'max_iters' in loop:
        return [(7, dict(loop, max_iters=10)), (50, dict(loop, max_iters=3))]
    epochs = loop['max_epochs']
    return [(6, loop), (21, dict(loop, max_epochs=3)), (40, loop)]


@pytest.mark.parametrize('name', CONFIGS)
def test_applied_lr_follows_the_run(name, tmp_path):
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    for k, (n_items, train_cfg) in enumerate(scenarios(cfg)):
        lrs, base = run_schedule(cfg, tmp_path / str(k), n_items, train_cfg)
        total = train_cfg.get('max_iters') or n_items * train_cfg['max_epochs']
        assert len(lrs) == total
        want = expected_lrs(cfg, total)
        assert lrs == pytest.approx(want, rel=1e-6, abs=1e-12), (
            name, n_items, train_cfg)
        # never negligible after the warm-up except the cosine's tail
        peak = lrs.index(max(lrs))
        low = sum(lr < 1e-3 * base for lr in lrs[peak:])
        assert low <= 0.05 * len(lrs[peak:]) + 1, (name, train_cfg, lrs)


def test_sa2va_schedule_numbers_for_a_small_dataset(tmp_path):
    """The 4B schedule with 21 iterations per epoch and 3 epochs: warm-up of
    round(0.05 * 63) = 3 iterations from 1e-5 x (base LR at iteration 2, as
    mmengine's LinearLR), cosine over 60 to 0."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    lrs, base = run_schedule(cfg, tmp_path, 21, dict(cfg.train_cfg,
                                                     max_epochs=3))
    assert lrs[0] == pytest.approx(4e-10)
    assert lrs[1] == pytest.approx(base * (1e-5 + (1 - 1e-5) / 2))
    assert lrs[2] == lrs[3] == pytest.approx(base)
    assert lrs[33] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(base * 0.5 * (1 + math.cos(
        math.pi * 59 / 60)))
    assert min(lrs[3:]) > 1e-3 * base * 0.5      # epochs 2-3 still learn


def test_demo_max_iters_option_shrinks_the_cosine(tmp_path):
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_tiny_demo.py'))
    lrs, base = run_schedule(cfg, tmp_path, 7, dict(cfg.train_cfg,
                                                    max_iters=10))
    assert lrs[0] == pytest.approx(0.1 * base)
    assert lrs[1] == pytest.approx(base)          # warm-up max(1, 0.5) = 1
    assert lrs[-1] < 0.2 * base                   # the cosine reached its end


def _cfg_with(scheduler, **hook):
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_tiny_demo.py'))
    cfg.param_scheduler = scheduler
    cfg.default_hooks.start_summary.update(hook)
    return cfg


@pytest.mark.parametrize('scheduler, message', [
    # a cosine with a fixed end: iterations 5..19 at eta_min
    ([dict(type='CosineAnnealingLR', eta_min=2e-5, by_epoch=False, begin=0,
           end=5)], 'ends at iteration 5 but training runs 20'),
    # the cycle configs' warmup_iters=0 bug: 1e-3 x the LR for good
    ([dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1),
      dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=1)],
     '20 of the 20 iterations after the warm-up'),
])
def test_start_summary_refuses_a_schedule_that_wastes_the_run(
        scheduler, message, tmp_path):
    with pytest.raises(RuntimeError, match=message):
        run_schedule(_cfg_with(scheduler), tmp_path / 'a', 7,
                     dict(type='IterBasedTrainLoop', max_iters=20))
    # overridable: the run trains (and the LR is what the schedule says)
    lrs, base = run_schedule(_cfg_with(scheduler, check_schedule=False),
                             tmp_path / 'b', 7,
                             dict(type='IterBasedTrainLoop', max_iters=20))
    assert len(lrs) == 20


def test_start_summary_lists_data_iterations_parameters_and_lr(tmp_path):
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    run_schedule(cfg, tmp_path, 21, dict(cfg.train_cfg, max_epochs=3))
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'Items' in log and '21' in log
    assert '21 iterations per epoch, 63 in total (3 epochs)' in log
    assert 'trainable parameters: 1 of 1' in log
    assert 'warm-up until iteration 2' in log        # as mmengine's LinearLR
    assert 'iter 0: 4e-10' in log and 'iter 2: 4e-05' in log


def test_config_goes_to_the_work_dir_and_tensorboard_when_installed(tmp_path):
    """The whole config is written to the work dir, not logged (hundreds of
    lines for the Sa2VA mix); TensorBoard event files appear when the
    package is installed, nothing breaks when it is not."""
    from projects.sa2va.engine.visbackend import tensorboard_available
    from projects.sa2va.registry import DATASETS, MODELS
    MODELS.register_module('ScheduleTestOneWeight', module=OneWeight,
                           force=True)
    DATASETS.register_module('ScheduleTestItems', module=Items, force=True)
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    hooks = {k: v for k, v in cfg.default_hooks.items()}
    hooks['checkpoint'] = None
    hooks['logger'] = dict(type='LoggerHook', interval=1)
    runner = Sa2VARunner.from_cfg(Config(dict(
        model=dict(type='ScheduleTestOneWeight'), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dict(type='ScheduleTestItems', n=4),
                              batch_size=1,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        param_scheduler=cfg.param_scheduler, train_cfg=dict(max_iters=3),
        default_hooks=hooks, default_scope='sa2va',
        visualizer=cfg.visualizer, log_level='INFO',
        experiment_name=f'cfgdump_{tmp_path.name}',
        env_cfg=dict(dist_cfg=dict(backend='gloo')))))
    runner.train()
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'Config:' not in log and 'config: ' in log
    assert (tmp_path / f'{runner.timestamp}.py').is_file()
    events = list(tmp_path.glob('*/vis_data/events.out.tfevents.*'))
    assert bool(events) == tensorboard_available()
    if not tensorboard_available():
        assert 'tensorboard is not installed' in log


def test_warmup_decay_equals_mmengine_linear_then_cosine():
    """The demo's former LinearLR(0.1, end=5) + CosineAnnealingLR(5..100,
    eta_min=0.1 x) gives the same LRs as WarmupDecayLR at 100 iterations
    (a first version reached the base LR one iteration late)."""
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR

    from projects.sa2va.engine.schedules import WarmupDecayLR

    def applied(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
        scheds, out = make(opt), []
        for _ in range(100):
            out.append(opt.param_groups[0]['lr'])
            opt.step()
            for s in scheds:
                s.step()
        return out
    old = applied(lambda o: [
        LinearLR(o, start_factor=0.1, by_epoch=False, begin=0, end=5),
        CosineAnnealingLR(o, eta_min=2e-4, by_epoch=False, begin=5, end=100)])
    new = applied(lambda o: [WarmupDecayLR(o, warmup_ratio=0.05,
                                           start_factor=0.1,
                                           eta_min_ratio=0.1, end=100)])
    assert new == pytest.approx(old, rel=1e-9)
