"""Sa2VA on Qwen2.5-VL / Qwen3-VL (transformers' classes): the dynamic-grid
image path, visual prompts on merged grids, a few training steps on a batch
of every family."""
from __future__ import annotations

import copy
import re

import pytest
import torch
from PIL import Image

from projects.sa2va.constants import IGNORE_INDEX
from projects.sa2va.transforms.qwen_vl import (QWEN_VL_PRESETS, QwenVLImageInput,
                                               QwenVLPoolPromptMasks,
                                               image_to_patches, pool_prompt_masks_grid,
                                               smart_resize)

BACKBONES = ('qwen2_5_vl', 'qwen3_vl')
SAM2_SIZE = 256


def _need(model_type):
    import transformers
    from projects.sa2va.models.qwen_vl import QWEN_VL_CLASSES
    if not hasattr(transformers, QWEN_VL_CLASSES[model_type]):
        pytest.skip(f'{QWEN_VL_CLASSES[model_type]} is not in transformers '
                    f'{transformers.__version__} (Qwen-VL needs the current stack)')


# ------------------------------------------------------------ image rules
@pytest.mark.parametrize('size', [(90, 130), (1000, 333), (40, 50), (4000, 3000)])
def test_smart_resize_is_the_processor_rule(size):
    qwen2_vl = pytest.importorskip('transformers.models.qwen2_vl.image_processing_qwen2_vl')
    ref = getattr(qwen2_vl, 'smart_resize', None)
    if ref is None:
        pytest.skip('this transformers has no qwen2_vl smart_resize')
    for factor, lo, hi in ((28, 56 * 56, 28 * 28 * 1280), (32, 64 * 64, 32 * 32 * 256)):
        assert smart_resize(*size, factor, lo, hi) == tuple(
            ref(*size, factor=factor, min_pixels=lo, max_pixels=hi))


def test_patches_are_the_processor_layout():
    tv = pytest.importorskip('transformers')
    proc_cls = getattr(tv, 'Qwen2VLImageProcessor', None)
    if proc_cls is None:
        pytest.skip('no Qwen2VLImageProcessor')
    c = QWEN_VL_PRESETS['qwen2_5_vl']
    g = torch.Generator().manual_seed(0)
    img = Image.fromarray(torch.randint(0, 256, (84, 112, 3), generator=g,
                                        dtype=torch.uint8).numpy())
    ref = proc_cls(min_pixels=c['min_pixels'], max_pixels=c['max_pixels'])(
        images=[img], return_tensors='pt')
    out = QwenVLImageInput('qwen2_5_vl', max_pixels=c['max_pixels']).transform({'image': img})
    assert out['image_grid_thw'].tolist() == ref['image_grid_thw'].tolist() == [[1, 6, 8]]
    assert out['pixel_values'].shape == ref['pixel_values'].shape == (48, 3 * 2 * 14 * 14)
    torch.testing.assert_close(out['pixel_values'], ref['pixel_values'].float(),
                               atol=1e-5, rtol=1e-5)
    assert out['num_image_tokens'] == 12  # (6 / 2) x (8 / 2)


def test_merged_blocks_are_consecutive_patches():
    """Patch row k of the output belongs to merged cell k // 4 (row-major)."""
    h, w = 4 * 14, 6 * 14
    cell = torch.arange(h)[:, None] // 28 * 3 + torch.arange(w)[None] // 28
    pixels = cell.float()[None].expand(3, -1, -1)
    patches, grid = image_to_patches(pixels, 14, 2, 2)
    assert grid.tolist() == [1, 4, 6]
    got = patches[:, 0].reshape(-1, 4)
    assert got.tolist() == [[float(k)] * 4 for k in range(6)]


def test_prompt_pooling_on_a_rectangular_grid_by_hand():
    """A 6 x 9 mask on a 2 x 3 merged grid: nearest samples pixel rows
    (0, 3) and columns (0, 3, 6); area keeps cells over half covered."""
    m = torch.zeros(2, 6, 9, dtype=torch.uint8)
    m[0, 0, 0] = 1           # nearest picks (0, 0); area: 1/9 of a cell
    m[0, 3:6, 6:9] = 1       # whole cell (1, 2)
    m[1, 1:3, 4:5] = 1       # tiny, missed by both rules
    near = pool_prompt_masks_grid(m, (2, 3), 'nearest')
    assert near[0].tolist() == [[True, False, False], [False, False, True]]
    assert not near[1].any()
    area = pool_prompt_masks_grid(m, (2, 3), 'area', vision_hw=(6, 9))
    assert area[0].tolist() == [[False, False, False], [False, False, True]]
    fixed = pool_prompt_masks_grid(m, (2, 3), 'nearest', ensure_nonempty=True)
    assert fixed[1].tolist() == [[False, True, False], [False, False, False]]
    assert fixed[0].equal(near[0])
    # square grids give the seed's rule
    from projects.sa2va.transforms.functional import pool_prompt_masks
    sq = (torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(1)) > 0.7)
    for mode in ('nearest', 'area'):
        assert pool_prompt_masks_grid(sq, (16, 16), mode, (448, 448)).equal(
            pool_prompt_masks(sq, 16, mode, 448))


# ------------------------------------------------------------ the model
def _build(model_type, tok_dir):
    """The tiny Sa2VA model of ``configs/_base_/models/sa2va_<model_type>_tiny.py``
    through the registry (``default_scope='sa2va'``); weights seeded."""
    from pathlib import Path
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2]
                              / f'configs/_base_/models/sa2va_{model_type}_tiny.py'))
    cfg.model.tokenizer = str(tok_dir)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(cfg.model).train()


@pytest.fixture(scope='module')
def tok_dir(tmp_path_factory):
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = tmp_path_factory.mktemp('qwen_tok')
    build_tiny_tokenizer(path, image_tokens='qwen_vl')
    return path


def _picture(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g,
                                         dtype=torch.uint8).numpy())


class Batch:
    """Samples of every family through QwenVLImageInput, collated by hand."""

    def __init__(self, tok, model_type):
        c = tok.convert_tokens_to_ids
        self.ctx, self.img, self.img_end = (c('<|image_pad|>'), c('<|vision_start|>'),
                                            c('<|vision_end|>'))
        self.seg, self.vp, self.vp_end = c('[SEG]'), c('<vp>'), c('</vp>')
        self.p, self.p_end = c('<p>'), c('</p>')
        self.w = tok.encode('the red ball is here', add_special_tokens=False)
        factor = QWEN_VL_PRESETS[model_type]['patch_size'] * 2
        self.step = QwenVLImageInput(model_type, max_pixels=(4 * factor) ** 2)
        self.pool = QwenVLPoolPromptMasks(model_type)

    def image(self, h, w, seed, regions=None):
        res = self.step.transform({'image': _picture(h, w, seed)})
        if regions is not None:
            res = self.pool.transform(dict(res, masks=regions))
        return res

    def block(self, out):
        return [self.img] + [self.ctx] * out['num_image_tokens'] + [self.img_end]

    def samples(self):
        w, s = self.w, self.seg
        a, b = self.image(90, 130, 1), self.image(60, 60, 2)
        f0, f1 = self.image(70, 100, 3), self.image(70, 100, 4)
        region = torch.zeros(2, 90, 130, dtype=torch.uint8)
        region[0, :45, :65] = 1
        region[1, 60:, 100:] = 1
        vp_img = self.image(90, 130, 5, region)
        mc_region = torch.zeros(1, 60, 60, dtype=torch.uint8)
        mc_region[0, 10:40, 20:50] = 1
        mc_img = self.image(60, 60, 6, mc_region)
        mc_plain = self.image(60, 60, 6)

        def vp_text(out):
            return sum(([self.vp] + [self.ctx] * n + [self.vp_end]
                        for n in out['region_token_counts']), [])
        return dict(
            res=([a], self.block(a) + w, w[:2] + [s] + w[2:3] + [s], 1, 2),
            video=([f0, f1], self.block(f0) + self.block(f1) + w, [s] + w[:1] + [s], 2, 2),
            vp=([vp_img], self.block(vp_img) + vp_text(vp_img) + w, w, None, 0),
            vqa=([b], self.block(b) + w, w[1:], None, 0),
            text=([], w, w[:3], None, 0),
            gcg=([b], self.block(b) + w, [self.p] + w[:1] + [self.p_end, s] + [self.p]
                 + w[1:2] + [self.p_end, s], 1, 2),
            mc_describe=([mc_img], self.block(mc_img) + vp_text(mc_img) + w, w[1:4], None, 0),
            mc_segment=([mc_plain], self.block(mc_plain) + w[::-1], w[:1] + [s], 1, 1))

    def collate(self, samples):
        """Per-sample dicts as the pipelines leave them, through the real
        collate (``sa2va_qwen_vl_collate_fn``)."""
        from projects.sa2va.datasets import sa2va_qwen_vl_collate_fn
        out = []
        for i, (images, q, ans, t, n_obj) in enumerate(samples.values()):
            s = dict(input_ids=torch.tensor(q + ans),
                     labels=torch.tensor([IGNORE_INDEX] * len(q) + ans))
            if images:
                s['pixel_values'] = torch.cat([im['pixel_values'] for im in images])
                s['image_grid_thw'] = torch.cat([im['image_grid_thw'] for im in images])
            prompted = [im for im in images if 'prompt_masks' in im]
            if prompted:
                s['prompt_masks'] = prompted[0]['prompt_masks']
                s['vp_overall_mask'] = prompted[0]['vp_overall_mask']
            if t:
                g = torch.Generator().manual_seed(i)
                s['g_pixel_values'] = torch.randint(0, 256, (t, 3, SAM2_SIZE, SAM2_SIZE),
                                                    generator=g, dtype=torch.uint8)
                s['masks'] = (torch.rand(n_obj * t, 40, 50, generator=g) > 0.5).to(torch.uint8)
            out.append(s)
        return sa2va_qwen_vl_collate_fn(out)


def _expected_trainable(name):
    """Sa2VA-4B's trainable set on a Qwen-VL MLLM: the mergers (InternVL's
    mlp1), LoRA, the new token rows, lm_head; SAM2 / text_hidden_fcs as for
    InternVL."""
    from tests.models.test_sa2va import expected_trainable
    if name.startswith('mllm.model.'):
        if '.visual.' in name:
            return '.merger.' in name or 'deepstack_merger_list' in name
        return any(k in name for k in ('.lora_A.', '.lora_B.', 'trainable_tokens_delta')) \
            or name.endswith('lm_head.weight')
    return expected_trainable(name)


@pytest.mark.parametrize('model_type', BACKBONES)
def test_tiny_qwen_sa2va_trains_on_every_family(model_type, tok_dir):
    _need(model_type)
    model = _build(model_type, tok_dir)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if _expected_trainable(n)}
    maker = Batch(model.tokenizer, model_type)
    batch = maker.collate(maker.samples())
    assert len({tuple(g) for g in batch['image_grid_thw'].tolist()}) >= 3
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(3):
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        losses = model(**data, mode='loss')
        assert set(losses) == {'loss_llm', 'loss_mask', 'loss_dice'}
        assert all(torch.isfinite(v) and float(v) > 0 for v in losses.values()), losses
        total, _ = model.parse_losses(losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert with_grad == trainable
        opt.step()
    moved = {n for n, p in model.named_parameters()
             if n in before and not torch.equal(before[n], p.detach())}
    for group in ('lora_B', 'merger', 'lm_head', 'trainable_tokens_delta', 'text_hidden_fcs',
                  'sam_mask_decoder'):
        assert any(group in n for n in moved), group


@pytest.mark.parametrize('model_type', BACKBONES)
def test_visual_prompt_rows_land_at_their_positions(model_type, tok_dir):
    """For two image sizes, the <vp> rows are the image block's rows at the
    region's True cells (row-major), and image rows fill the image block."""
    _need(model_type)
    model = _build(model_type, tok_dir).eval()
    maker = Batch(model.tokenizer, model_type)
    for (h, w) in ((90, 130), (60, 60)):
        region = torch.zeros(1, h, w, dtype=torch.uint8)
        region[0, h // 3:, : w // 2] = 1
        out = maker.image(h, w, 7, region)
        ids = maker.block(out) + [maker.vp] + [maker.ctx] * out['region_token_counts'][0] \
            + [maker.vp_end] + maker.w
        ids = torch.tensor([ids])
        grid = out['image_grid_thw']
        with torch.no_grad():
            inputs = model.mllm.build_inputs(
                ids, out['pixel_values'], grid, None, out['vp_overall_mask'],
                [out['prompt_masks']], torch.ones_like(ids))
            feats = model.mllm.hf_model.model.get_image_features(
                out['pixel_values'], grid, return_dict=True).pooler_output[0]
        gh, gw = int(grid[0, 1]) // 2, int(grid[0, 2]) // 2
        assert feats.shape[0] == gh * gw == out['num_image_tokens']
        emb = inputs['inputs_embeds'][0]
        torch.testing.assert_close(emb[1:1 + gh * gw], feats)
        cells = out['prompt_masks'][0].flatten().nonzero().flatten()
        start = 1 + gh * gw + 1 + 1
        torch.testing.assert_close(emb[start:start + len(cells)], feats[cells])
        # rope: image tokens get (t, row, col) positions; <vp> rows are text
        pos = inputs['position_ids'][:, 0]
        rows = pos[1, 1:1 + gh * gw] - pos[1, 1]
        cols = pos[2, 1:1 + gh * gw] - pos[2, 1]
        assert rows.tolist() == [r for r in range(gh) for _ in range(gw)]
        assert cols.tolist() == list(range(gw)) * gh
        vp_pos = pos[0, start:start + len(cells)]
        assert torch.equal(vp_pos, pos[1, start:start + len(cells)])
        assert (vp_pos.diff() == 1).all()


def test_token_count_mismatch_raises(tok_dir):
    _need('qwen2_5_vl')
    model = _build('qwen2_5_vl', tok_dir).eval()
    maker = Batch(model.tokenizer, 'qwen2_5_vl')
    out = maker.image(60, 60, 8)
    ids = torch.tensor([maker.block(out)[:-2] + [maker.img_end]])
    with pytest.raises(ValueError, match=re.escape('sample 0: 3 <|image_pad|> positions but the vision features in batch order give it 4 rows')):
        model.mllm.build_inputs(ids, out['pixel_values'], out['image_grid_thw'])


def test_visual_prompt_pipeline_to_the_model(tok_dir):
    """QwenVLImageInput -> AddVisualPromptText -> EncodeConversation ->
    PackInputs -> sa2va_qwen_vl_collate_fn -> the model's splice: the image
    block has the merged-grid count, each <vp> block its region's cells."""
    from projects.sa2va.datasets import sa2va_qwen_vl_collate_fn
    from projects.sa2va.transforms import AddVisualPromptText, EncodeConversation, PackInputs
    region = torch.zeros(2, 90, 130, dtype=torch.uint8)
    region[0, :50, :70] = 1
    region[1, 70:, 110:] = 1
    results = dict(image=_picture(90, 130, 9), masks=region,
                   conversation=[dict(input='<image>\nWhat is in region1?', output='a ball')])
    step = QwenVLImageInput('qwen2_5_vl', max_pixels=112 * 112)
    for t in (step, QwenVLPoolPromptMasks('qwen2_5_vl'), AddVisualPromptText(),
              EncodeConversation(str(tok_dir), image_tokens='qwen_vl'), PackInputs()):
        results = t(results)
    grid = results['image_grid_thw'][0].tolist()
    assert grid == [1, 6, 10]  # 90 x 130 -> 84 x 140 px, 14 px patches
    counts = results['prompt_masks'].flatten(1).sum(1).tolist()
    assert results['prompt_masks'].shape == (2, 3, 5) and all(counts)
    batch = sa2va_qwen_vl_collate_fn([results, dict(results)])
    ids = batch['input_ids']
    from projects.sa2va.tokenization import load_tokenizer
    ctx = load_tokenizer(str(tok_dir)).convert_tokens_to_ids('<|image_pad|>')
    assert (ids == ctx).sum(1).tolist() == [15 + sum(counts)] * 2
    assert batch['pixel_values'].shape == (2 * 60, 3 * 2 * 14 * 14)
    assert batch['vp_overall_mask'].tolist() == [True, True]
    assert len(batch['prompt_masks']) == 2


@pytest.mark.parametrize('model_type', BACKBONES)
def test_generation_matches_the_training_forward(model_type, tok_dir):
    """Greedy tokens and [SEG]-read hidden states of the cached generate
    equal those of one forward over prompt + answer (vp prompt, image)."""
    _need(model_type)
    model = _build(model_type, tok_dir).eval()
    maker = Batch(model.tokenizer, model_type)
    region = torch.zeros(1, 60, 60, dtype=torch.uint8)
    region[0, 20:, :30] = 1
    out = maker.image(60, 60, 10, region)
    prompt = torch.tensor([maker.block(out) + [maker.vp] + [maker.ctx]
                           * out['region_token_counts'][0] + [maker.vp_end] + maker.w])
    kw = dict(pixel_values=out['pixel_values'], image_grid_thw=out['image_grid_thw'],
              vp_overall_mask=out['vp_overall_mask'], prompt_masks=[out['prompt_masks']])
    gen = model.mllm.generate(prompt, max_new_tokens=5, **kw)
    new = gen.sequences[0]
    assert len(new) == 5 and len(gen.hidden_states) == 5
    full = torch.cat([prompt[0], new[:-1]])[None]
    with torch.no_grad():
        ref = model.mllm(full, attention_mask=torch.ones_like(full), **kw)
    n = prompt.shape[1]
    assert ref.logits[0, n - 1:].argmax(-1).tolist() == new.tolist()
    for i, h in enumerate(gen.hidden_states):
        torch.testing.assert_close(h[-1][0, -1], ref.hidden_states[-1][0, n - 1 + i],
                                   atol=1e-4, rtol=1e-4)


def test_generate_masks_runs_on_the_qwen_backbone(tok_dir):
    """Sa2VAModel.generate_masks on Qwen2.5-VL: one mask per generated [SEG]
    (the tiny model's lm_head is scripted to answer [SEG], then a word)."""
    _need('qwen2_5_vl')
    model = _build('qwen2_5_vl', tok_dir).eval()
    maker = Batch(model.tokenizer, 'qwen2_5_vl')
    out = maker.image(60, 60, 11)
    prompt = torch.tensor([maker.block(out) + maker.w])
    script = []

    def scripted(module, args, logits):
        logits = logits.clone()
        logits[..., -1, maker.w[0] if script else maker.seg] = 1e4
        script.append(1)
        return logits
    model.mllm.get_output_embeddings().register_forward_hook(scripted)
    frames = torch.randint(0, 256, (1, 3, SAM2_SIZE, SAM2_SIZE), dtype=torch.uint8)
    res = model.generate_masks(prompt, frames, (30, 40), pixel_values=out['pixel_values'],
                               image_grid_thw=out['image_grid_thw'], max_new_tokens=3)
    k = int((res['sequences'][:-1] == maker.seg).sum())
    assert k >= 1
    assert res['pred_masks'].shape == (k, 1, 30, 40)


def test_text_only_batch_keeps_a_zero_gradient_on_the_mergers(tok_dir):
    """No image in the batch (the Qwen-VL collate adds no dummy image): the
    mergers still get a (zero) gradient, so DDP sees the same parameters in
    every step."""
    _need('qwen2_5_vl')
    model = _build('qwen2_5_vl', tok_dir)
    maker = Batch(model.tokenizer, 'qwen2_5_vl')
    batch = maker.collate({'text': ([], maker.w, maker.w[:3], None, 0)})
    assert 'pixel_values' not in batch
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    total, _ = model.parse_losses(model(**data, mode='loss'))
    model.zero_grad(set_to_none=True)
    total.backward()
    merger = [p for n, p in model.named_parameters() if '.merger.' in n]
    assert merger and all(p.grad is not None and not p.grad.any() for p in merger)
