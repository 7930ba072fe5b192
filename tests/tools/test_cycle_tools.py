"""The mask <-> caption cycle through the real tools on generated sample data.

- ``torchrun --nproc_per_node=2`` (gloo, CPU) of ``tools/train.py
  configs/mask_caption_cycle_tiny.py`` for two steps (one RefCOCO batch, one
  loop-1 batch): the ranks see different samples (their losses differ), yet
  after every step the trainable parameters and the EMA shadow are bitwise
  identical on both ranks, and they moved (gradients are all-reduced through
  the DDP wrapper, pitfall 17). Then ``--resume`` for a third step in
  dual-loop mode (``configs/mask_caption_cycle_tiny_dual.py``, same
  trainable weights and optimizer): the EMA shadow and its update count come
  back from the checkpoint on both ranks, and the gradient surgery (own
  all-reduce of g1 and g2 under ``no_sync``) leaves both ranks identical.
- ``tools/cycle_demo.py`` (1 iteration, 1 sample): metrics JSON and PNG.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from projects.sa2va.registry import HOOKS

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'mask_caption_cycle_tiny.py'


@HOOKS.register_module(force=True)
class CycleSyncDumpHook(Hook):
    """Test probe: per rank, the trainable parameters and the EMA buffers
    before training and after every iteration, and the iteration's losses,
    into ``<work_dir>/sync/<phase>_<iter>_r<rank>.pt``."""

    priority = 'LOWEST'   # after CycleEMAHook's update

    def _dump(self, runner, phase: str, step: int, losses=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        rank = dist.get_rank() if dist.is_initialized() else 0
        out = Path(runner.work_dir) / 'sync'
        out.mkdir(exist_ok=True)
        state = {
            'params': {n: p.detach().clone() for n, p in model.named_parameters()
                       if p.requires_grad},
            'ema': {k: v.clone() for k, v in model.state_dict(trainable_only=False).items()
                    if k.startswith(('ema_shadow.', 'ema_state'))},
            'losses': {k: float(v) for k, v in (losses or {}).items()},
        }
        torch.save(state, out / f'{phase}_{step}_r{rank}.pt')

    def before_train(self, runner) -> None:
        self._dump(runner, 'before', runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._dump(runner, 'iter', runner.iter + 1, outputs)   # iter: not yet counted


@pytest.fixture(scope='module')
def sample_cwd(tmp_path_factory):
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    cwd = tmp_path_factory.mktemp('cycle_cwd')
    make_sample_data(cwd / 'data' / 'sample', families=['mask_caption'])
    build_tiny_tokenizer(cwd / 'data' / 'sample' / 'tokenizer')
    return cwd


def _torchrun(cwd: Path, cfg: Path, work: Path, iters: int, *extra: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc_per_node=2', str(REPO / 'tools' / 'train.py'), str(cfg),
         '--launcher', 'pytorch', '--work-dir', str(work), *extra, '--cfg-options',
         f'train_cfg.max_iters={iters}', 'default_hooks.checkpoint.interval=2',
         'default_hooks.checkpoint.max_keep_ckpts=2', 'env_cfg.dist_cfg.backend=gloo'],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def _load(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                    reason='torch built without distributed / gloo')
def test_two_ranks_stay_in_sync_and_ema_resumes(sample_cwd):
    def probe_config(base: Path, name: str, extra_hooks: str = '') -> Path:
        cfg = sample_cwd / name
        cfg.write_text(
            f'_base_ = [{str(base)!r}]\n'
            "custom_imports = dict(imports=['tests.tools.test_cycle_tools'], "
            'allow_failed_imports=False)\n'
            "custom_hooks = [dict(type='CycleEMAHook', caption_log_interval=0, "
            f"grad_log_interval=1), dict(type='CycleSyncDumpHook'){extra_hooks}]\n")
        return cfg

    # RefCOCO evaluation at step 2: 3 expressions spread over the 2 ranks
    evaluation = (", dict(type='CycleRefCOCOEvalHook', interval=2, num_samples=3, "
                  "max_new_tokens=4, dataset=dict(type='RefCOCOCaptionDataset', "
                  "data_root='data/sample/ref_seg/refcoco/', ann_file='instances.json', "
                  "split_file='refs(unc).p', data_prefix=dict(img_path='coco2014/train2014/'),"
                  " split='train', pipeline=[dict(type='LoadImage'), "
                  "dict(type='DecodeMasks')]))")
    cfg = probe_config(CONFIG, 'cycle_sync.py', evaluation)
    work = sample_cwd / 'sync_work'
    out = _torchrun(sample_cwd, cfg, work, 2)
    assert 'DDP on CPU' in out
    sync = work / 'sync'
    before = [_load(sync / f'before_0_r{r}.pt') for r in (0, 1)]
    assert _same(before[0]['params'], before[1]['params'])
    prev = before[0]
    for it in (1, 2):
        r0, r1 = (_load(sync / f'iter_{it}_r{r}.pt') for r in (0, 1))
        # different samples on the two ranks ...
        assert r0['losses'].keys() == r1['losses'].keys()
        assert r0['losses']['loss'] != r1['losses']['loss']
        # ... one all-reduced update: identical parameters and EMA
        assert _same(r0['params'], r1['params']), f'ranks differ after step {it}'
        assert _same(r0['ema'], r1['ema'])
        moved = [n for n in r0['params'] if not torch.equal(r0['params'][n], prev['params'][n])]
        # LoRA A gets gradient once B != 0 (step 2); two SAM2 hypernetwork
        # MLPs feed unused mask outputs (zero gradient)
        groups = ('lora_B', 'text_hidden_fcs', 'mlp1') + (('lora_A',) if it == 2 else ())
        must = [n for n in r0['params'] if any(g in n for g in groups)]
        assert len(must) > 20 and set(must) <= set(moved)
        assert int(r0['ema']['ema_state'][1]) == it
        prev = r0
    assert any(k.startswith('loss_ref') for k in _load(sync / 'iter_1_r0.pt')['losses'])
    assert 'loss_mask' in _load(sync / 'iter_2_r0.pt')['losses']

    (rec,) = [json.loads(x) for x in (work / 'eval.log').read_text().splitlines()]
    assert (rec['step'], rec['total']) == (2, 3)       # both ranks' samples gathered
    assert (work / 'eval_checkpoints' / 'iter_2.pth').is_file()
    assert 'grad_loop1_text_embeds' in out and 'cap_eos_pos' in out
    ckpt = _load(work / 'iter_2.pth')['state_dict']
    saved = {k: v for k, v in ckpt.items() if k.startswith(('ema_shadow.', 'ema_state'))}
    assert _same(saved, prev['ema']) and len(saved) == len(prev['ema'])
    for f in sync.glob('*.pt'):
        f.unlink()
    dual = probe_config(CONFIG.with_name('mask_caption_cycle_tiny_dual.py'), 'dual_sync.py')
    _torchrun(sample_cwd, dual, work, 3, '--resume')
    resumed = [_load(sync / f'before_2_r{r}.pt') for r in (0, 1)]
    for r in resumed:
        assert _same(r['ema'], saved), 'EMA shadow not restored by --resume'
        assert _same(r['params'], prev['params'])
    r0, r1 = (_load(sync / f'iter_3_r{r}.pt') for r in (0, 1))
    assert _same(r0['params'], r1['params']) and _same(r0['ema'], r1['ema'])
    assert int(r0['ema']['ema_state'][1]) == 3
    assert r0['losses']['loss_dam_ce'] != r1['losses']['loss_dam_ce']
    assert 'loss_loop2' in r0['losses']


@pytest.fixture(scope='module')
def cycle_demo():
    import importlib.util
    spec = importlib.util.spec_from_file_location('cycle_demo', REPO / 'tools' / 'cycle_demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # puts tools/ on sys.path (demo, train)
    return module


def test_cycle_demo_writes_metrics_and_png(sample_cwd, monkeypatch, cycle_demo):
    monkeypatch.chdir(sample_cwd)
    report = cycle_demo.main(['--work-dir', str(sample_cwd / 'demo'), '--iters', '1',
                              '--samples', '1'])
    assert report['iters'] == 1
    for phase in ('before', 'after'):
        (rec,) = report[phase]['samples']
        assert 0 < rec['loss_mask'] < 10 and 0 <= rec['loss_dice'] <= 1
        assert 0 <= rec['iou'] <= 1 and isinstance(rec['pseudo_caption'], str)
        assert report[phase]['mean']['loss_mask'] == rec['loss_mask']
    # one optimizer step changed the student: the fixed-noise loss differs
    assert report['before']['mean']['loss_mask'] != report['after']['mean']['loss_mask']
    png = sample_cwd / 'demo' / 'cycle_sample_0.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert cycle_demo.spread_indices(24, 4) == [0, 8, 15, 23]
    with pytest.raises(ValueError):
        cycle_demo.spread_indices(3, 4)


def test_memory_sweep_grows_with_caption_tokens(sample_cwd, monkeypatch, cycle_demo):
    monkeypatch.chdir(sample_cwd)
    rows = cycle_demo.memory_sweep(str(CONFIG), [4, 8])
    assert [r['T'] for r in rows] == [4, 8]
    assert rows[0]['tokens'] <= 8 and rows[1]['tokens'] > rows[0]['tokens']
    assert rows[1]['bytes'] > rows[0]['bytes'] > 2 ** 20
    assert rows[0]['bytes_per_token'] is None
    assert rows[1]['bytes_per_token'] == (rows[1]['bytes'] - rows[0]['bytes']) / (
        rows[1]['tokens'] - rows[0]['tokens'])
