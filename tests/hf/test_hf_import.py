"""Released Hugging Face Sa2VA weights into the training model: the official
tiny checkpoint (saved by the official code) reproduces the official model's
golden outputs through ``model.pretrained_hf`` and through
``tools/export.py --import-hf`` + ``model.pretrained_pth``; sharded files;
one tensor at a time; every layout problem names its key."""
from __future__ import annotations

import json
import shutil
import weakref

import pytest
import torch

from .helpers import build, fixed_outputs, fixture_dir, golden, write_tiny_config

TOL = 1e-4


@pytest.fixture(scope='module')
def gold():
    return golden()


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory, tiny_tokenizer_dir, gold):
    path = tmp_path_factory.mktemp('hf_cfg') / 'tiny_hf.py'
    return write_tiny_config(path, tiny_tokenizer_dir, gold[0]['tiny_sam2'])


def assert_golden(model, gold, tol=TOL):
    g, t = gold
    got = fixed_outputs(model, g, t)
    diffs = {k: (got[k] - t[k]).abs().max().item()
             for k in ('logits', 'seg_hidden', 'seg_prompts', 'low_res_masks')}
    assert all(d <= tol for d in diffs.values()), diffs
    assert torch.equal(got['gen_ids'], t['gen_ids'])
    return diffs


def test_pretrained_hf_reproduces_the_official_golden_outputs(tiny_cfg, gold):
    model = build(tiny_cfg, pretrained_hf=str(fixture_dir() / 'checkpoint'))
    assert_golden(model, gold)
    # LoRA on: adapters fresh (the function is the merged model's), the
    # trainable [SEG] ... rows equal the released rows
    lora_b = [p for n, p in model.named_parameters() if '.lora_B.' in n]
    assert lora_b and all(p.abs().sum() == 0 for p in lora_b)
    emb = model.mllm.get_input_embeddings()
    delta = emb.token_adapter.trainable_tokens_delta['default']
    ids = gold[0]['token_ids']
    rows = [ids[t] for t in ('[SEG]', '<p>', '</p>', '<vp>', '</vp>')]
    from safetensors import safe_open
    with safe_open(str(fixture_dir() / 'checkpoint/model.safetensors'), 'pt') as f:
        released = f.get_tensor('language_model.model.embed_tokens.weight').float()
    assert torch.equal(delta.detach(), released[rows])


def test_import_cli_checkpoint_loads_with_pretrained_pth(tmp_path, tiny_cfg, gold):
    from tools.export import main
    shards = tmp_path / 'sharded'
    _copy_sharded(fixture_dir() / 'checkpoint', shards, max_bytes=2_000_000)
    assert (shards / 'model.safetensors.index.json').is_file()
    out = tmp_path / 'sa2va_tiny_from_hf.pth'
    main(['--import-hf', str(shards), '--config', str(tiny_cfg), '--out', str(out)])
    assert out.stat().st_mode & 0o040  # group-readable
    ckpt = torch.load(out, map_location='cpu', weights_only=True)
    assert ckpt['meta']['hf_template'] == 'phi3_chat'
    model = build(tiny_cfg, pretrained_pth=str(out))
    assert_golden(model, gold)


def test_import_refuses_another_template(tmp_path, tiny_cfg):
    from tools.export import main
    cfg = tmp_path / 'qwen.py'
    cfg.write_text(f"_base_ = [{str(tiny_cfg)!r}]\ntext_settings = dict(template='qwen_chat')\n")
    with pytest.raises(ValueError, match="'phi3_chat' template but the config encodes "
                                         "with 'qwen_chat'"):
        main(['--import-hf', str(fixture_dir() / 'checkpoint'), '--config', str(cfg),
              '--out', str(tmp_path / 'x.pth')])


def _copy_sharded(src, dst, max_bytes, edit=None):
    """The fixture directory with its weights re-saved (sharded above
    ``max_bytes``), optionally edited (``edit(state) -> state``)."""
    from safetensors.torch import load_file

    from projects.sa2va.hf.shards import save_sharded
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('model*.safetensors*'))
    state = load_file(str(src / 'model.safetensors'))
    if edit is not None:
        state = edit(state)
    save_sharded(sorted(state.items()), str(dst), max_shard_bytes=max_bytes)
    return dst


def test_tensors_are_read_and_cast_one_at_a_time(tiny_cfg, monkeypatch):
    """bfloat16 files into a float32 model: each cast tensor is freed before
    the next is read (the model is never held twice)."""
    from projects.sa2va.hf import shards
    real = shards.HFWeights.get
    state = dict(prev=None, reads=0, alive=0)

    def spy(self, key, dtype=None):
        if state['prev'] is not None and state['prev']() is not None:
            state['alive'] += 1
        t = real(self, key, dtype)
        assert t.dtype == dtype == torch.float32
        state['prev'] = weakref.ref(t)
        state['reads'] += 1
        return t

    monkeypatch.setattr(shards.HFWeights, 'get', spy)
    build(tiny_cfg, pretrained_hf=str(fixture_dir() / 'checkpoint'))
    assert state['reads'] == 449 and state['alive'] == 0


def _error(tmp_path, tiny_cfg, edit, name='edited', **overrides):
    src = fixture_dir() / 'checkpoint'
    hf = _copy_sharded(src, tmp_path / name, 10 ** 9, edit)
    with pytest.raises(ValueError) as err:
        build(tiny_cfg, pretrained_hf=str(hf), **overrides)
    return str(err.value)


def test_layout_errors_name_the_key(tmp_path, tiny_cfg, gold):
    key = 'grounding_encoder.sam2_model.memory_encoder.fuser.layers.1.g_weight'
    msg = _error(tmp_path, tiny_cfg, lambda s: {k: v for k, v in s.items() if k != key},
                 'missing')
    assert f"official keys missing from the files (1) ['{key}']" in msg
    msg = _error(tmp_path, tiny_cfg, lambda s: dict(s, **{'mlp1.9.weight': torch.zeros(2)}),
                 'unknown')
    assert "keys in the files the model has no place for (1) ['mlp1.9.weight']" in msg
    bad = 'text_hidden_fcs.2.bias'
    msg = _error(tmp_path, tiny_cfg, lambda s: dict(s, **{bad: torch.zeros(3)}), 'shape')
    assert f'{bad}: file (3,) vs model (64,)' in msg
    # the project's SAM2.1-style tiny SAM2 has parameters the released SAM2.0
    # does not: named, nothing loaded
    from mmengine.config import Config
    sam21 = Config.fromfile(str(tiny_cfg)).model.grounding_encoder.config.to_dict()
    sam21.update(no_obj_embed_spatial=True, add_tpos_enc_to_obj_ptrs=True,
                 proj_tpos_enc_in_obj_ptrs=True)
    with pytest.raises(ValueError, match=r'official keys missing from the files \(3\) '
                                         r'\[.grounding_encoder.sam2_model.no_obj_embed'):
        build(tiny_cfg, pretrained_hf=str(fixture_dir() / 'checkpoint'),
              grounding_encoder=dict(type='SAM2', config=sam21, checkpoint=None))


def test_config_json_problems_are_named(tmp_path, tiny_cfg):
    src = fixture_dir() / 'checkpoint'
    for field, value, match in (
            ('use_llm_lora', 128, 'use_llm_lora=128'),
            ('architectures', ['InternVLChatModel'], 'not a known Sa2VA release layout'),
            ('template', 'vicuna', "template 'vicuna' is not one of")):
        hf = tmp_path / field
        shutil.copytree(src, hf)
        cfg = json.loads((hf / 'config.json').read_text())
        cfg[field] = value
        (hf / 'config.json').write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=match):
            build(tiny_cfg, pretrained_hf=str(hf))


def test_a_different_tokenizer_is_refused(tmp_path, tiny_cfg):
    from projects.sa2va.tokenization import build_tiny_tokenizer, load_tokenizer
    other = tmp_path / 'tok'
    build_tiny_tokenizer(other)
    tok = load_tokenizer(str(other))
    tok.add_tokens(['<extra>'], special_tokens=True)
    tok.save_pretrained(str(other))
    with pytest.raises(ValueError, match='the tokenizer differs from'):
        build(tiny_cfg, pretrained_hf=str(fixture_dir() / 'checkpoint'),
              tokenizer=str(other))


def test_the_cycle_model_starts_from_the_release(tiny_tokenizer_dir, gold):
    """configs/mask_caption_cycle_4b.py starts from ./pretrained/Sa2VA-4B with
    model.pretrained_hf: the tiny cycle model does so from the fixture (its
    EMA teacher is taken after the load)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.sa2va.registry import MODELS
    from tests.conftest import REPO_ROOT
    cfg = Config.fromfile(str(REPO_ROOT / 'configs/mask_caption_cycle_tiny.py')).model
    cfg.tokenizer = str(tiny_tokenizer_dir)
    cfg.grounding_encoder = dict(type='SAM2', config=gold[0]['tiny_sam2'], checkpoint=None)
    cfg.pretrained_hf = str(fixture_dir() / 'checkpoint')
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(cfg).eval()
    assert type(model).__name__ == 'MaskCaptionCycleModel'
    assert_golden(model, gold)
