"""Pictures of masks that can be read: distinct colours, contours, one
panel per object with its text and IoU.

Used by ``tools/demo.py`` (predicted vs ground-truth masks),
``tools/browse_dataset.py`` (processed samples, via
``datasets.inspect``) and ``tools/predict.py`` (the answer's masks).
Same-colour blending hid overlapping masks; here every object has its own
colour from :func:`distinct_colors`, a contour drawn over a light fill,
and, in :func:`save_object_panels`, a panel of its own titled with its
expression and, when a reference is given, the IoU.
"""
from __future__ import annotations

import colorsys
import re
import textwrap
from typing import Sequence

import numpy as np

#: well separated colours (RGB), then golden-ratio hues
_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
            (250, 190, 212), (0, 128, 128))


def distinct_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` RGB colours, the first ten well separated, then hues spaced by
    the golden ratio."""
    out = list(_PALETTE[:n])
    k = 0
    while len(out) < n:
        h = (0.13 + 0.618034 * k) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
        k += 1
    return out


def _resize_nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape == (h, w):
        return mask != 0
    rows = (np.arange(h) * mask.shape[0] // h).clip(0, mask.shape[0] - 1)
    cols = (np.arange(w) * mask.shape[1] // w).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols] != 0


def contour(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The ``width``-pixel inner boundary of a ``(H, W)`` bool mask."""
    inner = np.asarray(mask, bool)
    for _ in range(max(1, width)):
        p = np.pad(inner, 1, constant_values=False)
        inner = (p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1]
                 & p[1:-1, :-2] & p[1:-1, 2:])
    return np.asarray(mask, bool) & ~inner


def upscale(image: np.ndarray, min_side: int = 480) -> np.ndarray:
    """``(H, W, 3) uint8`` enlarged by an integer factor (nearest) until
    its longer side is at least ``min_side``."""
    f = max(1, -(-min_side // max(image.shape[:2])))
    return np.repeat(np.repeat(image, f, axis=0), f, axis=1) if f > 1 \
        else image


def overlay_masks(image, masks, colors=None, fill: float = 0.25,
                  width: int | None = None) -> np.ndarray:
    """Masks drawn on an image: a light fill and a solid contour per
    object, each in its own colour.

    Args:
        image: ``(H, W, 3) uint8`` array or PIL image.
        masks: ``(n, h, w)`` (any size, nearest-resized to the image).
        colors: one RGB per mask (default :func:`distinct_colors`).
        fill: fill opacity.
        width: contour width in pixels (default ~H / 150, at least 1).

    Returns:
        ``(H, W, 3) uint8``.
    """
    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert('RGB'))
    out = image.astype(np.float32).copy()
    h, w = out.shape[:2]
    masks = [] if masks is None else list(np.asarray(masks))
    colors = colors or distinct_colors(len(masks))
    width = width or max(2, round(max(h, w) / 200))
    for m, c in zip(masks, colors):
        sel = _resize_nearest(m, h, w)
        col = np.array(c, np.float32)
        out[sel] = (1 - fill) * out[sel] + fill * col
        out[contour(sel, width)] = col
    return out.clip(0, 255).astype(np.uint8)


def mask_iou(a, b) -> float:
    """IoU of two masks (resized to ``a``'s size); 1.0 when both are
    empty."""
    a = np.asarray(a) != 0
    b = _resize_nearest(b, *a.shape)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def seg_phrases(answer: str, n: int, words: int = 6) -> list[str]:
    """A label per ``[SEG]`` of an answer or a decoded conversation: the
    ``<p> phrase </p>`` before it (GCG), else the question of its turn (the
    last line before the chat template's assistant marker), else its last
    ``words`` words; ``object k`` past the end."""
    parts = answer.split('[SEG]')[:-1]
    out = []
    for part in parts:
        part = re.sub(r'<img>.*?</img>', '\n', part, flags=re.S)
        m = re.findall(r'<p>(.*?)</p>', part)
        pieces = re.split(r'<\|[^|]*\|>', part)[:-1]   # before the answer
        lines = [ln.strip() for piece in pieces for ln in piece.split('\n')
                 if ln.strip().strip('.') and ln.strip() not in
                 ('user', 'assistant', 'system')]
        text = m[-1] if m else lines[-1] if lines else \
            ' '.join(part.split()[-words:])
        out.append(text.strip(' ,.:;') or f'object {len(out)}')
    return (out + [f'object {k}' for k in range(len(out), n)])[:n]


def save_object_panels(image, masks, path, labels: Sequence[str] | None
                       = None, reference=None, title: str = '',
                       min_side: int = 480) -> list[float] | None:
    """One picture: a panel with every object, then one panel per object
    titled with its label (and the IoU against ``reference``).

    Args:
        image: ``(H, W, 3) uint8`` or PIL.
        masks: ``(n, h, w)`` masks (predicted, or ground truth alone).
        path: the PNG to write.
        labels: one text per object (expression, phrase); default
            ``object k``.
        reference: ``(n, h, w)`` ground truth to compare with: its contour
            is drawn white in each object's panel, and the IoU is shown.
        title: the picture's title (e.g. the question).
        min_side: panels are enlarged to at least this many pixels.

    Returns:
        the IoU per object with a ``reference``, else None.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert('RGB'))
    big = upscale(image, min_side)
    masks = np.zeros((0, *image.shape[:2]), bool) if masks is None \
        else np.asarray(masks)
    n = len(masks)
    colors = distinct_colors(n)
    labels = list(labels or [])[:n] + [f'object {k}' for k in
                                       range(len(labels or []), n)]
    ious = None
    if reference is not None:
        reference = np.asarray(reference)
        ious = [mask_iou(reference[k], masks[k]) if k < len(reference)
                else 0.0 for k in range(n)]
    panels = [(overlay_masks(big, masks, colors),
               f'{n} object(s)' if n else 'no object')]
    for k in range(n):
        img = overlay_masks(big, masks[k:k + 1], [colors[k]])
        if reference is not None and k < len(reference):
            # white inside a black rim: visible on light and dark objects
            w = max(2, round(max(big.shape[:2]) / 200))
            img = overlay_masks(img, reference[k:k + 1], [(0, 0, 0)],
                                fill=0.0, width=w + 2)
            img = overlay_masks(img, reference[k:k + 1], [(255, 255, 255)],
                                fill=0.0, width=w)
        label = labels[k] if len(labels[k]) <= 90 else labels[k][:87] + '...'
        text = label + (f'  (IoU {ious[k]:.2f})' if ious else '')
        panels.append((img, text))
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    aspect = big.shape[0] / big.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols,
                                                  4.2 * aspect * rows + 0.8),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, (img, text), k in zip(axes.flat, panels, range(-1, n)):
        ax.imshow(img)
        color = 'black' if k < 0 else np.array(colors[k]) / 255
        ax.set_title('\n'.join(textwrap.wrap(text, 50)), fontsize=8,
                     color=color)
    if reference is not None:
        fig.text(0.01, 0.01, 'colour: prediction, white: ground truth',
                 fontsize=8)
    if title:
        fig.suptitle('\n'.join(textwrap.wrap(title, 110)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ious
