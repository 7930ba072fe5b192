"""InternVLChat: real-format save/load, strict loading, LLM families, forward, LoRA, freezing,
token resize, generation from inputs_embeds, registry entry."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

try:
    from internvl_helpers import require_fixtures
except ImportError:  # collected as a package
    from tests.models.internvl_helpers import require_fixtures

from projects.sa2va.constants import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN
from projects.sa2va.models import InternVLChat, InternVLChatConfig
from projects.sa2va.models.internvl import build_mlp1
from projects.sa2va.models.internvl.tiny import (build_tiny_internvl, save_tiny_internvl,
                                                 tiny_internvl_config)
from projects.sa2va.registry import MODELS
from projects.sa2va.tokenization import add_special_tokens, load_tokenizer

N_TOK = 256


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    return save_tiny_internvl(tmp_path_factory.mktemp('tiny_internvl'), seed=3)


@pytest.fixture(scope='module')
def tiny(tiny_dir):
    return InternVLChat.from_pretrained(tiny_dir).eval(), load_tokenizer(tiny_dir)


def make_batch(tokenizer, tiles_per_sample=(2, 1), seed=0):
    """Two left-aligned samples, right-padded; sample b holds tiles_per_sample[b] tiles."""
    g = torch.Generator().manual_seed(seed)
    ctx, start, end = (tokenizer.convert_tokens_to_ids(t)
                       for t in (IMG_CONTEXT_TOKEN, IMG_START_TOKEN, IMG_END_TOKEN))
    rows = []
    for b, n in enumerate(tiles_per_sample):
        text = tokenizer.encode(f'describe the image {b}', add_special_tokens=False)
        answer = tokenizer.encode('a red car' if b else 'two dogs', add_special_tokens=False)
        rows.append(text[:2] + [start] + [ctx] * (N_TOK * n) + [end] + text[2:] + answer)
    length = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows]).bool()
    labels = ids.masked_fill(~mask, -100)
    labels[:, :N_TOK] = -100
    pixel_values = torch.randn(sum(tiles_per_sample), 3, 448, 448, generator=g)
    return dict(input_ids=ids, attention_mask=mask, labels=labels,
                position_ids=torch.arange(length).expand(len(rows), -1),
                pixel_values=pixel_values,
                image_flags=torch.ones(len(pixel_values), dtype=torch.long))


def test_checkpoint_directory_format(tiny_dir, tiny):
    model, tokenizer = tiny
    config = json.loads((tiny_dir / 'config.json').read_text())
    assert config['model_type'] == 'internvl_chat'
    assert config['architectures'] == ['InternVLChatModel']
    assert config['llm_config']['model_type'] == 'qwen2'
    assert config['vision_config']['model_type'] == 'intern_vit_6b'
    assert (config['downsample_ratio'], config['ps_version'], config['select_layer'],
            config['force_image_size'], config['template']) == (0.5, 'v2', -1, 448, 'internvl2_5')
    keys = load_file(str(tiny_dir / 'model.safetensors')).keys()
    assert 'vision_model.embeddings.position_embedding' in keys
    assert {'mlp1.0.weight', 'mlp1.1.weight', 'mlp1.3.weight'} <= set(keys)
    assert 'language_model.model.embed_tokens.weight' in keys
    assert 'language_model.lm_head.weight' in keys
    assert set(keys) == set(model.state_dict().keys())
    assert model.num_image_token == N_TOK
    assert model.img_context_token_id == tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)


@torch.no_grad()
def test_forward_shapes_loss_and_hidden_states(tiny):
    model, tokenizer = tiny
    batch = make_batch(tokenizer)
    feats = model.extract_feature(batch['pixel_values'])
    assert feats.shape == (3, N_TOK, 64)
    out = model(**batch, output_hidden_states=True)
    b, t = batch['input_ids'].shape
    assert out.logits.shape == (b, t, len(tokenizer))
    assert len(out.hidden_states) == model.config.llm_config.num_hidden_layers + 1
    assert out.hidden_states[-1].shape == (b, t, 64)
    assert torch.isfinite(out.loss) and out.loss > 0
    # the image actually matters: other pixels give other logits at text positions
    batch2 = dict(batch, pixel_values=batch['pixel_values'].flip(-1))
    assert not torch.allclose(model(**batch2).logits, out.logits)
    # tiles of sample 0 splice into sample 0, in order
    embeds = model.build_inputs_embeds(batch['input_ids'], batch['pixel_values'])
    ctx = batch['input_ids'][0] == model.img_context_token_id
    assert torch.equal(embeds[0][ctx], feats[:2].reshape(-1, 64))


@torch.no_grad()
def test_visual_prompt_rows_reach_the_model_through_forward(tiny):
    model, tokenizer = tiny
    ctx = model.img_context_token_id
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 0, :3] = True     # object 0: cells 0, 1, 2
    masks[1, 15, 15] = True    # object 1: cell 255
    # sample 0: a dummy tile (text only); sample 1: two tiles, the second (thumbnail) prompted
    ids = torch.full((2, 2 * N_TOK + 4 + 6), tokenizer.pad_token_id)
    ids[1, 1:1 + 2 * N_TOK] = ctx
    ids[1, 2 * N_TOK + 3:2 * N_TOK + 6] = ctx   # region1<vp> 3 x ctx </vp>
    ids[1, 2 * N_TOK + 8] = ctx                 # region2<vp> 1 x ctx </vp>
    px = torch.randn(3, 3, 448, 448, generator=torch.Generator().manual_seed(5))
    kwargs = dict(pixel_values=px, image_flags=torch.tensor([0, 1, 1]),
                  vp_overall_mask=torch.tensor([False, False, True]), prompt_masks=[masks])
    embeds = model.build_inputs_embeds(ids, **kwargs)
    feats = model.extract_feature(px)
    sel = embeds[1][ids[1] == ctx]
    assert torch.equal(sel[:N_TOK], feats[1]) and torch.equal(sel[N_TOK:2 * N_TOK], feats[2])
    assert torch.equal(sel[2 * N_TOK:], feats[2][[0, 1, 2, 255]])
    out = model(input_ids=ids, **kwargs)
    assert torch.equal(out.logits, model(inputs_embeds=embeds).logits)
    masks[1, 0, 0] = True  # object 1 now selects 2 cells: one position short
    with pytest.raises(ValueError, match='sample 1: 516 <IMG_CONTEXT> positions .* 517 rows'):
        model(input_ids=ids, **kwargs)


@torch.no_grad()
def test_save_load_round_trip_identical_logits(tiny, tmp_path):
    model, tokenizer = tiny
    batch = make_batch(tokenizer, seed=1)
    ref = model(**batch).logits
    model.save_pretrained(tmp_path / 'single')
    model.save_pretrained(tmp_path / 'sharded', max_shard_size='300KB')
    index = json.loads((tmp_path / 'sharded' / 'model.safetensors.index.json').read_text())
    assert len(set(index['weight_map'].values())) > 1
    assert not (tmp_path / 'sharded' / 'model.safetensors').exists()
    for sub in ('single', 'sharded'):
        again = InternVLChat.from_pretrained(tmp_path / sub).eval()
        assert torch.equal(again(**batch).logits, ref), sub


@torch.no_grad()
def test_official_style_config_json_loads(tiny, tiny_dir, tmp_path):
    """Fields an official InternVL2.5 config.json carries that our saver does not write."""
    import shutil
    model, tokenizer = tiny
    official = tmp_path / 'official'
    shutil.copytree(tiny_dir, official)
    config = json.loads((official / 'config.json').read_text())
    config['auto_map'] = {'AutoConfig': 'configuration_internvl_chat.InternVLChatConfig',
                          'AutoModel': 'modeling_internvl_chat.InternVLChatModel'}
    config['vision_config'].update(use_flash_attn=True, architectures=['InternVisionModel'])
    config['llm_config'].update(attn_implementation='flash_attention_2',
                                _name_or_path='Qwen/Qwen2.5-0.5B-Instruct')
    config['torch_dtype'] = 'bfloat16'
    config.pop('img_context_token_id')
    (official / 'config.json').write_text(json.dumps(config))
    again = InternVLChat.from_pretrained(official).eval()
    assert again.img_context_token_id is None
    assert again.language_model.config._attn_implementation == 'sdpa'
    again.prepare_for_tokenizer(tokenizer)
    batch = make_batch(tokenizer, (1, ))
    assert torch.equal(again(**batch).logits, model(**batch).logits)


def _corrupt(tiny_dir, tmp_path, edit):
    import shutil
    bad = tmp_path / 'bad'
    shutil.copytree(tiny_dir, bad)
    state = load_file(str(bad / 'model.safetensors'))
    edit(state)
    save_file(state, str(bad / 'model.safetensors'), metadata={'format': 'pt'})
    return bad


@pytest.mark.parametrize('edit, key', [
    (lambda s: s.pop('vision_model.encoder.layers.1.ls2'), 'vision_model.encoder.layers.1.ls2'),
    (lambda s: s.update({'vision_model.encoder.post_norm.weight': torch.ones(64)}),
     'vision_model.encoder.post_norm.weight'),
    (lambda s: s.update({'mlp1.1.weight': torch.zeros(64, 128)}), 'mlp1.1.weight'),
])
def test_strict_loading_names_the_key(tiny_dir, tmp_path, edit, key):
    bad = _corrupt(tiny_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        InternVLChat.from_pretrained(bad)


@pytest.mark.parametrize('model_type, cls_name', [('llama', 'LlamaForCausalLM'),
                                                  ('phi3', 'Phi3ForCausalLM'),
                                                  ('qwen2', 'Qwen2ForCausalLM')])
def test_native_llm_families(model_type, cls_name):
    config = InternVLChatConfig(
        vision_config=dict(image_size=56, hidden_size=16, num_attention_heads=2,
                           intermediate_size=32, num_hidden_layers=1, qkv_bias=True,
                           qk_normalization=False, norm_type='layer_norm'),
        llm_config=dict(model_type=model_type, vocab_size=40, hidden_size=32,
                        intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=4, tie_word_embeddings=False, pad_token_id=0),
        img_context_token_id=5)
    model = InternVLChat(config).eval()
    assert type(model.language_model).__name__ == cls_name
    ids = torch.tensor([[1] + [5] * 4 + [2, 3]])
    out = model(input_ids=ids, pixel_values=torch.randn(1, 3, 56, 56))
    assert out.logits.shape == (1, 7, 40)


def test_internlm2_needs_remote_code(tmp_path):
    config = InternVLChatConfig(
        vision_config=dict(image_size=56, hidden_size=16, num_attention_heads=2,
                           intermediate_size=32, num_hidden_layers=1),
        llm_config=dict(architectures=['InternLM2ForCausalLM'], hidden_size=32,
                        vocab_size=40))
    assert config.llm_config.model_type == 'internlm2'
    assert config.to_dict()['llm_config']['model_type'] == 'internlm2'
    with pytest.raises(ValueError, match='trust_remote_code=True'):
        InternVLChat(config)
    config._name_or_path = str(tmp_path)
    with pytest.raises(FileNotFoundError, match='modeling_internlm2.py'):
        InternVLChat(config, llm_trust_remote_code=True)


def test_unsupported_settings_raise():
    with pytest.raises(ValueError, match='ps_version'):
        InternVLChatConfig(ps_version='v1')
    with pytest.raises(ValueError, match='not supported'):
        InternVLChatConfig(llm_config=dict(model_type='gpt2'))


@pytest.mark.parametrize('size', ['1B', '4B'])
def test_full_size_qwen_model_on_meta(size):
    manifest = json.loads((require_fixtures() / 'manifests' /
                           f'InternVL2_5-{size}.json').read_text())
    llm = dict(manifest['llm_config'])
    llm.pop('architectures')
    config = InternVLChatConfig(vision_config=manifest['vision_config'], llm_config=llm,
                                downsample_ratio=manifest['downsample_ratio'],
                                force_image_size=manifest['force_image_size'],
                                img_context_token_id=manifest['img_context_token_id'])
    with torch.device('meta'):
        model = InternVLChat(config)
    state = model.state_dict()
    vision = {k: list(v.shape) for k, v in state.items()
              if k.startswith(('vision_model.', 'mlp1.'))}
    assert vision == manifest['params']
    d, vocab = llm['hidden_size'], llm['vocab_size']
    assert state['language_model.model.embed_tokens.weight'].shape == (vocab, d)
    assert state['language_model.lm_head.weight'].shape == (vocab, d)
    assert model.language_model.lm_head.weight is not model.language_model.model.embed_tokens.weight
    assert len(model.language_model.model.layers) == llm['num_hidden_layers']
    assert model.num_image_token == manifest['num_image_token_per_tile']


def test_special_tokens_resize_once_and_lora_trains_new_rows_only(tiny_dir):
    model = InternVLChat.from_pretrained(tiny_dir)
    tokenizer = load_tokenizer(tiny_dir)
    old_vocab = len(tokenizer)
    added = add_special_tokens(tokenizer)
    new_rows = model.prepare_for_tokenizer(tokenizer)
    assert new_rows == sorted(added.values()) == list(range(old_vocab, old_vocab + 5))
    assert model.prepare_for_tokenizer(tokenizer) == []  # once
    assert model.config.llm_config.vocab_size == old_vocab + 5
    assert model.get_output_embeddings().weight.shape[0] == old_vocab + 5
    emb_before = model.get_input_embeddings().weight.detach().clone()
    model.freeze(vision=True)
    model.wrap_llm_lora(r=4, lora_alpha=8, lora_dropout=0.0, trainable_token_indices=new_rows)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith('vision_model.') for n in trainable)
    assert {n for n in trainable if n.startswith('mlp1.')} == {
        f'mlp1.{i}.{w}' for i in (0, 1, 3) for w in ('weight', 'bias')}
    lora = [n for n in trainable if 'lora_' in n]
    assert len(lora) == 2 * 7 * 2  # A and B, 7 linears, 2 layers
    deltas = [n for n in trainable if 'trainable_tokens_delta' in n]
    assert len(deltas) == 2  # embed_tokens and the untied lm_head
    assert len(trainable) == len(lora) + len(deltas) + 6
    # one optimiser step moves only the new rows of the embedding
    model.train()
    seg = added['[SEG]']
    batch = make_batch(tokenizer, (1, 1))
    batch['input_ids'][:, -3:] = seg  # [SEG] as input (embedding) and as label (lm_head)
    batch['labels'][:, -3:] = seg
    head_before = model.get_output_embeddings().weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(**batch).loss.backward()
    opt.step()
    model.merge_llm_lora()
    emb_after = model.get_input_embeddings().weight.detach()
    changed = (emb_after != emb_before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [seg]
    head_after = model.get_output_embeddings().weight.detach()
    changed = (head_after != head_before).any(dim=1).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(new_rows)
    assert not hasattr(model.language_model, 'peft_config')


@torch.no_grad()
def test_generate_from_inputs_embeds_uses_kv_cache(tiny):
    model, tokenizer = tiny
    batch = make_batch(tokenizer, (1, ))
    ids, px = batch['input_ids'], batch['pixel_values']
    eos = tokenizer.convert_tokens_to_ids('<|im_end|>')
    cached = model.generate(input_ids=ids, pixel_values=px, max_new_tokens=6, do_sample=False,
                            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    assert cached.shape == (1, 6)
    # manual greedy decoding without a cache, full forward every step
    embeds = model.build_inputs_embeds(ids, px)
    tokens = []
    for _ in range(6):
        logits = model(inputs_embeds=embeds, use_cache=False).logits[:, -1]
        nxt = logits.argmax(-1)
        tokens.append(nxt.item())
        embeds = torch.cat([embeds, model.get_input_embeddings()(nxt)[:, None]], dim=1)
    assert cached[0].tolist() == tokens
    no_cache = model.generate(input_ids=ids, pixel_values=px, max_new_tokens=6,
                              do_sample=False, use_cache=False, eos_token_id=eos,
                              pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(no_cache, cached)
    kw = dict(input_ids=ids, pixel_values=px, max_new_tokens=8, do_sample=True,
              temperature=1.5, top_k=0, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    s1 = model.generate(**kw)
    torch.manual_seed(0)
    s2 = model.generate(**kw)
    torch.manual_seed(1)
    s3 = model.generate(**kw)
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)


def test_registry_builds_from_path_and_from_config(tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    add_special_tokens(tokenizer)
    model = MODELS.build(dict(type='InternVLChat', model_path=str(tiny_dir),
                              torch_dtype='bfloat16', tokenizer=tokenizer, freeze_vision=True,
                              llm_lora=dict(r=2, lora_alpha=4, lora_dropout=0.0),
                              gradient_checkpointing=True))
    assert model.mlp1[1].weight.dtype == torch.bfloat16
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert model.vision_model.encoder.gradient_checkpointing
    assert any('trainable_tokens_delta' in n for n, p in model.named_parameters()
               if p.requires_grad)
    config = tiny_internvl_config(vocab_size=100, img_context_token_id=9).to_dict()
    a = MODELS.build(dict(type='InternVLChat', config=config, seed=5))
    b = MODELS.build(dict(type='InternVLChat', config=config, seed=5,
                          attn_implementation='eager'))
    assert torch.equal(a.mlp1[1].weight, b.mlp1[1].weight)
    assert not b.vision_model.encoder.layers[0].attn.use_sdpa
    with pytest.raises(ValueError, match='exactly one of'):
        MODELS.build(dict(type='InternVLChat'))


def test_tiny_model_is_deterministic():
    a, _ = build_tiny_internvl(seed=1)
    b, _ = build_tiny_internvl(seed=1)
    c, _ = build_tiny_internvl(seed=2)
    assert torch.equal(a.mlp1[1].weight, b.mlp1[1].weight)
    assert not torch.equal(a.mlp1[1].weight, c.mlp1[1].weight)


def test_projector_layout():
    mlp = build_mlp1(1024, 896)
    assert [type(m).__name__ for m in mlp] == ['LayerNorm', 'Linear', 'GELU', 'Linear']
    assert mlp[0].eps == 1e-5 and mlp[2].approximate == 'none'
    assert mlp[1].weight.shape == (896, 4096)


REMOTE_CONFIG = '''
from transformers import LlamaConfig


class InternLM2Config(LlamaConfig):
    model_type = 'internlm2'
'''
REMOTE_MODEL = '''
from transformers import LlamaForCausalLM

from .configuration_internlm2 import InternLM2Config


class InternLM2ForCausalLM(LlamaForCausalLM):
    """Stand-in for the checkpoint's own code (Llama layout under the internlm2 name)."""
    config_class = InternLM2Config
'''


@torch.no_grad()
def test_internlm2_code_is_read_from_the_checkpoint_directory(tmp_path, monkeypatch):
    from transformers import dynamic_module_utils
    monkeypatch.setattr(dynamic_module_utils, 'HF_MODULES_CACHE', str(tmp_path / 'modules'))
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'configuration_internlm2.py').write_text(REMOTE_CONFIG)
    (src / 'modeling_internlm2.py').write_text(REMOTE_MODEL)
    llm = dict(architectures=['InternLM2ForCausalLM'], model_type='internlm2', vocab_size=40,
               hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    config = InternVLChatConfig(
        vision_config=dict(image_size=56, hidden_size=16, num_attention_heads=2,
                           intermediate_size=32, num_hidden_layers=1),
        llm_config=llm, img_context_token_id=5)
    config._name_or_path = str(src)
    model = InternVLChat(config, llm_trust_remote_code=True).eval()
    assert type(model.language_model).__name__ == 'InternLM2ForCausalLM'
    ckpt = tmp_path / 'ckpt'
    model.save_pretrained(ckpt)
    for name in ('configuration_internlm2.py', 'modeling_internlm2.py'):
        (ckpt / name).write_text((src / name).read_text())
    assert json.loads((ckpt / 'config.json').read_text())['llm_config']['model_type'] == \
        'internlm2'
    with pytest.raises(ValueError, match='trust_remote_code=True'):
        InternVLChat.from_pretrained(ckpt)
    again = InternVLChat.from_pretrained(ckpt, trust_remote_code=True).eval()
    ids = torch.tensor([[1] + [5] * 4 + [2]])
    px = torch.randn(1, 3, 56, 56)
    assert torch.equal(again(input_ids=ids, pixel_values=px).logits,
                       model(input_ids=ids, pixel_values=px).logits)


def test_config_build_creates_parameters_in_the_target_dtype():
    """A bf16 model built from a config (the ``pretrained_hf`` path) never holds an fp32 copy:
    every parameter is created in bf16 (built in fp32 and cast, a 4B model peaked at ~16 GB)."""
    from projects.sa2va.models.internvl.build import build_internvl_chat
    from projects.sa2va.models.internvl.tiny import tiny_internvl_config

    from tests.models.build_helpers import created_parameter_dtypes
    model, seen = created_parameter_dtypes(lambda: build_internvl_chat(
        config=tiny_internvl_config(vocab_size=300).to_dict(), torch_dtype='bfloat16'))
    assert seen == {torch.bfloat16}, sorted(map(str, seen))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
