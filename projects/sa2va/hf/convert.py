"""Released Hugging Face Sa2VA weights into the training model, and the
training model out to the released layout.

* :func:`load_hf_weights` copies a released directory's merged tensors into
  a built :class:`~projects.sa2va.models.sa2va.Sa2VAModel` one tensor at a
  time, each cast to the dtype of the parameter it fills (the whole model is
  never held twice, nor in float32 unless it is float32). With LoRA on the
  merged weights become the base weights; the adapters keep their fresh
  init (``lora_B = 0``, the function unchanged) and trainable-token rows are
  set to the merged rows.
* :func:`export_hf` writes the official directory (module docstring of
  :mod:`projects.sa2va.hf.layout`): ``config.json`` written field by field,
  safetensors under the official names (LoRA merged, ``g_weight``), the
  tokenizer, ``generation_config.json``; for a ``QwenVLChat`` MLLM the
  Sa2VA-Qwen layout of its backbone (``config.json`` by
  :mod:`projects.sa2va.hf.qwen_vl`, plus ``preprocessor_config.json``).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from .layout import (OFFICIAL_LLM_ARCHITECTURES, SA2VA_HF_CONFIG_EXTRA, HF_LAYOUTS, HFLayout,
                     internvl_config_from_hf, layout_for_model, read_hf_config,
                     template_from_official, template_to_official)
from .qwen_vl import qwen_vl_config_from_hf, qwen_vl_config_json, save_qwen_vl_processor_config
from .shards import DEFAULT_MAX_SHARD_BYTES, FILE_MODE, HFWeights, save_sharded

__all__ = ['load_hf_weights', 'hf_build_overrides', 'export_hf', 'hf_model_cfg',
           'reset_token_rows', 'is_adapter_key']

_ADAPTER_PARTS = ('.lora_A.', '.lora_B.', '.lora_embedding_', '.lora_magnitude_vector',
                  'trainable_tokens_delta')


def is_adapter_key(key: str) -> bool:
    """LoRA adapter / trainable-token delta keys: no counterpart in a merged
    model."""
    return any(p in key for p in _ADAPTER_PARTS)


def _limited(keys: List[str], n: int = 10) -> str:
    keys = sorted(keys)
    return f'({len(keys)}) {keys[:n]}' + (' ...' if len(keys) > n else '')


@torch.no_grad()
def reset_token_rows(model) -> int:
    """Set every peft trainable-token delta to the current rows of its base
    layer (after the base weights were replaced). Returns the number of
    modules set."""
    n = 0
    for module in model.modules():
        deltas = getattr(module, 'trainable_tokens_delta', None)
        if deltas is None or not hasattr(module, 'token_indices'):
            continue
        base = module.base_layer.weight
        for adapter, rows in module.token_indices.items():
            deltas[adapter].data.copy_(base[rows].to(deltas[adapter].dtype))
        n += 1
    return n


@torch.no_grad()
def load_hf_weights(model, hf_dir: str) -> Dict[str, Any]:
    """Copy a released Sa2VA directory's weights into ``model``.

    Every tensor of the model except the LoRA adapters and trainable-token
    deltas must have exactly one official key (:class:`HFLayout`) with the
    same shape, and every official key must be used.

    Args:
        model: a built ``Sa2VAModel`` (LoRA-wrapped or not).
        hf_dir: the released (or exported) directory.

    Returns:
        ``{'loaded': n, 'template': official template name, 'layout': name}``.

    Raises:
        ValueError: a directory of another layout than the model's (e.g.
        a Qwen3-VL release into a Qwen2.5-VL model), naming both; naming
        the model keys without an official counterpart,
        the official keys absent from the files, the official keys the
        model has no place for, and shape mismatches (nothing is loaded).
    """
    from ..evaluation.export import merged_key
    cfg, layout = read_hf_config(hf_dir)
    template = template_from_official(cfg['template'])
    mine = layout_for_model(model)
    if mine.name != layout.name:
        raise ValueError(f'{hf_dir} is a {layout.name} directory but the model is built '
                         f'for {mine.name} (its MLLM: {type(model.mllm).__name__} '
                         f'{getattr(model.mllm, "model_type", "")})'.rstrip())
    weights = HFWeights(hf_dir)
    own = model.state_dict(trainable_only=False, keep_vars=True)
    targets: Dict[str, List[str]] = {}
    unmapped = []
    for key in own:
        if is_adapter_key(key):
            continue
        try:
            targets.setdefault(layout.to_official(merged_key(key)), []).append(key)
        except KeyError:
            unmapped.append(key)
    stored: Dict[str, str] = {}     # official key -> the file's key
    for name in weights.keys():
        official = layout.canonical(name)
        if official in stored:
            raise ValueError(f'{hf_dir}: {stored[official]!r} and {name!r} are the same '
                             f'tensor ({official}) under two names')
        stored[official] = name
    missing = [k for k in targets if k not in stored]
    unknown = [stored[k] for k in stored if k not in targets]
    misshaped = [f'{stored[k]}: file {weights.shape(stored[k])} vs model '
                 f'{tuple(own[t].shape)} ({t})'
                 for k, keys in targets.items() if k in stored for t in keys
                 if weights.shape(stored[k]) != tuple(own[t].shape)]
    problems = [f'{what} {_limited(keys)}' for what, keys in (
        (f'model keys outside the {layout.name} layout', unmapped),
        ('official keys missing from the files', missing),
        ('keys in the files the model has no place for', unknown),
        ('shape mismatches', misshaped)) if keys]
    if problems:
        raise ValueError(f'{hf_dir} does not fit the model: ' + '; '.join(problems))
    filled: Dict[int, str] = {}
    for official, name in sorted(stored.items()):
        for key in targets[official]:
            dst = own[key]
            src = weights.get(name, dtype=dst.dtype)
            ptr = dst.data_ptr()
            if ptr in filled:   # a tied lm_head: the two files' tensors must agree
                if not torch.equal(dst.data, src.to(dst.device)):
                    raise ValueError(f'{hf_dir}: {official} differs from {filled[ptr]} but '
                                     f'the model ties them ({key})')
                continue
            dst.data.copy_(src)
            filled[ptr] = official
            del src
    reset_token_rows(model)
    return dict(loaded=len(weights.keys()), template=template, layout=layout.name)


def hf_build_overrides(hf_dir: str, mllm: dict, grounding_encoder: dict, tokenizer):
    """Build dicts of a model that starts from ``hf_dir`` (``pretrained_hf``):
    an ``mllm`` given by ``model_path`` is built from the directory's
    ``config.json`` instead (no base checkpoint read; an inline ``config``
    stays and is checked by the shapes), the SAM2 checkpoint is dropped (the
    directory holds SAM2), and the tokenizer defaults to the directory's.

    Returns:
        ``(mllm, grounding_encoder, tokenizer)``.
    """
    cfg, layout = read_hf_config(hf_dir)
    mllm = dict(mllm)
    if mllm.pop('model_path', None) is not None or 'config' not in mllm:
        mllm['config'] = _mllm_config_from_hf(cfg, layout, hf_dir)
    grounding_encoder = dict(grounding_encoder, checkpoint=None)
    if tokenizer is None:
        tokenizer = hf_tokenizer(hf_dir, cfg)
    return mllm, grounding_encoder, tokenizer


def _mllm_config_from_hf(cfg: Dict[str, Any], layout: HFLayout, hf_dir: str) -> Dict[str, Any]:
    """The MLLM's ``config`` build argument of a released ``config.json``."""
    if layout.family == 'qwen_vl':
        return qwen_vl_config_from_hf(cfg, layout.backbone)
    return internvl_config_from_hf(cfg, hf_dir)


def _trusts_code(cfg: Dict[str, Any]) -> bool:
    """Only an InternLM2 LLM (InternVL layout) needs the directory's code."""
    return (cfg.get('llm_config') or {}).get('model_type') == 'internlm2'


def hf_tokenizer(hf_dir: str, cfg: Optional[dict] = None) -> Dict[str, Any]:
    """Build dict of the directory's tokenizer. Its Python files (an
    ``auto_map`` of ``tokenizer_config.json``) run only for an InternLM2 LLM,
    the documented exception that needs them, as for the model; any other
    directory's are ignored (untrusted downloads never run code)."""
    from ..tokenization import load_tokenizer
    if cfg is None:
        cfg, _ = read_hf_config(hf_dir)
    return dict(type=load_tokenizer, path=os.fspath(hf_dir), trust_remote_code=_trusts_code(cfg))


def check_tokenizer(model, hf_dir: str) -> None:
    """The model's tokenizer must be the directory's (same vocabulary and
    ids, the Sa2VA tokens included)."""
    from ..transforms.formatting import build_tokenizer
    theirs = build_tokenizer(hf_tokenizer(hf_dir)).get_vocab()
    mine = model.tokenizer.get_vocab()
    if mine != theirs:
        diff = sorted(set(mine.items()) ^ set(theirs.items()))[:10]
        raise ValueError(f'the tokenizer differs from {hf_dir}\'s ({len(mine)} vs '
                         f'{len(theirs)} tokens; first differences {diff}); use '
                         f'tokenizer=None to read the directory\'s')


def hf_model_cfg(hf_dir: str, sam2_config=None, torch_dtype=None,
                 attn_implementation: Optional[str] = None) -> Dict[str, Any]:
    """A ``Sa2VAModel`` build dict (no LoRA) for a released / exported
    directory: InternVL from its ``config.json``, SAM2 from ``sam2_config``
    (else the export's recorded one, else the official hiera-L preset)."""
    cfg, layout = read_hf_config(hf_dir)
    extra = cfg.get(SA2VA_HF_CONFIG_EXTRA) or {}
    sam2 = sam2_config or extra.get('sam2_config') or layout.sam2_preset
    dtype = torch_dtype or cfg.get('torch_dtype') or cfg.get('dtype')
    if layout.family == 'qwen_vl':
        mllm = dict(type='QwenVLChat', config=qwen_vl_config_from_hf(cfg, layout.backbone),
                    torch_dtype=dtype, llm_lora=None)
    else:
        mllm = dict(type='InternVLChat', config=internvl_config_from_hf(cfg, hf_dir),
                    torch_dtype=dtype, llm_lora=None, trust_remote_code=_trusts_code(cfg))
    if attn_implementation:
        mllm['attn_implementation'] = attn_implementation
    out = dict(type='Sa2VAModel', tokenizer=None, mllm=mllm,
               grounding_encoder=dict(type='SAM2', config=sam2, checkpoint=None),
               pretrained_hf=os.fspath(hf_dir))
    if extra.get('special_tokens'):
        out['special_tokens'] = list(extra['special_tokens'])
    return out


# --------------------------------------------------------------------- export
def _config_json(model, layout: HFLayout, template: str, dtype: torch.dtype,
                 sam2_config) -> Dict[str, Any]:
    import transformers
    internvl = model.mllm.config.to_dict()
    llm = dict(internvl['llm_config'])
    vision = dict(internvl['vision_config'])
    vision['architectures'] = ['InternVisionModel']
    vision.setdefault('use_flash_attn', False)
    arch = type(model.mllm.language_model.get_base_model()
                if hasattr(model.mllm.language_model, 'get_base_model')
                else model.mllm.language_model).__name__
    if arch not in OFFICIAL_LLM_ARCHITECTURES:
        raise ValueError(f'the official code cannot build a {arch} LLM '
                         f'({OFFICIAL_LLM_ARCHITECTURES})')
    llm['architectures'] = [arch]
    n_tok = len(model.tokenizer)
    emb = model.mllm.get_input_embeddings().weight
    if emb.shape[0] != n_tok:
        raise ValueError(f'the embedding has {emb.shape[0]} rows but the tokenizer '
                         f'{n_tok} tokens: the Hub layout needs them equal')
    llm['vocab_size'] = n_tok
    llm.pop('_name_or_path', None)
    out = dict(
        architectures=layout.architectures, auto_map=layout.auto_map,
        model_type=layout.name, vision_config=vision, llm_config=llm,
        hidden_size=llm['hidden_size'], template=template,
        use_backbone_lora=0, use_llm_lora=0, tie_word_embeddings=False,
        torch_dtype=str(dtype).replace('torch.', ''),
        transformers_version=transformers.__version__, pad2square=False)
    for key in ('select_layer', 'force_image_size', 'downsample_ratio', 'ps_version',
                'dynamic_image_size', 'use_thumbnail', 'min_dynamic_patch',
                'max_dynamic_patch'):
        out[key] = internvl[key]
    out[SA2VA_HF_CONFIG_EXTRA] = _sa2va_extra(model, layout, sam2_config)
    return out


def _sa2va_extra(model, layout: HFLayout, sam2_config) -> Dict[str, Any]:
    return dict(sam2_config=sam2_config, special_tokens=list(model.special_tokens),
                note='read by the Sa2VA training framework only; the official code '
                     f'builds SAM2 {layout.sam2_preset} and looks the tokens up by name')


@torch.no_grad()
def export_hf(model, out_dir: str, template, sam2_config,
              dtype: Optional[torch.dtype] = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
              layout: Optional[str] = None) -> List[str]:
    """Write ``model`` in the released Hugging Face layout.

    Args:
        model: a ``Sa2VAModel``; a LoRA-wrapped LLM is merged in place
            (adapters and trainable-token rows folded into the weights).
        out_dir: the directory (created).
        template: the project's template name (mapped to the official one).
        sam2_config: the SAM2 build config (preset name or dict) recorded for
            this project's loader.
        dtype: cast every floating tensor (None: each keeps its dtype; the
            ``config.json`` ``torch_dtype`` is the LLM embedding's).
        max_shard_bytes: shard above this size (5 GB as the releases).
        layout: a key of ``HF_LAYOUTS`` (default: the model's,
            :func:`~projects.sa2va.hf.layout.layout_for_model`).

    Returns:
        the names of the written files.
    """
    lay = HF_LAYOUTS[layout] if layout else layout_for_model(model)
    official_template = template_to_official(template)
    if hasattr(model.mllm.language_model, 'merge_and_unload'):
        model.mllm.merge_llm_lora()
    state = model.state_dict(trainable_only=False)
    left = [k for k in state if is_adapter_key(k) or 'base_layer' in k]
    if left:
        raise ValueError(f'un-merged adapter keys after merging: {_limited(left)}')
    emb_dtype = model.mllm.get_input_embeddings().weight.dtype
    if lay.family == 'qwen_vl':
        cfg = qwen_vl_config_json(model, lay, official_template,
                                  str(dtype or emb_dtype).replace('torch.', ''))
        cfg[SA2VA_HF_CONFIG_EXTRA] = _sa2va_extra(model, lay, sam2_config)
    else:
        cfg = _config_json(model, lay, official_template, dtype or emb_dtype, sam2_config)
    os.makedirs(out_dir, exist_ok=True)

    def tensors():
        seen = set()
        for key in sorted(state):
            t = state[key]
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            if t.data_ptr() in seen:   # tied: the layout stores both, untied
                t = t.clone()
            seen.add(t.data_ptr())
            yield lay.to_official(key), t

    files = save_sharded(tensors(), out_dir, max_shard_bytes)
    _write_json(osp.join(out_dir, 'config.json'), cfg)
    import transformers
    _write_json(osp.join(out_dir, 'generation_config.json'),
                dict(_from_model_config=True, transformers_version=transformers.__version__))
    from ..compat import save_tokenizer_files
    save_tokenizer_files(model.tokenizer, out_dir)
    if lay.family == 'qwen_vl':
        save_qwen_vl_processor_config(out_dir, lay.backbone)
    for name in os.listdir(out_dir):
        path = osp.join(out_dir, name)
        if osp.isfile(path):
            os.chmod(path, FILE_MODE)
    return sorted(os.listdir(out_dir))


def _write_json(path: str, obj) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)
    os.chmod(path, FILE_MODE)


def read_export_template(hf_dir: str) -> str:
    """The project's template name of a released / exported directory."""
    cfg, _ = read_hf_config(hf_dir)
    return template_from_official(cfg['template'])


def checkpoint_meta(hf_dir: str, info: Dict[str, Any]) -> Dict[str, Any]:
    """What an imported checkpoint records about its source."""
    return dict(imported_from=os.fspath(hf_dir), hf_layout=info['layout'],
                hf_template=info['template'])


def state_for_save(model) -> Dict[str, Tensor]:
    """The full state dict on CPU (no copies of CPU tensors)."""
    return {k: v.detach().cpu() for k, v in
            model.state_dict(trainable_only=False).items()}
