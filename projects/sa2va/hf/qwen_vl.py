"""``config.json`` of the released Sa2VA-Qwen directories (Qwen-VL layouts
of :data:`~projects.sa2va.hf.layout.HF_LAYOUTS`): checked on import, turned
into ``QwenVLChat``'s config, and written field by field on export.

What the official files hold (newest Sa2VA ``tools/convert_to_hf.py`` with
``projects/sa2va/hf/models_qwen2_5_vl`` / ``models_qwen3vl``): the base
model's Qwen-VL config (``Sa2VAChatConfigQwen`` subclasses
``Qwen2_5_VLConfig`` / ``Qwen3VLConfig``) with ``model_type`` ``sa2va_chat``,
``architectures`` ``['Sa2VAChatModelQwen']``, the Qwen ``auto_map``,
``template`` (the training config's name, ``qwen_chat``),
``tie_word_embeddings`` False at both levels and ``text_config.vocab_size``
= the tokenizer's length (the Qwen tokenizer + the 5 Sa2VA tokens: the
official training resizes the embeddings to it); the processor files
(tokenizer + ``preprocessor_config.json``) beside it.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ['check_qwen_vl_config', 'qwen_vl_config_from_hf', 'qwen_vl_config_json',
           'save_qwen_vl_processor_config']

#: fields of a sub-config that describe the file, not the model
_PRIVATE = ('_name_or_path', 'transformers_version', 'architectures', 'dtype',
            'torch_dtype', '_attn_implementation_autoset', 'model_type')
#: top-level token ids of the Qwen-VL configs
_TOKEN_FIELDS = ('image_token_id', 'video_token_id', 'vision_start_token_id',
                 'vision_end_token_id')


def check_qwen_vl_config(cfg: Dict[str, Any], path: str) -> None:
    """Raise ``ValueError`` naming ``path`` and the field when a Sa2VA-Qwen
    ``config.json`` lacks ``text_config`` / ``vision_config`` / ``template``,
    has no ``text_config.vocab_size`` / ``hidden_size``, or sets LoRA flags."""
    for key in ('text_config', 'vision_config', 'template'):
        if not cfg.get(key):
            raise ValueError(f'{path}: missing field {key!r}')
    for key in ('vocab_size', 'hidden_size'):
        if key not in cfg['text_config']:
            raise ValueError(f'{path}: missing field text_config.{key}')
    for key in ('use_llm_lora', 'use_backbone_lora'):
        if cfg.get(key, 0):
            raise ValueError(f'{path}: {key}={cfg[key]}: a merged release has no LoRA')


def _clean(sub: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in sub.items() if k not in _PRIVATE}


def qwen_vl_config_from_hf(cfg: Dict[str, Any], backbone: str) -> Dict[str, Any]:
    """``QwenVLChat(config=...)`` of a released ``config.json``: the
    backbone's ``model_type``, its ``text_config`` / ``vision_config``
    (file-only fields dropped; transformers 4.x ``rope_scaling`` /
    ``rope_theta`` are read by transformers 5 as ``rope_parameters``), the
    token ids, untied embeddings."""
    out = dict(model_type=backbone, text_config=_clean(cfg['text_config']),
               vision_config=_clean(cfg['vision_config']), tie_word_embeddings=False)
    out['text_config']['tie_word_embeddings'] = False
    for key in _TOKEN_FIELDS:
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    return out


def qwen_vl_config_json(model, layout, template: str, dtype_name: str) -> Dict[str, Any]:
    """The official ``config.json`` dict of a ``Sa2VAModel`` on ``QwenVLChat``.

    ``text_config.vocab_size`` is the embedding's row count, which is
    ``len(tokenizer)`` (``QwenVLChat.prepare_for_tokenizer`` resizes to it,
    as the official training does; the official ``Sa2VAChatModelQwen`` builds
    its embedding from ``vocab_size``).

    Raises:
        ValueError: fewer embedding rows than tokenizer entries.
    """
    import transformers

    from ..compat import rope_fields_for_4x
    mllm = model.mllm
    n_tok = len(model.tokenizer)
    rows = mllm.get_input_embeddings().weight.shape[0]
    if rows < n_tok:
        raise ValueError(f'the embedding has {rows} rows but the tokenizer {n_tok} tokens: '
                         'every token needs a row')
    qwen = mllm.config.to_dict()
    out = {k: v for k, v in qwen.items() if k not in ('_name_or_path', 'architectures',
                                                      'model_type', 'auto_map')}
    text = dict(qwen['text_config'], vocab_size=rows, tie_word_embeddings=False)
    text.pop('_name_or_path', None)
    out['text_config'] = rope_fields_for_4x(text)
    out['vision_config'] = {k: v for k, v in qwen['vision_config'].items()
                            if k != '_name_or_path'}
    out.update(architectures=layout.architectures, auto_map=layout.auto_map,
               model_type=layout.model_type, template=template, tie_word_embeddings=False,
               torch_dtype=dtype_name, dtype=dtype_name,
               transformers_version=transformers.__version__)
    for key in _TOKEN_FIELDS:
        if qwen.get(key) is not None:
            out[key] = qwen[key]
    return out


def save_qwen_vl_processor_config(out_dir: str, backbone: str,
                                  min_pixels: Optional[int] = None,
                                  max_pixels: Optional[int] = None) -> None:
    """Write ``preprocessor_config.json`` (transformers' own
    ``Qwen2VLImageProcessor`` with the backbone's patch / merge / frame
    sizes and normalisation, :data:`~projects.sa2va.transforms.qwen_vl.
    QWEN_VL_PRESETS`), which the official ``AutoProcessor`` reads beside the
    tokenizer. ``min_pixels`` / ``max_pixels`` default to the preset's."""
    from transformers import Qwen2VLImageProcessor

    from ..transforms.qwen_vl import QWEN_VL_PRESETS
    p = QWEN_VL_PRESETS[backbone]
    proc = Qwen2VLImageProcessor(
        patch_size=p['patch_size'], merge_size=p['merge_size'],
        temporal_patch_size=p['temporal_patch_size'],
        min_pixels=min_pixels or p['min_pixels'], max_pixels=max_pixels or p['max_pixels'],
        image_mean=list(p['mean']), image_std=list(p['std']))
    proc.save_pretrained(out_dir)
