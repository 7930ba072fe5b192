"""Metrics of the Sa2VA benchmarks, as plain functions and mmengine metrics.

Plain functions (numpy in, floats out) hold each rule once; the registered
metrics (``projects.sa2va.registry.METRICS``) only collect per-sample
results and call them. GCG rules live in :mod:`.gcg_metrics`, caption
rules in :mod:`.caption_metrics` (their names are re-exported here).

* Referring segmentation (RefCOCO / + / g, Sa2VA's ``refcoco_eval.py``):
  one sample per sentence; the prediction is the first ``[SEG]`` mask.
  ``cIoU = sum_i I_i / sum_i U_i`` over the sentences that produced a
  ``[SEG]`` (a sentence without one adds nothing); ``gIoU = mean_i
  I_i / U_i`` over all sentences, where a sentence without ``[SEG]``
  counts 0 and one with an empty prediction and an empty target counts 1.
  (Sa2VA divides by ``U + 1e-5`` in gIoU and ``U + 1e-10`` in cIoU; the
  exact quotients here differ by less than 1e-5 / U.)
* Video referring segmentation (DAVIS-2017 rules, used by ReVOS, MeViS and
  Ref-YouTube-VOS evaluation scripts): per frame ``J`` = region IoU (1 when
  both masks are empty); ``F`` = boundary F-measure: the boundary map of a
  mask is the set of pixels whose value differs from the right, lower or
  lower-right neighbour (last row / column compared with what exists, the
  corner pixel never a boundary), the tolerance radius is
  ``ceil(bound_th * sqrt(H^2 + W^2))`` pixels for ``bound_th < 1``
  (``bound_th`` pixels otherwise), default ``bound_th = 0.008``; each
  boundary is dilated by a disk of that radius (``x^2 + y^2 <= r^2``);
  precision = predicted boundary pixels inside the dilated GT boundary /
  predicted boundary pixels, recall symmetric; both empty -> P = R = 1,
  only the prediction empty -> P = 1, R = 0, only the GT empty -> P = 0,
  R = 1; ``F = 2PR / (P + R)`` (0 when P + R = 0). Per expression the
  frame values are averaged; the benchmark ``J`` and ``F`` are means over
  expressions and ``J&F = (J + F) / 2``.
* ReVOS (``eval_revos.py``): besides J and F, per frame ``A`` = pixel
  accuracy (share of pixels where prediction and GT agree) and ``R`` =
  robustness ``max(0, 1 - |pred \\ GT| / (|foreground| + 1e-6))`` with the
  video's foreground mask (``mask_dict_foreground.json``); per expression
  the frame means, each rounded to 0.01 % as the script does; per subset
  (``type_id`` 0 = referring, 1 = reasoning; 2 counts in neither) the
  means over its expressions and ``J&F = (J + F) / 2``; ``overall`` = the
  mean of the two subsets' figures (not the mean over all expressions).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from ..registry import METRICS
from .caption_metrics import (bleu, caption_scores,  # noqa: F401
                              caption_tokens, cider_d, write_caption_files)
from .gcg_metrics import (build_text_similarity, gcg_mask_ap50,  # noqa: F401
                          gcg_miou, greedy_pairs, iou_matrix, mask_to_rle,
                          phrase_mask_recall, text_similarity)

__all__ = [
    'mask_inter_union', 'refseg_ciou_giou', 'region_j', 'boundary_map',
    'boundary_f', 'video_jf', 'revos_accuracy', 'revos_robustness',
    'revos_summary', 'gcg_miou', 'greedy_pairs', 'iou_matrix',
    'phrase_mask_recall', 'gcg_mask_ap50', 'text_similarity',
    'caption_tokens', 'bleu', 'cider_d', 'write_caption_files',
    'RefSegMetric', 'VideoJFMetric', 'GCGMetric', 'CaptionMetric'
]


def _bool(mask, name: str = 'mask') -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f'{name} must be (H, W), got shape {array.shape}')
    return array != 0


def _same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth '
                         f'{gt.shape} differ in size')


# ---------------------------------------------------------------------------
# Referring segmentation
# ---------------------------------------------------------------------------
def mask_inter_union(pred, gt) -> tuple[int, int]:
    """Intersection and union pixel counts of two ``(H, W)`` masks (any
    dtype, non-zero = object)."""
    p, g = _bool(pred, 'pred'), _bool(gt, 'gt')
    _same_shape(p, g)
    return int(np.logical_and(p, g).sum()), int(np.logical_or(p, g).sum())


def refseg_ciou_giou(inter_union: Sequence[Optional[tuple[int, int]]]
                     ) -> Dict[str, float]:
    """cIoU and gIoU from per-sentence ``(intersection, union)`` counts,
    ``None`` for a sentence whose answer had no ``[SEG]`` (module
    docstring).

    Returns:
        ``{'cIoU', 'gIoU'}`` in [0, 1]: a ``None`` adds nothing to cIoU and
        0 to gIoU; a union of 0 has IoU 1 in gIoU and adds nothing to
        cIoU; cIoU is 0 when the counted unions sum to 0 (as Sa2VA's
        ``I / (U + 1e-10)``).
    """
    if not inter_union:
        raise ValueError('no samples to evaluate')
    counted = [iu for iu in inter_union if iu is not None]
    inter = np.array([i for i, _ in counted], dtype=np.float64)
    union = np.array([u for _, u in counted], dtype=np.float64)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    total = union.sum()
    return dict(cIoU=float(inter.sum() / total) if total > 0 else 0.0,
                gIoU=float(ious.sum() / len(inter_union)))


# ---------------------------------------------------------------------------
# Video: J and F
# ---------------------------------------------------------------------------
def region_j(pred, gt) -> float:
    """DAVIS region similarity of two ``(H, W)`` masks: IoU, 1 if both are
    empty."""
    inter, union = mask_inter_union(pred, gt)
    return 1.0 if union == 0 else inter / union


def boundary_map(mask) -> np.ndarray:
    """``(H, W) bool`` boundary pixels of a ``(H, W)`` mask (DAVIS rule:
    a pixel whose value differs from its right, lower or lower-right
    neighbour; the last row compares with the right neighbour only, the
    last column with the lower one only, the bottom-right pixel is never a
    boundary)."""
    m = _bool(mask)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down[:-1, :] = m[1:, :]
    diag[:-1, :-1] = m[1:, 1:]
    b = (m ^ right) | (m ^ down) | (m ^ diag)
    b[-1, :] = m[-1, :] ^ right[-1, :]
    b[:, -1] = m[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def boundary_f(pred, gt, bound_th: float = 0.008) -> float:
    """DAVIS boundary F-measure of two ``(H, W)`` masks (module docstring).

    Args:
        pred, gt: masks, non-zero = object.
        bound_th: tolerance, a fraction of the image diagonal if < 1, else
            pixels.

    Returns:
        F in [0, 1].
    """
    p, g = _bool(pred, 'pred'), _bool(gt, 'gt')
    _same_shape(p, g)
    radius = bound_th if bound_th >= 1 else math.ceil(
        bound_th * math.hypot(*p.shape))
    kernel = _disk(radius)
    pb, gb = boundary_map(p), boundary_map(g)
    p_dil = cv2.dilate(pb.astype(np.uint8), kernel) > 0
    g_dil = cv2.dilate(gb.astype(np.uint8), kernel) > 0
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        precision = recall = 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = float((pb & g_dil).sum()) / n_p
        recall = float((gb & p_dil).sum()) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def video_jf(pred, gt, bound_th: float = 0.008) -> Dict[str, float]:
    """J, F and J&F of one expression over its frames.

    Args:
        pred, gt: ``(T, H, W)`` masks (non-zero = object).

    Returns:
        ``{'J', 'F', 'J&F'}``: frame means and their average.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f'pred {pred.shape} and gt {gt.shape} must be the '
                         f'same (T, H, W)')
    j = float(np.mean([region_j(p, g) for p, g in zip(pred, gt)]))
    f = float(np.mean([boundary_f(p, g, bound_th) for p, g in zip(pred, gt)]))
    return {'J': j, 'F': f, 'J&F': (j + f) / 2}


# ---------------------------------------------------------------------------
# ReVOS: A (accuracy), R (robustness), subsets
# ---------------------------------------------------------------------------
def _frames(name: str, *arrays) -> list:
    out = [np.asarray(a) != 0 for a in arrays]
    if out[0].ndim != 3 or any(a.shape != out[0].shape for a in out):
        raise ValueError(f'{name}: masks must share one (T, H, W) shape, '
                         f'got {[a.shape for a in out]}')
    return out


def revos_accuracy(pred, gt) -> np.ndarray:
    """ReVOS ``A`` per frame: the share of pixels where the ``(T, H, W)``
    masks agree; ``(T,)`` float64 in [0, 1]."""
    p, g = _frames('revos_accuracy', pred, gt)
    return (p == g).mean(axis=(1, 2))


def revos_robustness(pred, gt, foreground) -> np.ndarray:
    """ReVOS ``R`` per frame: ``max(0, 1 - |pred & ~gt| / (|foreground| +
    1e-6))`` of ``(T, H, W)`` masks; ``(T,)`` float64 in [0, 1]."""
    p, g, f = _frames('revos_robustness', pred, gt, foreground)
    neg = (p & ~g).sum(axis=(1, 2))
    return np.maximum(1 - neg / (f.sum(axis=(1, 2)) + 1e-6), 0.0)


REVOS_SUBSETS = {0: 'referring', 1: 'reason'}


def revos_summary(expressions: Sequence[dict]) -> Dict[str, float]:
    """ReVOS subset figures from per-expression ``{'J', 'F', 'A', 'R',
    'type_id'}`` (frame means in [0, 1]; ``R`` may be None when no
    foreground masks were given, then no ``R`` figures).

    Returns:
        ``{'referring/J', ..., 'reason/J&F', ..., 'overall/J&F', ...}`` in
        [0, 1] (the script's percentages / 100): per expression each value
        rounded to 0.01 %, subset means, ``overall`` = the mean of the two
        subsets (module docstring).

    A subset without expressions (e.g. a ``--max-items`` run) has no keys,
    and ``overall`` needs both subsets (the script would print NaN).
    """
    keys = ['J', 'F', 'A'] + (['R'] if all(e.get('R') is not None
                                          for e in expressions) else [])
    out: Dict[str, float] = {}
    for type_id, name in REVOS_SUBSETS.items():
        subset = [e for e in expressions if e['type_id'] == type_id]
        if not subset:
            continue
        for k in keys:
            out[f'{name}/{k}'] = float(np.mean(
                [round(100 * e[k], 2) for e in subset])) / 100
        out[f'{name}/J&F'] = (out[f'{name}/J'] + out[f'{name}/F']) / 2
    if all(f'{name}/J' in out for name in REVOS_SUBSETS.values()):
        for k in keys + ['J&F']:
            out[f'overall/{k}'] = (out[f'referring/{k}']
                                   + out[f'reason/{k}']) / 2
    return out


# ---------------------------------------------------------------------------
# mmengine metrics
# ---------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@METRICS.register_module()
class RefSegMetric(BaseMetric):
    """cIoU / gIoU. ``process`` takes data samples with ``pred_mask`` (``(H,
    W)``, non-zero = object, or None when the answer had no ``[SEG]``) and
    ``gt_mask`` ``(H, W)``; keys of the result: ``cIoU``, ``gIoU``,
    ``no_seg_rate`` (share of sentences without ``[SEG]``),
    ``num_samples``."""

    default_prefix = 'refseg'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        # ('no_seg',), not None: mmengine's result gathering drops Nones
        for s in data_samples:
            pred = s['pred_mask']
            self.results.append(('no_seg',) if pred is None else
                                mask_inter_union(_np(pred), _np(s['gt_mask'])))

    def compute_metrics(self, results: list) -> dict:
        pairs = [None if r == ('no_seg',) else r for r in results]
        out = refseg_ciou_giou(pairs)
        out['no_seg_rate'] = sum(p is None for p in pairs) / len(pairs)
        out['num_samples'] = len(results)
        return out


@METRICS.register_module()
class VideoJFMetric(BaseMetric):
    """J, F, J&F (and ReVOS's A, R and subsets) over expressions.

    ``process`` takes data samples with ``pred_masks`` and ``gt_masks``
    ``(T, H, W)``, optionally ``foreground_masks`` ``(T, H, W)`` (ReVOS R)
    and ``type_id`` (ReVOS subsets, :func:`revos_summary`). Keys: ``J``,
    ``F``, ``J&F``, ``A`` over all expressions, ``R`` when every sample has
    foreground masks, the ReVOS keys when every sample has a ``type_id``,
    ``num_expressions``.

    Args:
        bound_th: boundary tolerance (see :func:`boundary_f`).
    """

    default_prefix = 'vos'

    def __init__(self, bound_th: float = 0.008, **kwargs):
        super().__init__(**kwargs)
        self.bound_th = bound_th

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            pred, gt = _np(s['pred_masks']), _np(s['gt_masks'])
            res = video_jf(pred, gt, self.bound_th)
            res['A'] = float(revos_accuracy(pred, gt).mean())
            fg = s.get('foreground_masks')
            res['R'] = None if fg is None else float(
                revos_robustness(pred, gt, _np(fg)).mean())
            res['type_id'] = s.get('type_id')
            self.results.append(res)

    def compute_metrics(self, results: list) -> dict:
        j = float(np.mean([r['J'] for r in results]))
        f = float(np.mean([r['F'] for r in results]))
        out = {'J': j, 'F': f, 'J&F': (j + f) / 2,
               'A': float(np.mean([r['A'] for r in results]))}
        if all(r['R'] is not None for r in results):
            out['R'] = float(np.mean([r['R'] for r in results]))
        if all(r['type_id'] is not None for r in results):
            out.update(revos_summary(results))
        out['num_expressions'] = len(results)
        return out


@METRICS.register_module()
class GCGMetric(BaseMetric):
    """GCG mask AP50, mIoU, phrase-mask recall (GLaMM's rules,
    :mod:`.gcg_metrics`) and caption figures (:func:`caption_scores`).

    ``process`` takes data samples with ``pred_masks`` / ``gt_masks`` (lists
    of ``(H, W)``), ``pred_phrases`` / ``gt_phrases`` (lists of str),
    ``pred_caption`` and ``gt_caption`` (str) and ``image_id`` (str, GLaMM:
    the image file stem; AP50 ranks images by it). Keys: ``AP50``,
    ``mIoU``, ``recall``, the caption figures (``BLEU-4``, ``CIDEr`` and,
    with pycocoevalcap, ``METEOR``), ``text_similarity`` and
    ``caption_backend`` (what computed recall and captions),
    ``num_images``.

    Args:
        text_sim_model: local BERT-like model directory for the phrase
            similarity (None: the word-overlap stand-in).
        caption_backend: ``'auto'`` | ``'pycocoevalcap'`` | ``'builtin'``.
        pred_path, ref_path: where to write the COCO caption files (with
            GLaMM's ``labels``); None: not written.
        device: device of the text similarity model.
    """

    default_prefix = 'gcg'

    def __init__(self, text_sim_model: Optional[str] = None,
                 caption_backend: str = 'auto',
                 pred_path: Optional[str] = None,
                 ref_path: Optional[str] = None, device: str = 'cpu',
                 **kwargs):
        super().__init__(**kwargs)
        self.similarity, self.similarity_name = build_text_similarity(
            text_sim_model, device)
        self.caption_backend = caption_backend
        self.pred_path, self.ref_path = pred_path, ref_path

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            preds = [_np(m) != 0 for m in s['pred_masks']]
            gts = [_np(m) != 0 for m in s['gt_masks']]
            matched, n_gt = phrase_mask_recall(
                s['pred_phrases'], preds, s['gt_phrases'], gts,
                similarity=self.similarity)
            self.results.append(dict(
                image_id=s['image_id'],
                pred_masks=[mask_to_rle(m) for m in preds],
                gt_masks=[mask_to_rle(m) for m in gts],
                miou=gcg_miou(preds, gts), matched=matched, n_gt=n_gt,
                pred_phrases=list(s['pred_phrases']),
                gt_phrases=list(s['gt_phrases']),
                pred_caption=s['pred_caption'], gt_caption=s['gt_caption']))

    def compute_metrics(self, results: list) -> dict:
        n_gt = sum(r['n_gt'] for r in results)
        cands = {r['image_id']: r['pred_caption'] for r in results}
        refs = {r['image_id']: [r['gt_caption']] for r in results}
        if len(cands) != len(results):
            dup = [k for k, n in Counter(r['image_id'] for r in results).items()
                   if n > 1]
            raise ValueError(f'GCG image ids are not unique (GLaMM keys its '
                             f'files by them): {dup[:5]}')
        if self.pred_path and self.ref_path:
            write_caption_files(cands, refs, self.pred_path, self.ref_path,
                                labels={r['image_id']: (r['pred_phrases'],
                                                        r['gt_phrases'])
                                        for r in results})
        out = {'AP50': gcg_mask_ap50(results),
               'mIoU': float(np.mean([r['miou'] for r in results])),
               'recall': sum(r['matched'] for r in results) / n_gt
               if n_gt else 0.0}
        caps = caption_scores(cands, refs, self.caption_backend)
        out.update({k: v for k, v in caps.items()
                    if k in ('BLEU-4', 'METEOR', 'CIDEr', 'caption_backend')})
        out['text_similarity'] = self.similarity_name
        out['num_images'] = len(results)
        return out


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """Region / image captioning: BLEU-1..4 and CIDEr-D (and METEOR,
    ROUGE-L with pycocoevalcap, :func:`caption_scores`); optionally writes
    the COCO-format prediction and reference files.

    ``process`` takes data samples with ``id`` (int or str), ``caption``
    (str), ``references`` (list of str) and optionally ``image_info`` (a
    dict of JSON fields added to the sample's ``images`` entry of the
    reference file).

    Args:
        pred_path, ref_path: where to write the COCO-format files (None:
            not written).
        caption_backend: ``'auto'`` | ``'pycocoevalcap'`` | ``'builtin'``.
    """

    default_prefix = 'caption'

    def __init__(self, pred_path: Optional[str] = None,
                 ref_path: Optional[str] = None,
                 caption_backend: str = 'auto', **kwargs):
        super().__init__(**kwargs)
        self.pred_path, self.ref_path = pred_path, ref_path
        self.caption_backend = caption_backend

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append((s['id'], s['caption'], list(s['references']),
                                 dict(s.get('image_info') or {})))

    def compute_metrics(self, results: list) -> dict:
        cands = {k: c for k, c, _, _ in results}
        refs = {k: r for k, _, r, _ in results}
        if len(cands) != len(results):
            raise ValueError('caption ids are not unique')
        if self.pred_path and self.ref_path:
            write_caption_files(cands, refs, self.pred_path, self.ref_path,
                                {k: info for k, _, _, info in results})
            print_log(f'caption files: {self.pred_path}, {self.ref_path}',
                      logger='current')
        out = caption_scores(cands, refs, self.caption_backend)
        out['num_captions'] = len(results)
        return out
