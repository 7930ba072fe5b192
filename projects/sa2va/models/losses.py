"""Mask losses of Sa2VA: sigmoid BCE + naive Dice on uncertainty-sampled points.

The rule (Sa2VA, after Mask2Former / PointRend):

1. the GT masks are resized (nearest) to the predicted low-res size;
2. ``num_points`` locations per mask are chosen on the *prediction*:
   ``oversample_ratio * num_points`` uniform random locations are read from
   the logits (bilinear), the ``importance_sample_ratio`` fraction with the
   highest uncertainty ``-|logit|`` is kept and the rest is filled with new
   uniform random locations;
3. prediction and GT are both read at those locations with bilinear
   ``F.grid_sample`` (so GT values on a boundary are fractional);
4. ``loss_mask`` = mean sigmoid BCE over every point of every mask, times
   its weight (2.0); ``loss_dice`` = mean over masks of
   ``1 - (2 * sum(p * t) + eps) / (sum(p) + sum(t) + eps)`` with
   ``p = sigmoid(logit)`` ("naive" Dice, eps 1.0), times its weight (0.5).

Point coordinates are ``(x, y)`` in ``[0, 1]`` relative to the mask, the
convention of ``grid_sample`` with ``align_corners=False`` after mapping to
``[-1, 1]``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS


def point_sample(inputs: Tensor, points: Tensor,
                 align_corners: bool = False) -> Tensor:
    """Bilinear read of ``inputs`` at relative point coordinates.

    Args:
        inputs: ``(N, C, H, W)`` float.
        points: ``(N, P, 2)`` float, ``(x, y)`` in ``[0, 1]`` (0 = left/top
            border of the first pixel, 1 = right/bottom border of the last).
        align_corners: passed to ``F.grid_sample`` (False: the convention
            above).

    Returns:
        ``(N, C, P)`` in the dtype of ``inputs``; points outside read zeros.
    """
    if inputs.ndim != 4 or points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f'point_sample needs inputs (N, C, H, W) and points '
                         f'(N, P, 2), got {tuple(inputs.shape)} and '
                         f'{tuple(points.shape)}')
    grid = (2.0 * points - 1.0).unsqueeze(2).to(inputs.dtype)
    out = F.grid_sample(inputs, grid, mode='bilinear', padding_mode='zeros',
                        align_corners=align_corners)
    return out.squeeze(3)


def uncertain_point_coords(mask_logits: Tensor, num_points: int,
                           oversample_ratio: float = 3.0,
                           importance_sample_ratio: float = 0.75,
                           generator: Optional[torch.Generator] = None
                           ) -> Tensor:
    """Point locations by uncertainty-based importance sampling.

    Args:
        mask_logits: ``(N, 1, H, W)`` float mask logits (read only; no
            gradient flows through the choice).
        num_points: points per mask (Sa2VA: 12544 = 112 * 112).
        oversample_ratio: ``>= 1``; ``int(num_points * oversample_ratio)``
            random candidates are scored.
        importance_sample_ratio: in ``[0, 1]``; ``int(ratio * num_points)``
            most uncertain candidates (largest ``-|logit|``, ties broken by
            ``torch.topk``) are kept, the rest are fresh uniform points.
        generator: optional RNG for every random draw (deterministic under a
            seed); None uses the global RNG.

    Returns:
        ``(N, num_points, 2)`` float32 ``(x, y)`` in ``[0, 1)``: the
        uncertain points first, then the random ones.
    """
    if oversample_ratio < 1:
        raise ValueError(f'oversample_ratio must be >= 1, got {oversample_ratio}')
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f'importance_sample_ratio must be in [0, 1], got '
                         f'{importance_sample_ratio}')
    n = mask_logits.shape[0]
    device = mask_logits.device
    num_candidates = int(num_points * oversample_ratio)
    with torch.no_grad():
        candidates = torch.rand(n, num_candidates, 2, device=device,
                                generator=generator)
        logits = point_sample(mask_logits.detach().float(), candidates)
        uncertainty = -logits.abs()[:, 0]  # (N, num_candidates)
        num_uncertain = int(importance_sample_ratio * num_points)
        num_random = num_points - num_uncertain
        idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices
        chosen = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
        if num_random > 0:
            extra = torch.rand(n, num_random, 2, device=device,
                               generator=generator)
            chosen = torch.cat([chosen, extra], dim=1)
    return chosen


def resize_gt_masks(gt_masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """GT masks at the prediction size, nearest (the seed's rule).

    Args:
        gt_masks: ``(N, H, W)`` any numeric dtype (uint8 / bool / float),
            values in {0, 1}.
        size: ``(h, w)`` of the predicted masks (256 x 256 for SAM2 at 1024).

    Returns:
        ``(N, h, w)`` float32 in {0, 1}.
    """
    masks = gt_masks.float()
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks[:, None], size=tuple(size),
                         mode='nearest')[:, 0]


def sample_mask_points(pred_logits: Tensor, gt_masks: Tensor,
                       num_points: int = 12544, oversample_ratio: float = 3.0,
                       importance_sample_ratio: float = 0.75,
                       generator: Optional[torch.Generator] = None
                       ) -> Tuple[Tensor, Tensor]:
    """Prediction logits and GT values at the importance-sampled points.

    Args:
        pred_logits: ``(N, h, w)`` float mask logits (gradient kept).
        gt_masks: ``(N, h, w)`` float in {0, 1}, already at the prediction
            size (:func:`resize_gt_masks`).
        num_points, oversample_ratio, importance_sample_ratio, generator: see
            :func:`uncertain_point_coords`.

    Returns:
        ``(pred_points, gt_points)``, both ``(N, num_points)`` float32;
        ``gt_points`` in ``[0, 1]`` (bilinear reads of the binary GT).
    """
    if pred_logits.shape != gt_masks.shape or pred_logits.ndim != 3:
        raise ValueError(f'predicted masks {tuple(pred_logits.shape)} and GT '
                         f'masks {tuple(gt_masks.shape)} must both be (N, h, w)')
    pred = pred_logits[:, None].float()
    coords = uncertain_point_coords(pred, num_points, oversample_ratio,
                                    importance_sample_ratio, generator)
    with torch.no_grad():
        gt_points = point_sample(gt_masks[:, None].float(), coords)[:, 0]
    pred_points = point_sample(pred, coords)[:, 0]
    return pred_points, gt_points


def sigmoid_bce_loss(pred_logits: Tensor, target: Tensor) -> Tensor:
    """Mean sigmoid binary cross-entropy over every element.

    Args:
        pred_logits: ``(N, ...)`` float logits; target: same shape, float in
            ``[0, 1]``.

    Returns:
        scalar float32.
    """
    return F.binary_cross_entropy_with_logits(pred_logits.float(),
                                              target.float(), reduction='mean')


def naive_dice_loss(pred_logits: Tensor, target: Tensor,
                    eps: float = 1.0) -> Tensor:
    """Mean over masks of ``1 - (2 * sum(p t) + eps) / (sum(p) + sum(t) + eps)``.

    Args:
        pred_logits: ``(N, ...)`` float logits (``p = sigmoid``).
        target: same shape, float in ``[0, 1]``.
        eps: smoothing added to numerator and denominator (Sa2VA: 1.0).

    Returns:
        scalar float32 in ``[0, 1)``.
    """
    p = pred_logits.float().sigmoid().flatten(1)
    t = target.float().flatten(1)
    dice = (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return (1 - dice).mean()


@MODELS.register_module()
class MaskBCELoss(nn.Module):
    """``loss_weight *`` :func:`sigmoid_bce_loss` (Sa2VA: weight 2.0).

    ``forward(pred_logits (N, ...), target (N, ...)) -> scalar``."""

    def __init__(self, loss_weight: float = 2.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, pred_logits: Tensor, target: Tensor) -> Tensor:
        return self.loss_weight * sigmoid_bce_loss(pred_logits, target)


@MODELS.register_module()
class MaskDiceLoss(nn.Module):
    """``loss_weight *`` :func:`naive_dice_loss` (Sa2VA: weight 0.5, eps 1).

    ``forward(pred_logits (N, ...), target (N, ...)) -> scalar``."""

    def __init__(self, loss_weight: float = 0.5, eps: float = 1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.eps = float(eps)

    def forward(self, pred_logits: Tensor, target: Tensor) -> Tensor:
        return self.loss_weight * naive_dice_loss(pred_logits, target,
                                                  self.eps)
