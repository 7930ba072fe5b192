"""The full-size Sa2VA-Qwen recipes: ``configs/sa2va_qwen2_5_vl_{3b,7b}.py`` and
``configs/sa2va_qwen3_vl_{2b,4b}.py`` (values of bytedance/Sa2VA's
``sa2va_qwenvl25/sa2va_qwen25_{3b,7b}.py`` and ``sa2va_qwenvl3/sa2va_qwen3_4b.py``).

* every recipe value, the Qwen3-VL ones equal to their model base;
* the training model, built weightless on the meta device from a local directory holding
  the released ``config.json`` values (``tests/manifests/qwen_vl_public_configs.py``),
  trains exactly the intended set: LoRA r 128 on the 7 linears of every text decoder
  layer, the whole embedding and lm_head (two matrices, also where the checkpoint ties
  them: peft's ``modules_to_save`` trains a copy of each), ``text_hidden_fcs``, the
  SAM2 mask decoder without its unreachable heads; the vision tower and its merger(s)
  frozen (needs transformers >= 4.57: skipped on the legacy stack);
* the LR the real runner applies from iteration 0 is the 4e-5 schedule;
* after the mix's ``pipeline_swaps`` every dataset of the six families runs the Qwen-VL
  steps with the official pixel budgets and the Qwen text settings, and no InternVL
  image step is left.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]

# name -> (checkpoint directory, backbone, batch per GPU); accumulate 8 everywhere
RECIPES = {
    'sa2va_qwen2_5_vl_3b': ('Qwen2.5-VL-3B-Instruct', 'qwen2_5_vl', 2),
    'sa2va_qwen2_5_vl_7b': ('Qwen2.5-VL-7B-Instruct', 'qwen2_5_vl', 1),
    'sa2va_qwen3_vl_2b': ('Qwen3-VL-2B-Instruct', 'qwen3_vl', 1),
    'sa2va_qwen3_vl_4b': ('Qwen3-VL-4B-Instruct', 'qwen3_vl', 1),
}
IMAGE_PIXELS = (512 * 28 * 28, 2048 * 28 * 28)   # datasets/base.py, *_pixels_single
FRAME_PIXELS = (128 * 28 * 28, 512 * 28 * 28)    # datasets/base.py, *_pixels_multi
VIDEO_DATASETS = ('revos', 'mevis', 'ref_ytvos', 'sav_pseudo', 'chat_univi')
LORA_MODULES = ('self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj',
                'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj')


def _has_qwen_vl() -> bool:
    import transformers
    return hasattr(transformers, 'Qwen3VLForConditionalGeneration')


needs_qwen_vl = pytest.mark.skipif(
    not _has_qwen_vl(), reason='Qwen2.5-VL / Qwen3-VL need transformers >= 4.57 '
                               '(.venv-current)')


def _cfg(name):
    return Config.fromfile(str(REPO / 'configs' / f'{name}.py'))


@pytest.mark.parametrize('name', ['sa2va_qwen2_5_vl_3b', 'sa2va_qwen3_vl_4b'])
def test_recipe_dumps_and_reloads(name, tmp_path):
    """The runner writes the config to the work dir: the dump (the swap table comes from an
    imported helper; 7B and 2B only change values of these two) loads back to the same model
    and data settings."""
    cfg = _cfg(name)
    cfg.dump(str(tmp_path / 'dumped.py'))
    back = Config.fromfile(str(tmp_path / 'dumped.py'))
    assert back.model == cfg.model and back.train_dataloader == cfg.train_dataloader


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipe_values(name):
    folder, backbone, batch = RECIPES[name]
    path = f'./pretrained/{folder}'
    cfg = _cfg(name)
    mllm = cfg.model.mllm
    assert mllm.type == 'QwenVLChat' and mllm.model_path == path
    assert mllm.torch_dtype == 'bfloat16' and mllm.gradient_checkpointing is True
    # freeze_llm / freeze_visual_encoder (merger included), LoRA on the text decoder
    assert (mllm.freeze_vision, mllm.freeze_mlp1, mllm.freeze_llm) == (True, True, True)
    assert mllm.llm_lora == dict(r=128, lora_alpha=256, lora_dropout=0.05)
    assert cfg.model.tokenizer is None              # the checkpoint's tokenizer
    assert cfg.model.train_embeddings == 'all'      # modules_to_save embed_tokens, lm_head
    assert cfg.model.fix_objects == 5               # check_obj_number(fix_number=5)
    assert cfg.model.grounding_encoder.config == 'sam2_hiera_l'
    assert cfg.model.data_preprocessor == dict(type='Sa2VADataPreprocessor', dtype='bfloat16',
                                               sam2_dtype='float32', qwen_vl_stats=backbone)
    opt = cfg.optim_wrapper
    assert (opt.type, opt.dtype, opt.accumulative_counts) == ('AmpOptimWrapper', 'bfloat16', 8)
    assert opt.optimizer == dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05)
    assert opt.clip_grad.max_norm == 1.0
    assert [s.type for s in cfg.param_scheduler] == ['WarmupDecayLR']
    assert cfg.param_scheduler[0].warmup_ratio == 0.05
    assert cfg.param_scheduler[0].start_factor == 1e-5 and cfg.param_scheduler[0].eta_min == 0
    assert cfg.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=1)
    loader = cfg.train_dataloader
    assert loader.batch_size == batch and loader.sampler.per_device_batch_size == batch * 8
    assert loader.collate_fn == dict(type='sa2va.sa2va_qwen_vl_collate_fn', pad_index=151643)
    assert cfg.default_hooks.checkpoint.interval == 2000
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 2
    text = dict(tokenizer=path, template='qwen_chat', max_length=8192, image_tokens='qwen_vl')
    mix = loader.dataset
    for step in ('EncodeConversation', 'EncodeLLaVAConversation'):
        assert mix.pipeline_overrides[step] == text
    # the Sa2VA mix (all six families), not the official list without visual prompts
    assert mix.datasets == _cfg('sa2va_4b').train_dataloader.dataset.datasets
    assert cfg.qwen_vl_backbone == backbone
    assert cfg.qwen_vl_pipeline_swaps == mix.pipeline_swaps


@pytest.mark.parametrize('name', ['sa2va_qwen3_vl_2b', 'sa2va_qwen3_vl_4b'])
def test_qwen3_recipes_equal_their_model_base(name):
    """The Qwen3-VL recipes inherit the Qwen2.5-VL-3B one; what they change makes them
    the Qwen3-VL model base (model, image steps), so the two cannot drift apart."""
    base = Config.fromfile(str(REPO / 'configs/_base_/models/sa2va_qwen3_vl.py'))
    cfg = _cfg(name)
    folder = RECIPES[name][0]
    want = dict(base.model.to_dict(), train_embeddings='all', fix_objects=5)
    want['mllm'] = dict(want['mllm'], model_path=f'./pretrained/{folder}')
    assert cfg.model.to_dict() == want
    assert cfg.qwen_vl_pipeline_swaps == base.qwen_vl_pipeline_swaps
    assert cfg.train_dataloader.dataset.pipeline_swaps == base.qwen_vl_pipeline_swaps


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_missing_checkpoint_names_its_download(name, tmp_path, monkeypatch):
    """Building a recipe's model where ./pretrained/ lacks the checkpoint stops with the
    command that fetches it (before anything is built)."""
    from mmengine.registry import DefaultScope, MODELS
    cfg = _cfg(name)
    path = cfg.model.mllm.model_path
    hub = path.rsplit('/', 1)[1]
    monkeypatch.chdir(tmp_path)
    with DefaultScope.overwrite_default_scope('sa2va'), pytest.raises(
            FileNotFoundError, match=re.escape(
                f'huggingface-cli download Qwen/{hub} --local-dir {path}')):
        MODELS.build(cfg.model)


# ------------------------------------------------------------------ model on meta
@pytest.fixture(scope='module')
def real_tokenizers(tmp_path_factory):
    """The Qwen2.5-VL and Qwen3-VL tokenizers at their real length (Qwen2's BPE + the added
    tokens at their official ids: 151,665 / 151,669 entries), saved once per module; the
    model adds the 5 Sa2VA tokens and resizes to that length (skips without dashscope's
    vocabulary file)."""
    from tests.qwen_vocab import QWEN2_5_ADDED_TOKENS, QWEN3_ADDED_TOKENS, real_qwen_tokenizer
    out = {}
    for backbone, added in (('qwen2_5_vl', QWEN2_5_ADDED_TOKENS),
                            ('qwen3_vl', QWEN3_ADDED_TOKENS)):
        out[backbone] = tmp_path_factory.mktemp(backbone)
        real_qwen_tokenizer(added, eos_token='<|im_end|>').save_pretrained(out[backbone])
    return out


def _build_on_meta(name, tmp_path, tokenizer_dir):
    """The recipe's training model, weightless, its MLLM from a local directory with the
    released config.json (no hub, no weights) and the real-length tokenizer."""
    from mmengine.registry import DefaultScope, MODELS
    from transformers import AutoConfig

    from tests.manifests.qwen_vl_public_configs import write_config_dir

    folder = RECIPES[name][0]
    ckpt = write_config_dir(folder, tmp_path / folder)
    model_cfg = _cfg(name).model.to_dict()
    mllm = model_cfg['mllm']
    assert mllm.pop('model_path') == f'./pretrained/{folder}'
    mllm['config'] = AutoConfig.from_pretrained(str(ckpt)).to_dict()
    model_cfg.update(tokenizer=str(tokenizer_dir), pretrained_pth=None)
    model_cfg['grounding_encoder'] = dict(model_cfg['grounding_encoder'], checkpoint=None)
    with torch.device('meta'), DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(model_cfg), AutoConfig.from_pretrained(str(ckpt))


def _lora_shapes(text) -> dict:
    """(in, out) of the 7 LoRA targets of one text decoder layer, from config.json."""
    d, hd = text.hidden_size, getattr(text, 'head_dim', None) or \
        text.hidden_size // text.num_attention_heads
    q, kv, inter = text.num_attention_heads * hd, text.num_key_value_heads * hd, \
        text.intermediate_size
    return dict(zip(LORA_MODULES, [(d, q), (d, kv), (d, kv), (q, d), (d, inter), (d, inter),
                                   (inter, d)]))


@needs_qwen_vl
@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipe_model_trains_exactly_the_intended_set(name, tmp_path, real_tokenizers):
    backbone = RECIPES[name][1]
    model, released = _build_on_meta(name, tmp_path, real_tokenizers[backbone])
    text = released.get_text_config()
    hf = model.mllm.hf_model
    assert type(hf).__name__ == released.architectures[0]
    # the official resize to len(tokenizer): the checkpoint's padded rows are dropped
    vocab = {'qwen2_5_vl': 151665, 'qwen3_vl': 151669}[backbone] + 5
    assert text.vocab_size > vocab and len(model.tokenizer) == vocab
    assert hf.config.get_text_config().vocab_size == vocab
    assert all(p.dtype == torch.bfloat16 for p in hf.model.visual.parameters())
    assert any(getattr(m, 'gradient_checkpointing', False) for m in hf.modules())
    trainable = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}

    lm = 'mllm.model.base_model.model.'
    want = {}
    for layer in range(text.num_hidden_layers):
        for module, (fan_in, fan_out) in _lora_shapes(text).items():
            stem = f'{lm}model.language_model.layers.{layer}.{module}.lora_'
            want[stem + 'A.default.weight'] = (128, fan_in)
            want[stem + 'B.default.weight'] = (fan_out, 128)
    d = text.hidden_size
    want[f'{lm}model.language_model.embed_tokens.weight'] = (vocab, d)
    # modules_to_save trains a copy of each: a tied lm_head (3B, 2B, 4B) is untied
    want[f'{lm}lm_head.weight'] = (vocab, d)
    assert hf.lm_head.weight is not hf.get_input_embeddings().weight
    assert released.tie_word_embeddings is (name != 'sa2va_qwen2_5_vl_7b')
    assert hf.config.tie_word_embeddings is False
    assert getattr(hf.config.get_text_config(), 'tie_word_embeddings', False) is False
    want.update({'text_hidden_fcs.0.weight': (d, d), 'text_hidden_fcs.0.bias': (d, ),
                 'text_hidden_fcs.2.weight': (256, d), 'text_hidden_fcs.2.bias': (256, )})
    decoder = {n: tuple(p.shape) for n, p in model.named_parameters()
               if n.startswith('grounding_encoder.sam_mask_decoder.')
               and not re.search(r'iou_prediction_head|pred_obj_score_head', n)}
    assert len(decoder) > 0
    want.update(decoder)
    assert trainable == want
    # nothing of the vision side, the merger(s) included, nor any norm of the LLM
    assert not any('.visual.' in n or 'norm' in n for n in trainable if n.startswith('mllm.'))
    # the counts docs/models.md states for this recipe
    numel = {n: p.numel() for n, p in model.named_parameters()}
    parts = [sum(numel.values()), sum(numel[n] for n in trainable)] + [
        sum(numel[n] for n in trainable if key(n)) for key in (
            lambda n: '.lora_' in n,
            lambda n: n.endswith(('embed_tokens.weight', 'lm_head.weight')),
            lambda n: n.startswith('text_hidden_fcs.'), lambda n: n.startswith('grounding_'))]
    assert sum(parts[2:]) == parts[1]
    row = '| `%s` | ' % name + ' | '.join(f'{v:,}' for v in parts) + ' |'
    assert row in (REPO / 'docs' / 'models.md').read_text(), row


# ------------------------------------------------------------------ LR, real runner
@pytest.mark.parametrize('name', sorted(RECIPES))
def test_lr_through_the_runner_is_the_4e5_schedule(name, tmp_path):
    """WarmupDecayLR stepped by Sa2VARunner over 40 iterations (one epoch of 40
    one-item batches): warm-up over iterations 0-1 from 4e-5 x 1e-5 (4e-5 at iteration 1,
    as mmengine's LinearLR), then the cosine from 4e-5 at iteration 2 towards 0 over 38."""
    import math

    from tests.tools.test_schedules import expected_lrs, run_schedule
    cfg = _cfg(name)
    lrs, base = run_schedule(cfg, tmp_path, 40, dict(cfg.train_cfg))
    assert base == 4e-5 and len(lrs) == 40
    assert lrs == pytest.approx(expected_lrs(cfg, 40), rel=1e-6, abs=1e-12)
    assert lrs[0] == pytest.approx(4e-10)
    assert lrs[1] == lrs[2] == pytest.approx(4e-5)
    assert lrs[20] == pytest.approx(4e-5 * 0.5 * (1 + math.cos(math.pi * 18 / 38)))
    assert lrs[-1] == pytest.approx(4e-5 * 0.5 * (1 + math.cos(math.pi * 37 / 38)))


# ------------------------------------------------------------------ data pipelines
def _leaves(mix: dict, swaps: bool = True) -> list:
    """Every dataset config of a mix as the mix builds it (nested mixes flattened)."""
    from projects.sa2va.datasets.mixing import child_configs
    out = []
    children = child_configs(
        mix['datasets'], mix.get('pipeline_defaults'), mix.get('pipeline_overrides'),
        mix.get('data_root_prefix'), mix.get('dataset_pipeline_overrides'),
        mix.get('pipeline_swaps') if swaps else None)
    for child, _ in children:
        out += _leaves(child, swaps) if 'datasets' in child else [child]
    return out


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_every_dataset_runs_the_qwen_steps_after_the_swap(name):
    import projects.sa2va.transforms  # noqa: F401  (registers the Qwen-VL steps)
    from projects.sa2va.datasets.mixing import _step_name
    cfg = _cfg(name)
    backbone, path = RECIPES[name][1], cfg.model.mllm.model_path
    mix = cfg.train_dataloader.dataset.to_dict()
    swapped, original = _leaves(mix), _leaves(mix, swaps=False)
    assert len(swapped) == len(original) >= 21
    image = dict(backbone=backbone, min_pixels=IMAGE_PIXELS[0], max_pixels=IMAGE_PIXELS[1],
                 as_uint8=True)
    seen = set()
    for new, old in zip(swapped, original):
        names = [_step_name(s) for s in new['pipeline']]
        where = new.get('dataset_name') or new['type']
        assert not {'DynamicTiles', 'ImagesToTensor', 'PoolPromptMasks',
                    'MaskCaptionOutputs'} & set(names), (where, names)
        # step for step: each InternVL image step became its Qwen-VL one
        want = []
        for step in old['pipeline']:
            kind = _step_name(step)
            if kind == 'DynamicTiles':
                continue
            if kind == 'ImagesToTensor' and step.get('key', 'tiles') == 'frames':
                want.append(('QwenVLVideoInput', dict(
                    backbone=backbone, video_mode='frames', key='frames', as_uint8=True,
                    min_pixels=FRAME_PIXELS[0], max_pixels=FRAME_PIXELS[1])))
            elif kind == 'ImagesToTensor':
                want.append(('QwenVLImageInput', dict(image, **{
                    k: v for k, v in step.items() if k == 'key'})))
            elif kind == 'PoolPromptMasks':
                want.append(('QwenVLPoolPromptMasks', dict(backbone=backbone, **{
                    k: v for k, v in step.items()
                    if k in ('mode', 'ensure_nonempty', 'min_cells', 'keep_gt')})))
            elif kind == 'MaskCaptionOutputs':
                want.append(('QwenVLMaskCaptionOutputs', dict(image, **{
                    k: v for k, v in step.items()
                    if k in ('prompt_mode', 'ensure_nonempty', 'sam2_size')})))
            else:
                want.append((kind, None))
        assert names == [k for k, _ in want], where
        for step, (kind, args) in zip(new['pipeline'], want):
            if args is not None:
                seen.add(kind)
                assert {k: v for k, v in step.items() if k != 'type'} == args, (where, kind)
            if kind in ('EncodeConversation', 'EncodeLLaVAConversation'):
                assert (step['template'], step['image_tokens'], step['max_length'],
                        step['tokenizer']) == ('qwen_chat', 'qwen_vl', 8192, path), where
    # images, video frames, visual prompts and mask <-> caption all occur in the mix
    assert seen == {'QwenVLImageInput', 'QwenVLVideoInput', 'QwenVLPoolPromptMasks',
                    'QwenVLMaskCaptionOutputs'}


@needs_qwen_vl
def test_whole_embeddings_untie_a_tied_lm_head(tmp_path):
    """train_embeddings='all' on a tied checkpoint: the lm_head becomes its own trainable
    matrix with the shared values (the official modules_to_save copies), and one optimiser
    step moves the two apart; the config no longer ties them."""
    from mmengine.registry import DefaultScope, MODELS

    from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config
    from projects.sa2va.tokenization import build_tiny_tokenizer
    tok = tmp_path / 'tokenizer'
    build_tiny_tokenizer(str(tok), image_tokens='qwen_vl')
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models/sa2va_qwen2_5_vl_tiny.py'))
    config = tiny_qwen_vl_config('qwen2_5_vl', vocab_size=1024)
    config['tie_word_embeddings'] = config['text_config']['tie_word_embeddings'] = True
    model_cfg = dict(cfg.model.to_dict(), tokenizer=str(tok), train_embeddings='all')
    model_cfg['mllm'] = dict(model_cfg['mllm'], config=config)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(model_cfg)
    emb, out = model.mllm.get_input_embeddings().weight, model.mllm.get_output_embeddings().weight
    assert out is not emb and emb.requires_grad and out.requires_grad
    assert torch.equal(out, emb)
    assert model.mllm.config.get_text_config().tie_word_embeddings is False
    ids = torch.tensor([[5, 6, 7, 8]])
    model.mllm.model(input_ids=ids).logits[0, -1, 3].backward()
    torch.optim.SGD([emb, out], lr=1.0).step()
    assert not torch.equal(out, emb)


def _sample_leaves(mix, cwd, tok, monkeypatch, **defaults):
    """A recipe's own mix (a dataset config dict: swaps, budgets, text settings) built on the
    generated sample tree with the tiny Qwen-VL tokenizer ``tok`` (``defaults``: extra
    pipeline_defaults)."""
    from mmengine.registry import init_default_scope

    import projects.sa2va.transforms  # noqa: F401
    from projects.sa2va.datasets.check import build_leaves
    from projects.sa2va.tokenization import build_tiny_tokenizer
    build_tiny_tokenizer(str(tok), image_tokens='qwen_vl')
    mix = copy.deepcopy(mix)
    mix['data_root_prefix'] = ('./data/', 'data/sample/',
                               [d['dataset_name'] for d in mix['datasets']])
    mix['pipeline_defaults'] = dict(mix.get('pipeline_defaults') or {}, **defaults)
    for step in ('EncodeConversation', 'EncodeLLaVAConversation'):
        mix['pipeline_overrides'][step]['tokenizer'] = str(tok)
    init_default_scope('sa2va')
    monkeypatch.chdir(cwd)
    leaves = build_leaves(mix)
    assert [leaf.error for leaf in leaves if leaf.error] == [] and len(leaves) == 21
    return leaves


@pytest.mark.parametrize('name,patch', [('sa2va_qwen2_5_vl_3b', 14), ('sa2va_qwen3_vl_4b', 16)])
def test_recipe_pipelines_on_the_sample_data(name, patch, sample_cwd, tmp_path, monkeypatch):
    """The recipe's own mix (swaps, budgets, text settings) on the generated sample tree with
    the tiny Qwen-VL tokenizer: one sample of each of the 21 datasets has every picture's area
    inside the official budget (images 512..2048 x 28^2 px, video frames 128..512 x 28^2), as
    many <|image_pad|> ids as merged tokens plus visual-prompt cells, and the Qwen collate
    batches all 21."""
    from projects.sa2va.datasets.collate_qwen_vl import sa2va_qwen_vl_collate_fn
    from projects.sa2va.transforms.formatting import build_tokenizer
    tok = tmp_path / 'tokenizer_qwen_vl'
    leaves = _sample_leaves(_cfg(name).train_dataloader.dataset.to_dict(), sample_cwd, tok,
                            monkeypatch)
    image_pad = build_tokenizer(str(tok)).convert_tokens_to_ids('<|image_pad|>')
    items = []
    for leaf in leaves:
        item = leaf.dataset[0]
        thw = item['image_grid_thw']
        lo, hi = FRAME_PIXELS if leaf.name in VIDEO_DATASETS else IMAGE_PIXELS
        area = thw[:, 1] * thw[:, 2] * patch * patch
        assert bool(((area >= lo) & (area <= hi)).all()), (leaf.name, thw)
        assert len(thw) == (5 if leaf.name in VIDEO_DATASETS else 1), leaf.name
        assert item['pixel_values'].shape == (int(thw.prod(1).sum()), 3 * 2 * patch * patch)
        assert item['pixel_values'].dtype == torch.uint8   # normalised by the preprocessor
        cells = sum(int(m.sum()) for m in item.get('prompt_masks', []))
        assert (cells > 0) is (leaf.name.startswith(('osprey', 'describe', 'mc_sa2va_refcoco'))), \
            leaf.name
        n_pad = int((torch.as_tensor(item['input_ids']) == image_pad).sum())
        assert n_pad == int((thw[:, 1] * thw[:, 2]).sum()) // 4 + cells, leaf.name
        items.append(item)
    batch = sa2va_qwen_vl_collate_fn(items, pad_index=0)
    assert batch['image_grid_thw'].shape == (5 * len(VIDEO_DATASETS) + 21 - len(VIDEO_DATASETS), 3)
    assert batch['pixel_values'].shape[0] == int(batch['image_grid_thw'].prod(1).sum())


@needs_qwen_vl
@pytest.mark.parametrize('name,backbone', [('sa2va_qwen2_5_vl_3b', 'qwen2_5_vl'),
                                           ('sa2va_qwen3_vl_4b', 'qwen3_vl')])
def test_recipe_settings_train_on_the_mix(name, backbone, sample_cwd, tmp_path, monkeypatch):
    """The recipe's model settings (frozen LLM + LoRA r 128, frozen vision and mergers,
    whole and untied embedding / lm_head, gradient checkpointing, 5 objects) on a tiny tied
    Qwen-VL and the tiny SAM2, fed the recipe's own pipelines (one sample of each of the 21
    datasets built, one of each family batched, SAM2 frames at the tiny size): the losses are
    finite and the gradients reach exactly the trainable parameters."""
    from mmengine.registry import DefaultScope, MODELS

    from projects.sa2va.datasets.collate_qwen_vl import sa2va_qwen_vl_collate_fn
    from projects.sa2va.models.qwen_vl import tiny_qwen_vl_config
    tok = tmp_path / 'tokenizer_qwen_vl'
    leaves = _sample_leaves(_cfg(name).train_dataloader.dataset.to_dict(), sample_cwd, tok,
                            monkeypatch, SAM2Input=dict(size=256),
                            QwenVLMaskCaptionOutputs=dict(sam2_size=256))
    family = ('refcoco', 'llava', 'revos', 'gcg_refcocog', 'osprey_conversation',
              'mc_sa2va_refcoco_describe')       # one dataset of each family
    batch = sa2va_qwen_vl_collate_fn([leaf.dataset[0] for leaf in leaves
                                      if leaf.name in family], pad_index=0)
    assert len(batch['input_ids']) == len(family)
    tiny = Config.fromfile(str(REPO / 'configs/_base_/models/sa2va_tiny.py'))
    config = tiny_qwen_vl_config(backbone, vocab_size=1024)
    config['tie_word_embeddings'] = config['text_config']['tie_word_embeddings'] = True
    model_cfg = dict(_cfg(name).model.to_dict(), tokenizer=str(tok),
                     grounding_encoder=tiny.model.grounding_encoder.to_dict(),
                     data_preprocessor=dict(type='Sa2VADataPreprocessor', dtype='float32',
                                            qwen_vl_stats=backbone))
    mllm = model_cfg['mllm']
    del mllm['model_path']
    mllm.update(config=config, torch_dtype='float32')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        model = MODELS.build(model_cfg).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any('.visual.' in n for n in trainable)
    assert any(n.endswith('lm_head.weight') for n in trainable)
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    assert {'loss_llm', 'loss_mask', 'loss_dice'} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    model.parse_losses(losses)[0].backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable


def _doc_cfg_options(config: str) -> list:
    """The ``--cfg-options`` arguments of docs/models.md's command for ``config``."""
    import shlex
    doc = (REPO / 'docs' / 'models.md').read_text().replace('\\\n', ' ')
    line = next(l for l in doc.splitlines() if config in l and '--cfg-options' in l)
    argv = shlex.split(line)
    return argv[argv.index('--cfg-options') + 1:]


@needs_qwen_vl
def test_native_video_option_of_the_docs(sample_cwd, tmp_path, monkeypatch):
    """docs/models.md's command, through tools/train.py's own parser and build_config,
    switches every video dataset of a recipe to Qwen's temporal pairs at the stated fps (the
    images keep their step), and those datasets give native-video samples on the sample tree:
    5 frames -> 3 temporal pairs, <|video_pad|> ids as many as the merged tokens."""
    import projects.sa2va.transforms  # noqa: F401
    from projects.sa2va.transforms.formatting import build_tokenizer
    from tools.train import build_config, parse_args
    options = _doc_cfg_options('configs/sa2va_qwen3_vl_4b.py')
    assert len(options) == 2
    monkeypatch.chdir(REPO)
    cfg = build_config(parse_args(['configs/sa2va_qwen3_vl_4b.py', '--cfg-options', *options]))
    mix = cfg.train_dataloader.dataset.to_dict()
    modes = {}
    for leaf in _leaves(mix):
        for step in leaf['pipeline']:
            if step['type'] == 'QwenVLVideoInput':
                modes[leaf['dataset_name']] = (step['video_mode'], step['fps'], step['backbone'])
    assert modes == {name: ('temporal_pairs', 6, 'qwen3_vl') for name in VIDEO_DATASETS}
    tok = tmp_path / 'tokenizer_qwen_vl'
    leaves = _sample_leaves(mix, sample_cwd, tok, monkeypatch)
    video_pad = build_tokenizer(str(tok)).convert_tokens_to_ids('<|video_pad|>')
    for leaf in leaves:
        item = leaf.dataset[0]
        if leaf.name not in VIDEO_DATASETS:
            assert 'video_grid_thw' not in item, leaf.name
            continue
        thw = item['video_grid_thw']
        assert thw.shape == (1, 3) and int(thw[0, 0]) == 3, (leaf.name, thw)
        n_pad = int((torch.as_tensor(item['input_ids']) == video_pad).sum())
        assert n_pad == int(thw.prod()) // 4, leaf.name
