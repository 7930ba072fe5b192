"""MaskCaptionCycleModel on the tiny model: teacher, gradient paths, EMA."""
from __future__ import annotations

import pytest
import torch

from tests.models.cycle_helpers import B, CONFIG, build_cycle_model
from tests.models.cycle_helpers import cycle_batch as _batch


@pytest.fixture(scope='module')
def model(tiny_tokenizer_dir):
    return build_cycle_model(tiny_tokenizer_dir, caption_len=8)


def test_teacher_left_padding_matches_single_sample(model):
    b = _batch()
    both = model.generate_pseudo_captions(b['pixel_values1'], b['prompt_masks1'])
    assert both['counts'].tolist() == [15, 0]
    for i in range(B):
        one = model.generate_pseudo_captions(b['pixel_values1'][i:i + 1],
                                             b['prompt_masks1'][i:i + 1])
        n = int(one['lengths'][0])
        assert int(both['lengths'][i]) == n
        assert torch.equal(both['tokens'][i], one['tokens'][0]), i


def test_teacher_stops_at_template_end_and_pads(model, monkeypatch):
    end = model.tokenizer.convert_tokens_to_ids('<|end|>')
    assert model.end_ids == [end]
    real = model._lm_head
    calls = []

    def head(hidden):
        logits = real(hidden)
        calls.append(1)
        if len(calls) == 4:                       # step t = 3: sample 0 writes <|end|>
            logits[0, end] = 1e4
        return logits

    monkeypatch.setattr(model, '_lm_head', head)
    b = _batch()
    out = model.generate_pseudo_captions(b['pixel_values1'], b['prompt_masks1'])
    assert out['lengths'].tolist()[0] == 3 and bool(out['stopped'][0])
    assert (out['tokens'][0, 3:] == model.pad_id).all()
    assert (out['tokens'][0, :3] != model.pad_id).all()
    special = model.special_ids
    assert not torch.isin(out['tokens'][1, :int(out['lengths'][1])], torch.tensor([end])).any()
    assert special.numel() > 0


def test_all_padding_teacher_output_raises(model, monkeypatch):
    end = model.tokenizer.convert_tokens_to_ids('<|end|>')
    real = model._lm_head

    def head(hidden):
        logits = real(hidden)
        logits[:, end] = 1e4
        return logits

    monkeypatch.setattr(model, '_lm_head', head)
    b = _batch()
    with pytest.raises(ValueError, match='empty caption for all 2 samples'):
        model.generate_pseudo_captions(b['pixel_values1'], b['prompt_masks1'])


def test_special_ids_cover_sa2va_and_image_tokens(model):
    tok = model.tokenizer
    must = [tok.convert_tokens_to_ids(t) for t in
            ('[SEG]', '<IMG_CONTEXT>', '<img>', '</img>', '<vp>', '</vp>', '<|end|>',
             '<|endoftext|>')]
    assert set(must) <= set(model.special_ids.tolist())
    assert not torch.isin(model.allowed_ids, model.special_ids).any()
    vocab = model.mllm.get_input_embeddings().weight.shape[0]
    assert model.allowed_ids.numel() + model.special_ids.numel() == vocab


@pytest.mark.parametrize('detach', [False, True])
def test_straight_through_gradient_reaches_caption_logits(model, detach):
    torch.manual_seed(1)
    model.zero_grad()
    out, inter = model._loop1_loss(_batch(), detach_caption=detach)
    logits = inter['logits']
    n = int(inter['lengths'].sum())
    assert logits.shape == (n, model.mllm.get_input_embeddings().weight.shape[0])
    assert not torch.isin(inter['hard_ids'], model.special_ids).any()
    logits.retain_grad()
    out['loss_mask'].backward()
    lora_a = [p for name, p in model.named_parameters() if 'lora_A' in name]
    if detach:
        assert logits.grad is None
    else:
        assert logits.grad is not None and logits.grad.abs().sum() > 0
        assert all(p.grad is not None for p in lora_a)
    assert set(out) >= {'loss_mask', 'loss_dice', 'loss_seg_llm', 'cap_len', 'k0_rate'}
    assert float(out['k0_rate']) == 0.5
    model.zero_grad()


def test_refcoco_batch_uses_gt_caption(model):
    b = _batch(seed=2)
    torch.manual_seed(0)
    out = model(mode='loss', captions=['the red ball', 'a man on the left'], **b)
    assert set(out) == {'loss_ref_mask', 'loss_ref_dice', 'loss_ref_llm'}
    assert all(torch.isfinite(v) and v > 0 for v in out.values())
    with pytest.raises(ValueError, match='mixes'):
        model(mode='loss', captions=['x', None], **b)


def test_seg_question_holds_one_seg_id_and_the_slot(model):
    pre, suf, ans = model.seg_pieces('Please segment {class_name} in this image.',
                                     'Sure, [SEG].')
    assert ans.count(model.seg_token_id) == 1 and model.seg_token_id not in pre + suf
    text = model.tokenizer.decode(pre + suf + ans)
    assert text.endswith('in this image.<|end|>\n<|assistant|>\nSure, [SEG].<|end|>')
    assert pre.count(model.mllm.img_context_token_id) == 256


def test_ema_update_and_teacher_swap(model):
    name = model._ema_names[0]
    p = model.get_parameter(name)
    with torch.no_grad():
        before = p.detach().clone()
        model.ema_reset()
        p.add_(1.0)
        model.ema_update()
    shadow = model._shadow(name)
    assert shadow.dtype == torch.float32
    torch.testing.assert_close(shadow, before + 0.001)         # d = 0.999
    assert model.ema_state.tolist() == [1, 1]
    with model.teacher_weights():
        torch.testing.assert_close(p.detach(), shadow)
        assert not model.mllm.training
    assert torch.equal(p.detach(), before + 1.0) and model.mllm.training
    with torch.no_grad():
        p.copy_(before)


def test_ema_state_round_trips_through_checkpoint(model, tiny_tokenizer_dir, tmp_path):
    from mmengine.runner.checkpoint import load_state_dict
    name = model._ema_names[1]
    with torch.no_grad():
        model.ema_reset()
        model.get_parameter(name).mul_(2.0)
        model.ema_update()
        model.ema_update()
    state = model.state_dict()                    # trainable-only + EMA buffers
    assert any(k.startswith('ema_shadow.') for k in state) and 'ema_state' in state
    torch.save(state, tmp_path / 'ckpt.pth')
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tiny_tokenizer_dir)
    torch.manual_seed(123)
    with DefaultScope.overwrite_default_scope('sa2va'):
        other = MODELS.build(cfg.model)
    assert int(other.ema_state[0]) == 0
    load_state_dict(other, torch.load(tmp_path / 'ckpt.pth', weights_only=True))
    assert other.ema_state.tolist() == [1, 2]
    for n in model._ema_names:
        assert torch.equal(other._shadow(n), model._shadow(n)), n
    with torch.no_grad():
        model.get_parameter(name).div_(2.0)


def test_masked_lm_loss_on_corrupted_positions(model, monkeypatch):
    torch.manual_seed(3)
    out, _ = model._loop1_loss(_batch())
    assert 'loss_masked_lm' not in out                  # owner default weight 0
    monkeypatch.setattr(model, 'masked_lm_loss_weight', 2.0)
    torch.manual_seed(3)
    out, inter = model._loop1_loss(_batch())
    pseudo, corrupted, lengths = inter['pseudo'], inter['corrupted'], inter['lengths']
    valid = torch.arange(pseudo.shape[1])[None] < lengths[:, None]
    changed = (corrupted != pseudo)[valid]
    assert changed.any() and not changed.all()
    want = torch.nn.functional.cross_entropy(inter['logits'][changed].float(),
                                             pseudo[valid][changed])
    torch.testing.assert_close(out['loss_masked_lm'], 2.0 * want)
    logits = torch.zeros(3, 5, requires_grad=True)
    none = model.masked_lm_loss(logits, torch.ones(1, 3, dtype=torch.long),
                                torch.ones(1, 3, dtype=torch.long),
                                torch.ones(1, 3, dtype=torch.bool))
    assert float(none) == 0.0 and none.requires_grad


def test_fp32_master_weights_for_trainables_only(tiny_tokenizer_dir):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, MODELS
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = str(tiny_tokenizer_dir)
    cfg.model.caption_len = 4
    cfg.model.mllm.torch_dtype = 'bfloat16'
    cfg.model.trainable_dtype = 'float32'
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('sa2va'):
        m = MODELS.build(cfg.model)
    named = dict(m.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all(named[n].dtype == torch.float32 for n in trainable)
    groups = {g: [n for n in trainable if s in n] for g, s in
              dict(lora='lora_', mlp1='mlp1', fcs='text_hidden_fcs',
                   decoder='sam_mask_decoder').items()}
    assert all(groups.values()), groups
    frozen_llm = [p for n, p in named.items() if 'language_model' in n and not p.requires_grad]
    assert frozen_llm and all(p.dtype == torch.bfloat16 for p in frozen_llm)
    m.ema_reset()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
    w = next(named[n] for n in groups['mlp1'] if named[n].dim() == 2)
    before = w.detach().clone()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(mode='loss', captions=['the red ball', 'a man'], **_batch(seed=4))
    sum(v for k, v in out.items() if 'loss' in k).backward()
    opt.step()
    step = w.detach() - before
    assert 0 < float(step.abs().max()) < 1e-4
    # the same step on bf16 weights would round away for most entries
    lost = before.bfloat16() == (before + step).bfloat16()
    assert float(lost.float().mean()) > 0.5
