"""Metric functions against hand-computed values."""
import math

import numpy as np
import pytest

from projects.sa2va.evaluation import metrics as M
from projects.sa2va.registry import METRICS


def _pixel(shape, *points):
    m = np.zeros(shape, dtype=np.uint8)
    for y, x in points:
        m[y, x] = 1
    return m


def test_ciou_giou_by_hand():
    a_pred = _pixel((4, 4), (0, 0), (0, 1), (1, 0), (1, 1))
    a_gt = _pixel((4, 4), (0, 1), (1, 1), (0, 2), (1, 2))   # I = 2, U = 6
    empty = np.zeros((4, 4), np.uint8)                        # I = 0, U = 0
    c = _pixel((4, 4), (3, 3), (3, 2))                        # I = 2, U = 2
    iu = [M.mask_inter_union(a_pred, a_gt), M.mask_inter_union(empty, empty),
          M.mask_inter_union(c, c)]
    assert iu == [(2, 6), (0, 0), (2, 2)]
    out = M.refseg_ciou_giou(iu)
    assert out['cIoU'] == pytest.approx(4 / 8)
    assert out['gIoU'] == pytest.approx((1 / 3 + 1 + 1) / 3)
    metric = METRICS.build(dict(type='RefSegMetric'))
    metric.process(None, [dict(pred_mask=a_pred, gt_mask=a_gt),
                          dict(pred_mask=c, gt_mask=c)])
    res = metric.evaluate(2)
    assert res['refseg/cIoU'] == pytest.approx(4 / 8)
    assert res['refseg/gIoU'] == pytest.approx((1 / 3 + 1) / 2)
    with pytest.raises(ValueError, match='differ in size'):
        M.mask_inter_union(np.zeros((2, 2)), np.zeros((3, 2)))


def test_refseg_sentence_without_seg_is_skipped_in_ciou_zero_in_giou():
    # Sa2VA's refcoco_eval: a sentence whose answer has no [SEG] adds
    # nothing to cIoU's sums and 0 to gIoU; an empty-vs-empty pair is 1 in
    # gIoU and nothing in cIoU
    iu = [(2, 6), None, (2, 2), (0, 0)]
    out = M.refseg_ciou_giou(iu)
    assert out['cIoU'] == pytest.approx(4 / 8)
    assert out['gIoU'] == pytest.approx((1 / 3 + 0 + 1 + 1) / 4)
    # (the old rule added an empty prediction: cIoU 4 / (8 + |GT|))
    assert M.refseg_ciou_giou([None, None]) == {'cIoU': 0.0, 'gIoU': 0.0}
    assert M.refseg_ciou_giou([(0, 0)]) == {'cIoU': 0.0, 'gIoU': 1.0}
    gt = _pixel((4, 4), (0, 1), (1, 1), (0, 2), (1, 2))
    metric = METRICS.build(dict(type='RefSegMetric'))
    metric.process(None, [dict(pred_mask=None, gt_mask=gt),
                          dict(pred_mask=gt, gt_mask=gt),
                          dict(pred_mask=_pixel((4, 4), (0, 1)), gt_mask=gt)])
    res = metric.evaluate(3)
    assert res['refseg/cIoU'] == pytest.approx(5 / 8)
    assert res['refseg/gIoU'] == pytest.approx((0 + 1 + 1 / 4) / 3)
    assert res['refseg/no_seg_rate'] == pytest.approx(1 / 3)
    assert res['refseg/num_samples'] == 3


def test_boundary_map_of_one_pixel():
    b = M.boundary_map(_pixel((5, 5), (2, 2)))
    assert sorted(zip(*np.nonzero(b))) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # bottom-right pixel is never a boundary; last row compares rightwards
    b = M.boundary_map(_pixel((3, 3), (2, 2)))
    assert sorted(zip(*np.nonzero(b))) == [(1, 1), (1, 2), (2, 1)]


def test_boundary_f_by_hand():
    gt = _pixel((5, 5), (2, 2))
    pred = _pixel((5, 5), (2, 3))
    # boundaries {(1,1),(1,2),(2,1),(2,2)} and {(1,2),(1,3),(2,2),(2,3)}:
    # without tolerance 2 of 4 match each way -> P = R = 1/2
    assert M.boundary_f(pred, gt, bound_th=0) == pytest.approx(0.5)
    assert M.region_j(pred, gt) == 0.0
    # 1-pixel disk (a cross) covers the shift
    assert M.boundary_f(pred, gt, bound_th=1) == pytest.approx(1.0)
    # default: ceil(0.008 * hypot(5, 5)) = 1 pixel
    assert M.boundary_f(pred, gt) == pytest.approx(1.0)
    # two pixels apart: no match with a 1-pixel tolerance
    far = _pixel((5, 5), (2, 4))
    assert M.boundary_f(far, _pixel((5, 5), (2, 0)), bound_th=1) == 0.0
    empty = np.zeros((5, 5), np.uint8)
    assert M.boundary_f(empty, gt) == 0.0 and M.region_j(empty, gt) == 0.0
    assert M.boundary_f(empty, empty) == 1.0 and M.region_j(empty, empty) == 1.0


def test_boundary_tolerance_from_diagonal():
    # 100 x 100: ceil(0.008 * 141.42) = 2 pixels; a shift of 2 matches,
    # a shift of 3 does not (a vertical edge: only its own column pixels)
    gt = np.zeros((100, 100), np.uint8)
    gt[:, :50] = 1
    for shift, expected in ((2, 1.0), (3, 0.0)):
        pred = np.zeros_like(gt)
        pred[:, :50 + shift] = 1
        assert M.boundary_f(pred, gt) == pytest.approx(expected, abs=0.02)


def test_video_jf_by_hand():
    gt = np.stack([_pixel((5, 5), (2, 2))] * 2)
    pred = np.stack([_pixel((5, 5), (2, 2)), _pixel((5, 5), (2, 3))])
    out = M.video_jf(pred, gt, bound_th=0)
    assert out == pytest.approx({'J': 0.5, 'F': 0.75, 'J&F': 0.625})
    metric = METRICS.build(dict(type='VideoJFMetric', bound_th=0))
    metric.process(None, [dict(pred_masks=pred, gt_masks=gt),
                          dict(pred_masks=gt, gt_masks=gt)])
    res = metric.evaluate(2)
    assert res['vos/J'] == pytest.approx(0.75)
    assert res['vos/F'] == pytest.approx(0.875)
    assert res['vos/J&F'] == pytest.approx(0.8125)


def test_bleu_by_hand():
    same = M.bleu({1: 'The cat sat on the mat.'}, {1: ['the cat sat on the mat']})
    assert same == pytest.approx([1.0] * 4)
    b = M.bleu({1: 'the cat the cat'}, {1: ['the cat sat']})
    assert b[0] == pytest.approx(0.5)                # 2 of 4 unigrams
    assert b[1] == pytest.approx(math.sqrt(0.5 / 3))  # 1 of 3 bigrams
    assert b[2] < 1e-2
    short = M.bleu({1: 'the cat'}, {1: ['the cat sat on', 'a']})
    # closest reference length to 2: 'a' (1) -> no penalty
    assert short[1] == pytest.approx(1.0)
    short = M.bleu({1: 'the cat'}, {1: ['the cat sat on']})
    assert short[1] == pytest.approx(math.exp(-1))   # BP = exp(1 - 4 / 2)


def test_cider_d_by_hand(tmp_path):
    cands = {'a': 'a dog', 'b': 'a cat'}
    refs = {'a': ['a dog'], 'b': ['a bird']}
    # image a: unigram and bigram cosines 1, 3-/4-grams empty -> 10 * 2 / 4;
    # image b shares only 'a', whose idf is log(2 / 2) = 0 -> 0
    assert M.cider_d(cands, refs) == pytest.approx(2.5)
    # length penalty: one extra word -> exp(-1 / 72) on each n
    longer = M.cider_d({'a': 'a dog dog', 'b': 'a cat'}, refs)
    assert 0 < longer < 2.5
    metric = METRICS.build(dict(type='CaptionMetric', caption_backend='builtin',
                                pred_path=str(tmp_path / 'pred.json'),
                                ref_path=str(tmp_path / 'refs.json')))
    metric.process(None, [dict(id=k, caption=cands[k], references=refs[k])
                          for k in cands])
    res = metric.evaluate(2)
    assert res['caption/CIDEr'] == pytest.approx(2.5)
    import json
    pred = json.loads((tmp_path / 'pred.json').read_text())
    assert pred == [{'image_id': 'a', 'caption': 'a dog'},
                    {'image_id': 'b', 'caption': 'a cat'}]
    ref = json.loads((tmp_path / 'refs.json').read_text())
    assert [a['caption'] for a in ref['annotations']] == ['a dog', 'a bird']
    with pytest.raises(ValueError, match='without references'):
        M.cider_d({'x': 'a'}, {})


def test_revos_accuracy_robustness_by_hand():
    gt = np.zeros((2, 2, 5), np.uint8)
    gt[:, 0, :2] = 1                        # 2 GT pixels per frame
    pred = np.zeros_like(gt)
    pred[0, 0, :2] = 1                      # frame 0 exact
    pred[1, 0, 1:4] = 1                     # frame 1: 2 false positives
    fg = np.zeros_like(gt)
    fg[:, 0, :] = 1                         # 5 foreground pixels
    # frame 1 disagrees at pixels 0 (missed), 2 and 3 (false positives)
    assert M.revos_accuracy(pred, gt) == pytest.approx([1.0, 7 / 10])
    assert M.revos_robustness(pred, gt, fg) == pytest.approx(
        [1.0, 1 - 2 / (5 + 1e-6)])
    fg[1] = 0                               # no foreground: clipped at 0
    assert M.revos_robustness(pred, gt, fg)[1] == 0.0
    with pytest.raises(ValueError, match=r'\(T, H, W\)'):
        M.revos_accuracy(pred, gt[:1])


def test_revos_subsets_rounding_and_overall_by_hand():
    # three referring expressions and one reasoning expression: overall is
    # the mean of the two subsets, not of the four expressions; each
    # per-expression value is rounded to 0.01 % first (eval_revos.py)
    exps = [dict(J=0.123456, F=0.5, A=0.9, R=1.0, type_id=0),
            dict(J=0.2, F=0.5, A=0.9, R=1.0, type_id=0),
            dict(J=0.3, F=0.5, A=0.9, R=1.0, type_id=0),
            dict(J=0.9, F=0.7, A=0.5, R=0.5, type_id=1),
            dict(J=0.0, F=0.0, A=0.0, R=0.0, type_id=2)]   # in neither
    out = M.revos_summary(exps)
    j_ref = (12.35 + 20 + 30) / 3 / 100
    assert out['referring/J'] == pytest.approx(j_ref, abs=1e-12)
    assert out['referring/J&F'] == pytest.approx((j_ref + 0.5) / 2)
    assert out['reason/J&F'] == pytest.approx(0.8)
    assert out['overall/J'] == pytest.approx((j_ref + 0.9) / 2)
    assert out['overall/J&F'] == pytest.approx(((j_ref + 0.5) / 2 + 0.8) / 2)
    assert out['overall/A'] == pytest.approx(0.7)
    assert out['overall/R'] == pytest.approx(0.75)
    no_r = [dict(e, R=None) for e in exps]
    assert 'overall/R' not in M.revos_summary(no_r)
    # one subset only: its figures, no overall
    assert sorted(M.revos_summary(exps[:3])) == [
        'referring/A', 'referring/F', 'referring/J', 'referring/J&F',
        'referring/R']
    # through the registered metric, with foreground masks
    gt = np.zeros((1, 2, 5), np.uint8)
    gt[0, 0, :2] = 1
    fg = np.ones_like(gt)
    metric = METRICS.build(dict(type='VideoJFMetric'))
    metric.process(None, [dict(pred_masks=gt, gt_masks=gt, type_id=0,
                               foreground_masks=fg),
                          dict(pred_masks=np.zeros_like(gt), gt_masks=gt,
                               type_id=1, foreground_masks=fg)])
    res = metric.evaluate(2)
    assert res['vos/referring/J&F'] == pytest.approx(1.0)
    assert res['vos/reason/J'] == 0.0 and res['vos/reason/A'] == pytest.approx(0.8)
    assert res['vos/overall/J'] == pytest.approx(0.5)
    assert res['vos/R'] == pytest.approx(1.0)
