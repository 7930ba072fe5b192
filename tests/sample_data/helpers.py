"""Small readers shared by the sample-data tests."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from projects.sa2va.sample_data.scenes import COLORS
from projects.sa2va.transforms.functional import decode_mask


def load_json(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def rgb_image(path_or_bytes) -> np.ndarray:
    """Open a JPEG, check it is RGB, return ``(H, W, 3) uint8``."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) \
        else path_or_bytes
    with Image.open(src) as im:
        assert im.format == 'JPEG'
        assert im.mode == 'RGB'
        return np.asarray(im)


def check_rle(rle, h: int, w: int, counts_type=str) -> np.ndarray:
    """Decode with the project's decoder; assert size and counts type."""
    assert rle['size'] == [h, w]
    assert isinstance(rle['counts'], counts_type)
    return decode_mask(rle, h, w)


def check_polygons(polys, h: int, w: int) -> np.ndarray:
    assert isinstance(polys, list) and polys
    for poly in polys:
        assert len(poly) >= 6 and len(poly) % 2 == 0
        xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
        assert xs.min() >= 0 and xs.max() <= w and ys.min() >= 0 \
            and ys.max() <= h
    return decode_mask(polys, h, w)


def mean_color(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    assert mask.shape == image.shape[:2] and mask.any()
    return image[mask > 0].reshape(-1, 3).astype(np.float64).mean(0)


def assert_color(image: np.ndarray, mask: np.ndarray, text: str) -> None:
    """The mask covers pixels of the colour named in ``text`` (the closest
    palette colour to their mean is that colour)."""
    import cv2
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    mean = mean_color(image, inner if inner.any() else mask)
    best = min(COLORS, key=lambda c: np.abs(mean - COLORS[c]).sum())
    assert best in text.split() or best in text, (best, text, mean)


def tree_digest(root: Path, files) -> dict:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest()
            for f in files}
