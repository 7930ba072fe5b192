"""Resume of the real tiny Sa2VA: ``tools/train.py configs/sa2va_tiny_demo.py``
for 4 iterations uninterrupted vs a run killed (SIGKILL, from outside) while
writing its iteration-4 checkpoint, then ``--resume`` to 4 with another
``num_workers`` (0 -> 2).

The killed run keeps one checkpoint (``max_keep_ckpts=1``): the kill leaves
``iter_2.pth`` loadable and named by ``last_checkpoint``, and a partial
``iter_4.pth.tmp-<pid>`` that the resumed run deletes.

Compared exactly (CPU, one process, float32): the logged losses, grad norm
and LR of iterations 3 and 4, and the samples of every batch after the
resume. Exactness holds because the checkpoint restores the random state
(LoRA dropout, mask-loss point sampling) and the data stream is positioned
by the sampler (nothing is drawn twice). Also: the checkpoint loads with
``torch.load(weights_only=True)``, holds exactly the trainable weights, no
temporary file is left, the resumed run skipped the first batches without
loading them and logged no missing keys.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from torch.utils.data import DataLoader, Dataset

from projects.sa2va.datasets.samplers import LengthGroupedSampler
from projects.sa2va.engine import InfiniteDataIterator
from projects.sa2va.registry import HOOKS

REPO = Path(__file__).resolve().parents[2]
LOG_EVERY_ITER = ['default_hooks.logger.interval=1', 'log_processor.window_size=1',
                  'default_hooks.checkpoint.interval=2',
                  'default_hooks.checkpoint.max_keep_ckpts=3']


@HOOKS.register_module(force=True)  # imported by pytest and by the runs
class ResumeProbeHook(Hook):
    """Test probe: one JSON line per trained iteration with the iteration,
    the optimizer LR, the identity of every sample of the batch and whether
    it has GT masks (``probe.jsonl``; rank r > 0: ``probe.r.jsonl``), and a
    digest of the parameters after training."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        ids = [[str(m.get(k)) for k in ('dataset_name', 'sample_idx',
                                         'img_path')]
               for m in data_batch.get('meta', [])]
        lr = runner.optim_wrapper.get_lr()['lr'][0]
        name = 'probe.jsonl' if runner.rank == 0 else f'probe.{runner.rank}.jsonl'
        with open(Path(runner.work_dir) / name, 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter + 1, lr=lr, samples=ids,
                                    has_masks=bool(data_batch.get('masks'))))
                    + '\n')

    def after_train(self, runner):
        """``params.<rank>.sha256``: a digest of every parameter's name and
        bytes at the end of training (ranks must hold identical ones)."""
        import hashlib
        model = getattr(runner.model, 'module', runner.model)
        digest = hashlib.sha256()
        for name, p in model.named_parameters():
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().reshape(-1)
                          .view(torch.uint8).numpy().tobytes())
        (Path(runner.work_dir) / f'params.{runner.rank}.sha256').write_text(
            digest.hexdigest())


@HOOKS.register_module(force=True)
class StallSaveHook(Hook):
    """Test probe: the checkpoint of iteration ``at`` is written half, made
    durable, ``marker`` is created and the process sleeps (to be killed)."""

    def __init__(self, at: int, marker: str):
        self.at, self.marker = at, marker

    def before_save_checkpoint(self, runner, checkpoint):
        if runner.iter + 1 != self.at:
            return
        from mmengine.fileio.backends import LocalBackend

        def stall(backend, obj, filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            Path(self.marker).write_text(str(filepath))
            time.sleep(600)
        LocalBackend.put = stall


@pytest.fixture(scope='module')
def resume_dir(sample_cwd):
    """``<sample_cwd>/resume_test/`` with the probe config (the tiny demo
    plus ResumeProbeHook and DataStatsHook every iteration)."""
    root = sample_cwd / 'resume_test'
    root.mkdir(exist_ok=True)
    (root / 'probe_config.py').write_text(
        f"_base_ = [{str(REPO / 'configs' / 'sa2va_tiny_demo.py')!r}]\n"
        "custom_imports = dict(imports=['tests.tools.test_resume'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DataStatsHook', interval=1),\n"
        "                dict(type='ResumeProbeHook')]\n")
    (root / 'kill_config.py').write_text(
        "_base_ = ['probe_config.py']\n"
        "custom_hooks = [dict(type='DataStatsHook', interval=1),\n"
        "                dict(type='ResumeProbeHook'),\n"
        f"                dict(type='StallSaveHook', at=4, marker="
        f"{str(root / 'stalled')!r})]\n")
    return root


def _start(root, work, *extra, config='probe_config.py', log=None):
    """``tools/train.py`` in a subprocess; output piped, or written to the
    file ``log`` (a run that is polled, not drained)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    out = subprocess.PIPE if log is None else open(log, 'w')
    return subprocess.Popen(
        [sys.executable, str(REPO / 'tools' / 'train.py'),
         str(root / config), '--work-dir', str(work), *extra],
        cwd=root.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
        text=True)


def _finish(proc) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return out


def _scalars(work) -> dict[int, dict]:
    rows = {}
    for path in Path(work).glob('*/vis_data/scalars.json'):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if 'loss' in rec:
                rows[rec['step']] = rec
    return rows


def _probe(work) -> dict[int, dict]:
    lines = (Path(work) / 'probe.jsonl').read_text().splitlines()
    return {r['iter']: r for r in map(json.loads, lines)}


def _kill_when_stalled(proc, marker: Path, log: Path) -> str:
    """SIGKILL ``proc`` once it is stalled inside a checkpoint write."""
    deadline = time.time() + 500
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError('the run ended before the stalled save: '
                                     + log.read_text()[-4000:])
            assert time.time() < deadline, 'no stalled save in 500 s'
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return marker.read_text()


@pytest.fixture(scope='module')
def runs(resume_dir):
    full, part = resume_dir / 'full', resume_dir / 'part'
    # the uninterrupted and the interrupted run side by side (2 cores)
    a = _start(resume_dir, full, '--cfg-options', 'train_cfg.max_iters=4',
               *LOG_EVERY_ITER)
    b = _start(resume_dir, part, '--cfg-options', 'train_cfg.max_iters=4',
               *LOG_EVERY_ITER, 'default_hooks.checkpoint.max_keep_ckpts=1',
               config='kill_config.py', log=resume_dir / 'killed.log')
    partial = _kill_when_stalled(b, resume_dir / 'stalled',
                                 resume_dir / 'killed.log')
    _finish(a)
    # killed while writing iteration 4: iteration 2 is intact and named
    assert Path(partial).name.startswith('iter_4.pth.tmp-')
    assert Path(partial).exists() and not (part / 'iter_4.pth').exists()
    assert (part / 'last_checkpoint').read_text() == str(part / 'iter_2.pth')
    assert torch.load(part / 'iter_2.pth', map_location='cpu',
                      weights_only=True)['meta']['iter'] == 2
    log = _finish(_start(resume_dir, part, '--resume', '--cfg-options',
                         'train_cfg.max_iters=4', *LOG_EVERY_ITER,
                         'default_hooks.checkpoint.max_keep_ckpts=1',
                         'train_dataloader.num_workers=2'))
    assert f'removed {partial}' in log
    return full, part, log


def test_resume_continues_exactly(runs):
    full, part, log = runs
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'random state of iteration 2 restored' in log
    assert 'sampler starts at sample 4 of this rank (2 batches skipped ' \
        'without loading)' in log
    assert 'Advance dataloader' not in log
    assert 'missing keys' not in log and 'unexpected key' not in log
    # the counters continue from the checkpoint (4 samples) and only the 2
    # batches after the resume were trained on: 4 + 2 x 2
    assert 'data_stats: samples=8' in log and 'samples=10' not in log
    a, b = _scalars(full), _scalars(part)
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        for key in ('loss', 'loss_llm', 'loss_mask', 'loss_dice', 'lr',
                    'grad_norm'):
            # bitwise on CPU: same data, weights, optimizer and RNG state
            assert b[step][key] == a[step][key], (step, key, a[step], b[step])
    assert a[4]['loss_mask'] > 0  # the grounding path is exercised
    pa, pb = _probe(full), _probe(part)
    assert sorted(pa) == sorted(pb) == [1, 2, 3, 4]
    for it in (3, 4):
        assert pb[it]['samples'] == pa[it]['samples'] and pa[it]['samples']
        assert pb[it]['lr'] == pa[it]['lr']
    # the 4 batches are 8 distinct samples of the epoch's order
    seen = [tuple(s) for it in (1, 2, 3, 4) for s in pa[it]['samples']]
    assert len(seen) == 8 and len(set(seen)) == 8


def test_checkpoint_is_trainable_only_and_weights_only(runs):
    full, part, _ = runs
    assert not [p for p in part.iterdir() if '.tmp' in p.name]
    # max_keep_ckpts=1: iteration 2 deleted after iteration 4 was complete
    assert [p.name for p in part.glob('*.pth')] == ['iter_4.pth']
    assert (part / 'last_checkpoint').read_text() == str(part / 'iter_4.pth')
    ckpt = torch.load(part / 'iter_4.pth', map_location='cpu',
                      weights_only=True)
    assert ckpt['meta']['iter'] == 4 and 'rng_state' in ckpt['meta']
    keys = set(ckpt['state_dict'])
    assert 'text_hidden_fcs.0.weight' in keys
    assert any('lora_A' in k for k in keys)
    assert any(k.startswith('grounding_encoder.sam_mask_decoder.')
               for k in keys)
    assert not any(k.startswith(('mllm.vision_model.',
                                 'grounding_encoder.image_encoder.'))
                   for k in keys)
    # the same trained weights in both runs
    ref = torch.load(full / 'iter_4.pth', map_location='cpu',
                     weights_only=True)['state_dict']
    assert set(ref) == keys
    for k in keys:
        assert torch.equal(ref[k], ckpt['state_dict'][k]), k


def test_complete_state_dict_is_strict(runs, sample_cwd, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.sa2va.registry import MODELS
    full, _, _ = runs
    monkeypatch.chdir(sample_cwd)
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_tiny_demo.py'))
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(cfg.model)
    state = torch.load(full / 'iter_2.pth', map_location='cpu',
                       weights_only=True)['state_dict']
    full = model.complete_state_dict(state)
    assert set(full) == set(model.state_dict(trainable_only=False))
    assert full['text_hidden_fcs.0.weight'] is state['text_hidden_fcs.0.weight']
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    dropped = dict(state)
    dropped.pop('text_hidden_fcs.2.bias')
    with pytest.raises(ValueError, match=r'text_hidden_fcs\.2\.bias'):
        model.complete_state_dict(dropped, source='x.pth')
    with pytest.raises(ValueError, match='not_a_key'):
        model.complete_state_dict(dict(state, not_a_key=torch.zeros(1)))


class _Counting(Dataset):
    """``n`` samples ``{'idx': i}``; counts ``__getitem__`` calls."""

    def __init__(self, n: int):
        self.modality_length = np.arange(1, n + 1) * np.where(
            np.arange(n) % 3 == 0, -1, 1)
        self.calls = []

    def __len__(self):
        return len(self.modality_length)

    def __getitem__(self, i):
        self.calls.append(i)
        return i


def _loader(ds):
    sampler = LengthGroupedSampler(ds, per_device_batch_size=3, seed=5)
    return DataLoader(ds, batch_size=3, sampler=sampler, num_workers=0,
                      collate_fn=list)


@pytest.mark.parametrize('skip', [0, 2, 5, 7, 12])
def test_seek_equals_uninterrupted_stream_without_loading(skip):
    # 20 samples, batch 3 -> 7 batches per epoch (round_up repeats 1 sample)
    ref_ds = _Counting(20)
    ref = InfiniteDataIterator(_loader(ref_ds))
    stream = [next(ref) for _ in range(skip + 6)]
    ds = _Counting(20)
    it = InfiniteDataIterator(_loader(ds))
    before = torch.get_rng_state()
    it.seek(skip)
    got = [next(it) for _ in range(6)]
    assert got == stream[skip:]
    assert it.epoch == (skip + 5) // 7
    # only the trained samples were loaded, and the global RNG is untouched
    assert len(ds.calls) == 18
    assert torch.equal(torch.get_rng_state(), before)


def test_sampler_start_and_epoch():
    ds = _Counting(20)
    s = LengthGroupedSampler(ds, per_device_batch_size=3, seed=5)
    full = list(s)
    s.set_start(9)
    assert list(s) == full[9:] and len(s) == len(full) - 9
    s.set_epoch(1)
    assert len(s) == len(full) and list(s) != full
    with pytest.raises(ValueError, match='outside'):
        s.set_start(len(full) + 1)


# ---------------------------------------------------------------- in-process
class _ToySet(Dataset):
    """10 samples ``{'x': (4,) float, 'y': (1,) float, 'idx': int}``."""

    modality_length = np.arange(1, 11)

    def __len__(self):
        return 10

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(x=torch.randn(4, generator=g), y=torch.randn(1, generator=g),
                    idx=i)


def _toy_model():
    from mmengine.model import BaseModel

    class Toy(BaseModel):
        """Linear with dropout (draws from the global RNG); records the
        sample ids and losses it trains on."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(4, 1)
            self.drop = torch.nn.Dropout(0.5)
            self.trace = []

        def forward(self, x, y, idx, mode='loss'):
            loss = ((self.fc(self.drop(x)) - y) ** 2).mean()
            self.trace.append((idx.tolist(), loss.item()))
            return dict(loss=loss)

    return Toy()


def _toy_runner(work_dir, name, runner_cls=None, **kwargs):
    from projects.sa2va.engine import Sa2VARunner
    return (runner_cls or Sa2VARunner)(
        model=_toy_model(), work_dir=str(work_dir), experiment_name=name,
        default_scope='sa2va',
        train_dataloader=dict(
            dataset=_ToySet(), batch_size=2, num_workers=0,
            sampler=dict(type='LengthGroupedSampler', per_device_batch_size=2,
                         seed=0),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                             begin=0, end=10),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           by_epoch=False, interval=3),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=1), **kwargs)


class _Kill(Hook):
    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == self.at:
            raise KeyboardInterrupt


def test_epoch_loop_resumes_mid_epoch(tmp_path):
    full = _toy_runner(tmp_path / 'full', 'toy_full')
    assert type(full.train_loop).__name__ == 'ResumableEpochBasedTrainLoop'
    full.train()
    ref = full.model.trace
    assert len(ref) == 10  # 2 epochs x 5 batches
    part = _toy_runner(tmp_path / 'part', 'toy_part',
                       custom_hooks=[_Kill(at=7)])
    with pytest.raises(KeyboardInterrupt):
        part.train()  # killed after iteration 7; last checkpoint: 6
    assert (tmp_path / 'part' / 'iter_6.pth').exists()
    resumed = _toy_runner(tmp_path / 'part', 'toy_resumed', resume=True,
                          load_from=str(tmp_path / 'part' / 'iter_6.pth'))
    resumed.train()
    # epoch 1, batches 1..4: same samples, same dropout, same losses
    assert resumed.model.trace == ref[6:]
    assert resumed.iter == 10 and resumed.epoch == 2


def test_atomic_save_and_unsafe_checkpoint(tmp_path, monkeypatch):
    import mmengine.runner.checkpoint as ckpt_mod

    from projects.sa2va.engine import load_checkpoint_file
    runner = _toy_runner(tmp_path, 'toy_atomic')
    flags = dict(save_optimizer=False, save_param_scheduler=False)
    runner.save_checkpoint(str(tmp_path), 'ok.pth', **flags)
    assert load_checkpoint_file(str(tmp_path / 'ok.pth'))['meta']['rng_state']

    def broken(obj, f, *a, **k):  # dies half-way through writing
        f.write(b'partial')
        raise OSError('disk full')
    monkeypatch.setattr(ckpt_mod.torch, 'save', broken)
    with pytest.raises(OSError, match='disk full'):
        runner.save_checkpoint(str(tmp_path), 'iter_9.pth', **flags)
    monkeypatch.undo()
    assert not (tmp_path / 'iter_9.pth').exists()
    # a checkpoint holding Python objects is refused, not executed
    from mmengine.logging import HistoryBuffer
    torch.save({'meta': {'x': HistoryBuffer()}}, tmp_path / 'unsafe.pth')
    with pytest.raises(ValueError, match=r'unsafe.pth is refused by torch.load'
                       r'\(weights_only=True\): .*HistoryBuffer'):
        load_checkpoint_file(str(tmp_path / 'unsafe.pth'))
