"""projects/sa2va/visualization.py: distinct colours and contours (same-
colour blending hid overlapping masks), one panel per object with its text
and IoU, labels from the [SEG] answers."""
from __future__ import annotations

import numpy as np
from PIL import Image

from projects.sa2va.visualization import (contour, distinct_colors, mask_iou,
                                          overlay_masks, save_object_panels,
                                          seg_phrases)


def _masks():
    a = np.zeros((60, 80), bool)
    a[10:40, 10:50] = True
    b = np.zeros((60, 80), bool)
    b[20:50, 30:70] = True
    return np.stack([a, b])


def test_overlapping_masks_keep_their_own_contour_colour():
    image = np.full((60, 80, 3), 128, np.uint8)
    masks = _masks()
    out = overlay_masks(image, masks, width=1)
    colors = distinct_colors(2)
    assert colors[0] != colors[1]
    edge_a = contour(masks[0], 1) & ~masks[1]
    edge_b = contour(masks[1], 1)          # drawn last, on top inside a
    assert (out[edge_a] == colors[0]).all()
    assert (out[edge_b] == colors[1]).all()
    inside_a = masks[0] & ~masks[1] & ~contour(masks[0], 1)
    inside_b = masks[1] & ~masks[0] & ~contour(masks[1], 1)
    assert not np.array_equal(out[inside_a][0], out[inside_b][0])
    assert (out[~masks.any(0)] == 128).all()
    assert len(set(distinct_colors(30))) == 30


def test_object_panels_title_iou_and_size(tmp_path):
    image = np.full((60, 80, 3), 100, np.uint8)
    masks = _masks()
    ref = masks.copy()
    ref[1, 20:35] = False
    path = tmp_path / 'p.png'
    ious = save_object_panels(image, masks, path, labels=['box a', 'box b'],
                              reference=ref, title='q')
    assert ious[0] == 1.0
    assert ious[1] == mask_iou(ref[1], masks[1]) < 1.0
    w, h = Image.open(path).size
    assert w >= 3 * 400 and h >= 300             # 3 enlarged panels
    assert save_object_panels(image, masks[:0], tmp_path / 'e.png') is None


def test_seg_phrases_from_answers_and_conversations():
    conv = ('<|user|>\n<img>x</img>\nCan you segment the cat?<|end|>'
            '<|assistant|>\nSure, [SEG].<|end|><|user|>\nAnd the dog?<|end|>'
            '<|assistant|>\nIt is [SEG].<|end|>')
    assert seg_phrases(conv, 3) == ['Can you segment the cat?',
                                    'And the dog?', 'object 2']
    # an answer that is only '[SEG].' (it gave 'object k' before)
    bare = conv.replace('It is [SEG]', '[SEG]')
    assert seg_phrases(bare, 2) == ['Can you segment the cat?', 'And the dog?']
    assert seg_phrases('A <p> red car </p> [SEG] by <p>a dog</p> [SEG].',
                       2) == ['red car', 'a dog']
