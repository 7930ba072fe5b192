"""Sa2VA on InternVL3 (Qwen2.5) and InternVL3.5 (Qwen3) in the released Hugging Face layout:
export -> import round trip of the tiny models (``tests/configs/sa2va_tiny_internvl3{,_5}.py``)
with equal outputs, and the Sa2VA-InternVL3-8B key manifest against the training model of
``configs/sa2va_internvl3_8b.py`` built on the meta device."""
from __future__ import annotations

import json

import pytest
import torch

from projects.sa2va.compat import version_at_least
from tests.conftest import REPO_ROOT
from tests.models import test_sa2va as base

from .helpers import build, check_released_manifest, perturb_trainable

CONFIGS = REPO_ROOT / 'tests' / 'configs'
MANIFESTS = REPO_ROOT / 'tests' / 'manifests'
QWEN3 = pytest.mark.skipif(not version_at_least('transformers', '4.51'),
                           reason='Qwen3 needs transformers >= 4.51 (current environment only)')


@torch.no_grad()
def _outputs(model, samples):
    data = model.data_preprocessor(base.collate([samples['res']]), False)
    out = model.mllm(input_ids=data['input_ids'], pixel_values=data['pixel_values'],
                     image_flags=data['image_flags'], output_hidden_states=True)
    seg = data['input_ids'] == model.seg_token_id
    prompts = model.text_hidden_fcs(out.hidden_states[-1][seg])
    frames = data['g_pixel_values'] if torch.is_tensor(data['g_pixel_values']) else \
        torch.stack(list(data['g_pixel_values']))
    masks = model._language_masks(frames[:1], prompts,
                                  torch.zeros(len(prompts), dtype=torch.long))
    return dict(logits=out.logits, prompts=prompts, masks=masks)


@pytest.mark.parametrize('config_name,arch', [
    ('sa2va_tiny_internvl3.py', 'Qwen2ForCausalLM'),
    pytest.param('sa2va_tiny_internvl3_5.py', 'Qwen3ForCausalLM', marks=QWEN3)])
def test_export_import_round_trip(config_name, arch, tmp_path, tiny_tokenizer_dir):
    from tools.export import main
    cfg = tmp_path / 'tiny.py'
    cfg.write_text(f'_base_ = [{str(CONFIGS / config_name)!r}]\n'
                   f'model = dict(tokenizer={str(tiny_tokenizer_dir)!r})\n'
                   "text_settings = dict(template='qwen_chat', max_length=4096)\n"
                   # tools/export.py rebuilds the frozen (random) weights with this seed
                   'randomness = dict(seed=0)\n')
    model = perturb_trainable(build(cfg))
    samples = base.family_samples(model.tokenizer)
    ref = _outputs(model, samples)
    ckpt = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'hf'
    main([str(ckpt), '--config', str(cfg), '--out', str(out), '--format', 'hf'])
    written = json.loads((out / 'config.json').read_text())
    assert written['llm_config']['architectures'] == [arch]
    assert written['template'] == 'qwen_chat'
    back = build(cfg, pretrained_hf=str(out))
    got = _outputs(back, samples)
    for key, value in ref.items():
        assert (got[key] - value).abs().max() <= 1e-5, (key, (got[key] - value).abs().max())


def test_sa2va_internvl3_8b_manifest_maps_to_the_recipe_model(tiny_tokenizer_dir):
    """Every key of the Sa2VA-InternVL3-8B manifest maps (issue 13's layout) to exactly one key
    of the configs/sa2va_internvl3_8b.py training model (LoRA r 256 on, meta device), with the
    same shape, and back; counts as the manifest says."""
    from mmengine.config import Config
    recipe = REPO_ROOT / 'configs/sa2va_internvl3_8b.py'
    assert Config.fromfile(str(recipe)).model.mllm.llm_lora.r == 256
    released = json.loads((MANIFESTS / 'sa2va_hf' / 'Sa2VA-InternVL3-8B.json').read_text())
    internvl = json.loads((MANIFESTS / 'internvl3' / 'InternVL3-8B.json').read_text())
    check_released_manifest(released, internvl, recipe, tiny_tokenizer_dir)
