"""Tiny Sa2VA on InternVL3 (Qwen2.5 LLM) and InternVL3.5 (Qwen3 LLM) backbones
(``tests/configs/sa2va_tiny_internvl3{,_5}.py``): a few AdamW steps on CPU with finite losses and
gradients on exactly the trainable set, and the visual-prompt rows at their positions."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from projects.sa2va.compat import version_at_least
from tests.models import test_sa2va as base

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
BACKBONES = [
    pytest.param('sa2va_tiny_internvl3.py', 'Qwen2ForCausalLM', id='internvl3-qwen2.5'),
    pytest.param('sa2va_tiny_internvl3_5.py', 'Qwen3ForCausalLM', id='internvl3.5-qwen3',
                 marks=pytest.mark.skipif(not version_at_least('transformers', '4.51'),
                                          reason='Qwen3 needs transformers >= 4.51 (current '
                                                 'environment only)')),
]


def build(config_name, tokenizer_dir):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile(str(CONFIGS / config_name))
    cfg.model.tokenizer = str(tokenizer_dir)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(cfg.model).train()


@pytest.mark.parametrize('config_name,llm_class', BACKBONES)
def test_tiny_backbone_trains_a_few_steps_on_exactly_the_trainable_set(config_name, llm_class,
                                                                       tiny_tokenizer_dir):
    from mmengine.optim import OptimWrapper
    model = build(config_name, tiny_tokenizer_dir)
    llm = model.mllm.language_model.get_base_model()
    assert type(llm).__name__ == llm_class
    names = {n for n, _ in model.named_parameters()}
    trainable = base.trainable_names(model)
    assert trainable == {n for n in names if base.expected_trainable(n)}
    samples = base.family_samples(model.tokenizer)
    batch = base.collate([samples[k] for k in ('res', 'vp', 'vqa', 'gcg', 'video')])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05),
                         clip_grad=dict(max_norm=1.0))
    losses = []
    for step in range(3):
        optim.zero_grad()
        parsed = base.run_loss(model, batch)
        total, _ = model.parse_losses(parsed)
        assert all(torch.isfinite(v) for v in parsed.values()), (step, parsed)
        total.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert with_grad == trainable, (step, with_grad ^ trainable)
        optim.step()
        losses.append(float(total))
    assert losses[-1] < losses[0], losses  # the same batch: AdamW lowers its loss
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == trainable


@pytest.mark.parametrize('config_name,llm_class', BACKBONES)
def test_visual_prompt_rows_land_at_their_positions(config_name, llm_class, tiny_tokenizer_dir):
    model = build(config_name, tiny_tokenizer_dir).eval()
    samples = base.family_samples(model.tokenizer)
    base.test_visual_prompt_rows_land_at_their_context_positions(model, samples)
