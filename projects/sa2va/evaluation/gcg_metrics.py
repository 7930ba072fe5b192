"""GCG (grounded conversation generation) metrics, GLaMM's rules
(``eval/gcg/evaluate.py`` of mbzuai-oryx/groundingLMM).

* mask AP50: COCO segmentation AP at IoU 0.5 (pycocotools ``COCOeval``,
  one class, area "all", 100 detections), every predicted mask with score
  1. With equal scores COCOeval ranks detections by image order, which is
  the sorted image ids (GLaMM's ids are the image file names without
  extension, so string order); :func:`gcg_mask_ap50` sorts the same way.
* mIoU: per image, the IoU matrix of predicted x GT masks is paired
  greedily: the largest remaining IoU (first in row-major order on a tie)
  is taken, its row and column removed, until the largest remaining IoU
  is 0; the image score is the mean of the taken IoUs (0 when none). The
  benchmark mIoU is the mean over images.
* phrase-mask recall: per image, the IoU matrix of GT x predicted masks is
  walked greedily the same way, and the walk stops at the first pair whose
  IoU is below 0.5 or whose phrase similarity is below 0.5; recall = the
  pairs taken / the GT phrases, summed over images. When a visited pair
  has no phrase (more masks than phrases on either side) GLaMM's script
  raises inside its ``try`` and the image adds its GT phrases but no
  match; :func:`phrase_mask_recall` does the same.
* phrase similarity: GLaMM uses ``bert-base-uncased``: cosine of the mean
  last hidden state over all tokens ([CLS] and [SEP] included, 512 tokens
  at most). :class:`BertTextSimilarity` does that with a local model
  directory; without one :func:`text_similarity` (token F1 of the
  lower-cased words) stands in, and the figures differ from GLaMM's.

Masks are ``(H, W)`` arrays (non-zero = object); a mask pair with an
empty union has IoU 0.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, Iterator, Optional, Sequence

import numpy as np

from .caption_metrics import caption_tokens

__all__ = ['iou_matrix', 'greedy_pairs', 'gcg_miou', 'text_similarity',
           'BertTextSimilarity', 'build_text_similarity',
           'phrase_mask_recall', 'mask_to_rle', 'gcg_mask_ap50']


def _bool(mask) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f'mask must be (H, W), got shape {array.shape}')
    return array != 0


def iou_matrix(rows: Sequence, cols: Sequence) -> np.ndarray:
    """``(len(rows), len(cols))`` float64 IoUs of two lists of ``(H, W)``
    masks (0 where both masks are empty).

    Raises:
        ValueError: masks of different sizes.
    """
    a = [_bool(m) for m in rows]
    b = [_bool(m) for m in cols]
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, g in enumerate(b):
            if p.shape != g.shape:
                raise ValueError(f'masks {p.shape} and {g.shape} differ in '
                                 f'size')
            union = np.logical_or(p, g).sum()
            out[i, j] = np.logical_and(p, g).sum() / union if union else 0.0
    return out


def greedy_pairs(score: np.ndarray) -> Iterator[tuple[int, int, float]]:
    """GLaMM's one-to-one pairing: yields ``(row, col, score)`` with the
    largest remaining score (first in row-major order on a tie), removing
    its row and column each time, until rows or columns run out. The
    caller stops when it likes."""
    score = np.array(score, dtype=np.float64)
    if score.ndim != 2:
        raise ValueError(f'score must be 2-D, got {score.shape}')
    rows = list(range(score.shape[0]))
    cols = list(range(score.shape[1]))
    while rows and cols:
        sub = score[np.ix_(rows, cols)]
        r, c = np.unravel_index(int(np.argmax(sub)), sub.shape)
        yield rows[r], cols[c], float(sub[r, c])
        del rows[r], cols[c]


def gcg_miou(preds: Sequence, gts: Sequence) -> float:
    """GLaMM's per-image mIoU of predicted and GT ``(H, W)`` masks: the mean
    IoU of the greedy pairs with IoU > 0 (module docstring); 0 when no pair
    overlaps or a list is empty."""
    taken = []
    for _, _, value in greedy_pairs(iou_matrix(preds, gts)):
        if value <= 0:
            break
        taken.append(value)
    return float(np.mean(taken)) if taken else 0.0


def text_similarity(a: str, b: str) -> float:
    """Token F1 of two phrases (bag of lower-cased words), in [0, 1]: the
    stand-in for GLaMM's BERT similarity."""
    ta, tb = Counter(caption_tokens(a)), Counter(caption_tokens(b))
    common = sum((ta & tb).values())
    if common == 0:
        return 0.0
    p, r = common / sum(ta.values()), common / sum(tb.values())
    return 2 * p * r / (p + r)


class BertTextSimilarity:
    """GLaMM's phrase similarity with a local BERT-like model directory
    (``transformers`` ``AutoTokenizer`` / ``AutoModel``; GLaMM uses
    ``bert-base-uncased``): cosine of the mean of the last hidden states
    of all tokens, the text truncated to 512 tokens. Embeddings are cached
    per string.

    Args:
        model_dir: directory with the tokenizer and model files.
        device: torch device of the model.
    """

    def __init__(self, model_dir: str, device: str = 'cpu'):
        from transformers import AutoModel, AutoTokenizer
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(device).eval()
        self.device = device
        self._cache: Dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return f'bert mean-pooled cosine ({self.model_dir})'

    def embed(self, text: str) -> np.ndarray:
        """``(hidden,)`` float32 mean of the last hidden states."""
        if text not in self._cache:
            import torch
            inputs = self.tokenizer(text, return_tensors='pt',
                                    max_length=512, truncation=True)
            with torch.no_grad():
                hidden = self.model(**inputs.to(self.device)).last_hidden_state
            self._cache[text] = hidden[0].float().mean(0).cpu().numpy()
        return self._cache[text]

    def __call__(self, a: str, b: str) -> float:
        ea, eb = self.embed(a), self.embed(b)
        norm = float(np.linalg.norm(ea) * np.linalg.norm(eb))
        return float(np.dot(ea, eb) / norm) if norm else 0.0


WORD_OVERLAP = 'word-overlap token F1 (stand-in, not GLaMM\'s BERT)'


def build_text_similarity(model_dir: Optional[str] = None,
                          device: str = 'cpu'
                          ) -> tuple[Callable[[str, str], float], str]:
    """``(similarity, description)``: :class:`BertTextSimilarity` of
    ``model_dir``, or :func:`text_similarity` when it is None."""
    if model_dir:
        sim = BertTextSimilarity(model_dir, device)
        return sim, sim.name
    return text_similarity, WORD_OVERLAP


def phrase_mask_recall(pred_phrases: Sequence[str], pred_masks: Sequence,
                       gt_phrases: Sequence[str], gt_masks: Sequence,
                       iou_th: float = 0.5, text_th: float = 0.5,
                       similarity: Callable[[str, str], float] = text_similarity
                       ) -> tuple[int, int]:
    """GLaMM's matched and total GT phrases of one image (module
    docstring).

    Returns:
        ``(matched, len(gt_phrases))`` ints.
    """
    iou = iou_matrix(gt_masks, pred_masks)
    matched = 0
    for g, p, value in greedy_pairs(iou):
        if value < iou_th:
            break
        if g >= len(gt_phrases) or p >= len(pred_phrases):
            return 0, len(gt_phrases)   # GLaMM: IndexError, image skipped
        if similarity(gt_phrases[g], pred_phrases[p]) < text_th:
            break
        matched += 1
    return matched, len(gt_phrases)


def mask_to_rle(mask) -> dict:
    """Compressed COCO RLE (``counts`` as str) of an ``(H, W)`` mask."""
    from pycocotools import mask as mask_utils
    enc = mask_utils.encode(np.asfortranarray(_bool(mask).astype(np.uint8)))
    enc['counts'] = enc['counts'].decode('ascii')
    return enc


def gcg_mask_ap50(images: Sequence[dict]) -> float:
    """COCO segmentation AP at IoU 0.5 (one class, scores 1), images in
    GLaMM's order.

    Args:
        images: per image ``{'pred_masks', 'gt_masks'}``, lists of ``(H,
            W)`` masks or COCO RLEs (:func:`mask_to_rle`), and optionally
            ``image_id`` (all or none: str or int, unique). With ids the
            images are ranked in sorted id order (COCOeval's
            ``sorted(getImgIds())``; GLaMM's ids are file stems), else in
            the given order. An image with neither GT nor predictions adds
            nothing.

    Returns:
        AP50 in [0, 1]; 0 when there is no GT or no prediction at all.
    """
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = [im.get('image_id') for im in images]
    if any(i is not None for i in ids):
        if any(i is None for i in ids) or len(set(ids)) != len(ids):
            raise ValueError('image_id must be given for all images and be '
                             'unique')
        order = sorted(range(len(images)), key=lambda k: ids[k])
    else:
        order = list(range(len(images)))

    def rle(mask):
        return dict(mask) if isinstance(mask, dict) else mask_to_rle(mask)

    gt = dict(images=[], annotations=[], categories=[dict(id=1, name='object')])
    dets = []
    for coco_id, k in enumerate(order, start=1):
        gts = [rle(m) for m in images[k]['gt_masks']]
        preds = [rle(m) for m in images[k]['pred_masks']]
        h, w = (gts + preds)[0]['size'] if gts or preds else (0, 0)
        gt['images'].append(dict(id=coco_id, height=int(h), width=int(w)))
        for r in gts:
            gt['annotations'].append(dict(
                id=len(gt['annotations']) + 1, image_id=coco_id,
                category_id=1, segmentation=r, iscrowd=0,
                area=float(mask_utils.area(r)),
                bbox=[float(v) for v in mask_utils.toBbox(r)]))
        dets += [dict(image_id=coco_id, category_id=1, segmentation=r,
                      score=1.0) for r in preds]
    if not dets or not gt['annotations']:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), iouType='segm')
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval['precision'][0, :, 0, 0, -1]   # area all, 100 dets
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0
