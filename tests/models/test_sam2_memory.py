"""The memory path on a synthetic moving object.

The tiny SAM2.1 architecture gets hand-set weights that make every stage of
the tracker readable:

* backbone features (given directly, as ``track_step`` takes them): channel 0
  is +3 on "object-looking" cells and -3 elsewhere (channel 1 the negative);
* memory encoder: the mask downsampler carries the sign of the mask logit at
  each cell's centre into one channel, the pixel projection carries the
  appearance channel, the fusers are identities (layer scale 0); memory =
  (5 * appearance, mask sign);
* memory attention (layer 0): the query / key content channels sit on the
  lowest-frequency RoPE pair (appearance match, ~+-21 logits) and constant
  biases on a mid-frequency x and y pair make the logits fall with the
  distance between query and memory cell; values carry the memory mask. The
  final norm keeps only the retrieved mask channels;
* mask decoder: attention / MLP outputs are zero, the upscaling copies the
  retrieved channel, the hypernetworks read it with weight +1 / -1, and the
  object score is +10 (no gating).

Two 3x3 objects look the same: one moves one cell right per frame, the other
stays. Whatever is prompted on frame 0 must be followed for 8 frames, and the
other object must stay out of the mask: only memory (mask values, retrieved
by appearance and position) can tell them apart.
"""
import pytest
import torch

from projects.sa2va.models import build_sam2
from sam2_helpers import require_fixtures, tiny_config

GRID, S, FRAMES = 16, 256, 8
APP, MK = 0, 2              # feature channels: appearance, retrieved mask


def _set(p, index, value):
    p.data[index] = value


@pytest.fixture(scope='module')
def tracker():
    require_fixtures()
    torch.manual_seed(0)
    model = build_sam2(tiny_config(), trainable=None).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        # memory encoder: mask downsampler propagates sign(mask) per cell
        enc = model.memory_encoder.mask_downsampler.encoder
        for conv_i, norm_i in ((0, 1), (3, 4), (6, 7), (9, 10)):
            conv = enc[conv_i]
            tap = 2 if conv_i == 9 else 1   # sample pixel 16 i + 8
            if conv_i == 0:
                _set(conv.weight, (0, 0, tap, tap), 1.0)
                _set(conv.weight, (1, 0, tap, tap), -1.0)
            else:   # gelu(a) - gelu(-a) = a
                for out, sign in ((0, 1.0), (1, -1.0)):
                    _set(conv.weight, (out, 0, tap, tap), sign)
                    _set(conv.weight, (out, 1, tap, tap), -sign)
            enc[norm_i].weight.fill_(1.0)
        _set(enc[12].weight, (MK, 0, 0, 0), 1.0)
        _set(enc[12].weight, (MK, 1, 0, 0), -1.0)
        _set(model.memory_encoder.pix_feat_proj.weight, (APP, APP, 0, 0), 1.0)
        _set(model.memory_encoder.out_proj.weight, (0, APP, 0, 0), 5.0)
        _set(model.memory_encoder.out_proj.weight, (1, MK, 0, 0), 1.0)
        # memory attention, layer 0 cross-attention
        layer = model.memory_attention.layers[0]
        layer.norm2.weight.fill_(1.0)
        ca = layer.cross_attn_image
        _set(ca.q_proj.weight, (30, APP), 1.0)     # lowest-frequency x pair
        _set(ca.k_proj.weight, (30, 0), 2.0)
        for ch in (6, 38):                         # x / y pairs, freq 0.178
            _set(ca.q_proj.bias, ch, 8.0)
            _set(ca.k_proj.bias, ch, 8.0)
        _set(ca.v_proj.weight, (MK, 1), 5.0)
        _set(ca.v_proj.weight, (MK + 1, 1), -5.0)
        ca.out_proj.weight.copy_(torch.eye(64))
        norm = model.memory_attention.norm
        norm.weight[MK:MK + 2] = 1.0
        # mask decoder: pass the retrieved channel through
        dec = model.sam_mask_decoder
        for blk in dec.transformer.layers:
            blk.norm4.weight.fill_(1.0)
        up = dec.output_upscaling
        up[0].weight[MK, 0] = 1.0
        up[0].weight[MK, 1] = -1.0
        up[1].weight.fill_(1.0)
        up[3].weight[0, 0] = 1.0
        up[3].weight[1, 0] = -1.0
        up[3].weight[0, 1] = -1.0
        up[3].weight[1, 1] = 1.0
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[2].bias[:2] = torch.tensor([1.0, -1.0])
        dec.iou_prediction_head.layers[2].bias[1] = 5.0
        dec.pred_obj_score_head.layers[2].bias.fill_(10.0)
    return model


def _boxes(t):
    """(moving, static) object cells at frame t: (row slice, col slice)."""
    return ((slice(3, 6), slice(1 + t, 4 + t)), (slice(11, 14), slice(4, 7)))


def _frame(model, t):
    top = -3.0 * torch.ones(1, 64, GRID, GRID)
    top[:, 1] = 3.0
    top[:, 2:] = 0.0
    for rows, cols in _boxes(t):
        top[:, APP, rows, cols] = 3.0
        top[:, 1, rows, cols] = -3.0
    pe = model.image_encoder.neck.position_encoding
    fpn = [torch.zeros(1, 8, 4 * GRID, 4 * GRID),
           torch.zeros(1, 16, 2 * GRID, 2 * GRID), top]
    return {'backbone_fpn': fpn, 'vision_features': top,
            'vision_pos_enc': [pe(torch.zeros(1, 64, 4 * GRID, 4 * GRID)),
                               pe(torch.zeros(1, 64, 2 * GRID, 2 * GRID)),
                               pe(top)]}


def _mask(box):
    m = torch.zeros(1, 1, GRID, GRID)
    m[:, :, box[0], box[1]] = 1.0
    return m.repeat_interleave(S // GRID, 2).repeat_interleave(S // GRID, 3)


def _iou(a, b):
    return ((a & b).sum() / (a | b).sum()).item()


@pytest.fixture(scope='module')
def tracks(tracker):
    """Outputs of propagating the moving (0) and static (1) prompt, and the
    (memory shape, object-pointer tokens) seen by memory attention in run 0."""
    frames = [_frame(tracker, t) for t in range(FRAMES)]
    seen = []
    handle = tracker.memory_attention.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(
            (tuple(kwargs['memory'].shape), kwargs['num_obj_ptr_tokens'])),
        with_kwargs=True)
    try:
        moving = tracker.propagate(frames, init_mask=_mask(_boxes(0)[0]))
    finally:
        handle.remove()
    static = tracker.propagate(frames, init_mask=_mask(_boxes(0)[1]))
    return {0: moving, 1: static, 'memory': seen}


@pytest.mark.parametrize('which', [0, 1], ids=['moving', 'static'])
def test_prompted_object_is_followed(tracks, which):
    outs = tracks[which]
    assert len(outs) == FRAMES
    for t, out in enumerate(outs):
        pred = out['pred_masks_high_res'][0, 0] > 0
        target = _mask(_boxes(t)[which])[0, 0] > 0
        other = _mask(_boxes(t)[1 - which])[0, 0] > 0
        assert out['pred_masks'].shape == (1, 1, 64, 64)
        assert out['maskmem_features'].shape == (1, 16, GRID, GRID)
        assert _iou(pred, target) > 0.9, (t, _iou(pred, target))
        assert not bool((pred & other).any()), t
        assert out['object_score_logits'].item() > 0


def test_memory_bank_contents(tracks):
    """On frame t the memory holds the conditioning frame, up to 6 previous
    frames and t object pointers of 64 / 16 = 4 tokens each (frame 0 uses
    its mask directly and runs no memory attention)."""
    seen = tracks['memory']
    assert len(seen) == FRAMES - 1
    hw = GRID * GRID
    for t, (shape, n_ptr) in enumerate(seen, start=1):
        n_mem_frames = 1 + min(t - 1, 6)
        assert n_ptr == 4 * t, (t, n_ptr)
        assert shape == (n_mem_frames * hw + n_ptr, 1, 16), (t, shape)


def test_empty_prompt_is_gated(tracker):
    """An empty first-frame mask gives object score -10, the no-object
    pointer and memory with ``no_obj_embed_spatial`` added."""
    with torch.no_grad():
        tracker.no_obj_ptr.fill_(0.5)
        tracker.no_obj_embed_spatial.fill_(0.25)
    try:
        frame = _frame(tracker, 0)
        out = tracker.propagate([frame], init_mask=torch.zeros(1, 1, S, S))[0]
        full = tracker.propagate([frame], init_mask=_mask(_boxes(0)[0]))[0]
    finally:
        with torch.no_grad():
            tracker.no_obj_ptr.zero_()
            tracker.no_obj_embed_spatial.zero_()
    assert out['object_score_logits'].item() == -10.0
    assert bool((out['obj_ptr'] == 0.5).all())
    assert bool((full['obj_ptr'] == 0.0).all())
    assert bool((out['pred_masks_high_res'] == -10.0).all())
    assert out['maskmem_features'].shape == full['maskmem_features'].shape


def test_select_closest_cond_frames():
    from projects.sa2va.models.sam2.sam2_base import select_closest_cond_frames
    cond = {t: f'out{t}' for t in (0, 3, 9, 20)}
    sel, unsel = select_closest_cond_frames(10, cond, -1)
    assert sel == cond and unsel == {}
    sel, unsel = select_closest_cond_frames(10, cond, 3)
    assert sorted(sel) == [3, 9, 20] and sorted(unsel) == [0]
    sel, unsel = select_closest_cond_frames(2, cond, 2)
    assert sorted(sel) == [0, 3] and sorted(unsel) == [9, 20]
