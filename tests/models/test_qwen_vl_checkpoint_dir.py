"""``QwenVLChat(model_path=...)`` on directories in the official Qwen layouts: the
recipes' path (``configs/sa2va_qwen2_5_vl_3b.py``, ``configs/sa2va_qwen3_vl_4b.py``).

The directories are built from the other side's facts, not from our own keys:
``config.json`` in the released file's layout (``tests/manifests/
qwen_vl_public_configs.py``: Qwen2.5-VL flat with ``rope_scaling`` ``mrope``,
Qwen3-VL nested) with tiny widths, and safetensors under the released key
names: Qwen2.5-VL files predate transformers 4.52 (``visual.*``,
``model.layers.*``, ``model.embed_tokens.*``, ``model.norm.*``), Qwen3-VL files
use ``model.visual.*`` / ``model.language_model.*``; a tied ``lm_head`` is not
stored."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from projects.sa2va.models.qwen_vl import QWEN_VL_CLASSES

REPO = Path(__file__).resolve().parents[2]
#: backbone -> (public checkpoint whose config.json layout is used, its recipe)
RELEASES = {'qwen2_5_vl': ('Qwen2.5-VL-3B-Instruct', 'sa2va_qwen2_5_vl_3b.py'),
            'qwen3_vl': ('Qwen3-VL-4B-Instruct', 'sa2va_qwen3_vl_4b.py')}


def _need(model_type):
    import transformers
    if not hasattr(transformers, QWEN_VL_CLASSES[model_type]):
        pytest.skip(f'{QWEN_VL_CLASSES[model_type]} is not in transformers '
                    f'{transformers.__version__} (Qwen-VL needs the current stack)')


def _released_name(key: str, backbone: str) -> str:
    """A transformers-5 key under the name the released safetensors use."""
    if backbone == 'qwen2_5_vl':
        if key.startswith('model.visual.'):
            return key[len('model.'):]
        if key.startswith('model.language_model.'):
            return 'model.' + key[len('model.language_model.'):]
    return key


def _tiny_released_config(backbone: str, tok) -> dict:
    """The public config.json of the backbone's release, shrunk (widths, depths),
    its token ids those of ``tok``, the vocabulary padded past the tokenizer as
    the releases pad theirs."""
    from tests.manifests.qwen_vl_public_configs import public_config
    cfg = public_config(RELEASES[backbone][0])
    ids = {f'{k}_token_id': tok.convert_tokens_to_ids(t) for k, t in (
        ('vision_start', '<|vision_start|>'), ('vision_end', '<|vision_end|>'),
        ('image', '<|image_pad|>'), ('video', '<|video_pad|>'))}
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok) + 27)
    if backbone == 'qwen2_5_vl':
        cfg.update(text, max_window_layers=2, **ids)
        cfg['rope_scaling'] = dict(cfg['rope_scaling'], mrope_section=[2, 3, 3])
        cfg['vision_config'].update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                    out_hidden_size=64, window_size=56,
                                    fullatt_block_indexes=[1])
    else:
        cfg.update(ids)
        cfg['text_config'].update(text, head_dim=16)
        cfg['text_config']['rope_scaling'] = dict(cfg['text_config']['rope_scaling'],
                                                  mrope_section=[2, 3, 3])
        cfg['vision_config'].update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                    out_hidden_size=64, num_position_embeddings=64,
                                    deepstack_visual_indexes=[0])
    return cfg


@pytest.fixture(scope='module')
def released_dir(tmp_path_factory):
    """backbone -> (directory, {transformers-5 key: tensor} of the weights written)."""
    made = {}

    def make(backbone):
        if backbone in made:
            return made[backbone]
        _need(backbone)
        from safetensors.torch import save_file
        from transformers import AutoConfig

        from projects.sa2va.models.qwen_vl import qwen_vl_class
        from projects.sa2va.tokenization import build_tiny_tokenizer
        folder = tmp_path_factory.mktemp(f'released_{backbone}')
        tok = build_tiny_tokenizer(folder, image_tokens='qwen_vl')
        cfg = _tiny_released_config(backbone, tok)
        assert cfg['tie_word_embeddings'] is True  # both releases used here tie lm_head
        (folder / 'config.json').write_text(json.dumps(cfg, indent=2))
        torch.manual_seed(3)
        ref = qwen_vl_class(backbone)(AutoConfig.from_pretrained(folder)).float()
        weights = {k: v.detach().clone() for k, v in ref.state_dict().items()}
        stored = {_released_name(k, backbone): v.contiguous() for k, v in weights.items()
                  if k != 'lm_head.weight'}
        save_file(stored, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
        made[backbone] = folder, weights
        return made[backbone]
    return make


@pytest.mark.parametrize('backbone', sorted(RELEASES))
def test_released_layout_loads_every_weight(backbone, released_dir):
    from projects.sa2va.models.qwen_vl import QwenVLChat
    folder, weights = released_dir(backbone)
    if backbone == 'qwen2_5_vl':  # the file really holds the pre-4.52 names
        from safetensors import safe_open
        with safe_open(str(folder / 'model.safetensors'), 'pt') as f:
            names = set(f.keys())
        assert 'model.embed_tokens.weight' in names and 'visual.merger.mlp.0.weight' in names
        assert not any(n.startswith('model.language_model.') for n in names)
    mllm = QwenVLChat(model_path=str(folder), torch_dtype='float32')
    got = mllm.hf_model.state_dict()
    assert set(got) == set(weights)
    for key, value in weights.items():
        assert torch.equal(got[key], value), key
    hf = mllm.hf_model
    assert hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize('backbone', sorted(RELEASES))
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_keys(backbone, released_dir,
                                                                   tmp_path):
    """transformers would leave a missing weight randomly initialised (a warning);
    here it is an error naming the directory and the key."""
    import shutil

    from safetensors.torch import load_file, save_file

    from projects.sa2va.models.qwen_vl import QwenVLChat
    folder, _ = released_dir(backbone)
    for name in ('config.json', 'tokenizer.json', 'tokenizer_config.json'):
        if (folder / name).exists():
            shutil.copy(folder / name, tmp_path / name)
    stored = load_file(str(folder / 'model.safetensors'))
    dropped = next(k for k in stored if k.endswith('layers.1.mlp.down_proj.weight'))
    del stored[dropped]
    save_file(stored, str(tmp_path / 'model.safetensors'), metadata={'format': 'pt'})
    with pytest.raises(ValueError, match=r'missing_keys \(1\): .*layers\.1\.mlp\.down_proj'):
        QwenVLChat(model_path=str(tmp_path))
    stored[dropped] = torch.zeros(3, 3)
    save_file(stored, str(tmp_path / 'model.safetensors'), metadata={'format': 'pt'})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + r'.*mismatched_keys \(1\): '
                       r'.*layers\.1\.mlp\.down_proj'):
        QwenVLChat(model_path=str(tmp_path))


@pytest.mark.parametrize('backbone', sorted(RELEASES))
def test_recipe_model_builds_from_the_directory(backbone, released_dir):
    """The recipe's model with ``model_path`` at the directory (tokenizer read from
    it, as the recipes do; a tiny SAM2): the released weights are in place, the
    embedding rows are cut to ``len(tokenizer)`` (the padded rows dropped), lm_head is
    its own trained matrix, the vision tower and merger frozen."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    folder, weights = released_dir(backbone)
    cfg = Config.fromfile(str(REPO / 'configs' / RELEASES[backbone][1]))
    tiny = Config.fromfile(str(REPO / 'configs' / '_base_' / 'models' / 'sa2va_tiny.py'))
    model_cfg = cfg.model.to_dict()
    model_cfg['mllm'].update(model_path=str(folder), torch_dtype='float32',
                             gradient_checkpointing=False)
    model_cfg.update(tokenizer=model_cfg.get('tokenizer') or str(folder),
                     grounding_encoder=tiny.model.grounding_encoder.to_dict(),
                     data_preprocessor=dict(type='Sa2VADataPreprocessor', dtype='float32',
                                            qwen_vl_stats=backbone))
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(model_cfg)
    hf = model.mllm.hf_model
    n = len(model.tokenizer)
    emb = weights['model.language_model.embed_tokens.weight']
    assert emb.shape[0] == n + 27 - 5  # padded past the tokenizer + the 5 Sa2VA tokens
    assert hf.get_input_embeddings().weight.shape[0] == n
    assert torch.equal(hf.get_input_embeddings().weight, emb[:n])
    assert torch.equal(hf.lm_head.weight, emb[:n])  # the tied matrix, now a copy
    assert hf.lm_head.weight.requires_grad and hf.get_input_embeddings().weight.requires_grad
    assert hf.lm_head.weight.data_ptr() != hf.get_input_embeddings().weight.data_ptr()
    visual = {k[len('model.visual.'):]: v for k, v in weights.items()
              if k.startswith('model.visual.')}
    for name, p in hf.model.visual.named_parameters():
        assert not p.requires_grad, name
        assert torch.equal(p.detach(), visual[name]), name
