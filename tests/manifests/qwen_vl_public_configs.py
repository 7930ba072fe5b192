"""The public ``config.json`` values of the four Qwen-VL checkpoints behind the released
Sa2VA-Qwen models: Qwen2.5-VL-3B/7B-Instruct and Qwen3-VL-2B/4B-Instruct.

One source for every test that needs the full-size shapes without a download: the recipe
models built on the meta device (``tests/configs/test_qwen_vl_recipes.py``) and the manifests of
the released Sa2VA-Qwen checkpoints (``make_sa2va_qwen_manifests.py`` reads its base values
here).
Each dict has the fields of the released file that decide the architecture and the
special-token ids, in the file's own layout: Qwen2.5-VL keeps the text fields at the
top level (``rope_scaling`` ``{'type': 'mrope', 'mrope_section': [16, 24, 24]}``),
Qwen3-VL nests them under ``text_config``. ``SOURCES`` says where the numbers come from.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

#: Qwen2.5-VL / Qwen3-VL special-token ids (identical in both tokenizers).
TOKEN_IDS = dict(bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652,
                 vision_end_token_id=151653, image_token_id=151655, video_token_id=151656)

_QWEN25_VISION = dict(depth=32, hidden_act='silu', hidden_size=1280, intermediate_size=3420,
                      num_heads=16, in_chans=3, patch_size=14, spatial_merge_size=2,
                      spatial_patch_size=14, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2,
                      temporal_patch_size=2)
_QWEN25_TEXT = dict(architectures=['Qwen2_5_VLForConditionalGeneration'],
                    model_type='qwen2_5_vl', attention_dropout=0.0, vision_token_id=151654,
                    hidden_act='silu', initializer_range=0.02,
                    max_position_embeddings=128000, rms_norm_eps=1e-06,
                    rope_theta=1000000.0, sliding_window=32768, use_sliding_window=False,
                    torch_dtype='bfloat16', use_cache=True,
                    rope_scaling=dict(type='mrope', mrope_section=[16, 24, 24]), **TOKEN_IDS)

_QWEN3_VISION = dict(deepstack_visual_indexes=[5, 11, 17], depth=24,
                     hidden_act='gelu_pytorch_tanh', hidden_size=1024, in_channels=3,
                     initializer_range=0.02, intermediate_size=4096, model_type='qwen3_vl',
                     num_heads=16, num_position_embeddings=2304, patch_size=16,
                     spatial_merge_size=2, temporal_patch_size=2)
_QWEN3_TEXT = dict(attention_bias=False, attention_dropout=0.0, bos_token_id=151643,
                   eos_token_id=151645, head_dim=128, hidden_act='silu',
                   initializer_range=0.02, max_position_embeddings=262144,
                   model_type='qwen3_vl_text', rms_norm_eps=1e-06,
                   rope_scaling=dict(mrope_interleaved=True, mrope_section=[24, 20, 20],
                                     rope_type='default'),
                   rope_theta=5000000, tie_word_embeddings=True, use_cache=True,
                   vocab_size=151936, dtype='bfloat16')


def _qwen3(hidden, intermediate, layers, heads):
    return dict(architectures=['Qwen3VLForConditionalGeneration'], model_type='qwen3_vl',
                image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653, tie_word_embeddings=True,
                text_config=dict(_QWEN3_TEXT, hidden_size=hidden,
                                 intermediate_size=intermediate, num_hidden_layers=layers,
                                 num_attention_heads=heads, num_key_value_heads=8),
                vision_config=dict(_QWEN3_VISION, out_hidden_size=hidden))


#: checkpoint directory name -> its public config.json (architecture fields).
QWEN_VL_PUBLIC_CONFIGS = {
    'Qwen2.5-VL-3B-Instruct': dict(
        _QWEN25_TEXT, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=2, max_window_layers=70,
        tie_word_embeddings=True, vocab_size=151936,
        vision_config=dict(_QWEN25_VISION, out_hidden_size=2048)),
    'Qwen2.5-VL-7B-Instruct': dict(
        _QWEN25_TEXT, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_window_layers=28,
        tie_word_embeddings=False, vocab_size=152064,
        vision_config=dict(_QWEN25_VISION, out_hidden_size=3584)),
    'Qwen3-VL-2B-Instruct': _qwen3(hidden=2048, intermediate=6144, layers=28, heads=16),
    'Qwen3-VL-4B-Instruct': _qwen3(hidden=2560, intermediate=9728, layers=36, heads=32),
}

SOURCES = {
    'Qwen2.5-VL-3B/7B-Instruct': 'the config.json files of the Hugging Face repositories '
                                 'Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen2.5-VL-7B-Instruct, '
                                 'as quoted verbatim in several public repositories (read '
                                 'through the code search; the 7B file also as re-saved by '
                                 'transformers 4.53 / 4.57, same values)',
    'Qwen3-VL-2B/4B-Instruct': 'the config.json of Qwen/Qwen3-VL-4B-Instruct as quoted in '
                               'public repositories (transformers 4.57.0.dev0 file); the 2B '
                               'differs in the text widths (2048 / 6144, 28 layers, 16 heads, '
                               '8 kv heads, head_dim 128: quoted from its config.json in public '
                               'notes, the Qwen3-1.7B language model) and vision '
                               'out_hidden_size 2048 (quoted beside its 24-layer, 1024-wide '
                               'tower)',
    'token ids': 'the same config.json files (vision_start 151652, vision_end 151653, '
                 'image_pad 151655, video_pad 151656)',
}


def public_config(name: str) -> dict:
    """A deep copy of the public config.json dict of ``name`` (a key of
    :data:`QWEN_VL_PUBLIC_CONFIGS`); ``KeyError`` names the choices."""
    if name not in QWEN_VL_PUBLIC_CONFIGS:
        raise KeyError(f'no public config for {name!r}; one of {sorted(QWEN_VL_PUBLIC_CONFIGS)}')
    return copy.deepcopy(QWEN_VL_PUBLIC_CONFIGS[name])


def write_config_dir(name: str, directory) -> Path:
    """Write ``config.json`` of ``name`` into ``directory`` (created); returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'config.json').write_text(json.dumps(public_config(name), indent=2))
    return directory
