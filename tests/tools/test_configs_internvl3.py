"""The InternVL3 / InternVL3.5 recipe configs: the values of the newest Sa2VA configs
(sa2va_in30_{2b,8b}.py) by inheritance from the 4B recipe, each with its own checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('name,path,lora_r,accumulate', [
    ('sa2va_internvl3_2b', './pretrained/InternVL3-2B', 128, 8),
    ('sa2va_internvl3_8b', './pretrained/InternVL3-8B', 256, 4),
    ('sa2va_internvl3_5_4b', './pretrained/InternVL3_5-4B', 128, 8),
    ('sa2va_internvl3_5_8b', './pretrained/InternVL3_5-8B', 256, 4),
])
def test_internvl3_recipe_values(name, path, lora_r, accumulate):
    ref = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    cfg = Config.fromfile(str(REPO / 'configs' / f'{name}.py'))
    mllm = cfg.model.mllm
    assert mllm.model_path == path and not mllm.get('trust_remote_code', False)
    assert mllm.llm_lora == dict(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05)
    assert (mllm.freeze_vision, mllm.freeze_llm, mllm.freeze_mlp1) == (True, True, False)
    assert cfg.model.train_embeddings == 'all' and cfg.model.fix_objects == 5
    assert cfg.model.tokenizer is None  # read from model_path
    mix = cfg.train_dataloader.dataset
    for key in ('EncodeConversation', 'EncodeLLaVAConversation'):
        assert mix.pipeline_defaults[key] == dict(tokenizer=path, template='qwen_chat',
                                                  max_length=8192)
    assert cfg.optim_wrapper.accumulative_counts == accumulate
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_dataloader.sampler.per_device_batch_size == 2 * accumulate
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 4e-5, 0.05)
    assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
    assert cfg.param_scheduler == ref.param_scheduler and cfg.train_cfg == ref.train_cfg
    assert cfg.train_dataloader.collate_fn.pad_index == 151643  # Qwen2.5 / Qwen3 <|endoftext|>
    assert cfg.default_hooks.checkpoint.interval == 2000
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 2
    assert mix.datasets == ref.train_dataloader.dataset.datasets
    assert not mix.get('dataset_pipeline_overrides')
    # every dataset, RefCOCO included, encodes with qwen_chat (not refseg.py's v1 phi3 routine)
    from projects.sa2va.datasets.mixing import child_configs
    encoders = [step for cfg_i, _ in child_configs(
        mix.datasets, mix.pipeline_defaults, mix.get('pipeline_overrides'))
        for step in cfg_i['pipeline'] if step.get('type') == 'EncodeConversation']
    assert len(encoders) >= len(mix.datasets) - 1  # LLaVA uses EncodeLLaVAConversation
    assert {str(step['template']) for step in encoders} == {'qwen_chat'}
    assert {step['tokenizer'] for step in encoders} == {path}


@pytest.mark.parametrize('name', ['sa2va_internvl3_2b', 'sa2va_internvl3_8b',
                                  'sa2va_internvl3_5_4b', 'sa2va_internvl3_5_8b'])
def test_missing_checkpoint_names_its_download(name):
    from projects.sa2va.downloads import missing_message
    path = Config.fromfile(str(REPO / 'configs' / f'{name}.py')).model.mllm.model_path
    hub = path.rsplit('/', 1)[1]
    assert f'huggingface-cli download OpenGVLab/{hub} --local-dir {path}' in \
        missing_message(path)
