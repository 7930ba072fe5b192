"""Metrics of the Sa2VA benchmarks, as plain functions and mmengine metrics.

Plain functions (numpy in, floats out) hold each rule once; the registered
metrics (``projects.sa2va.registry.METRICS``) only collect per-sample
results and call them.

* Referring segmentation (RefCOCO / + / g, LISA's convention):
  ``cIoU = sum_i I_i / sum_i U_i`` over all samples; ``gIoU = mean_i
  I_i / U_i`` where a sample with an empty union (empty prediction and empty
  target) counts IoU 1.
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
* GCG (GLaMM's evaluation): mask AP50 = COCO segmentation AP at IoU 0.5
  (pycocotools, one class, every predicted mask with score 1); mIoU = per
  image, the predicted and GT masks are matched one to one maximising the
  summed IoU (Hungarian), the mean matched IoU, averaged over images (an
  image with no prediction counts 0); phrase-mask recall = GT (phrase,
  mask) pairs matched by a prediction with IoU >= 0.5 and text similarity
  >= 0.5, greedily by IoU, one to one, over all GT pairs. GLaMM measures
  text similarity with BERT sentence embeddings; here it is the token F1 of
  the lower-cased words (no model download), so recall figures are close
  to but not the same as GLaMM's.
* Captions: BLEU-1..4 (corpus level, brevity penalty against the closest
  reference length, as coco-caption's ``Bleu``) and CIDEr-D (n = 1..4,
  TF-IDF vectors with document frequencies from the references of the
  evaluated set, clipped candidate counts, Gaussian length penalty
  ``sigma = 6``, times 10, as coco-caption's ``CiderD``), computed on
  lower-cased words with punctuation removed (coco-caption runs the Java
  PTB tokenizer first, so figures can differ slightly). The predictions are
  also written in the COCO caption result format (``[{"image_id",
  "caption"}]`` + a references file ``{"images", "annotations"}``) that
  ``pycocoevalcap``'s ``COCOEvalCap`` reads for METEOR / SPICE (Java).
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from ..registry import METRICS

__all__ = [
    'mask_inter_union', 'refseg_ciou_giou', 'region_j', 'boundary_map',
    'boundary_f', 'video_jf', 'hungarian_max', 'gcg_miou',
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


def refseg_ciou_giou(inter_union: Sequence[tuple[int, int]]
                     ) -> Dict[str, float]:
    """cIoU and gIoU from per-sample ``(intersection, union)`` counts.

    Returns:
        ``{'cIoU', 'gIoU'}`` in [0, 1]; a sample with union 0 has IoU 1 in
        gIoU and adds nothing to cIoU (cIoU of a set of empty unions is 1).
    """
    if not inter_union:
        raise ValueError('no samples to evaluate')
    inter = np.array([i for i, _ in inter_union], dtype=np.float64)
    union = np.array([u for _, u in inter_union], dtype=np.float64)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    total = union.sum()
    return dict(cIoU=float(inter.sum() / total) if total > 0 else 1.0,
                gIoU=float(ious.mean()))


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
# GCG
# ---------------------------------------------------------------------------
def hungarian_max(score: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one assignment maximising the summed score.

    Args:
        score: ``(n, m)`` float matrix.

    Returns:
        ``min(n, m)`` pairs ``(row, col)`` sorted by row.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.ndim != 2:
        raise ValueError(f'score must be 2-D, got {score.shape}')
    n, m = score.shape
    if n == 0 or m == 0:
        return []
    transposed = n > m
    cost = -(score.T if transposed else score)   # rows <= cols
    rows, cols = cost.shape
    # Shortest augmenting paths with potentials (Kuhn-Munkres), 1-based.
    u = np.zeros(rows + 1)
    v = np.zeros(cols + 1)
    owner = np.zeros(cols + 1, dtype=int)       # column -> row (0 = free)
    for r in range(1, rows + 1):
        owner[0] = r
        j0 = 0
        dist = np.full(cols + 1, np.inf)
        prev = np.zeros(cols + 1, dtype=int)
        used = np.zeros(cols + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            delta, j1 = np.inf, 0
            for j in range(1, cols + 1):
                if used[j]:
                    continue
                cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                if cur < dist[j]:
                    dist[j], prev[j] = cur, j0
                if dist[j] < delta:
                    delta, j1 = dist[j], j
            for j in range(cols + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    dist[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = prev[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(owner[j] - 1, j - 1) for j in range(1, cols + 1) if owner[j]]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


def _iou_matrix(preds: Sequence, gts: Sequence) -> np.ndarray:
    out = np.zeros((len(preds), len(gts)))
    for i, p in enumerate(preds):
        for j, g in enumerate(gts):
            inter, union = mask_inter_union(p, g)
            out[i, j] = inter / union if union else 0.0
    return out


def gcg_miou(preds: Sequence, gts: Sequence) -> float:
    """Mean IoU of the Hungarian (max summed IoU) matching of an image's
    predicted ``(H, W)`` masks to its GT masks; 0 when either list is
    empty."""
    if not preds or not gts:
        return 0.0
    iou = _iou_matrix(preds, gts)
    pairs = hungarian_max(iou)
    return float(np.mean([iou[i, j] for i, j in pairs]))


_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def caption_tokens(text: str) -> list[str]:
    """Lower-cased words (letters, digits, apostrophe suffixes); punctuation
    removed."""
    return _WORD_RE.findall(str(text).lower())


def text_similarity(a: str, b: str) -> float:
    """Token F1 of two phrases (bag of lower-cased words), in [0, 1]."""
    ta, tb = Counter(caption_tokens(a)), Counter(caption_tokens(b))
    common = sum((ta & tb).values())
    if common == 0:
        return 0.0
    p, r = common / sum(ta.values()), common / sum(tb.values())
    return 2 * p * r / (p + r)


def phrase_mask_recall(pred_phrases: Sequence[str], pred_masks: Sequence,
                       gt_phrases: Sequence[str], gt_masks: Sequence,
                       iou_th: float = 0.5, text_th: float = 0.5
                       ) -> tuple[int, int]:
    """Matched and total GT pairs of one image (module docstring).

    Returns:
        ``(matched, n_gt)`` ints.
    """
    if len(pred_phrases) != len(pred_masks) or len(gt_phrases) != len(gt_masks):
        raise ValueError('phrases and masks must pair up')
    iou = _iou_matrix(pred_masks, gt_masks)
    cands = [(iou[i, j], i, j) for i in range(len(pred_masks))
             for j in range(len(gt_masks))
             if iou[i, j] >= iou_th
             and text_similarity(pred_phrases[i], gt_phrases[j]) >= text_th]
    used_p, used_g = set(), set()
    for _, i, j in sorted(cands, key=lambda c: -c[0]):
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
    return len(used_g), len(gt_masks)


def gcg_mask_ap50(images: Sequence[dict]) -> float:
    """COCO segmentation AP at IoU 0.5 (one class, scores 1).

    Args:
        images: per image ``{'pred_masks': list of (H, W), 'gt_masks': list
            of (H, W)}`` (same size within an image).

    Returns:
        AP50 in [0, 1]; 0 when nothing was predicted.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        enc = mask_utils.encode(np.asfortranarray(_bool(mask).astype(np.uint8)))
        enc['counts'] = enc['counts'].decode('ascii')
        return enc

    gt = dict(images=[], annotations=[], categories=[dict(id=1, name='object')])
    dets = []
    for k, im in enumerate(images):
        gts = list(im['gt_masks'])
        shape = np.asarray(gts[0] if gts else im['pred_masks'][0]).shape
        gt['images'].append(dict(id=k, height=int(shape[0]), width=int(shape[1])))
        for m in gts:
            r = rle(m)
            gt['annotations'].append(dict(
                id=len(gt['annotations']) + 1, image_id=k, category_id=1,
                segmentation=r, area=float(mask_utils.area(r)), iscrowd=0,
                bbox=list(mask_utils.toBbox(r))))
        for m in im['pred_masks']:
            dets.append(dict(image_id=k, category_id=1, segmentation=rle(m),
                             score=1.0))
    if not dets or not gt['annotations']:
        return 0.0
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    coco_dt = coco.loadRes(dets)
    ev = COCOeval(coco, coco_dt, iouType='segm')
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [1, 10, 100]
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval['precision'][0, :, 0, 0, -1]   # all areas, 100 dets
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------
def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidates: Dict, references: Dict, max_n: int = 4) -> List[float]:
    """Corpus BLEU-1..max_n.

    Args:
        candidates: id -> candidate string.
        references: id -> list of reference strings (same ids).

    Returns:
        list of ``max_n`` floats in [0, 1]: ``BP * exp(mean_{k<=n} log p_k)``
        with clipped n-gram precisions ``p_k`` summed over the corpus and
        ``BP = min(1, exp(1 - r / c))``, ``r`` the sum of the reference
        lengths closest to each candidate's length (shorter on a tie).
    """
    _check_ids(candidates, references)
    match = np.zeros(max_n)
    total = np.zeros(max_n)
    cand_len = ref_len = 0
    for key, cand in candidates.items():
        c = caption_tokens(cand)
        refs = [caption_tokens(r) for r in references[key]]
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            cn = _ngrams(c, n)
            best: Counter = Counter()
            for r in refs:
                best |= _ngrams(r, n)
            match[n - 1] += sum((cn & best).values())
            total[n - 1] += max(len(c) - n + 1, 0)
    tiny = 1e-9
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / max(cand_len, tiny))
    scores, log_sum = [], 0.0
    for n in range(max_n):
        log_sum += math.log(max(match[n], tiny) / max(total[n], tiny))
        scores.append(bp * math.exp(log_sum / (n + 1)))
    return scores


def cider_d(candidates: Dict, references: Dict, sigma: float = 6.0,
            max_n: int = 4) -> float:
    """Corpus CIDEr-D (module docstring).

    For each n: ``g(x)`` = TF-IDF vector of n-grams (term frequency times
    ``log(N / df)``, ``N`` the number of images, ``df`` the number of
    images whose references contain the n-gram); score_n(c, r) =
    ``min(g(c), g(r)) . g(r) / (|g(c)| |g(r)|) * exp(-(l_c - l_r)^2 /
    (2 sigma^2))`` (the min is the clipping of CIDEr-D), averaged over
    references; the image score is ``10 * mean_n score_n``; the corpus
    score is the mean over images.

    Returns:
        CIDEr-D (>= 0; about 0..10).
    """
    _check_ids(candidates, references)
    keys = list(candidates)
    refs_tok = {k: [caption_tokens(r) for r in references[k]] for k in keys}
    df: Counter = Counter()
    for k in keys:
        seen = set()
        for r in refs_tok[k]:
            for n in range(1, max_n + 1):
                seen.update(_ngrams(r, n))
        df.update(seen)
    log_n = math.log(float(len(keys)))

    def vec(tokens):
        out = []
        for n in range(1, max_n + 1):
            counts = _ngrams(tokens, n)
            out.append({g: tf * (log_n - math.log(max(1.0, df[g])))
                        for g, tf in counts.items()})
        return out

    def norm(v):
        return math.sqrt(sum(x * x for x in v.values()))

    scores = []
    for k in keys:
        c = caption_tokens(candidates[k])
        vc = vec(c)
        per_ref = []
        for r in refs_tok[k]:
            vr = vec(r)
            delta = len(c) - len(r)
            penalty = math.exp(-(delta * delta) / (2 * sigma * sigma))
            s = 0.0
            for n in range(max_n):
                dot = sum(min(w, vr[n][g]) * vr[n][g]
                          for g, w in vc[n].items() if g in vr[n])
                nc, nr = norm(vc[n]), norm(vr[n])
                if nc and nr:
                    s += dot / (nc * nr) * penalty
            per_ref.append(s / max_n)
        scores.append(10.0 * float(np.mean(per_ref)))
    return float(np.mean(scores))


def _check_ids(candidates: Dict, references: Dict) -> None:
    if not candidates:
        raise ValueError('no captions to evaluate')
    missing = [k for k in candidates if not references.get(k)]
    if missing:
        raise ValueError(f'candidates without references: {missing[:5]}')


def write_caption_files(candidates: Dict, references: Dict, pred_path: str,
                        ref_path: str,
                        image_info: Optional[Dict] = None) -> None:
    """COCO caption format: ``pred_path`` = ``[{"image_id", "caption"}]``,
    ``ref_path`` = ``{"images": [{"id", ...}], "annotations": [{"image_id",
    "id", "caption"}]}`` (ids as given: ints or strings; annotation ids
    0, 1, ... in order). ``image_info``: id -> dict of extra JSON fields
    of that ``images`` entry (e.g. the source record); the key ``id`` is
    refused."""
    image_info = image_info or {}
    for k, info in image_info.items():
        if 'id' in info:
            raise ValueError(f'image_info of {k!r} may not set "id"')
    with open(pred_path, 'w', encoding='utf-8') as f:
        json.dump([dict(image_id=k, caption=v) for k, v in candidates.items()],
                  f, ensure_ascii=False, indent=1)
    anns = [dict(image_id=k, id=i, caption=c) for i, (k, c) in enumerate(
        (k, c) for k in candidates for c in references[k])]
    with open(ref_path, 'w', encoding='utf-8') as f:
        json.dump(dict(images=[dict(id=k, **image_info.get(k, {}))
                               for k in candidates],
                       annotations=anns), f, ensure_ascii=False, indent=1)


# ---------------------------------------------------------------------------
# mmengine metrics
# ---------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@METRICS.register_module()
class RefSegMetric(BaseMetric):
    """cIoU / gIoU. ``process`` takes data samples with ``pred_mask`` and
    ``gt_mask`` (``(H, W)``, non-zero = object); keys of the result:
    ``cIoU``, ``gIoU``, ``num_samples``."""

    default_prefix = 'refseg'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append(mask_inter_union(_np(s['pred_mask']),
                                                 _np(s['gt_mask'])))

    def compute_metrics(self, results: list) -> dict:
        out = refseg_ciou_giou(results)
        out['num_samples'] = len(results)
        return out


@METRICS.register_module()
class VideoJFMetric(BaseMetric):
    """J, F, J&F over expressions. ``process`` takes data samples with
    ``pred_masks`` and ``gt_masks`` ``(T, H, W)``.

    Args:
        bound_th: boundary tolerance (see :func:`boundary_f`).
    """

    default_prefix = 'vos'

    def __init__(self, bound_th: float = 0.008, **kwargs):
        super().__init__(**kwargs)
        self.bound_th = bound_th

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append(video_jf(_np(s['pred_masks']),
                                         _np(s['gt_masks']), self.bound_th))

    def compute_metrics(self, results: list) -> dict:
        j = float(np.mean([r['J'] for r in results]))
        f = float(np.mean([r['F'] for r in results]))
        return {'J': j, 'F': f, 'J&F': (j + f) / 2,
                'num_expressions': len(results)}


@METRICS.register_module()
class GCGMetric(BaseMetric):
    """GCG mask AP50, mIoU, phrase-mask recall and caption metrics.

    ``process`` takes data samples with ``pred_masks`` / ``gt_masks`` (lists
    of ``(H, W)``), ``pred_phrases`` / ``gt_phrases`` (lists of str),
    ``pred_caption`` and ``gt_caption`` (str), ``image_id``.
    """

    default_prefix = 'gcg'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            preds = [_np(m) != 0 for m in s['pred_masks']]
            gts = [_np(m) != 0 for m in s['gt_masks']]
            matched, n_gt = phrase_mask_recall(s['pred_phrases'], preds,
                                               s['gt_phrases'], gts)
            self.results.append(dict(
                image_id=s['image_id'], pred_masks=preds, gt_masks=gts,
                miou=gcg_miou(preds, gts), matched=matched, n_gt=n_gt,
                pred_caption=s['pred_caption'], gt_caption=s['gt_caption']))

    def compute_metrics(self, results: list) -> dict:
        n_gt = sum(r['n_gt'] for r in results)
        cands = {r['image_id']: r['pred_caption'] for r in results}
        refs = {r['image_id']: [r['gt_caption']] for r in results}
        b = bleu(cands, refs)
        return {'AP50': gcg_mask_ap50(results),
                'mIoU': float(np.mean([r['miou'] for r in results])),
                'recall': sum(r['matched'] for r in results) / n_gt if n_gt else 0.0,
                'BLEU-4': b[3], 'CIDEr': cider_d(cands, refs),
                'num_images': len(results)}


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """Region / image captioning: BLEU-1..4 and CIDEr-D; optionally writes
    the COCO-format prediction and reference files.

    ``process`` takes data samples with ``id`` (int or str), ``caption``
    (str), ``references`` (list of str) and optionally ``image_info`` (a
    dict of JSON fields added to the sample's ``images`` entry of the
    reference file).

    Args:
        pred_path, ref_path: where to write the COCO-format files (None:
            not written).
    """

    default_prefix = 'caption'

    def __init__(self, pred_path: Optional[str] = None,
                 ref_path: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.pred_path, self.ref_path = pred_path, ref_path

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
        b = bleu(cands, refs)
        out = {f'BLEU-{n + 1}': v for n, v in enumerate(b)}
        out['CIDEr'] = cider_d(cands, refs)
        out['num_captions'] = len(results)
        return out
