"""The layout mapping against the released models' key manifests: the
training model of the Sa2VA-4B recipe (LoRA on, built weightless on the
meta device from the InternVL2.5 manifest's configs with the released
vocabulary, SAM2 hiera-L) has exactly one key for every released key, the
same shape, and maps back."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO_ROOT, shared_path


def _manifest(name):
    return json.loads(shared_path('fixtures', 'sa2va_hf', 'manifests',
                                  f'{name}.json').read_text())


@pytest.mark.parametrize('name,base', [('Sa2VA-4B', 'InternVL2_5-4B')])
def test_every_released_key_maps_to_one_training_key_and_back(name, base, tiny_tokenizer_dir):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS

    from projects.sa2va.evaluation.export import merged_key
    from projects.sa2va.hf import HF_LAYOUTS
    from projects.sa2va.hf.convert import is_adapter_key
    released = _manifest(name)
    internvl = json.loads(shared_path('fixtures', 'internvl', 'manifests',
                                      f'{base}.json').read_text())
    config = {k: internvl[k] for k in (
        'vision_config', 'llm_config', 'downsample_ratio', 'ps_version', 'select_layer',
        'template', 'force_image_size', 'dynamic_image_size', 'use_thumbnail',
        'min_dynamic_patch', 'max_dynamic_patch')}
    config['llm_config'] = dict(config['llm_config'], vocab_size=released['vocab_size'])
    recipe = Config.fromfile(str(REPO_ROOT / 'configs/sa2va_4b.py')).model
    model_cfg = dict(recipe.to_dict(), tokenizer=str(tiny_tokenizer_dir),
                     pretrained_pth=None)
    model_cfg['mllm'] = dict(model_cfg['mllm'], config=config, torch_dtype=None,
                             gradient_checkpointing=False)
    del model_cfg['mllm']['model_path']
    model_cfg['grounding_encoder'] = dict(model_cfg['grounding_encoder'], checkpoint=None)
    for train_embeddings in ('all', 'new_rows'):
        model_cfg['train_embeddings'] = train_embeddings
        with torch.device('meta'), DefaultScope.overwrite_default_scope('sa2va'):
            model = MODELS.build(model_cfg)
        own = {merged_key(k): tuple(v.shape) for k, v in
               model.state_dict(trainable_only=False).items() if not is_adapter_key(k)}
        layout = HF_LAYOUTS['sa2va_chat']
        mapped = {}
        for key, shape in released['params'].items():
            project = layout.to_project(key)
            assert layout.to_official(project) == key
            assert project not in mapped, (key, mapped.get(project))
            mapped[project] = key
            assert own.get(project) == tuple(shape), (key, project)
        assert set(mapped) == set(own)
        assert len(own) == released['num_tensors']
        assert sum(int(torch.Size(s).numel()) for s in own.values()) == \
            released['total_params']
