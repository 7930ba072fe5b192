"""Export round trip on the tiny model: training checkpoint -> export
directory -> predictor, and export -> training checkpoint; LM logits and
masks equal (max abs diff <= 1e-5, fp32)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from projects.sa2va.evaluation.export import (export_from_config,
                                              import_export, merged_key)
from projects.sa2va.evaluation.predictor import EXPORT_CONFIG, Sa2VAPredictor

from .helpers import forced, random_image, seg_plan

CONFIG = Path(__file__).resolve().parents[2] / 'configs/_base_/models/sa2va_tiny.py'


def test_merged_key():
    assert merged_key('mllm.language_model.base_model.model.model.layers.0.'
                      'self_attn.q_proj.base_layer.weight') == \
        'mllm.language_model.model.layers.0.self_attn.q_proj.weight'
    assert merged_key('mllm.language_model.base_model.model.model.embed_tokens.'
                      'token_adapter.base_layer.weight') == \
        'mllm.language_model.model.embed_tokens.weight'


def _outputs(predictor, image, plan):
    out = predictor.segment(image, 'Please segment the cat.', max_new_tokens=8,
                            **forced(plan))
    batch = predictor._image_inputs(image, 'Please segment the cat.')
    ids = torch.cat([batch['input_ids'], out['sequences'][None]], 1)
    with torch.no_grad():
        logits = predictor.model.mllm(input_ids=ids, pixel_values=batch['pixel_values'],
                                      image_flags=batch['image_flags']).logits
    return logits, out['logits'], out['masks']


def test_export_round_trip(tmp_path, tiny_tokenizer_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tiny_tokenizer_dir)
    cfg.text_settings = dict(template='phi3_chat', max_length=4096)
    cfg.randomness = dict(seed=0)
    trained = Sa2VAPredictor.from_config(cfg, max_num_tiles=1)
    # a "trained" model: non-zero LoRA B and moved special-token rows
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            if p.requires_grad and ('lora_B' in name or 'trainable_tokens' in name
                                    or 'text_hidden_fcs' in name):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    ckpt = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': trained.model.state_dict()}, ckpt)  # trainable only
    image = random_image(36, 52, 0)
    plan = seg_plan(trained, n_seg=2)
    ref = _outputs(trained, image, plan)

    out_dir = tmp_path / 'export'
    export_from_config(cfg, str(ckpt), str(out_dir), max_num_tiles=1)
    meta = json.loads((out_dir / EXPORT_CONFIG).read_text())
    assert meta['model']['mllm']['llm_lora'] is None
    assert meta['predictor']['template'] == 'phi3_chat'
    assert meta['predictor']['max_num_tiles'] == 1
    exported = Sa2VAPredictor.from_export(str(out_dir))
    assert not hasattr(exported.model.mllm.language_model, 'peft_config')
    got = _outputs(exported, image, plan)
    for a, b in zip(ref, got):
        assert a.shape == b.shape
        assert (a.float() - b.float()).abs().max() <= 1e-5
    assert torch.equal(ref[2], got[2])

    back = tmp_path / 'imported.pth'
    import_export(str(out_dir), cfg, str(back))
    reimported = Sa2VAPredictor.from_config(cfg, str(back), max_num_tiles=1)
    again = _outputs(reimported, image, plan)
    for a, b in zip(ref, again):
        assert (a.float() - b.float()).abs().max() <= 1e-5
    assert torch.equal(ref[2], again[2])


def test_from_export_needs_an_export_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a Sa2VA export'):
        Sa2VAPredictor.from_export(str(tmp_path))
