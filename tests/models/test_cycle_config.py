"""The cycle configs: tiny data path end to end (loader -> preprocessor),
4B recipe values."""
from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_4b_recipe_values():
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_4b.py'))
    m = cfg.model
    assert m.type == 'MaskCaptionCycleModel'
    assert (m.caption_len, m.topk, m.gumbel_tau, m.corrupt_ratio, m.ema_decay) == (
        256, 512, 0.7, 0.25, 0.999)
    assert m.mllm.llm_lora == dict(r=128, lora_alpha=256, lora_dropout=0.05)
    assert m.num_points == 12544 and m.pretrained_pth.endswith('sa2va_4b_from_hf.pth')
    assert cfg.train_dataloader.batch_size == cfg.train_dataloader.sampler.batch_size == 16
    assert cfg.optim_wrapper.accumulative_counts == 2
    assert cfg.optim_wrapper.optimizer.lr == 4e-5
    parts = cfg.train_dataloader.dataset.datasets
    assert [d.type for d in parts[0].datasets] == ['SAVPairNpzDataset', 'SA1BDataset',
                                                   'OpenImageSegDataset']
    assert parts[0].datasets[1].max_images == 2500
    assert parts[0].datasets[2].max_samples == 200000
    assert parts[1].datasets[0].type == 'RefCOCOCaptionDataset'
    assert any(h.type == 'CycleEMAHook' for h in cfg.custom_hooks)


def test_tiny_loader_interleaves_refcoco_first(sample_cwd, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from projects.sa2va.models.cycle_preprocessor import MaskCaptionCycleDataPreprocessor
    monkeypatch.chdir(sample_cwd)
    cfg = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_tiny.py'))
    with DefaultScope.overwrite_default_scope('sa2va'):
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    kinds = loader.sampler.kinds
    assert kinds[0] == 'r' and 'p' in kinds
    it = iter(loader)
    first = next(it)
    assert all(isinstance(c, str) and c for c in first['captions'])
    second = next(it)
    assert kinds[1] == 'p' and second['captions'] == [None, None]
    pre = MaskCaptionCycleDataPreprocessor(dtype='float32')
    data = pre(first)
    assert data['pixel_values2'].shape == (2, 3, 448, 448)
    assert data['pixel_values2'].dtype == torch.float32
    assert data['g_pixel_values2'].shape == (2, 3, 256, 256)
    assert data['g_pixel_values2'].dtype == torch.float32
    assert data['masks2'].shape[0] == 2 and data['prompt_masks1'].shape == (2, 16, 16)
