"""Export a trained Sa2VA model to a self-contained directory, and back.

An export directory holds::

    sa2va_export.json     {"format": "sa2va-export", "model": build dict
                           (InternVL config inline, no LoRA, SAM2 config
                           without checkpoint), "predictor": settings}
    model.safetensors     every tensor, LoRA merged (Sa2VAModel.merge_and_export)
    tokenizer/            the tokenizer with Sa2VA's special tokens

:func:`projects.sa2va.evaluation.predictor.load_export` builds the model of
such a directory. :func:`import_export` is the reverse: the merged weights
into the training model of a config (LoRA on: the merged weights become the
base weights, adapters start from their fresh init with ``lora_B = 0``, so
the function is unchanged), saved as an mmengine-style checkpoint that
``model.pretrained_pth`` / ``Sa2VAModel.load_pretrained`` loads.
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import re
from typing import Any, Dict, Optional

import torch

from ..hf.convert import export_hf, reset_token_rows, state_for_save
from ..hf.layout import template_to_official
from ..hf.shards import DEFAULT_MAX_SHARD_BYTES
from .predictor import (EXPORT_CONFIG, EXPORT_TOKENIZER, EXPORT_WEIGHTS,
                        Sa2VAPredictor)

__all__ = ['export_model', 'import_export', 'merged_key', 'import_hf',
           'export_hf_from_config']

FORMAT = 'sa2va-export'
# peft wrapper parts of a training key that the merged model does not have
_PEFT_PARTS = (r'base_model\.model\.', r'base_layer\.', r'token_adapter\.')


def _plain(value):
    if hasattr(value, 'to_dict'):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def merged_key(key: str) -> str:
    """Training (peft-wrapped) state-dict key -> the merged model's key
    (``...language_model.base_model.model.model.layers.0.q_proj.base_layer
    .weight`` -> ``...language_model.model.layers.0.q_proj.weight``)."""
    for part in _PEFT_PARTS:
        key = re.sub(part, '', key)
    return key


def export_model(model, model_cfg: Dict[str, Any], out_dir: str,
                 predictor_settings: Optional[Dict[str, Any]] = None) -> str:
    """Write an export directory (module docstring).

    Args:
        model: the trained ``Sa2VAModel`` (LoRA is merged in place).
        model_cfg: the config's ``model`` dict (its options are kept; the
            InternVL part is replaced by the model's own config inline, the
            SAM2 checkpoint path and ``pretrained_pth`` are dropped).
        out_dir: directory to write (created).
        predictor_settings: ``Sa2VAPredictor`` keyword arguments saved with
            it (template, max_length, tiles, frames ...).

    Returns:
        ``out_dir``.
    """
    os.makedirs(out_dir, exist_ok=True)
    model.merge_and_export(osp.join(out_dir, EXPORT_WEIGHTS))
    cfg = copy.deepcopy(_plain(model_cfg))
    mllm = dict(cfg['mllm'])
    internvl = model.mllm.config.to_dict()
    internvl.pop('use_llm_lora', None)
    new_mllm = dict(type=mllm.get('type', 'InternVLChat'), config=internvl,
                    torch_dtype=mllm.get('torch_dtype'), llm_lora=None)
    for key in ('freeze_vision', 'freeze_llm', 'freeze_mlp1', 'attn_implementation'):
        if key in mllm:
            new_mllm[key] = mllm[key]
    cfg['mllm'] = new_mllm
    cfg['grounding_encoder'] = dict(cfg['grounding_encoder'], checkpoint=None)
    cfg.pop('pretrained_pth', None)
    cfg.pop('tokenizer', None)
    cfg['special_tokens'] = list(model.special_tokens)
    model.tokenizer.save_pretrained(osp.join(out_dir, EXPORT_TOKENIZER))
    meta = dict(format=FORMAT, model=cfg, predictor=_plain(predictor_settings or {}))
    with open(osp.join(out_dir, EXPORT_CONFIG), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    return out_dir


def export_from_config(config, checkpoint: Optional[str], out_dir: str,
                       **settings) -> str:
    """Build a config's model, load ``checkpoint`` and export it with the
    predictor settings of the config (``settings`` override them)."""
    predictor = Sa2VAPredictor.from_config(config, checkpoint, **settings)
    from mmengine.config import Config
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    # a training-mode model (the cycle model) exports as a plain Sa2VAModel
    model_cfg = predictor.model.export_model_cfg(cfg.model) \
        if hasattr(predictor.model, 'export_model_cfg') else cfg.model
    return export_model(predictor.model, model_cfg, out_dir,
                        predictor.settings)


@torch.no_grad()
def import_export(export_dir: str, config, out_path: str) -> Dict[str, torch.Tensor]:
    """Merged weights of an export directory -> a training checkpoint of
    ``config``'s model (full state dict under ``state_dict``).

    Every key of the training model must find its merged counterpart
    (:func:`merged_key`) except the LoRA adapters, which keep their fresh
    values; peft trainable-token rows are set to the merged embedding rows.

    Raises:
        ValueError: naming the keys without a counterpart, or shapes that
        differ.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from safetensors.torch import load_file

    from ..registry import MODELS
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model_cfg = cfg.model.copy()
    model_cfg.pop('pretrained_pth', None)
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(model_cfg)
    merged = load_file(osp.join(export_dir, EXPORT_WEIGHTS))
    own = model.state_dict(trainable_only=False)
    out, missing, misshaped = {}, [], []
    for key, value in own.items():
        if '.lora_' in key or 'trainable_tokens_delta' in key:
            continue
        src = merged_key(key)
        if src not in merged and src.endswith('lm_head.weight'):
            src = src.replace('lm_head.weight', 'model.embed_tokens.weight')
        if src not in merged:
            missing.append(key)
        elif tuple(merged[src].shape) != tuple(value.shape):
            misshaped.append(f'{key}: {tuple(merged[src].shape)} vs {tuple(value.shape)}')
        else:
            out[key] = merged[src].to(value.dtype)
    if missing or misshaped:
        raise ValueError(f'{export_dir}: merged weights do not fit the model of the '
                         f'config: missing {missing[:10]} ({len(missing)}), '
                         f'mis-shaped {misshaped[:10]}')
    model.load_state_dict(out, strict=False)
    reset_token_rows(model)
    state = state_for_save(model)
    _save_checkpoint(state, {'imported_from': export_dir}, out_path)
    return state


def _official_name(template: str) -> str:
    try:
        return template_to_official(template)
    except ValueError:
        return template


def _save_checkpoint(state: Dict[str, torch.Tensor], meta: Dict[str, Any],
                     out_path: str) -> None:
    """``{'state_dict', 'meta'}`` to ``out_path`` (temporary name, renamed,
    mode 0644)."""
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    tmp = f'{out_path}.tmp'
    torch.save({'state_dict': state, 'meta': meta}, tmp)
    os.replace(tmp, out_path)
    os.chmod(out_path, 0o644)


def _build(model_cfg):
    from mmengine.registry import DefaultScope

    from ..registry import MODELS
    with DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(model_cfg)


def _config(config):
    from mmengine.config import Config
    return config if isinstance(config, Config) else Config.fromfile(config)


@torch.no_grad()
def import_hf(hf_dir: str, config, out_path: str,
              any_template: bool = False) -> Dict[str, Any]:
    """A released Hugging Face Sa2VA directory -> a full checkpoint of
    ``config``'s training model (``{'state_dict': ..., 'meta': ...}``) that
    ``model.pretrained_pth`` loads.

    The model is built as with ``model.pretrained_hf=hf_dir`` (the
    directory's weights cast tensor by tensor into the built model; LoRA
    adapters fresh; no base InternVL / SAM2 checkpoint read), then saved.

    Args:
        any_template: allow the config's chat template to differ from the
            directory's ``template`` (mapped to the project's name).

    Raises:
        ValueError: the templates differ (unless ``any_template``), or the
        weights do not fit the model (naming the keys).
    """
    from ..hf.convert import checkpoint_meta, read_export_template
    cfg = _config(config)
    template = read_export_template(hf_dir)
    mine = Sa2VAPredictor.settings_from_config(cfg).get('template')
    if isinstance(mine, str) and not any_template and \
            _official_name(mine) != _official_name(template):
        raise ValueError(f'{hf_dir} was trained with the {template!r} template but the '
                         f'config encodes with {mine!r}; set text_settings.template='
                         f'{template!r} (or pass --any-template)')
    model_cfg = cfg.model.copy()
    model_cfg.pop('pretrained_pth', None)
    model_cfg['pretrained_hf'] = hf_dir
    model = _build(model_cfg)
    state = state_for_save(model)
    from ..hf.layout import read_hf_config
    meta = checkpoint_meta(hf_dir, dict(layout=read_hf_config(hf_dir)[1].name,
                                        template=template))
    _save_checkpoint(state, meta, out_path)
    return dict(tensors=len(state), template=template)


def export_hf_from_config(config, checkpoint: Optional[str], out_dir: str,
                          dtype: Optional[str] = None,
                          max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                          template: Optional[str] = None) -> list:
    """Build a config's model, load ``checkpoint`` and write the released
    Hugging Face layout (:func:`projects.sa2va.hf.export_hf`); the template
    defaults to the config's text settings, the SAM2 config is the
    config's."""
    cfg = _config(config)
    predictor = Sa2VAPredictor.from_config(cfg, checkpoint)
    template = template or predictor.settings.get('template')
    model = predictor.model
    sam2 = _plain(cfg.model.grounding_encoder.get('config'))
    torch_dtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16,
                   'float32': torch.float32}[dtype] if dtype else None
    # a training-mode model (the cycle model) exports its student only
    student = hasattr(model, 'export_model_cfg')
    if student:
        model._exporting = True
    try:
        return export_hf(model, out_dir, template, sam2, dtype=torch_dtype,
                         max_shard_bytes=max_shard_bytes)
    finally:
        if student:
            model._exporting = False
