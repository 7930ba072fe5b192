"""Dual loop: gradient combination rules, the surgery optimizer wrapper,
loop 2 on the tiny model, the sampler / collate of the DAM sub-batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from projects.sa2va.datasets.collate import mask_caption_cycle_collate
from projects.sa2va.datasets.samplers import CycleInterleaveSampler
from projects.sa2va.engine.grad_surgery import GradSurgeryOptimWrapper, combine_gradients

CONFIG = Path(__file__).resolve().parents[2] / 'configs/_base_/models/mask_caption_cycle_tiny.py'


def _flat(gs):
    return torch.cat([g.reshape(-1) for g in gs])


def test_combine_rules_by_hand():
    g1 = [torch.tensor([1.0, 0.0]), torch.tensor([[0.0]]), None]
    conflict = [torch.tensor([-1.0, 2.0]), None, torch.tensor([3.0])]
    # dot = -1, |g1|^2 = 1 -> c = -1; g2_orth = g2 + g1 = ([0, 2], [0], [3])
    g, st = combine_gradients(g1, conflict, 'owner', 0.5)
    assert st['dot'] == -1.0 and st['c'] == -1.0
    assert _flat(g).tolist() == [1.0, 1.0, 0.0, 1.5]
    assert st['cos'] == pytest.approx(-1 / 5 ** 0.5)        # over parameter 0 only
    _, st = combine_gradients(g1, conflict, 'owner', 0.5, missing='zero')
    assert st['cos'] == pytest.approx(-1 / 14 ** 0.5)       # g2 of parameter 2 counted
    g, _ = combine_gradients(g1, conflict, 'pcgrad', 0.5)     # conflicting: projected too
    assert _flat(g).tolist() == [1.0, 1.0, 0.0, 1.5]
    agree = [torch.tensor([2.0, 2.0]), None, None]
    # owner projects even when they agree: c = 2, g2_orth = (0, 2)
    g, st = combine_gradients(g1, agree, 'owner', 0.5)
    assert st['c'] == 2.0 and g[0].tolist() == [1.0, 1.0] and g[2] is None
    g, st = combine_gradients(g1, agree, 'pcgrad', 0.5)      # no conflict: plain sum
    assert st['c'] == 0.0 and g[0].tolist() == [2.0, 1.0]
    g, _ = combine_gradients(g1, conflict, 'sum', 0.5)
    assert _flat(g).tolist() == [0.5, 1.0, 0.0, 1.5]
    # |g1| = 0: nothing to project on
    g, st = combine_gradients([torch.zeros(2)], [torch.ones(2)], 'owner', 0.5)
    assert st['c'] == 0.0 and g[0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        combine_gradients(g1, conflict, 'mean', 0.5)


def test_missing_gradients_are_skipped_by_default():
    # parameter 0: both loops; parameter 1: loop 1 only (e.g. SAM2 decoder)
    g1 = [torch.tensor([1.0]), torch.tensor([3.0])]
    g2 = [torch.tensor([1.0]), None]
    g, st = combine_gradients(g1, g2, 'owner', 0.5)
    # owner: dot and |g1|^2 over parameter 0 -> c = 1; loop 2 fully projected out
    assert st['c'] == 1.0 and st['cos'] == pytest.approx(1.0)
    assert [t.tolist() for t in g] == [[1.0], [3.0]]
    g, st = combine_gradients(g1, g2, 'owner', 0.5, missing='zero')
    # the former rule: |g1|^2 = 1 + 9 -> c = 0.1, parameter 1 shrunk by 1 - beta c
    assert st['c'] == pytest.approx(0.1)
    assert g[0].tolist() == pytest.approx([1.45]) and g[1].tolist() == pytest.approx([2.85])
    with pytest.raises(ValueError, match='missing'):
        combine_gradients(g1, g2, 'owner', 0.5, missing='drop')


@pytest.mark.parametrize('missing', ['skip', 'zero'])
def test_surgery_wrapper_passes_missing_gradients_as_none(missing):
    torch.manual_seed(0)
    lin, other = nn.Linear(2, 1), nn.Linear(2, 1)
    params = list(lin.parameters()) + list(other.parameters())
    w0 = [p.detach().clone() for p in params]
    x = torch.randn(3, 2)

    def losses():                               # loop 2 does not reach `other`
        return lin(x).pow(2).mean() + other(x).pow(2).mean(), (lin(x) - 1).abs().mean()

    l1, l2 = losses()
    g1 = list(torch.autograd.grad(l1, params))
    g2 = list(torch.autograd.grad(l2, params, allow_unused=True))
    assert g2[2] is None and g2[3] is None
    want, st = combine_gradients(g1, g2, 'owner', 0.5, missing)
    wrap = GradSurgeryOptimWrapper(torch.optim.SGD(params, lr=0.1), rule='owner',
                                   missing=missing)
    wrap.update_params(losses())
    for p, w, e in zip(params, w0, want):
        assert torch.allclose(p, w - 0.1 * e, atol=1e-6)
    assert wrap.message_hub.get_scalar('train/dual_c').current() == pytest.approx(st['c'])
    if missing == 'skip':                       # `other` steps with its loop-1 gradient
        assert torch.allclose(params[2], w0[2] - 0.1 * g1[2], atol=1e-6)


def test_owner_rule_loop2_part_is_orthogonal():
    g = torch.Generator().manual_seed(0)
    g1 = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]
    g2 = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]
    out, _ = combine_gradients(g1, g2, 'owner', 0.5)
    part = (_flat(out) - _flat(g1)) / 0.5
    assert abs(float(part @ _flat(g1))) < 1e-5
    assert float(part @ _flat(g2)) > 0


def test_surgery_wrapper_steps_with_the_combined_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    w0 = [p.detach().clone() for p in lin.parameters()]
    wrap = GradSurgeryOptimWrapper(torch.optim.SGD(lin.parameters(), lr=0.1),
                                   accumulative_counts=2, rule='owner', beta=0.5,
                                   norm_groups=dict(w='weight'))
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)

    def losses():
        return lin(x1).pow(2).mean(), (lin(x2) - 1).abs().mean()

    expected = [torch.zeros_like(p) for p in lin.parameters()]
    for _ in range(2):
        l1, l2 = losses()
        g1 = torch.autograd.grad(l1 / 2, list(lin.parameters()))
        g2 = torch.autograd.grad(l2 / 2, list(lin.parameters()))
        want, _ = combine_gradients(list(g1), list(g2), 'owner', 0.5)
        expected = [e + w for e, w in zip(expected, want)]
        with wrap.optim_context(lin):
            pair = losses()
        wrap.update_params(pair)
        if wrap.inner_count == 1:                    # accumulating: no step yet
            assert all(torch.equal(p, w) for p, w in zip(lin.parameters(), w0))
    for p, w, e in zip(lin.parameters(), w0, expected):
        assert torch.allclose(p, w - 0.1 * e, atol=1e-6)
    # per-group norms of the last micro-step's (accumulation-scaled) gradients
    hub = wrap.message_hub.log_scalars
    assert wrap.norm_groups == {'w': 'weight'}
    assert hub['train/dual_g1_w'].current() == pytest.approx(float(g1[0].norm()), rel=1e-5)
    assert hub['train/dual_g2_w'].current() == pytest.approx(float(g2[0].norm()), rel=1e-5)
    assert all(p.grad is None or not p.grad.any() for p in lin.parameters())
    with pytest.raises(TypeError):
        wrap.update_params(lin(x1).sum())
    amp = GradSurgeryOptimWrapper(torch.optim.SGD(lin.parameters(), lr=0.1),
                                  amp_dtype='bfloat16')
    with amp.optim_context(lin):
        assert lin(x1).dtype == torch.bfloat16
    assert lin(x1).dtype == torch.float32


def test_dual_configs():
    from mmengine.config import Config
    root = CONFIG.parents[2]
    big = Config.fromfile(str(root / 'mask_caption_cycle_4b_dual.py'))
    assert big.train_dataloader.batch_size == 2 * big.train_dataloader.sampler.batch_size == 32
    assert big.train_dataloader.sampler.dam_datasets == 1
    parts = big.train_dataloader.dataset.datasets
    assert parts[-1].datasets[0].type == 'DescribeAnythingCaptionDataset'
    ow = big.optim_wrapper
    assert (ow.type, ow.rule, ow.beta, ow.amp_dtype, ow.accumulative_counts) == (
        'GradSurgeryOptimWrapper', 'owner', 0.5, 'bfloat16', 2)
    assert ow.optimizer.lr == 4e-5 and big.model.dual_loop.caption_len == 256
    tiny = Config.fromfile(str(root / 'mask_caption_cycle_tiny_dual.py'))
    assert tiny.train_dataloader.batch_size == 2 * tiny.train_dataloader.sampler.batch_size
    assert tiny.optim_wrapper.type == 'GradSurgeryOptimWrapper'


class _Concat:
    def __init__(self, *sizes):
        self.cumulative_sizes = [sum(sizes[:i + 1]) for i in range(len(sizes))]


def test_sampler_appends_a_dam_block_to_every_batch():
    s = CycleInterleaveSampler(_Concat(8, 4, 3), batch_size=2, seed=1, dam_datasets=1)
    order = list(s)
    assert len(order) == len(s) == len(s.kinds) * 4
    for i, kind in enumerate(s.kinds):
        main, dam = order[4 * i:4 * i + 2], order[4 * i + 2:4 * i + 4]
        assert all((8 <= j < 12) if kind == 'r' else j < 8 for j in main)
        assert all(12 <= j < 15 for j in dam)


def _sample(kind, caption=None):
    return dict(pixel_values1=torch.zeros(3, 8, 8), masks1=torch.zeros(4, 4),
                caption=caption, dataset_type=kind, data_stats={}, meta={})


def test_collate_splits_the_dam_samples():
    batch = mask_caption_cycle_collate(
        [_sample('sav'), _sample('sa1b'), _sample('dam_LVIS', 'a cat'),
         _sample('dam_SAV', 'a dog')])
    assert batch['pixel_values1'].shape == (2, 3, 8, 8)
    assert batch['captions'] == [None, None]
    assert batch['dam']['captions'] == ['a cat', 'a dog']
    assert batch['dam']['masks1'].shape == (2, 4, 4)
    with pytest.raises(ValueError, match='Describe Anything samples only'):
        mask_caption_cycle_collate([_sample('dam_LVIS', 'x')])


def test_loop2_gradients_and_loss_pair(tiny_tokenizer_dir):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tiny_tokenizer_dir)
    cfg.model.dual_loop = dict(caption_len=6)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    dam = dict(pixel_values1=torch.randn(2, 3, 448, 448, generator=g),
               g_pixel_values1=torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8,
                                             generator=g),
               masks1=(torch.rand(2, 256, 256, generator=g) > 0.5).float(),
               captions=['a red ball on the grass next to a tree', 'the dog'])
    out = model._loop2_loss(dam)
    assert set(out) == {'loss_dam_ce', 'loss_dam_seg_llm', 'dam_k0_rate'}
    assert 0 < float(out['loss_dam_ce']) < 20 and 0 <= float(out['dam_k0_rate']) <= 1
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad]
    grads = torch.autograd.grad(out['loss_dam_ce'] + out['loss_dam_seg_llm'],
                                [named[n] for n in names], allow_unused=True)
    got = {n: gr for n, gr in zip(names, grads) if gr is not None and gr.abs().sum() > 0}
    # LoRA gets loop-2 gradient; SAM2 decoder and text_hidden_fcs none (the
    # mask -> grid step has no gradient)
    assert any('lora_B' in n for n in got)
    assert not any('sam_mask_decoder' in n or 'text_hidden_fcs' in n for n in got)
    pair, log_vars = model.parse_losses(dict(loss_mask=torch.tensor(1.0),
                                             loss_dice=torch.tensor(0.5), **out))
    assert float(pair[0]) == 1.5
    assert float(pair[1]) == pytest.approx(float(out['loss_dam_ce'] + out['loss_dam_seg_llm']))
    assert float(log_vars['loss']) == pytest.approx(float(pair[0] + pair[1]), rel=1e-5)
    with pytest.raises(ValueError, match='dam'):
        model(mode='loss', pixel_values2=torch.zeros(1, 3, 448, 448))
