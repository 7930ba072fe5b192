"""Shared helpers of the InternVL tests: fixture paths and loading the tiny fixture towers."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SHARED = Path(__file__).resolve().parents[2] / '..' / 'shared'
FIXTURES = SHARED / 'fixtures' / 'internvl'
VARIANTS = ('vit300m_like', 'vit6b_like')
ATOL = RTOL = 1e-4


def require_fixtures() -> Path:
    """The fixture folder, or skip the test when ``shared/`` is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f'shared fixtures folder {FIXTURES} is absent')
    return FIXTURES


def load_variant(variant: str):
    """``(config dict, weights dict, golden dict)`` of one tiny fixture variant."""
    root = require_fixtures() / 'tiny' / variant
    config = json.loads((root / 'config.json').read_text())
    return config, load_file(str(root / 'weights.safetensors')), load_file(
        str(root / 'golden.safetensors'))


def fixture_chat_config(config: dict, vocab_size: int = 64):
    """An ``InternVLChatConfig`` for a fixture variant with a tiny Qwen2 of width D."""
    from projects.sa2va.models.internvl import InternVLChatConfig
    d = config['llm_hidden_size']
    return InternVLChatConfig(
        vision_config=config['vision_config'],
        llm_config=dict(model_type='qwen2', vocab_size=vocab_size, hidden_size=d,
                        intermediate_size=2 * d, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, tie_word_embeddings=False),
        downsample_ratio=config['downsample_ratio'], ps_version=config['ps_version'],
        select_layer=config['select_layer'], force_image_size=config['image_size_used'],
        img_context_token_id=config.get('merge_fixture', {}).get('img_context_token_id'))


def fixture_chat_model(variant: str, attn_implementation=None):
    """``(InternVLChat with the fixture's ViT/mlp1 weights and embed table, config, golden)``."""
    from projects.sa2va.models.internvl import InternVLChat
    config, weights, golden = load_variant(variant)
    chat_config = fixture_chat_config(config, golden['merge_embed_table'].shape[0])
    if attn_implementation is not None:
        chat_config._attn_implementation_internal = attn_implementation
        chat_config.vision_config._attn_implementation_internal = attn_implementation
    torch.manual_seed(0)
    model = InternVLChat(chat_config).eval()
    state = dict(weights)
    state['language_model.model.embed_tokens.weight'] = golden['merge_embed_table']
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith('language_model.') for k in missing), missing
    return model, config, golden
