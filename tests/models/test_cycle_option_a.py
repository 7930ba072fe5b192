"""The seed's "option A" route (``MaskCaptionOutputs(route='option_a')``) in
the cycle: collate -> ``MaskCaptionCycleDataPreprocessor`` derivation ->
``MaskCaptionCycleModel`` loss."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from projects.sa2va.datasets.mask_caption import MaskCaptionOutputs
from projects.sa2va.datasets.collate import mask_caption_cycle_collate
from projects.sa2va.models.cycle_preprocessor import MaskCaptionCycleDataPreprocessor
from projects.sa2va.transforms.functional import derive_mask_caption_batch

ROOT = Path(__file__).resolve().parents[2]
OPTION_A = dict(MaskCaptionOutputs=dict(route='option_a'))


def _raw(seed: int, paired: bool, dataset_type: str = 'mc_sa1b') -> dict:
    """One loaded record: a pair of frames (SA-V) or a single image."""
    rng = np.random.default_rng(seed)

    def frame():
        return Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))

    def mask(y, x):
        m = np.zeros((60, 80), np.uint8)
        m[y:y + 25, x:x + 40] = 1
        return m

    if paired:
        return dict(frames=[frame(), frame()], pair_masks=[mask(5, 10), mask(30, 35)],
                    dataset_type=dataset_type)
    return dict(image=frame(), masks=torch.from_numpy(mask(10, 20)[None].copy()),
                dataset_type=dataset_type)


def _samples(route: str, types=('mc_sav_npz', 'mc_sa1b'), **kwargs) -> list:
    out = MaskCaptionOutputs(route=route, **kwargs)
    return [out(_raw(i, paired=t == 'mc_sav_npz', dataset_type=t)) for i, t in enumerate(types)]


def _kinds(batch: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else type(v)
            for k, v in batch.items()}


# ------------------------------------------------------- (a) equal derivation
def test_option_a_batch_equals_derivation_and_direct_layout():
    pre = MaskCaptionCycleDataPreprocessor(dtype='bfloat16', sam2_dtype='float32')
    raw = mask_caption_cycle_collate(_samples('option_a'))
    assert {'image1', 'image2', 'mask1', 'mask2'} <= set(raw)
    assert 'pixel_values1' not in raw and 'masks2' not in raw
    assert raw['image1'].shape == (2, 3, 1024, 1024) and raw['mask2'].shape == (2, 1024, 1024)
    out = pre(raw)
    assert not {'image1', 'image2', 'mask1', 'mask2'} & set(out)
    for k in (1, 2):
        ref = derive_mask_caption_batch(raw[f'image{k}'], raw[f'mask{k}'])
        assert torch.equal(out[f'pixel_values{k}'], ref['pixel_values'].to(torch.bfloat16))
        assert torch.equal(out[f'prompt_masks{k}'], ref['prompt_masks'])
        assert torch.equal(out[f'masks{k}'], ref['gt_masks'])
    # the paired frames differ, the single image's *2 is its *1
    assert not torch.equal(out['prompt_masks1'][0], out['prompt_masks2'][0])
    for key in ('pixel_values', 'prompt_masks', 'masks', 'g_pixel_values'):
        assert torch.equal(out[f'{key}1'][1], out[f'{key}2'][1]), key
    direct = pre(mask_caption_cycle_collate(_samples('direct')))
    assert _kinds(out) == _kinds(direct)
    # the SAM2 input is the same on both routes (from the raw pixels)
    assert torch.equal(out['g_pixel_values1'], direct['g_pixel_values1'])


def test_option_a_uint8_transport_gives_the_float_batch():
    """``as_uint8``: a quarter of the bytes leave the workers; after the
    preprocessor the batch is the float route's, bit for bit."""
    pre = MaskCaptionCycleDataPreprocessor()
    raw = mask_caption_cycle_collate(_samples('option_a', as_uint8=True))
    assert raw['image1'].dtype == torch.uint8 and raw['mask1'].dtype == torch.uint8
    out = pre(raw)
    ref = pre(mask_caption_cycle_collate(_samples('option_a')))
    assert _kinds(out) == _kinds(ref)
    for key, value in ref.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(out[key], value), key


def test_option_a_sizes_follow_the_preprocessor_and_dam_is_derived():
    samples = _samples('option_a', types=('mc_sa1b', 'dam_SAV', 'mc_sa1b', 'dam_SAV'),
                       sam2_size=64)
    raw = mask_caption_cycle_collate(samples)
    assert raw['image1'].shape == (2, 3, 64, 64) and raw['dam']['mask1'].shape == (2, 64, 64)
    out = MaskCaptionCycleDataPreprocessor(image_size=28, grid=8)(raw)
    for batch, src in ((out, raw), (out['dam'], raw['dam'])):
        assert batch['pixel_values1'].shape == (2, 3, 28, 28)
        assert batch['pixel_values1'].dtype == torch.float32
        assert batch['prompt_masks2'].shape == (2, 8, 8)
        assert batch['prompt_masks2'].dtype == torch.bool
        ref = derive_mask_caption_batch(src['image2'], src['mask2'], 28, 8)
        assert torch.equal(batch['pixel_values2'], ref['pixel_values'])
        assert torch.equal(batch['prompt_masks2'], ref['prompt_masks'])
        assert torch.equal(batch['masks1'], src['mask1'])
        assert not {'image1', 'image2', 'mask1', 'mask2'} & set(batch)


# ------------------------------------------------------------------ (b) errors
def test_option_a_conflicts_and_missing_masks_raise():
    pre = MaskCaptionCycleDataPreprocessor()
    raw = mask_caption_cycle_collate(_samples('option_a', sam2_size=32))
    both = dict(raw, pixel_values1=torch.zeros(2, 3, 448, 448))
    with pytest.raises(ValueError, match=r"frame 1 is given both ways.*\['pixel_values1'\]"):
        pre(both)
    with pytest.raises(ValueError, match=r"frame 2 is given both ways.*\['masks2'\]"):
        pre(dict(raw, masks2=raw['mask2']))
    no_mask = {k: v for k, v in raw.items() if k != 'mask2'}
    with pytest.raises(ValueError, match='has image2 but no mask2'):
        pre(no_mask)
    no_image = {k: v for k, v in raw.items() if k != 'image1'}
    with pytest.raises(ValueError, match='has mask1 but no image1'):
        pre(no_image)
    with pytest.raises(ValueError, match='frame 1 is given both ways'):
        pre(dict(raw, dam=dict(raw, prompt_masks1=torch.zeros(2, 16, 16, dtype=torch.bool))))
    # the collate checks option-A keys like the others
    a, b = _samples('option_a', types=('mc_sa1b', 'mc_sa1b'), sam2_size=32)
    with pytest.raises(ValueError, match="samples \\[1\\] have no 'mask1'"):
        mask_caption_cycle_collate([a, {k: v for k, v in b.items() if k != 'mask1'}])
    with pytest.raises(ValueError, match="'image1' differs between samples"):
        mask_caption_cycle_collate([a, dict(b, image1=b['image1'].double())])


# ------------------------------------------- (c) real pipeline, tiny model loss
def test_tiny_model_trains_on_option_a_batches(sample_cwd, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import Runner
    monkeypatch.chdir(sample_cwd)
    cfg = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_tiny.py'))
    cfg.train_dataloader.dataset.pipeline_overrides = OPTION_A
    cfg.model.caption_len = 8
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
        model = MODELS.build(cfg.model)
    model.ema_reset()
    it = iter(loader)
    ref_batch, pseudo_batch = next(it), next(it)      # kinds 'r', 'p'
    assert all(isinstance(c, str) for c in ref_batch['captions'])
    assert pseudo_batch['captions'] == [None, None]
    for raw in (ref_batch, pseudo_batch):
        assert {'image1', 'image2', 'mask1', 'mask2'} <= set(raw)
        assert 'pixel_values1' not in raw and 'prompt_masks1' not in raw
        assert raw['image1'].shape == (2, 3, 256, 256)      # tiny config: sam2_size 256
    with pytest.raises(TypeError, match='run the batch through MaskCaptionCycleDataPreprocessor'):
        model(mode='loss', **{k: v for k, v in pseudo_batch.items()
                              if k not in ('data_stats', 'meta')})
    lora = [p for n, p in model.named_parameters() if 'lora_B' in n]
    fcs = [p for n, p in model.named_parameters() if 'text_hidden_fcs' in n]
    assert lora and fcs
    # one backward per batch (the next loop-1 forward swaps the EMA weights in)
    for raw, keys in ((ref_batch, {'loss_ref_mask', 'loss_ref_dice', 'loss_ref_llm'}),
                      (pseudo_batch, {'loss_mask', 'loss_dice', 'loss_seg_llm'})):
        data = model.data_preprocessor(raw, True)
        assert data['pixel_values1'].shape == (2, 3, 448, 448)
        assert data['prompt_masks1'].shape == (2, 16, 16)
        assert data['prompt_masks1'].dtype == torch.bool
        assert data['masks2'].shape == (2, 256, 256)
        losses = model(mode='loss', **data)
        assert keys <= set(losses)
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
        loss, _ = model.parse_losses(losses)
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora + fcs)
        assert any(p.grad.abs().sum() > 0 for p in fcs)
    model.zero_grad()
