"""Config-buildable entry point: ``dict(type='InternVLChat', model_path=..., ...)``."""
from typing import Any, Dict, List, Optional, Union

import torch

from projects.sa2va.compat import (dtype_kwargs, enable_activation_checkpointing,
                                  set_attn_implementation)
from projects.sa2va.registry import MODELS
from ..dtypes import as_dtype as _dtype, default_dtype as _default_dtype
from .configuration_internvl import InternVLChatConfig
from .modeling_internvl_chat import InternVLChat


@MODELS.register_module(name='InternVLChat')
def build_internvl_chat(model_path: Optional[str] = None,
                        config: Union[None, Dict[str, Any], InternVLChatConfig] = None,
                        torch_dtype: Union[None, str, torch.dtype] = None,
                        tokenizer=None,
                        freeze_vision: bool = False,
                        freeze_llm: bool = False,
                        freeze_mlp1: bool = False,
                        llm_lora: Optional[Dict[str, Any]] = None,
                        gradient_checkpointing: bool = False,
                        attn_implementation: Optional[str] = None,
                        trust_remote_code: bool = False,
                        seed: int = 0) -> InternVLChat:
    """Build an ``InternVLChat`` from a checkpoint directory or a config.

    Args:
        model_path: an InternVL checkpoint directory (``./pretrained/InternVL2_5-4B``); every
            key must load (strict). Exclusive with ``config``.
        config: an ``InternVLChatConfig`` or its dict (e.g. ``tiny_internvl_config(...)
            .to_dict()``): randomly initialised weights (seeded with ``seed``).
        torch_dtype: 'bfloat16' / 'float16' / 'float32' / torch dtype / None (float32).
        tokenizer: tokenizer object, or a dict ``type=callable, **kwargs`` that builds one; if
            given, ``<IMG_CONTEXT>`` is read from it and the embeddings grow to ``len(tokenizer)``
            (add Sa2VA's tokens to it first). The new rows are trainable under LoRA.
        freeze_vision / freeze_llm / freeze_mlp1: ``requires_grad=False`` on these parts.
        llm_lora: ``dict(r=128, lora_alpha=256, lora_dropout=0.05, target_modules=None)`` to wrap
            the LLM with peft LoRA (applied after freezing; adapters are trainable).
        gradient_checkpointing: enable it in the ViT and the LLM.
        attn_implementation: 'sdpa' (default) or 'eager', for both ViT and LLM.
        trust_remote_code: needed for internlm2 checkpoints (2B/8B/26B).
        seed: seeds the init of a config-built model and the rows added for ``tokenizer``.

    Returns:
        the model (train mode is left to the runner).
    """
    if (model_path is None) == (config is None):
        raise ValueError('build_internvl_chat needs exactly one of model_path or config')
    dtype = _dtype(torch_dtype)
    extra = {} if attn_implementation is None else {'attn_implementation': attn_implementation}
    if model_path is not None:
        from ...downloads import require_local
        require_local(model_path, 'InternVL checkpoint')
        model = InternVLChat.from_pretrained(model_path, **dtype_kwargs(dtype),
                                             trust_remote_code=trust_remote_code, **extra)
    else:
        if isinstance(config, dict):
            config = InternVLChatConfig(**config, **extra)
        elif extra:
            set_attn_implementation(config, attn_implementation)
        # Parameters are created in the target dtype (a 4B model built in fp32 and then cast
        # would hold ~16 GB at its peak); the later pretrained load overwrites them anyway.
        with torch.random.fork_rng(devices=[]), _default_dtype(dtype):
            torch.manual_seed(seed)
            model = InternVLChat(config)
        if dtype not in (None, 'auto'):
            model = model.to(dtype)
    new_rows: List[int] = []
    if tokenizer is not None:
        if isinstance(tokenizer, dict):
            tokenizer = dict(tokenizer)
            builder = tokenizer.pop('type')
            tokenizer = builder(**tokenizer)
        # New rows are drawn around the old rows' mean (transformers' mean_resizing); seeded so
        # that a rebuild gives the same rows (a run checkpoint holds only trainable weights).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            new_rows = model.prepare_for_tokenizer(tokenizer)
    model.freeze(vision=freeze_vision, llm=freeze_llm, mlp1=freeze_mlp1)
    if llm_lora is not None:
        lora = dict(llm_lora)
        if new_rows and 'trainable_token_indices' not in lora:
            lora['trainable_token_indices'] = new_rows
        model.wrap_llm_lora(**lora)
    if gradient_checkpointing:
        enable_activation_checkpointing(model, use_reentrant=False)
    return model
