"""Sa2VA on Qwen2.5-VL / Qwen3-VL in the released Hugging Face layout
(``Sa2VAChatModelQwen``, ``HF_LAYOUTS['sa2va_qwen2_5_vl' | 'sa2va_qwen3_vl']``):
export -> import round trip of the tiny models (``configs/_base_/models/
sa2va_qwen{2_5,3}_vl_tiny.py``) with equal logits, hidden states, [SEG] prompts,
masks and greedy ids; config.json / tokenizer / key names of the export; named
errors for unknown, missing and mis-shaped keys; the transformers < 4.52 key
names of the wrapped Qwen model accepted on import. Needs the current stack."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO_ROOT

from .helpers import build, perturb_trainable

BACKBONES = ('qwen2_5_vl', 'qwen3_vl')
SAM2_TOKENS = ('[SEG]', '<p>', '</p>', '<vp>', '</vp>')


def _need(backbone):
    import transformers

    from projects.sa2va.models.qwen_vl import QWEN_VL_CLASSES
    if not hasattr(transformers, QWEN_VL_CLASSES[backbone]):
        pytest.skip(f'{QWEN_VL_CLASSES[backbone]} is not in transformers '
                    f'{transformers.__version__} (Qwen-VL needs the current stack)')


def _config(tmp_path, backbone, tokenizer_dir):
    cfg = tmp_path / f'tiny_{backbone}.py'
    base = REPO_ROOT / 'configs' / '_base_' / 'models' / f'sa2va_{backbone}_tiny.py'
    cfg.write_text(f'_base_ = [{str(base)!r}]\n'
                   f'model = dict(tokenizer={str(tokenizer_dir)!r})\n'
                   "text_settings = dict(template='qwen_chat', max_length=4096)\n"
                   # tools/export.py rebuilds the frozen (random) weights with this seed
                   'randomness = dict(seed=0)\n')
    return cfg


def _inputs(model, grid=(1, 4, 6), seed=0):
    """One prompt ``text <start> <image>*n <end> text [SEG]`` with random
    patches of a ``grid`` image (the model's own image-token ids)."""
    mllm = model.mllm
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    merge = mllm.config.vision_config.spatial_merge_size
    patch = mllm.config.vision_config.patch_size
    temporal = mllm.config.vision_config.temporal_patch_size
    n = t * h * w // merge ** 2
    words = torch.randint(30, 300, (6,), generator=g).tolist()
    ids = words[:3] + [mllm.vision_start_id] + [mllm.image_token_id] * n + \
        [mllm.vision_end_id] + words[3:] + [model.seg_token_id]
    size = model.grounding_encoder.image_size
    return dict(input_ids=torch.tensor([ids]),
                pixel_values=torch.randn(t * h * w, 3 * temporal * patch * patch, generator=g),
                image_grid_thw=torch.tensor([grid]),
                g_pixel_values=torch.randn(1, 3, size, size, generator=g))


@torch.no_grad()
def _outputs(model, x):
    out = model.mllm(input_ids=x['input_ids'], pixel_values=x['pixel_values'],
                     image_grid_thw=x['image_grid_thw'], output_hidden_states=True)
    hidden = out.hidden_states[-1]
    prompts = model.text_hidden_fcs(hidden[x['input_ids'] == model.seg_token_id])
    masks = model._language_masks(x['g_pixel_values'], prompts,
                                  torch.zeros(len(prompts), dtype=torch.long))
    gen = model.mllm.generate(input_ids=x['input_ids'], pixel_values=x['pixel_values'],
                              image_grid_thw=x['image_grid_thw'], max_new_tokens=6)
    return dict(logits=out.logits, hidden=hidden, prompts=prompts, masks=masks,
                gen_ids=gen.sequences)


@pytest.fixture(scope='module')
def qwen_tokenizer_dir(tmp_path_factory):
    """The tiny tokenizer with Qwen-VL's special tokens (no Sa2VA tokens yet)."""
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = tmp_path_factory.mktemp('qwen_tok')
    build_tiny_tokenizer(path, image_tokens='qwen_vl')
    return path


@pytest.fixture(scope='module')
def exported(tmp_path_factory, qwen_tokenizer_dir):
    """Per backbone: the config, the trained-looking model's outputs and the
    ``tools/export.py --format hf`` directory."""
    out = {}

    def make(backbone):
        if backbone in out:
            return out[backbone]
        _need(backbone)
        from tools.export import main
        tmp = tmp_path_factory.mktemp(f'hf_{backbone}')
        cfg = _config(tmp, backbone, qwen_tokenizer_dir)
        model = perturb_trainable(build(cfg))
        x = _inputs(model)
        ref = _outputs(model, x)
        ckpt = tmp / 'iter_1.pth'
        torch.save({'state_dict': model.state_dict()}, ckpt)
        hf = tmp / 'hf'
        main([str(ckpt), '--config', str(cfg), '--out', str(hf), '--format', 'hf'])
        out[backbone] = dict(cfg=cfg, ref=ref, inputs=x, dir=hf, model=model)
        return out[backbone]
    return make


@pytest.mark.parametrize('backbone', BACKBONES)
def test_export_import_round_trip(backbone, exported):
    """Export (LoRA merged) -> ``pretrained_hf`` import into the LoRA-wrapped
    training model: logits, last hidden states, [SEG] prompts, SAM2 masks
    within 1e-5 and the same greedy ids."""
    e = exported(backbone)
    back = build(e['cfg'], pretrained_hf=str(e['dir']))
    got = _outputs(back, e['inputs'])
    assert got['gen_ids'].tolist() == e['ref']['gen_ids'].tolist()
    for key in ('logits', 'hidden', 'prompts', 'masks'):
        diff = (got[key] - e['ref'][key]).abs().max()
        assert diff <= 1e-5, (key, float(diff))


@pytest.mark.parametrize('backbone', BACKBONES)
def test_export_is_the_official_qwen_layout(backbone, exported):
    """config.json as the official converter writes it; every tensor under
    one of the five official prefixes, one-to-one with the merged model;
    whole embedding / lm_head matrices of len(tokenizer) rows; the tokenizer
    with the 5 Sa2VA tokens; the processor's preprocessor_config.json."""
    from safetensors import safe_open

    from projects.sa2va.evaluation.export import merged_key
    from projects.sa2va.hf import HF_LAYOUTS
    from projects.sa2va.hf.convert import is_adapter_key
    from projects.sa2va.tokenization import load_tokenizer
    e = exported(backbone)
    cfg = json.loads((e['dir'] / 'config.json').read_text())
    assert cfg['model_type'] == 'sa2va_chat'
    assert cfg['architectures'] == ['Sa2VAChatModelQwen']
    assert cfg['auto_map']['AutoModel'] == 'modeling_sa2va_qwen.Sa2VAChatModelQwen'
    assert cfg['auto_map']['AutoConfig'] == 'configuration_sa2va_chat.Sa2VAChatConfigQwen'
    assert cfg['template'] == 'qwen_chat'
    assert cfg['tie_word_embeddings'] is False
    text = cfg['text_config']
    assert text['model_type'] == f'{backbone}_text' and text['tie_word_embeddings'] is False
    # transformers 4.57 (the official code) reads the rotary sections from here
    assert text['rope_scaling']['mrope_section'] == text['rope_parameters']['mrope_section']
    tok = load_tokenizer(str(e['dir']))
    assert text['vocab_size'] == len(tok) == len(e['model'].tokenizer)
    ids = [tok.convert_tokens_to_ids(t) for t in SAM2_TOKENS]
    assert ids == [e['model'].tokenizer.convert_tokens_to_ids(t) for t in SAM2_TOKENS]
    pre = json.loads((e['dir'] / 'preprocessor_config.json').read_text())
    assert pre['patch_size'] == cfg['vision_config']['patch_size']
    assert pre['merge_size'] == cfg['vision_config']['spatial_merge_size']

    with safe_open(str(e['dir'] / 'model.safetensors'), 'pt') as f:
        keys = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    layout = HF_LAYOUTS[f'sa2va_{backbone}']
    prefixes = [p for p, _ in layout.prefixes]
    assert all(sum(k.startswith(p) for p in prefixes) == 1 for k in keys)
    assert keys['model.model.language_model.embed_tokens.weight'][0] == len(tok)
    assert keys['model.lm_head.weight'][0] == len(tok)
    assert not any('lora' in k or 'base_layer' in k for k in keys)
    model = e['model']
    own = {merged_key(k): tuple(v.shape) for k, v in
           model.state_dict(trainable_only=False).items() if not is_adapter_key(k)}
    assert {layout.to_official(k): s for k, s in own.items()} == keys
    if backbone == 'qwen3_vl':
        assert any(k.startswith('model.model.visual.deepstack_merger_list.') for k in keys)


def _rewrite(src_dir, dst_dir, edit):
    """Copy an export, passing its tensors through ``edit(dict) -> dict``."""
    import shutil

    from safetensors.torch import load_file, save_file
    shutil.copytree(src_dir, dst_dir)
    path = dst_dir / 'model.safetensors'
    save_file(edit(load_file(str(path))), str(path), metadata={'format': 'pt'})
    return dst_dir


@pytest.mark.parametrize('backbone', BACKBONES)
def test_pre_4_52_key_names_import_the_same(backbone, exported, tmp_path):
    """A directory whose wrapped Qwen model uses the transformers < 4.52
    names (``model.visual.*``, ``model.model.layers.*``, ``model.lm_head``:
    the Qwen/Qwen2.5-VL-*-Instruct checkpoints' names under the ``model.``
    submodule) imports to the same outputs."""
    from projects.sa2va.hf.layout import HF_LAYOUTS
    e = exported(backbone)

    def legacy(state):
        out = {}
        for k, v in state.items():
            k = k.replace('model.model.visual.', 'model.visual.', 1)
            k = k.replace('model.model.language_model.', 'model.model.', 1)
            out[k] = v
        return out
    d = _rewrite(e['dir'], tmp_path / 'legacy', legacy)
    layout = HF_LAYOUTS[f'sa2va_{backbone}']
    assert layout.canonical('model.visual.blocks.0.attn.qkv.weight') == \
        'model.model.visual.blocks.0.attn.qkv.weight'
    assert layout.canonical('model.model.layers.1.mlp.up_proj.weight') == \
        'model.model.language_model.layers.1.mlp.up_proj.weight'
    assert layout.canonical('model.model.embed_tokens.weight') == \
        'model.model.language_model.embed_tokens.weight'
    assert layout.canonical('model.lm_head.weight') == 'model.lm_head.weight'
    assert layout.canonical('text_hidden_fcs.0.weight') == 'text_hidden_fcs.0.weight'
    back = build(e['cfg'], pretrained_hf=str(d))
    got = _outputs(back, e['inputs'])
    assert (got['logits'] - e['ref']['logits']).abs().max() <= 1e-5
    assert got['gen_ids'].tolist() == e['ref']['gen_ids'].tolist()


@pytest.mark.parametrize('edit,message', [
    (lambda s: {**s, 'model.model.visual.extra.weight': torch.zeros(2)},
     'keys in the files the model has no place for'),
    (lambda s: {k: v for k, v in s.items() if k != 'model.model.language_model.norm.weight'},
     'official keys missing from the files'),
    (lambda s: {**s, 'text_hidden_fcs.0.bias': torch.zeros(3)}, 'shape mismatches'),
    (lambda s: {**s, 'model.model.language_model.norm.weight':
                s['model.model.language_model.norm.weight'],
                'model.model.norm.weight': s['model.model.language_model.norm.weight'].clone()},
     'under two names'),
])
def test_layout_errors_name_the_key(edit, message, exported, tmp_path):
    e = exported('qwen2_5_vl')
    d = _rewrite(e['dir'], tmp_path / 'bad', edit)
    with pytest.raises(ValueError, match=message) as err:
        build(e['cfg'], pretrained_hf=str(d))
    named = {'keys in the files': 'model.model.visual.extra.weight',
             'official keys missing': 'model.model.language_model.norm.weight',
             'shape mismatches': 'text_hidden_fcs.0.bias',
             'under two names': 'model.model.norm.weight'}
    assert any(v in str(err.value) for k, v in named.items() if message.startswith(k))


def test_config_json_picks_the_backbone_layout(exported, tmp_path):
    """Both Qwen layouts share model_type / architectures: text_config.model_type
    decides; an unknown one is named."""
    from projects.sa2va.hf.layout import layout_of
    cfg = json.loads((exported('qwen2_5_vl')['dir'] / 'config.json').read_text())
    assert layout_of(cfg).name == 'sa2va_qwen2_5_vl'
    assert layout_of(dict(cfg, text_config=dict(cfg['text_config'],
                                                model_type='qwen3_vl_text'))).backbone == \
        'qwen3_vl'
    with pytest.raises(ValueError, match='qwen2_vl_text'):
        layout_of(dict(cfg, text_config=dict(cfg['text_config'], model_type='qwen2_vl_text')))


RECIPES = {'Sa2VA-Qwen2_5-VL-3B': 'sa2va_qwen2_5_vl_3b.py',
           'Sa2VA-Qwen2_5-VL-7B': 'sa2va_qwen2_5_vl_7b.py',
           'Sa2VA-Qwen3-VL-2B': 'sa2va_qwen3_vl_2b.py',
           'Sa2VA-Qwen3-VL-4B': 'sa2va_qwen3_vl_4b.py'}


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_released_manifest_maps_to_the_recipe_model(name, tmp_path):
    """Every key of the Sa2VA-Qwen manifest (tests/manifests/sa2va_qwen, derived from the
    public configs by make_sa2va_qwen_manifests.py) maps to exactly one key of the recipe's
    full-size training model (LoRA r 128 on, built on the meta device from the released
    config.json fields through the import path), with the same shape, and back. The
    tokenizer is the real Qwen2 vocabulary with the base checkpoint's added tokens
    (151,665 / 151,669), so the embedding rows come from the official resize rule."""
    from mmengine.config import Config

    from tests.qwen_vocab import QWEN2_5_ADDED_TOKENS, QWEN3_ADDED_TOKENS, real_qwen_tokenizer

    from projects.sa2va.hf import HF_LAYOUTS
    from projects.sa2va.hf.layout import layout_of
    from projects.sa2va.hf.qwen_vl import qwen_vl_config_from_hf

    from .helpers import assert_manifest_maps
    released = json.loads((REPO_ROOT / 'tests' / 'manifests' / 'sa2va_qwen'
                           / f'{name}.json').read_text())
    _need(released['backbone'])
    layout = layout_of(released['config'])
    assert layout is HF_LAYOUTS[f'sa2va_{released["backbone"]}']
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / RECIPES[name]))
    assert cfg.model.mllm.llm_lora.r == 128
    assert cfg.qwen_vl_text_settings.template == released['config']['template']
    added = QWEN3_ADDED_TOKENS if released['backbone'] == 'qwen3_vl' else QWEN2_5_ADDED_TOKENS
    real_qwen_tokenizer(added, eos_token='<|im_end|>').save_pretrained(tmp_path)
    model_cfg = dict(cfg.model.to_dict(), tokenizer=str(tmp_path), pretrained_pth=None)
    model_cfg['mllm'] = dict(model_cfg['mllm'], torch_dtype=None, gradient_checkpointing=False,
                             config=qwen_vl_config_from_hf(released['config'], layout.backbone))
    del model_cfg['mllm']['model_path']
    model_cfg['grounding_encoder'] = dict(model_cfg['grounding_encoder'], checkpoint=None)
    model = assert_manifest_maps(released, model_cfg, layout)
    assert model.mllm.get_input_embeddings().weight.shape[0] == released['vocab_size']


@pytest.mark.parametrize('backbone', BACKBONES)
def test_exported_directory_predicts_as_the_training_model(backbone, exported):
    """``Sa2VAPredictor.from_hf`` on the export answers (greedy ids, [SEG] mask logits) as
    ``from_config`` on the training checkpoint does, for a segmentation question and a
    region prompt (the Qwen-VL image steps, merged-grid pooling, qwen_vl image tokens)."""
    from PIL import Image

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    e = exported(backbone)
    g = torch.Generator().manual_seed(5)
    image = Image.fromarray(torch.randint(0, 256, (70, 90, 3), generator=g,
                                          dtype=torch.uint8).numpy())
    region = torch.zeros(1, 70, 90, dtype=torch.uint8)
    region[0, 10:50, 20:70] = 1
    trained = Sa2VAPredictor.from_config(str(e['cfg']), str(e['dir'].parent / 'iter_1.pth'))
    hf = Sa2VAPredictor.from_hf(str(e['dir']), config=str(e['cfg']))
    assert hf.settings['template'] == 'qwen_chat'
    a, b = (p.segment(image, 'Please segment the ball.', max_new_tokens=8)
            for p in (trained, hf))
    assert a['sequences'].tolist() == b['sequences'].tolist() and a['text'] == b['text']
    # (k, h, w): k = the [SEG]s generated (maybe none)
    assert a['logits'].shape == b['logits'].shape
    assert torch.allclose(a['logits'], b['logits'], atol=1e-4)
    batch = hf._image_inputs(image, 'Please segment the ball.')
    ids, mllm = batch['input_ids'][0].tolist(), hf.model.mllm
    n = int(batch['image_grid_thw'].prod()) // 4   # 2 x 2 merge
    start = ids.index(mllm.vision_start_id)
    assert ids[start + 1:start + 2 + n] == [mllm.image_token_id] * n + [mllm.vision_end_id]
    assert trained.describe(image, region, max_new_tokens=8) == \
        hf.describe(image, region, max_new_tokens=8)


def test_predict_cli_reads_an_exported_qwen_directory(exported, tmp_path):
    """``tools/predict.py --hf-dir DIR`` (no config: SAM2 from the export's record) answers an
    image question and a video question as the training checkpoint does."""
    from PIL import Image

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    from tools.predict import main
    e = exported('qwen3_vl')
    g = torch.Generator().manual_seed(6)
    frames = tmp_path / 'frames'
    frames.mkdir()
    for t in range(3):
        Image.fromarray(torch.randint(0, 256, (60, 80, 3), generator=g,
                                      dtype=torch.uint8).numpy()).save(frames / f'{t:05d}.jpg')
    trained = Sa2VAPredictor.from_config(str(e['cfg']), str(e['dir'].parent / 'iter_1.pth'))
    image = frames / '00000.jpg'
    got = main(['--hf-dir', str(e['dir']), '--image', str(image), '--text', 'Segment it.',
                '--out', str(tmp_path / 'img'), '--max-new-tokens', '6'])
    assert got['answer'] == trained.segment(Image.open(image), 'Segment it.',
                                            max_new_tokens=6)['text']
    got = main(['--hf-dir', str(e['dir']), '--video', str(frames), '--text', 'Segment it.',
                '--out', str(tmp_path / 'vid'), '--max-new-tokens', '6'])
    from projects.sa2va.evaluation.predictor import load_frames
    assert got['answer'] == trained.segment_video(load_frames(str(frames)), 'Segment it.',
                                                  max_new_tokens=6)['text']


def test_import_hf_cli_gives_a_training_checkpoint(exported, tmp_path):
    """``tools/export.py --import-hf DIR --config CFG`` -> a full checkpoint (meta names the
    Qwen layout) that ``model.pretrained_pth`` loads into the LoRA-wrapped training model with
    the export's outputs; a directory of the other backbone is refused naming both layouts."""
    from tools.export import main
    e = exported('qwen2_5_vl')
    out = tmp_path / 'imported.pth'
    main(['--import-hf', str(e['dir']), '--config', str(e['cfg']), '--out', str(out)])
    meta = torch.load(out, weights_only=True)['meta']
    assert meta['hf_layout'] == 'sa2va_qwen2_5_vl' and meta['hf_template'] == 'qwen_chat'
    back = build(e['cfg'], pretrained_pth=str(out))
    got = _outputs(back, e['inputs'])
    assert (got['logits'] - e['ref']['logits']).abs().max() <= 1e-5
    assert got['gen_ids'].tolist() == e['ref']['gen_ids'].tolist()
    with pytest.raises(ValueError, match='is a sa2va_qwen3_vl directory but the model is '
                                         'built for sa2va_qwen2_5_vl'):
        main(['--import-hf', str(exported('qwen3_vl')['dir']), '--config', str(e['cfg']),
              '--out', str(tmp_path / 'wrong.pth')])


def test_a_qwen_vl_training_checkpoint_loads_every_key(exported):
    """``load_pretrained`` keeps the keys the model has: QwenVLChat's own ``mllm.model.*``
    keys are not rewritten by the Sa2VA v1 rule ``mllm.model. -> mllm.`` (they were, and
    every Qwen-VL checkpoint was refused as unknown keys)."""
    e = exported('qwen2_5_vl')
    model = e['model']
    loaded = model.load_pretrained(str(e['dir'].parent / 'iter_1.pth'))
    assert loaded == sorted(model.state_dict())
    assert any(k.startswith('mllm.model.base_model.model.model.language_model.') for k in loaded)


def test_padded_vocabulary_exports_the_tokenizer_rows(qwen_tokenizer_dir, tmp_path):
    """A base checkpoint with padded rows (Qwen2.5-VL: 151936 for 151,665 + 5 tokens) is
    resized to ``len(tokenizer)`` as the official Sa2VA-Qwen code does, so the export holds
    exactly the released row count (``text_config.vocab_size = len(tokenizer)``) and imports
    back equal."""
    _need('qwen3_vl')
    from projects.sa2va.hf import export_hf
    cfg = _config(tmp_path, 'qwen3_vl', qwen_tokenizer_dir)
    cfg.write_text(cfg.read_text() + 'model.update(mllm=dict(config=dict(text_config=dict('
                   'vocab_size=1100))))\n')
    model = perturb_trainable(build(cfg))
    n = len(model.tokenizer)
    assert n < 1100
    assert model.mllm.get_input_embeddings().weight.shape[0] == n
    assert model.mllm.get_output_embeddings().weight.shape[0] == n
    x = _inputs(model)
    ref = _outputs(model, x)
    export_hf(model, str(tmp_path / 'hf'), 'qwen_chat', sam2_config=None)
    written = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    assert written['text_config']['vocab_size'] == n
    got = _outputs(build(cfg, pretrained_hf=str(tmp_path / 'hf')), x)
    assert (got['logits'] - ref['logits']).abs().max() <= 1e-5
    assert got['gen_ids'].tolist() == ref['gen_ids'].tolist()
