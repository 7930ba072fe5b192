"""Mask losses and point sampling against hand-computed values."""
import math

import pytest
import torch

from projects.sa2va.models.losses import (MaskBCELoss, MaskDiceLoss, naive_dice_loss,
                                          point_sample, resize_gt_masks,
                                          sample_mask_points, sigmoid_bce_loss,
                                          uncertain_point_coords)

LOGITS = torch.tensor([[0., 2.], [-1., 3.]])
TARGET = torch.tensor([[1., 0.], [0., 1.]])


def test_bce_hand_computed():
    # log(1 + e^-x) for t = 1, log(1 + e^x) for t = 0, mean over 4 elements:
    # (log 2 + log(1 + e^2) + log(1 + e^-1) + log(1 + e^-3)) / 4
    expected = (0.6931472 + 2.1269280 + 0.3132617 + 0.0485874) / 4
    assert sigmoid_bce_loss(LOGITS, TARGET).item() == pytest.approx(expected, abs=1e-6)
    assert MaskBCELoss()(LOGITS, TARGET).item() == pytest.approx(2 * expected, abs=1e-6)
    assert expected == pytest.approx(0.7954811, abs=1e-6)


def test_naive_dice_hand_computed():
    # mask 0: p = (0.5, s(2)), t = (1, 0): 1 - (2*0.5 + 1) / (0.5 + s(2) + 1 + 1)
    # mask 1: p = (s(-1), s(3)), t = (0, 1): 1 - (2 s(3) + 1) / (s(-1) + s(3) + 1 + 1)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    d0 = 1 - 2.0 / (2.5 + s(2))
    d1 = 1 - (2 * s(3) + 1) / (s(-1) + s(3) + 2)
    assert d0 == pytest.approx(0.4084235, abs=1e-6)
    assert d1 == pytest.approx(0.0982045, abs=1e-6)
    assert naive_dice_loss(LOGITS, TARGET).item() == pytest.approx((d0 + d1) / 2, abs=1e-6)
    assert MaskDiceLoss()(LOGITS, TARGET).item() == pytest.approx(0.1266570, abs=1e-6)
    # eps enters numerator and denominator
    assert naive_dice_loss(LOGITS[:1], TARGET[:1], eps=0.0).item() == pytest.approx(
        1 - 1.0 / (0.5 + s(2) + 1), abs=1e-6)


def test_perfect_prediction_dice_near_zero():
    t = torch.tensor([[1., 1., 0., 0.]])
    logits = (t * 2 - 1) * 50
    assert naive_dice_loss(logits, t).item() == pytest.approx(0.0, abs=1e-6)


def test_point_sample_bilinear_reads():
    img = torch.tensor([[[[1., 2.], [3., 4.]]]])
    pts = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0., 0.]]])
    out = point_sample(img, pts)
    assert out.shape == (1, 1, 5)
    # pixel centres, (x, y) order; the centre of the image averages all four;
    # the corner reads a quarter of pixel (0, 0) against zero padding.
    assert out[0, 0].tolist() == pytest.approx([1., 2., 3., 2.5, 0.25])


def test_resize_gt_nearest():
    m = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4)
    out = resize_gt_masks(m, (2, 2))
    assert out.dtype == torch.float32
    assert out[0].tolist() == [[0., 2.], [8., 10.]]
    assert resize_gt_masks(m, (4, 4)).equal(m.float())


def test_uncertain_points_pick_the_boundary_and_are_seeded():
    # Left half logit 0 (most uncertain), right half 10.
    logits = torch.zeros(2, 1, 8, 8)
    logits[..., 4:] = 10.0
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    a = uncertain_point_coords(logits, 40, 3.0, 0.75, generator=g1)
    b = uncertain_point_coords(logits, 40, 3.0, 0.75, generator=g2)
    assert a.shape == (2, 40, 2) and a.equal(b)
    # The 30 importance points are the 30 candidates with the smallest |logit|.
    g3 = torch.Generator().manual_seed(3)
    cand = torch.rand(2, 120, 2, generator=g3)
    score = point_sample(logits, cand)[:, 0].abs()
    for i in range(2):
        chosen = point_sample(logits[i:i + 1], a[i:i + 1, :30])[0, 0].abs()
        assert chosen.max() <= score[i].sort().values[29] + 1e-6
    # Under the global RNG: equal seeds give equal points.
    torch.manual_seed(7)
    c = uncertain_point_coords(logits, 40)
    torch.manual_seed(7)
    assert uncertain_point_coords(logits, 40).equal(c)
    with pytest.raises(ValueError, match='oversample_ratio'):
        uncertain_point_coords(logits, 4, 0.5)


def test_sample_mask_points_gt_values_and_gradient():
    pred = torch.zeros(1, 4, 4, requires_grad=True)
    gt = torch.zeros(1, 4, 4)
    gt[0, :, :2] = 1
    p, t = sample_mask_points(pred, gt, num_points=64, generator=torch.Generator().manual_seed(0))
    assert p.shape == t.shape == (1, 64)
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    p.sum().backward()
    assert pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='must both be'):
        sample_mask_points(pred, gt[:, :2], 8)
