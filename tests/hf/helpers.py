"""The official tiny Sa2VA checkpoint (shared/fixtures/sa2va_hf) and its
golden outputs, and the tiny project config that fits it."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT, shared_path

TINY_BASE = REPO_ROOT / 'configs/_base_/models/sa2va_tiny.py'
MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])


def fixture_dir() -> Path:
    return shared_path('fixtures', 'sa2va_hf')


def golden():
    """``(golden.json dict, golden.safetensors tensors)``."""
    from safetensors.torch import load_file
    root = fixture_dir()
    return (json.loads((root / 'golden.json').read_text()),
            load_file(str(root / 'golden.safetensors')))


def write_tiny_config(path: Path, tokenizer_dir, sam2: dict, **model) -> Path:
    """A config file: the tiny model (LoRA on) with the fixture's SAM2 flags,
    the phi3_chat template and ``model`` overrides."""
    lines = [f'_base_ = [{str(TINY_BASE)!r}]',
             f'model = dict(tokenizer={str(tokenizer_dir)!r}, grounding_encoder=dict('
             f'config=dict(_delete_=True, **{sam2!r})), **{model!r})',
             "text_settings = dict(template='phi3_chat', max_length=4096)",
             'randomness = dict(seed=0)']
    path.write_text('\n'.join(lines) + '\n')
    return path


def build(config_path, **overrides):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.sa2va.registry import MODELS
    cfg = Config.fromfile(str(config_path))
    cfg.model.update(overrides)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(cfg.model).eval()


@torch.no_grad()
def perturb_trainable(model, seed: int = 3, scale: float = 0.05):
    """A "trained" model: every trainable tensor moved by seeded noise
    (LoRA B, new rows ... no longer at their init). Returns ``model``."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in model.named_parameters():
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def tile(image: torch.Tensor) -> torch.Tensor:
    """The InternVL tile of the golden ``image`` (448, 448, 3) uint8."""
    return ((image.float() / 255 - MEAN) / STD).permute(2, 0, 1)[None]


@torch.no_grad()
def fixed_outputs(model, g, gold) -> dict:
    """The golden quantities computed by ``model`` on the golden inputs:
    LM logits at the non-image positions, last hidden state and
    ``text_hidden_fcs`` output at each [SEG], SAM2 low-res mask logits,
    and 8 greedy tokens."""
    pv = tile(gold['image'])
    flags = torch.ones(1, dtype=torch.long)
    out = model.mllm(input_ids=gold['input_ids'], pixel_values=pv, image_flags=flags,
                     output_hidden_states=True)
    hidden = out.hidden_states[-1][0, g['seg_positions']]
    prompts = model.text_hidden_fcs(hidden)
    masks = model._language_masks(gold['g_pixel_values'], prompts,
                                  torch.zeros(len(prompts), dtype=torch.long))
    gen = model.mllm.generate(input_ids=gold['gen_prompt_ids'], pixel_values=pv,
                              image_flags=flags, max_new_tokens=8, min_new_tokens=8,
                              do_sample=False, eos_token_id=g['eos_token_id'],
                              pad_token_id=g['eos_token_id'])
    return dict(logits=out.logits[0, gold['logits_positions']], seg_hidden=hidden,
                seg_prompts=prompts, low_res_masks=masks, gen_ids=gen[0])


INTERNVL_CONFIG_KEYS = ('vision_config', 'llm_config', 'downsample_ratio', 'ps_version',
                        'select_layer', 'template', 'force_image_size', 'dynamic_image_size',
                        'use_thumbnail', 'min_dynamic_patch', 'max_dynamic_patch')


def check_released_manifest(released: dict, internvl: dict, recipe: Path, tokenizer_dir,
                            **model_overrides) -> None:
    """Every key of a released Sa2VA manifest maps (``HF_LAYOUTS['sa2va_chat']``) to exactly
    one key of the ``recipe`` config's training model, built weightless on the meta device from
    the ``internvl`` manifest's config with the released vocabulary, with the same shape, and
    back; tensor and parameter counts as the manifest says."""
    from mmengine.config import Config

    from projects.sa2va.hf import HF_LAYOUTS
    config = {k: internvl[k] for k in INTERNVL_CONFIG_KEYS}
    config['llm_config'] = dict(config['llm_config'], vocab_size=released['vocab_size'])
    model_cfg = dict(Config.fromfile(str(recipe)).model.to_dict(),
                     tokenizer=str(tokenizer_dir), pretrained_pth=None, **model_overrides)
    model_cfg['mllm'] = dict(model_cfg['mllm'], config=config, torch_dtype=None,
                             gradient_checkpointing=False)
    del model_cfg['mllm']['model_path']
    model_cfg['grounding_encoder'] = dict(model_cfg['grounding_encoder'], checkpoint=None)
    assert_manifest_maps(released, model_cfg, HF_LAYOUTS['sa2va_chat'])


def assert_manifest_maps(released: dict, model_cfg: dict, layout):
    """Build ``model_cfg`` weightless on the meta device; every key of the
    ``released`` manifest maps (``layout``) to exactly one of its merged keys
    (adapters aside) with the same shape, and back; tensor and parameter
    counts as the manifest says. Returns the model."""
    from mmengine.registry import DefaultScope, MODELS

    from projects.sa2va.evaluation.export import merged_key
    from projects.sa2va.hf.convert import is_adapter_key
    with torch.device('meta'), DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(model_cfg)
    own = {merged_key(k): tuple(v.shape) for k, v in
           model.state_dict(trainable_only=False).items() if not is_adapter_key(k)}
    mapped = {}
    for key, shape in released['params'].items():
        project = layout.to_project(key)
        assert layout.to_official(project) == key
        assert project not in mapped, (key, mapped.get(project))
        mapped[project] = key
        assert own.get(project) == tuple(shape), (key, project)
    assert set(mapped) == set(own), (sorted(set(own) - set(mapped))[:5],
                                     sorted(set(mapped) - set(own))[:5])
    assert len(own) == released['num_tensors']
    assert sum(int(torch.Size(s).numel()) for s in own.values()) == released['total_params']
    return model
