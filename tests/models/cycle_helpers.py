"""Shared builders of the cycle model tests: the tiny cycle model with a
given tokenizer and a B = 2 loop-1 / RefCOCO batch."""
from __future__ import annotations

from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parents[2] / 'configs/_base_/models/mask_caption_cycle_tiny.py'
B = 2


def build_cycle_model(tokenizer_dir, **overrides):
    """The tiny cycle model (seed 0, EMA initialised) with ``overrides`` of
    its config."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tokenizer_dir)
    cfg.model.update(overrides)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        m = MODELS.build(cfg.model)
    m.ema_reset()
    return m


def cycle_batch(seed=0):
    """``pixel_values{1,2}``, ``prompt_masks1`` (K = 15 and K = 0: different
    prompt lengths), ``g_pixel_values2`` (256), ``masks2``."""
    g = torch.Generator().manual_seed(seed)
    pm = torch.zeros(B, 16, 16, dtype=torch.bool)
    pm[0, 3:6, 3:8] = True
    return dict(pixel_values1=torch.randn(B, 3, 448, 448, generator=g),
                pixel_values2=torch.randn(B, 3, 448, 448, generator=g),
                prompt_masks1=pm,
                g_pixel_values2=torch.randint(0, 256, (B, 3, 256, 256), dtype=torch.uint8,
                                              generator=g),
                masks2=(torch.rand(B, 256, 256, generator=g) > 0.5).float())
