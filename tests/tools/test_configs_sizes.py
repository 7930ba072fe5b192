"""Sa2VA-1B and -8B configs: the 4B recipe by inheritance with their own
checkpoint, template and (8B) remote code, pad id and save interval; the
RefCOCO entries carry Sa2VA v1's phi3-style instruction with the model's
'<|im_end|>' suffix and everything else equals the 4B mix."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]


def _cfg(name):
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


def _encode_step(dataset_cfg):
    steps = [s for s in dataset_cfg['pipeline']
             if s['type'] in ('EncodeConversation', 'EncodeLLaVAConversation')]
    assert len(steps) == 1
    return steps[0]


@pytest.mark.parametrize('name,path,template,remote,pad,interval', [
    ('sa2va_1b', './pretrained/InternVL2_5-1B', 'qwen_chat', False, 151643,
     1000),
    ('sa2va_8b', './pretrained/InternVL2_5-8B', 'internlm2_chat', True, 0,
     2000),
])
def test_size_configs(name, path, template, remote, pad, interval):
    ref, cfg = _cfg('sa2va_4b'), _cfg(name)
    mllm = cfg.model.mllm
    assert mllm.model_path == path
    assert bool(mllm.get('trust_remote_code', False)) is remote
    assert cfg.model.tokenizer is None  # read from model_path
    assert cfg.model.grounding_encoder.checkpoint == \
        './pretrained/sam2_hiera_large.pt'
    mix = cfg.train_dataloader.dataset
    for key in ('EncodeConversation', 'EncodeLLaVAConversation'):
        assert mix.pipeline_defaults[key] == dict(
            tokenizer=path, template=template, max_length=8192)
    assert cfg.train_dataloader.collate_fn.pad_index == pad
    assert cfg.default_hooks.checkpoint.interval == interval
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 2
    # the 4B recipe, inherited unchanged
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert cfg[key] == ref[key], key
    assert cfg.model.mllm.llm_lora == ref.model.mllm.llm_lora
    assert cfg.train_dataloader.batch_size == 2
    assert mix.repeats == ref.train_dataloader.dataset.repeats
    # the same 21 datasets; the RefCOCO ones get v1's instruction with the
    # model's suffix (per-dataset override), everything else the 4B's
    from projects.sa2va.datasets.mixing import _merge, apply_pipeline_defaults
    assert mix.datasets == ref.train_dataloader.dataset.datasets
    per = mix.dataset_pipeline_overrides
    assert sorted(per) == ['refcoco', 'refcoco+', 'refcocog']
    for base in mix.datasets:
        name = base['dataset_name']
        mine = apply_pipeline_defaults(
            base, mix.pipeline_defaults,
            _merge(mix.get('pipeline_overrides'), per.get(name), True))
        t = _encode_step(mine)['template']
        if name.startswith('refcoco'):
            assert t['INSTRUCTION'] == \
                '<|user|>\n{input}<|end|><|assistant|>\n'
            assert t['SUFFIX'] == '<|im_end|>' and t['SEP'] == ''
            assert _encode_step(base)['template']['SUFFIX'] == '<|end|>'
        else:
            assert t == template
        # the rest of the pipeline is the base's
        strip = [s for s in mine['pipeline'] if s is not _encode_step(mine)]
        assert strip == [s for s in base['pipeline']
                         if s is not _encode_step(base)]


@pytest.mark.parametrize('name', ['sa2va_1b', 'sa2va_4b', 'sa2va_8b'])
def test_recipe_configs_use_v1_embeddings_and_object_count(name):
    """The recipe configs train as v1: whole embedding and lm_head, 5 objects
    per grounding sample (the model defaults keep today's behaviour)."""
    model = _cfg(name).model
    assert model.train_embeddings == 'all' and model.fix_objects == 5
    assert model.train_lm_head is True and model.train_new_token_rows is True
