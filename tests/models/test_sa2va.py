"""Sa2VAModel: the tiny model end to end on a batch mixing the families."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from projects.sa2va.constants import IGNORE_INDEX, NUM_IMAGE_TOKENS

CONFIG = Path(__file__).resolve().parents[2] / 'configs/_base_/models/sa2va_tiny.py'
SAM2_SIZE = 256


def build_tiny(tokenizer_dir, **overrides):
    """The tiny Sa2VA model from the base config, built through the registry
    with ``default_scope='sa2va'``; weights seeded."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tokenizer_dir)
    cfg.model.update(overrides)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        return MODELS.build(cfg.model)


class Ids:
    """Token ids of the model's tokenizer."""

    def __init__(self, tok):
        c = tok.convert_tokens_to_ids
        self.ctx, self.img, self.img_end = c('<IMG_CONTEXT>'), c('<img>'), c('</img>')
        self.seg, self.vp, self.vp_end = c('[SEG]'), c('<vp>'), c('</vp>')
        self.p, self.p_end = c('<p>'), c('</p>')
        self.words = tok.encode('the red ball is here', add_special_tokens=False)

    def image_block(self, n_tiles):
        return [self.img] + [self.ctx] * (NUM_IMAGE_TOKENS * n_tiles) + [self.img_end]


def _sample(ids, answer, pixel=None, **extra):
    """input_ids / labels: question part ignored, answer part supervised."""
    g = torch.Generator().manual_seed(len(ids) + len(answer))
    s = dict(input_ids=torch.tensor(ids + answer),
             labels=torch.tensor([IGNORE_INDEX] * len(ids) + answer))
    if pixel is not None:
        s['pixel_values'] = torch.randint(0, 256, (pixel, 3, 448, 448), dtype=torch.uint8,
                                          generator=g)
    s.update(extra)
    return s


def _frames(n, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (3, SAM2_SIZE, SAM2_SIZE) if n is None else (n, 3, SAM2_SIZE, SAM2_SIZE)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def _masks(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, h, w, generator=g) > 0.5).to(torch.uint8)


def prompt_grid(cells):
    m = torch.zeros(16, 16, dtype=torch.bool)
    for r, c in cells:
        m[r, c] = True
    return m


def family_samples(tok):
    """One sample per family: image RES (2 objects), video RES (2 objects x
    2 frames), visual prompt (2 regions), VQA with an image, text-only VQA,
    GCG (3 phrases), and mask <-> caption in its two Sa2VA forms through
    option A (describe: 1024-style image + mask, the grid derived by the
    preprocessor; segment: image, SAM2 frame and GT mask)."""
    t = Ids(tok)
    w = t.words
    res = _sample(t.image_block(1) + w, w[:2] + [t.seg] + w[2:3] + [t.seg], pixel=1,
                  g_pixel_values=_frames(None, 1), masks=_masks(2, 40, 60, 1))
    video = _sample(t.image_block(2) + w, [t.seg] + w[:1] + [t.seg], pixel=2,
                    g_pixel_values=_frames(2, 2), masks=_masks(2 * 2, 30, 50, 2))
    pm = torch.stack([prompt_grid([(0, 0), (3, 4), (15, 15)]), prompt_grid([(8, 8), (8, 9)])])
    vp_ids = (t.image_block(1) + [t.vp] + [t.ctx] * 3 + [t.vp_end]
              + [t.vp] + [t.ctx] * 2 + [t.vp_end] + w)
    vp = _sample(vp_ids, w, pixel=1, prompt_masks=pm,
                 vp_overall_mask=torch.tensor([True]))
    vqa = _sample(t.image_block(1) + w, w[1:], pixel=1)
    text = _sample(w, w[:3])
    gcg = _sample(t.image_block(1) + w,
                  [t.p] + w[:1] + [t.p_end, t.seg] + [t.p] + w[1:2] + [t.p_end, t.seg]
                  + [t.p] + w[2:3] + [t.p_end, t.seg], pixel=1,
                  g_pixel_values=_frames(None, 3), masks=_masks(3, 48, 32, 3))
    from projects.sa2va.transforms.functional import option_a_prompt_masks
    g = torch.Generator().manual_seed(4)
    mc_mask = torch.zeros(SAM2_SIZE, SAM2_SIZE)
    mc_mask[40:120, 100:200] = 1
    k = int(option_a_prompt_masks(mc_mask[None]).sum())
    mc_describe = _sample(t.image_block(1) + [t.vp] + [t.ctx] * k + [t.vp_end] + w, w[1:4],
                          option_a_image=torch.randn(3, SAM2_SIZE, SAM2_SIZE, generator=g),
                          option_a_mask=mc_mask)
    mc_segment = _sample(t.image_block(1) + w[::-1], w[:1] + [t.seg],
                         option_a_image=torch.randn(3, SAM2_SIZE, SAM2_SIZE, generator=g),
                         g_pixel_values=_frames(None, 5), masks=_masks(1, SAM2_SIZE, SAM2_SIZE, 5))
    return dict(res=res, video=video, vp=vp, vqa=vqa, text=text, gcg=gcg,
                mc_describe=mc_describe, mc_segment=mc_segment)


def collate(samples):
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    return sa2va_collate_fn(list(samples), pad_index=0)


@pytest.fixture(scope='module')
def tiny_tok_dir(tmp_path_factory):
    from projects.sa2va.tokenization import build_tiny_tokenizer
    path = tmp_path_factory.mktemp('sa2va_tok')
    build_tiny_tokenizer(path)
    return path


@pytest.fixture(scope='module')
def model(tiny_tok_dir):
    return build_tiny(tiny_tok_dir).train()


@pytest.fixture(scope='module')
def samples(model):
    return family_samples(model.tokenizer)


def run_loss(model, batch):
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    return model(**data, mode='loss')


def expected_trainable(name: str) -> bool:
    """Sa2VA-4B's trainable set, by parameter name."""
    if name.startswith('mllm.language_model.'):
        return any(k in name for k in ('.lora_A.', '.lora_B.', 'trainable_tokens_delta')) \
            or name.endswith('lm_head.weight')
    if name.startswith('mllm.mlp1.') or name.startswith('text_hidden_fcs.'):
        return True
    if name.startswith('mllm.vision_model.'):
        return False
    if name.startswith('grounding_encoder.'):
        return name.startswith('grounding_encoder.sam_mask_decoder.') and not any(
            h in name for h in ('iou_prediction_head', 'pred_obj_score_head'))
    raise AssertionError(f'unexpected parameter {name}')


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_builds_from_tiny_config_with_sa2va_scope(model):
    from projects.sa2va.models import InternVLChat, Sa2VADataPreprocessor, SAM2Base, Sa2VAModel
    assert isinstance(model, Sa2VAModel)
    assert isinstance(model.mllm, InternVLChat) and isinstance(model.grounding_encoder, SAM2Base)
    assert isinstance(model.data_preprocessor, Sa2VADataPreprocessor)
    tok = model.tokenizer
    assert model.seg_token_id == tok.convert_tokens_to_ids('[SEG]') == 1024
    assert model.mllm.get_input_embeddings().weight.shape[0] == len(tok) == 1029
    names = {n for n, _ in model.named_parameters()}
    assert trainable_names(model) == {n for n in names if expected_trainable(n)}
    # text_hidden_fcs: Linear(D, D), ReLU, Linear(D, 64 = SAM2 prompt dim)
    fcs = model.text_hidden_fcs
    assert fcs[0].weight.shape == (64, 64) and fcs[2].weight.shape == (64, 64)
    assert model.low_res_size == (64, 64)
    delta = [p for n, p in model.named_parameters() if 'trainable_tokens_delta' in n]
    assert len(delta) == 1 and delta[0].shape == (5, 64)  # the 5 Sa2VA tokens


def test_mixed_families_forward_backward(model, samples):
    model.zero_grad(set_to_none=True)
    batch = collate(samples.values())
    losses = run_loss(model, batch)
    assert set(losses) == {'loss_llm', 'loss_mask', 'loss_dice'}
    for key, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value), key
        assert float(value) > 0, key
    # mmengine's parse_losses sums every '*loss*' key and logs each one
    total, log_vars = model.parse_losses(losses)
    assert set(log_vars) == {'loss', 'loss_llm', 'loss_mask', 'loss_dice'}
    total.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(model)
    nonzero = {n for n, p in model.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    for group in ('text_hidden_fcs.0.weight', 'text_hidden_fcs.2.weight', 'mllm.mlp1.1.weight',
                  'lm_head.weight', 'trainable_tokens_delta', 'lora_B',
                  'sam_mask_decoder.transformer.', 'sam_mask_decoder.conv_s0.',
                  'sam_mask_decoder.conv_s1.', 'sam_mask_decoder.output_upscaling.'):
        assert any(group in n for n in nonzero), group
    model.zero_grad(set_to_none=True)


def test_batch_without_masks_keeps_a_zero_gradient_path(model, samples):
    model.zero_grad(set_to_none=True)
    losses = run_loss(model, collate([samples['text']]))
    assert losses['loss_mask'].item() == 0 and losses['loss_dice'].item() == 0
    assert torch.isfinite(losses['loss_llm'])
    model.parse_losses(losses)[0].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    for n, g in grads.items():
        if n.startswith(('grounding_encoder.', 'text_hidden_fcs.', 'mllm.mlp1.')):
            assert g.abs().sum() == 0, n
    assert grads['mllm.language_model.base_model.model.lm_head.weight'].abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_visual_prompt_rows_land_at_their_context_positions(model, samples):
    data = model.data_preprocessor(collate([samples['vp']]), False)
    mllm = model.mllm
    with torch.no_grad():
        embeds = mllm.build_inputs_embeds(data['input_ids'], data['pixel_values'],
                                          data['image_flags'], data['vp_overall_mask'],
                                          data['prompt_masks'])
        tile = mllm.extract_feature(data['pixel_values'])[0]  # (256, D)
    ids = data['input_ids'][0]
    ctx = torch.nonzero(ids == mllm.img_context_token_id).flatten()
    assert len(ctx) == 256 + 3 + 2
    # whole image first, then region 1 = cells (0,0), (3,4), (15,15) -> rows 0, 52, 255,
    # then region 2 = cells (8,8), (8,9) -> rows 136, 137
    assert torch.allclose(embeds[0, ctx[:256]], tile, atol=1e-6)
    expected = tile[[0, 3 * 16 + 4, 255, 8 * 16 + 8, 8 * 16 + 9]]
    assert torch.allclose(embeds[0, ctx[256:]], expected, atol=1e-6)
    # the <vp> blocks sit around them
    vp_id = model.tokenizer.convert_tokens_to_ids('<vp>')
    assert ids[ctx[256] - 1] == vp_id and ids[ctx[259] - 1] == vp_id


def test_option_a_region_rows_land_at_their_context_positions(model, samples):
    """Option A: the preprocessor's nearest grid of the 256 x 256 mask
    [40:120, 100:200] is cells rows 3..7 x cols 7..12 (pixel 16 i, 16 j), and
    those rows of the derived tile's features fill the <vp> block."""
    data = model.data_preprocessor(collate([samples['mc_describe']]), False)
    mllm = model.mllm
    expected_cells = [r * 16 + c for r in range(3, 8) for c in range(7, 13)]
    assert torch.nonzero(data['prompt_masks'][0][0].flatten()).flatten().tolist() == \
        expected_cells
    with torch.no_grad():
        embeds = mllm.build_inputs_embeds(data['input_ids'], data['pixel_values'],
                                          data['image_flags'], data['vp_overall_mask'],
                                          data['prompt_masks'])
        tile = mllm.extract_feature(data['pixel_values'])[0]
    ctx = torch.nonzero(data['input_ids'][0] == mllm.img_context_token_id).flatten()
    assert len(ctx) == 256 + 30
    assert torch.allclose(embeds[0, ctx[:256]], tile, atol=1e-6)
    assert torch.allclose(embeds[0, ctx[256:]], tile[expected_cells], atol=1e-6)


def test_mismatched_token_counts_raise(model, samples):
    bad = dict(samples['vqa'])
    ids = bad['input_ids'].tolist()
    ctx = model.tokenizer.convert_tokens_to_ids('<IMG_CONTEXT>')
    bad['input_ids'] = torch.tensor(ids[:1] + [ctx] + ids[1:])
    bad['labels'] = torch.cat([torch.tensor([IGNORE_INDEX]), bad['labels']])
    with pytest.raises(ValueError, match=r'sample 0: 257 <IMG_CONTEXT> positions .* 256 rows'):
        run_loss(model, collate([bad]))


def test_seg_and_mask_counts_must_agree(model, samples):
    bad = dict(samples['res'])
    bad['masks'] = torch.zeros(3, 40, 60, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r'grounding sample 0 \(batch row 0\): 2 \[SEG\] '
                                         r'tokens but 3 GT objects'):
        run_loss(model, collate([bad]))
    video = dict(samples['video'])
    video['masks'] = torch.zeros(3, 30, 50, dtype=torch.uint8)  # not n_obj * 2 frames
    with pytest.raises(ValueError, match=r'masks \(3, 30, 50\) is not \(n_obj \* 2, H, W\)'):
        run_loss(model, collate([video]))
    stray = dict(samples['vqa'])
    stray['input_ids'] = torch.cat([stray['input_ids'], torch.tensor([model.seg_token_id])])
    stray['labels'] = torch.cat([stray['labels'], torch.tensor([model.seg_token_id])])
    with pytest.raises(ValueError, match=r'batch rows \[0\] contain \[SEG\] but the batch has '
                                         r'no GT masks'):
        run_loss(model, collate([stray]))


class _Spy:
    """Wraps SAM2's forward_language_prompt to record its inputs."""

    def __init__(self, sam2):
        self.sam2, self.calls = sam2, []
        self.orig = sam2.forward_language_prompt

    def __enter__(self):
        def spy(backbone, language_embd, image_index=None):
            self.calls.append((language_embd.detach().clone(), image_index.clone()))
            return self.orig(backbone, language_embd, image_index=image_index)
        self.sam2.forward_language_prompt = spy
        return self

    def __exit__(self, *exc):
        del self.sam2.forward_language_prompt


def test_video_each_object_prompts_every_frame_in_gt_order(model, samples, monkeypatch):
    from projects.sa2va.models.losses import resize_gt_masks
    seen = {}
    orig = model._mask_losses
    monkeypatch.setattr(model, '_mask_losses',
                        lambda pred, gt: seen.update(pred=pred, gt=gt) or orig(pred, gt))
    batch = collate([samples['res'], samples['video']])
    with torch.no_grad(), _Spy(model.grounding_encoder) as spy:
        run_loss(model, batch)
    prompts, index = spy.calls[0]
    # image sample: 2 objects on frame 0; video sample: 2 objects x frames 1, 2
    assert index.tolist() == [0, 0, 1, 2, 1, 2]
    p = prompts[:, 0]
    assert torch.equal(p[2], p[3]) and torch.equal(p[4], p[5])
    assert not torch.equal(p[2], p[4]) and not torch.equal(p[0], p[1])
    gt = seen['gt']
    assert gt.shape == (6, 64, 64) and seen['pred'].shape == (6, 64, 64)
    assert torch.equal(gt[:2], resize_gt_masks(samples['res']['masks'], (64, 64)))
    # video GT is object-major: rows 2, 3 = object 0 at frames 0, 1
    assert torch.equal(gt[2:], resize_gt_masks(samples['video']['masks'], (64, 64)))


def test_fix_objects_policy_is_explicit_and_counted(model, samples):
    try:
        model.fix_objects = 3
        with torch.no_grad(), _Spy(model.grounding_encoder) as spy:
            losses = run_loss(model, collate([samples['res']]))
        assert losses['objects_repeated'].item() == 1 and losses['objects_sampled'].item() == 0
        p = spy.calls[0][0][:, 0]
        assert p.shape[0] == 3 and torch.equal(p[0], p[2]) and not torch.equal(p[0], p[1])
        model.fix_objects = 1
        with torch.no_grad():
            losses = run_loss(model, collate([samples['res']]))
        assert losses['objects_sampled'].item() == 1 and losses['objects_repeated'].item() == 0
        # mmengine logs non-loss tensors as they are, without adding them to the loss
        total, log_vars = model.parse_losses(losses)
        assert 'objects_sampled' in log_vars
        assert total.item() == pytest.approx(sum(float(losses[k]) for k in
                                                 ('loss_llm', 'loss_mask', 'loss_dice')),
                                             rel=1e-6)
    finally:
        model.fix_objects = None


def test_predict_returns_masks_at_original_size(model, samples):
    data = model.data_preprocessor(collate([samples['res'], samples['gcg']]), False)
    with torch.no_grad():
        out = model(**data, mode='predict')
    assert [tuple(o['pred_masks'].shape) for o in out] == [(2, 1, 40, 60), (3, 1, 48, 32)]
    assert out[0]['pred_masks'].dtype == torch.bool
    assert tuple(out[0]['pred_logits'].shape) == (2, 1, 64, 64)


def test_state_dict_holds_only_trainable_and_sa2va_v1_checkpoint_loads(model, tmp_path):
    state = model.state_dict()
    assert set(state) == trainable_names(model)
    assert len(model.state_dict(trainable_only=False)) > len(state)
    # Write it in Sa2VA v1's layout and load it back over perturbed weights.
    v1 = {}
    for k, v in state.items():
        k = k.replace('mllm.', 'mllm.model.', 1).replace('.default.weight', '.weight')
        v1[k.replace('grounding_encoder.', 'grounding_encoder.sam2_model.', 1)] = v.clone()
    torch.save({'state_dict': v1}, tmp_path / 'iter_10.pth')
    saved = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    loaded = model.load_pretrained(str(tmp_path / 'iter_10.pth'))
    assert set(loaded) == set(saved)
    now = model.state_dict()
    assert all(torch.equal(now[k], saved[k]) for k in saved)
    torch.save({'mllm.model.no_such.weight': torch.zeros(1)}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=r'unknown keys \(1\) \[.mllm.no_such.weight.\]'):
        model.load_pretrained(str(tmp_path / 'bad.pth'))


def test_init_weights_keeps_lora_b_zero(model):
    b = [p for n, p in model.named_parameters() if '.lora_B.' in n]
    assert b and all(p.abs().sum() == 0 for p in b)
    model.init_weights()
    assert all(p.abs().sum() == 0 for p in b)


def test_merge_and_export_gives_official_keys_and_same_outputs(model, samples, tmp_path):
    from safetensors.torch import load_file
    merged = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in merged.named_parameters():  # make LoRA and new rows matter
            if '.lora_B.' in n or 'trainable_tokens_delta' in n:
                p.normal_(0, 0.02)
    data = merged.data_preprocessor(collate([samples['res']]), False)
    with torch.no_grad():
        before = merged(**data, mode='tensor')
        state = merged.merge_and_export(str(tmp_path / 'sa2va_merged.safetensors'))
        after = merged(**data, mode='tensor')
    assert torch.allclose(before, after, atol=1e-4)
    on_disk = load_file(str(tmp_path / 'sa2va_merged.safetensors'))
    assert set(on_disk) == set(state)
    assert 'mllm.language_model.model.layers.0.self_attn.q_proj.weight' in on_disk
    assert 'grounding_encoder.image_encoder.trunk.patch_embed.proj.weight' in on_disk
    assert not any('lora' in k or 'token_adapter' in k for k in on_disk)


def test_4b_config_is_sa2va_4b_and_matches_the_tiny_keys():
    from mmengine.config import Config
    big = Config.fromfile(str(CONFIG.parent / 'sa2va_4b.py')).model
    tiny = Config.fromfile(str(CONFIG)).model
    assert set(big) - {'pretrained_pth', 'llm_loss_weight'} == set(tiny)
    assert big.mllm.model_path == './pretrained/InternVL2_5-4B' and big.tokenizer is None
    assert big.mllm.llm_lora == dict(r=128, lora_alpha=256, lora_dropout=0.05)
    assert (big.mllm.freeze_vision, big.mllm.freeze_llm, big.mllm.freeze_mlp1) == \
        (True, True, False)
    assert big.grounding_encoder.config == 'sam2_hiera_l'
    assert big.grounding_encoder.checkpoint == './pretrained/sam2_hiera_large.pt'
    assert big.grounding_encoder.trainable == ('sam_mask_decoder', )
    assert (big.num_points, big.oversample_ratio, big.importance_sample_ratio) == \
        (12544, 3.0, 0.75)
    assert big.loss_mask == dict(type='MaskBCELoss', loss_weight=2.0)
    assert big.loss_dice == dict(type='MaskDiceLoss', loss_weight=0.5, eps=1.0)


class _Force:
    """Logits processor that makes ``generate`` emit a planned sequence."""

    def __init__(self, plan):
        self.plan = plan

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float('inf'))
        forced[:, self.plan[input_ids.shape[-1]]] = 0.0
        return forced


def test_generate_masks_segments_each_generated_seg(model, samples):
    """Generation, then SAM2 on the generated [SEG]s, gives the masks of the
    teacher-forced forward on the same text (causal LLM, KV cache)."""
    from transformers import LogitsProcessorList
    t = Ids(model.tokenizer)
    sample = samples['res']
    answer = sample['input_ids'][-5:].tolist()  # w0 w1 [SEG] w2 [SEG]
    plan = answer + [t.words[3]]
    prompt = dict(sample, input_ids=sample['input_ids'][:-5], labels=sample['labels'][:-5])
    model.eval()
    try:
        data = model.data_preprocessor(collate([prompt]), False)
        out = model.generate_masks(
            data['input_ids'], data['g_pixel_values'], (40, 60),
            pixel_values=data['pixel_values'], image_flags=data['image_flags'],
            max_new_tokens=6, do_sample=False,
            logits_processor=LogitsProcessorList([_Force(plan)]))
        full = model.data_preprocessor(collate([sample]), False)
        with torch.no_grad():
            forced = model(**full, mode='predict')[0]
    finally:
        model.train()
    assert out['sequences'].tolist() == plan
    assert out['pred_masks'].shape == (2, 1, 40, 60) and out['pred_masks'].dtype == torch.bool
    assert out['pred_logits'].shape == (2, 1, 64, 64)
    assert torch.allclose(out['pred_logits'], forced['pred_logits'], atol=1e-4)
    assert not torch.equal(out['pred_logits'][0], out['pred_logits'][1])


def test_batch_without_supervised_tokens_raises(model, samples):
    s = dict(samples['text'])
    s['labels'] = torch.full_like(s['labels'], IGNORE_INDEX)
    with pytest.raises(ValueError, match='no supervised token'):
        run_loss(model, collate([s]))


# ------------------------------------------------ all six families, real data
#: one dataset per family of configs/sa2va_tiny_demo.py (family 6 twice: its
#: two supervised forms, option A)
SIX_FAMILIES = dict(visual_prompt='osprey_conversation', refseg='refcoco',
                    refvos='revos', gcg='gcg_refcocog', vqa='llava',
                    mask_caption_describe='mc_sa2va_refcoco_describe',
                    mask_caption_segment='mc_sa2va_dam_segment')


@pytest.fixture(scope='module')
def demo_samples(sample_cwd):
    """Sample 0 of each family's dataset, through the tiny demo's pipelines."""
    import os

    from mmengine.config import Config

    from projects.sa2va.datasets.inspect import build_dataset_from_config, leaf_datasets
    from tests.conftest import REPO_ROOT
    cwd = os.getcwd()
    os.chdir(sample_cwd)
    try:
        cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'sa2va_tiny_demo.py'))
        leaves = {d.dataset_name: d for d in leaf_datasets(build_dataset_from_config(cfg))}
        return {family: leaves[name][0] for family, name in SIX_FAMILIES.items()}
    finally:
        os.chdir(cwd)


def test_six_families_from_the_demo_pipelines_forward_backward(model, demo_samples):
    batch = collate(demo_samples.values())
    # family 6 went through option A: placeholders for the preprocessor
    assert batch['option_a_images'].shape[0] == 2
    assert batch['option_a_masks'].shape[0] == 1
    model.zero_grad(set_to_none=True)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    assert all(m is not None and m.dtype == torch.bool for m in data['prompt_masks'])
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_llm', 'loss_mask', 'loss_dice'}
    for key, value in losses.items():
        assert value.ndim == 0 and torch.isfinite(value) and float(value) > 0, key
    model.parse_losses(losses)[0].backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(model)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)


def test_option_a_equals_the_precomputed_tiles_and_grids(model, demo_samples):
    """The preprocessor's option-A derivation gives the model exactly what a
    sample carrying the derived tile / grid itself gives."""
    from projects.sa2va.transforms.functional import (option_a_prompt_masks,
                                                      option_a_tiles)
    option_a = [demo_samples['mask_caption_describe'], demo_samples['mask_caption_segment']]
    direct = []
    for s in option_a:
        s = dict(s)
        if 'option_a_image' in s:
            s['pixel_values'] = option_a_tiles(s.pop('option_a_image')[None])
        if 'option_a_mask' in s:
            s['prompt_masks'] = option_a_prompt_masks(s.pop('option_a_mask')[None])
            s['vp_overall_mask'] = torch.tensor([True])
        direct.append(s)
    results = []
    for samples in (option_a, direct):
        torch.manual_seed(0)
        with torch.no_grad():
            results.append(run_loss(model, collate(samples)))
    assert {k: float(v) for k, v in results[0].items()} == \
        {k: float(v) for k, v in results[1].items()}
    assert float(results[0]['loss_mask']) > 0
