"""GCG metrics against hand-computed values where GLaMM's rules differ from
the obvious ones (greedy pairing, stop rules, tie order, empty images)."""
import numpy as np
import pytest

from projects.sa2va.evaluation import gcg_metrics as G
from projects.sa2va.registry import METRICS


def _strip(*spans, n=10):
    """(1, n) mask with pixels [a, b] of each span set."""
    m = np.zeros((1, n), np.uint8)
    for a, b in spans:
        m[0, a:b + 1] = 1
    return m


G1, G2 = _strip((0, 3)), _strip((4, 7))
P1 = _strip((0, 4))      # IoU 4/5 with G1, 1/8 with G2
P2 = _strip((0, 1))      # IoU 2/4 with G1, 0 with G2


def test_iou_matrix_and_greedy_pairs():
    iou = G.iou_matrix([P1, P2], [G1, G2])
    assert iou == pytest.approx(np.array([[0.8, 0.125], [0.5, 0.0]]))
    assert list(G.greedy_pairs(iou)) == [(0, 0, 0.8), (1, 1, 0.0)]
    # tie: the first maximum in row-major order wins, so the greedy walk
    # takes (0, 0) and is left with 0.2 (a maximum matching would take 0.5 + 0.5)
    tie = np.array([[0.5, 0.5], [0.5, 0.2]])
    assert list(G.greedy_pairs(tie)) == [(0, 0, 0.5), (1, 1, 0.2)]
    assert list(G.greedy_pairs(np.zeros((0, 3)))) == []


def test_gcg_miou_glamm_rule():
    # greedy: (P1, G1) = 0.8, then only (P2, G2) = 0 is left -> stop;
    # the mean is over the taken pairs: 0.8 (a Hungarian min(n, m) mean
    # with the zero pair counted gave 0.4)
    assert G.gcg_miou([P1, P2], [G1, G2]) == pytest.approx(0.8)
    # an unmatched extra prediction does not lower the score
    assert G.gcg_miou([P2, _strip((9, 9))], [G1]) == pytest.approx(0.5)
    # a tie is broken by row-major order: p = {1} has IoU 1/2 with both
    # {0, 1} and {1, 2}; {0, 1} is taken, then {2, 3} pairs with {1, 2} at
    # 1/3 (the other choice would leave a zero pair: 0.5)
    p, ga, gb = _strip((1, 1), n=4), _strip((0, 1), n=4), _strip((1, 2), n=4)
    assert G.iou_matrix([p], [ga, gb]) == pytest.approx(np.array([[0.5, 0.5]]))
    assert G.gcg_miou([p, _strip((2, 3), n=4)], [ga, gb]) == pytest.approx(
        (0.5 + 1 / 3) / 2)
    assert G.gcg_miou([], [G1]) == 0.0 and G.gcg_miou([P1], []) == 0.0
    assert G.gcg_miou([_strip((9, 9))], [G1]) == 0.0


def test_phrase_mask_recall_stops_at_first_failing_pair():
    exact = {('man', 'man'): 1.0, ('dog', 'dog'): 1.0}

    def sim(a, b):
        return exact.get((a, b), 0.0)

    g_man, g_dog = _strip((0, 3)), _strip((5, 9))
    p_man, p_dog = _strip((0, 3)), _strip((5, 8))      # IoU 1 and 4/5
    # the best pair (IoU 1) has the wrong phrase: GLaMM stops there, 0 of 2
    # (filtering first, then matching, found (dog, dog))
    assert G.phrase_mask_recall(['cat', 'dog'], [p_man, p_dog],
                                ['man', 'dog'], [g_man, g_dog],
                                similarity=sim) == (0, 2)
    assert G.phrase_mask_recall(['man', 'dog'], [p_man, p_dog],
                                ['man', 'dog'], [g_man, g_dog],
                                similarity=sim) == (2, 2)
    # IoU below 0.5 ends the walk even when phrases agree
    assert G.phrase_mask_recall(['man', 'dog'], [p_man, _strip((8, 9))],
                                ['man', 'dog'], [g_man, g_dog],
                                similarity=sim) == (1, 2)
    # a visited mask without a phrase: GLaMM's script errors for the image
    # and counts its GT phrases with no match
    assert G.phrase_mask_recall(['dog'], [p_man, p_dog],
                                ['man', 'dog'], [g_man, g_dog],
                                similarity=sim) == (0, 2)
    # no prediction: nothing matched, GT phrases counted
    assert G.phrase_mask_recall([], [], ['man', 'dog'], [g_man, g_dog],
                                similarity=sim) == (0, 2)
    # default similarity: word-overlap F1 ('a man' ~ 'the man' = 1/2)
    assert G.phrase_mask_recall(['a man'], [p_man], ['the man'], [g_man]) == (1, 1)
    assert G.text_similarity('A red car.', 'red car') == pytest.approx(0.8)


def _ap_images():
    tp_gt, fp = _strip((0, 3)), _strip((6, 9))
    # image 'b' (listed first): one GT, one false positive;
    # image 'a': one GT, one true positive
    return [dict(image_id='b', gt_masks=[tp_gt], pred_masks=[fp]),
            dict(image_id='a', gt_masks=[tp_gt], pred_masks=[tp_gt])]


def test_ap50_ranks_equal_scores_by_sorted_image_id():
    # sorted ids: a then b -> [TP, FP] over 2 GT: precision 1 up to recall
    # 0.5 = 51 of COCO's 101 recall points
    assert G.gcg_mask_ap50(_ap_images()) == pytest.approx(51 / 101)
    # listing order (no ids): [FP, TP] -> precision 1/2 up to recall 0.5
    plain = [dict(gt_masks=im['gt_masks'], pred_masks=im['pred_masks'])
             for im in _ap_images()]
    assert G.gcg_mask_ap50(plain) == pytest.approx(51 * 0.5 / 101)
    # an image with neither GT nor predictions adds nothing (was IndexError)
    empty = dict(image_id='c', gt_masks=[], pred_masks=[])
    assert G.gcg_mask_ap50(_ap_images() + [empty]) == pytest.approx(51 / 101)
    # RLE input gives the same
    rles = [dict(im, gt_masks=[G.mask_to_rle(m) for m in im['gt_masks']],
                 pred_masks=[G.mask_to_rle(m) for m in im['pred_masks']])
            for im in _ap_images()]
    assert G.gcg_mask_ap50(rles) == pytest.approx(51 / 101)
    assert G.gcg_mask_ap50([empty]) == 0.0
    with pytest.raises(ValueError, match='unique'):
        G.gcg_mask_ap50(_ap_images() + [dict(_ap_images()[0])])


def _tiny_bert(folder):
    from transformers import BertConfig, BertModel, BertTokenizer
    words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'the', 'man',
             'dog', 'red', 'car']
    folder.mkdir()
    (folder / 'vocab.txt').write_text('\n'.join(words) + '\n')
    BertTokenizer(str(folder / 'vocab.txt')).save_pretrained(str(folder))
    import torch
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=8,
                         num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(str(folder))
    return folder


def test_bert_text_similarity_with_a_local_model(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer
    folder = _tiny_bert(tmp_path / 'bert')
    sim, name = G.build_text_similarity(str(folder))
    assert str(folder) in name and 'bert' in name
    assert sim('the red car', 'the red car') == pytest.approx(1.0)
    # cosine of the mean of all last hidden states ([CLS], [SEP] included)
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    with torch.no_grad():
        e = [model(**tok(t, return_tensors='pt')).last_hidden_state[0].mean(0)
             for t in ('a man', 'the dog')]
    assert len(tok('a man')['input_ids']) == 4
    expected = float(torch.nn.functional.cosine_similarity(e[0], e[1], dim=0))
    assert sim('a man', 'the dog') == pytest.approx(expected, abs=1e-6)
    assert G.build_text_similarity(None) == (G.text_similarity, G.WORD_OVERLAP)
    metric = METRICS.build(dict(type='GCGMetric', text_sim_model=str(folder),
                                caption_backend='builtin'))
    metric.process(None, [dict(image_id='x', pred_masks=[G1], gt_masks=[G1],
                               pred_phrases=['a man'], gt_phrases=['a man'],
                               pred_caption='a man', gt_caption='a man')])
    res = metric.evaluate(1)
    assert res['gcg/recall'] == 1.0 and res['gcg/text_similarity'] == name


def test_gcg_metric_by_hand(tmp_path):
    import json
    metric = METRICS.build(dict(type='GCGMetric', caption_backend='builtin',
                                pred_path=str(tmp_path / 'p.json'),
                                ref_path=str(tmp_path / 'r.json')))
    metric.process(None, [
        dict(image_id='b', pred_masks=[P1, P2], gt_masks=[G1, G2],
             pred_phrases=['a man', 'dog'], gt_phrases=['the man', 'a dog'],
             pred_caption='a man and dog', gt_caption='the man and a dog'),
        dict(image_id='a', pred_masks=[], gt_masks=[G1],
             pred_phrases=[], gt_phrases=['a man'],
             pred_caption='nothing', gt_caption='a man')])
    res = metric.evaluate(2)
    assert res['gcg/mIoU'] == pytest.approx((0.8 + 0) / 2)
    # image b: (P1, G1) IoU 0.8 and 'a man' ~ 'the man' 1/2 -> match; the
    # next pair has IoU 0 -> stop. 1 of 3 GT phrases
    assert res['gcg/recall'] == pytest.approx(1 / 3)
    # sorted ids a, b: one TP of 3 GT, ranked after nothing -> 1/3 recall
    # at precision 1/2 (the FP P2 comes second within b? both score 1:
    # b's detections in listing order [P1 (TP), P2 (FP)]) -> precision 1
    # up to recall 1/3: 34 of 101 points
    assert res['gcg/AP50'] == pytest.approx(34 / 101)
    assert res['gcg/text_similarity'] == G.WORD_OVERLAP
    assert res['gcg/caption_backend'].startswith('builtin')
    assert 'gcg/METEOR' not in res and res['gcg/num_images'] == 2
    pred = json.loads((tmp_path / 'p.json').read_text())
    assert pred[0] == dict(image_id='b', caption='a man and dog',
                           labels=['a man', 'dog'])
    ref = json.loads((tmp_path / 'r.json').read_text())
    assert ref['annotations'][1] == dict(image_id='a', id=1, caption='a man',
                                         labels=['a man'])


@pytest.mark.skipif(not __import__(
    'projects.sa2va.evaluation.caption_metrics',
    fromlist=['x']).coco_caption_available(),
    reason='pycocoevalcap or Java missing')
def test_caption_figures_through_pycocoevalcap():
    from projects.sa2va.evaluation.caption_metrics import caption_scores
    # identical captions (PTB lower-cases and drops the period): METEOR and
    # ROUGE-L 1, BLEU-4 1 (up to coco-caption's 1e-9 smoothing); CIDEr 0
    # because with one image every n-gram has idf log(1 / 1) = 0
    out = caption_scores({'x': 'A man rides a red horse.'},
                         {'x': ['a man rides a red horse']}, 'auto')
    assert out['caption_backend'].startswith('pycocoevalcap')
    assert out['METEOR'] == pytest.approx(1.0)
    assert out['ROUGE_L'] == pytest.approx(1.0)
    assert out['BLEU-4'] == pytest.approx(1.0, abs=1e-8)
    assert out['CIDEr'] == 0.0
    builtin = caption_scores({'x': 'A man rides a red horse.'},
                             {'x': ['a man rides a red horse']}, 'builtin')
    assert 'METEOR' not in builtin and builtin['caption_backend'].startswith('builtin')
    with pytest.raises(ValueError, match='caption backend'):
        caption_scores({'x': 'a'}, {'x': ['a']}, 'java')


def test_gcg_metric_refuses_repeated_image_ids():
    metric = METRICS.build(dict(type='GCGMetric', caption_backend='builtin'))
    sample = dict(image_id='im1', pred_masks=[], gt_masks=[G1], pred_phrases=[],
                  gt_phrases=['a man'], pred_caption='x', gt_caption='a man')
    metric.process(None, [sample, dict(sample)])
    with pytest.raises(ValueError, match=r"not unique.*'im1'"):
        metric.evaluate(2)
