"""A tiny InternVL (tiny 300M-style ViT + tiny Qwen2 or Qwen3 LLM) for tests and the demo.

It keeps every structural rule of the real models (448 px tiles, patch 14, pixel shuffle 0.5 ->
256 tokens per tile, ``mlp1`` layout, Qwen2 LLM, ``<IMG_CONTEXT>`` splicing) with small widths,
and is saved in the real checkpoint directory format (``config.json`` with ``vision_config`` /
``llm_config``, ``model.safetensors``, tokenizer files), so the same code path loads it.
"""
import os
from pathlib import Path
from typing import Optional, Union

import torch

from .configuration_internvl import InternVLChatConfig


def tiny_internvl_config(vocab_size: int,
                         img_context_token_id: Optional[int] = None,
                         vit_hidden_size: int = 64,
                         vit_layers: int = 2,
                         vit_heads: int = 4,
                         llm_hidden_size: int = 64,
                         llm_layers: int = 2,
                         llm_heads: int = 4,
                         llm_kv_heads: int = 2,
                         image_size: int = 448,
                         tie_word_embeddings: bool = False,
                         llm_type: str = 'qwen2') -> InternVLChatConfig:
    """Config of the tiny model.

    Args:
        vocab_size: LLM vocabulary rows (``len(tokenizer)``).
        img_context_token_id: id of ``<IMG_CONTEXT>`` in that tokenizer.
        vit_*: ViT width / depth / heads (LayerNorm, qkv bias, MLP 4x: the 300M family).
        llm_*: Qwen2 width / depth / heads / kv heads (MLP 2x width).
        image_size: tile size (448 gives the real 256 tokens per tile).
        tie_word_embeddings: tie the LLM's lm_head to its input embedding.
        llm_type: ``'qwen2'`` (InternVL2.5 / InternVL3 family) or ``'qwen3'`` (InternVL3.5:
            q/k RMSNorm per head, no qkv bias, explicit ``head_dim``; transformers >= 4.51).

    Returns:
        ``InternVLChatConfig`` (template ``internvl2_5``, ps_version v2, select_layer -1).
    """
    vision_config = dict(
        num_channels=3, patch_size=14, image_size=image_size, qkv_bias=True,
        hidden_size=vit_hidden_size, num_attention_heads=vit_heads,
        intermediate_size=4 * vit_hidden_size, qk_normalization=False,
        num_hidden_layers=vit_layers, use_flash_attn=False, hidden_act='gelu',
        norm_type='layer_norm', layer_norm_eps=1e-6, dropout=0.0, drop_path_rate=0.0,
        attention_dropout=0.0, initializer_range=0.02, initializer_factor=0.1)
    llm_config = dict(
        model_type='qwen2', architectures=['Qwen2ForCausalLM'], vocab_size=vocab_size,
        hidden_size=llm_hidden_size, intermediate_size=2 * llm_hidden_size,
        num_hidden_layers=llm_layers, num_attention_heads=llm_heads,
        num_key_value_heads=llm_kv_heads, hidden_act='silu', max_position_embeddings=8192,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=tie_word_embeddings,
        initializer_range=0.02, use_sliding_window=False)
    if llm_type == 'qwen3':
        llm_config.update(model_type='qwen3', architectures=['Qwen3ForCausalLM'],
                          head_dim=llm_hidden_size // llm_heads, attention_bias=False)
    elif llm_type != 'qwen2':
        raise ValueError(f"tiny_internvl_config: llm_type {llm_type!r} is not 'qwen2' or 'qwen3'")
    return InternVLChatConfig(
        vision_config=vision_config, llm_config=llm_config, select_layer=-1,
        force_image_size=image_size, downsample_ratio=0.5, template='internvl2_5',
        dynamic_image_size=True, use_thumbnail=True, ps_version='v2', min_dynamic_patch=1,
        max_dynamic_patch=12, img_context_token_id=img_context_token_id,
        architectures=['InternVLChatModel'])


def build_tiny_internvl(tokenizer=None, seed: int = 0, **config_kwargs):
    """Build the tiny model with deterministic weights (the global RNG is left untouched).

    Args:
        tokenizer: a tokenizer holding ``<IMG_CONTEXT>``; default the project's tiny tokenizer
            (``projects.sa2va.tokenization.build_tiny_tokenizer``).
        seed: weight seed.
        **config_kwargs: overrides for :func:`tiny_internvl_config`.

    Returns:
        ``(model, tokenizer)``: an ``InternVLChat`` in float32, eval mode.
    """
    from projects.sa2va.constants import IMG_CONTEXT_TOKEN
    from .modeling_internvl_chat import InternVLChat
    if tokenizer is None:
        from projects.sa2va.tokenization import build_tiny_tokenizer
        tokenizer = build_tiny_tokenizer()
    config = tiny_internvl_config(len(tokenizer),
                                  tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN),
                                  **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLChat(config)
    return model.eval(), tokenizer


def save_tiny_internvl(save_dir: Union[str, os.PathLike], seed: int = 0, **config_kwargs) -> Path:
    """Write the tiny model and its tokenizer as a real-format InternVL checkpoint directory.

    ``InternVLChat.from_pretrained(save_dir)`` and ``AutoTokenizer.from_pretrained(save_dir)``
    load it back. Returns the directory.
    """
    model, tokenizer = build_tiny_internvl(seed=seed, **config_kwargs)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(save_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(save_dir))
    return save_dir
