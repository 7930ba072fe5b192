"""InternVL3 (Qwen2.5) and InternVL3.5 (Qwen3): config parsing, refusals, and the models built
from the public config.json values on the meta device against the key/shape manifests of
``tests/manifests/internvl3`` (how they are made: ``tests/manifests/make_internvl3_manifests.py``)."""
import json
from pathlib import Path

import pytest
import torch

from projects.sa2va.compat import version_at_least
from projects.sa2va.models.internvl.configuration_internvl import InternVLChatConfig

MANIFESTS = Path(__file__).resolve().parents[1] / 'manifests' / 'internvl3'
HAS_QWEN3 = version_at_least('transformers', '4.51')
needs_qwen3 = pytest.mark.skipif(not HAS_QWEN3, reason='Qwen3 needs transformers >= 4.51 '
                                                        '(current environment only)')
CONFIG_KEYS = ('vision_config', 'llm_config', 'downsample_ratio', 'ps_version', 'select_layer',
               'template', 'force_image_size', 'dynamic_image_size', 'use_thumbnail',
               'min_dynamic_patch', 'max_dynamic_patch')


def manifest(name):
    return json.loads((MANIFESTS / f'{name}.json').read_text())


@pytest.mark.parametrize('name', [
    'InternVL3-2B', 'InternVL3-8B',
    pytest.param('InternVL3_5-4B', marks=needs_qwen3),
    pytest.param('InternVL3_5-8B', marks=needs_qwen3)])
def test_meta_model_from_public_config_has_exactly_the_manifest_keys(name):
    from projects.sa2va.models.internvl.modeling_internvl_chat import InternVLChat
    m = manifest(name)
    config = InternVLChatConfig(**{k: m[k] for k in CONFIG_KEYS})
    assert config.num_image_token == 256
    with torch.device('meta'):
        model = InternVLChat(config)
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == m['params']
    assert sum(p.numel() for p in model.parameters()) == m['total_params']
    family = 'Qwen3ForCausalLM' if 'InternVL3_5' in name else 'Qwen2ForCausalLM'
    assert type(model.language_model).__name__ == family
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight


@pytest.mark.parametrize('arch,reason', [
    ('InternLM3ForCausalLM', 'InternLM3 (InternVL3-9B) has no transformers class'),
    ('Qwen3MoeForCausalLM', 'mixture-of-experts LLM (InternVL3.5-30B-A3B'),
    ('GptOssForCausalLM', 'GPT-OSS mixture-of-experts LLM (InternVL3.5-20B-A4B)'),
    ('MambaForCausalLM', 'neither model_type nor a known architecture')])
def test_unsupported_language_models_are_refused_with_the_reason(arch, reason):
    with pytest.raises(ValueError, match=__import__('re').escape(reason)):
        InternVLChatConfig(llm_config=dict(architectures=[arch], hidden_size=64))


def test_internlm3_model_type_is_refused_too():
    with pytest.raises(ValueError, match='internlm3'):
        InternVLChatConfig(llm_config=dict(model_type='internlm3', hidden_size=64))


@pytest.mark.skipif(HAS_QWEN3, reason='legacy environment only (transformers < 4.51)')
def test_qwen3_on_legacy_transformers_names_the_version_needed():
    with pytest.raises(ValueError, match=r"'qwen3' needs transformers >= 4\.51"):
        InternVLChatConfig(llm_config=dict(manifest('InternVL3_5-4B')['llm_config']))


@needs_qwen3
def test_internvl3_5_config_parses_like_the_official_file():
    m = manifest('InternVL3_5-8B')
    config = InternVLChatConfig(**{k: m[k] for k in CONFIG_KEYS})
    llm = config.llm_config
    assert type(llm).__name__ == 'Qwen3Config'
    assert (llm.head_dim, llm.num_key_value_heads, llm.tie_word_embeddings) == (128, 8, False)
    again = InternVLChatConfig(**config.to_dict())
    assert again.llm_config.to_dict() == llm.to_dict()
    assert again.to_dict()['llm_config']['model_type'] == 'qwen3'


@needs_qwen3
def test_qwen3_checkpoint_directory_round_trip_is_strict(tmp_path):
    """A tiny InternVL3.5-style directory (Qwen3 LLM) written in the official layout loads back
    with identical logits; a missing q_norm key (Qwen3-only) is named, not silently re-initialised."""
    from safetensors.torch import load_file, save_file

    from projects.sa2va.models.internvl.modeling_internvl_chat import InternVLChat
    from projects.sa2va.models.internvl.tiny import build_tiny_internvl, save_tiny_internvl
    path = save_tiny_internvl(tmp_path / 'tiny35', llm_type='qwen3')
    model, _ = build_tiny_internvl(llm_type='qwen3')
    back = InternVLChat.from_pretrained(str(path))
    assert back.config.llm_config.model_type == 'qwen3'
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, back(input_ids=ids).logits)
    weights = load_file(str(path / 'model.safetensors'))
    key = 'language_model.model.layers.0.self_attn.q_norm.weight'
    del weights[key]
    save_file(weights, str(path / 'model.safetensors'), metadata={'format': 'pt'})
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        InternVLChat.from_pretrained(str(path))
