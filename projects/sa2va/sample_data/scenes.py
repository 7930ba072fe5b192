"""Synthetic pictures and videos whose objects match their masks exactly.

A scene is a textured background with a few flat-coloured shapes (circle,
square, triangle, ...) painted on it. Every object is defined by polygons
(flat ``[x1, y1, x2, y2, ...]`` lists, pixel coordinates, >= 3 points);
its mask is the pycocotools rasterisation of those polygons, and the
picture is painted through that mask, so a polygon annotation, an RLE of
the mask and the pixels all agree.

Images: objects do not overlap (each mask is also the visible region).
Videos: objects move (and may occlude one another, later objects drawn on
top); each frame keeps the *visible* mask of every object, ``None`` where
the object is absent or fully hidden.

All randomness comes from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_utils

COLORS: dict[str, tuple[int, int, int]] = {
    'red': (215, 40, 40), 'green': (40, 165, 60), 'blue': (40, 85, 215),
    'yellow': (240, 205, 40), 'orange': (245, 135, 25),
    'purple': (135, 55, 185), 'pink': (245, 125, 185),
    'cyan': (35, 200, 210), 'white': (246, 246, 246),
    'black': (22, 22, 22), 'brown': (125, 75, 35)}

SHAPES = ('circle', 'ellipse', 'square', 'rectangle', 'triangle', 'diamond',
          'pentagon', 'hexagon', 'star')

#: Category ids used wherever a COCO-style category is needed.
CATEGORY_IDS = {name: i + 1 for i, name in enumerate(SHAPES + ('pair',
                                                               'dots'))}


def polygon_mask(polygons: list[list[float]], height: int, width: int
                 ) -> np.ndarray:
    """Union of polygons rasterised by pycocotools: ``(H, W) uint8 {0,1}``."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)


def shape_polygon(shape: str, cx: float, cy: float, rx: float, ry: float,
                  angle: float = 0.0) -> list[float]:
    """Vertices of ``shape`` inscribed in the box ``cx +- rx, cy +- ry``.

    Returns a flat ``[x1, y1, ...]`` list of floats rounded to 2 decimals
    (COCO style), at least 3 points (6 numbers), never exactly 4 numbers.
    """
    if shape in ('circle', 'ellipse'):
        ts = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = [(math.cos(t), math.sin(t)) for t in ts]
    elif shape in ('square', 'rectangle'):
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == 'triangle':
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif shape == 'diamond':
        pts = [(0, -1), (1, 0), (0, 1), (-1, 0)]
    elif shape in ('pentagon', 'hexagon'):
        n = 5 if shape == 'pentagon' else 6
        pts = [(math.sin(2 * math.pi * k / n), -math.cos(2 * math.pi * k / n))
               for k in range(n)]
    elif shape == 'star':
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            t = math.pi * k / 5
            pts.append((r * math.sin(t), -r * math.cos(t)))
    else:
        raise ValueError(f'unknown shape {shape!r}')
    ca, sa = math.cos(angle), math.sin(angle)
    rot = [(px * rx * ca - py * ry * sa, px * rx * sa + py * ry * ca)
           for px, py in pts]
    # a rotated shape is shrunk back into its box (no overlap, in bounds)
    ext_x = max(abs(x) for x, _ in rot)
    ext_y = max(abs(y) for _, y in rot)
    k = min(1.0, rx / max(ext_x, 1e-9), ry / max(ext_y, 1e-9))
    flat = []
    for x, y in rot:
        flat += [round(cx + x * k, 2), round(cy + y * k, 2)]
    return flat


@dataclass
class SceneObject:
    """One object of a picture.

    Attributes:
        shape: a name from :data:`SHAPES`, ``'pair'`` (two disjoint parts)
            or ``'dots'`` (a crowd of small squares).
        color: colour name (key of :data:`COLORS`).
        polygons: list of flat polygons (pixels); the mask is their union.
        mask: ``(H, W) uint8 {0, 1}``.
        part_shape: for ``'pair'``/``'dots'``, the shape of the parts.
    """
    shape: str
    color: str
    polygons: list[list[float]]
    mask: np.ndarray
    part_shape: str = ''

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLORS[self.color]

    @property
    def category(self) -> str:
        return self.shape

    @property
    def category_id(self) -> int:
        return CATEGORY_IDS[self.shape]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> list[float]:
        from .files import bbox_of
        return bbox_of(self.mask)

    @property
    def center(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()), float(ys.mean())

    @property
    def noun(self) -> str:
        """``'red circle'``, ``'pair of green squares'``, ``'group of
        black dots'``."""
        if self.shape == 'pair':
            return f'pair of {self.color} {self.part_shape}s'
        if self.shape == 'dots':
            return f'group of small {self.color} dots'
        return f'{self.color} {self.shape}'


@dataclass
class Scene:
    """A picture: ``image (H, W, 3) uint8`` RGB and its objects."""
    image: np.ndarray
    objects: list[SceneObject] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def background(rng: np.random.Generator, height: int, width: int
               ) -> np.ndarray:
    """A muted two-tone gradient with soft blotches and fine grain:
    ``(H, W, 3) float32`` in 0..255."""
    base = rng.uniform(85, 175, size=(2, 3)).astype(np.float32)
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    t = xx * np.float32(rng.uniform(0.2, 0.8)) + \
        yy * np.float32(rng.uniform(0.2, 0.8))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    coarse = rng.normal(0, 12, size=(6, 8)).astype(np.float32)
    shade = cv2.resize(coarse, (width, height),
                       interpolation=cv2.INTER_CUBIC)
    shade += rng.standard_normal((height, width), dtype=np.float32) * 4
    img = base[0] + (base[1] - base[0]) * t[..., None]
    img += shade[..., None]
    return img


def paint(image: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int],
          rng: np.random.Generator) -> None:
    """Paint ``rgb`` with a soft diagonal shading through ``mask`` in place
    (``image`` float32 ``(H, W, 3)``)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    span = max(float((x1 - x0 - 1) + (y1 - y0 - 1)), 1.0)
    shade = (1.08 - 0.22 * (xs + ys) / span).astype(np.float32)
    color = np.asarray(rgb, np.float32)[None] * shade[:, None]
    noise = rng.standard_normal((xs.size, 1), dtype=np.float32) * 3
    image[ys + y0, xs + x0] = color + noise


def finish(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def place_boxes(rng: np.random.Generator, width: int, height: int, n: int,
                min_frac: float, max_frac: float, tries: int = 400
                ) -> list[tuple[float, float, float, float]]:
    """Up to ``n`` non-overlapping boxes ``(cx, cy, rx, ry)``.

    Each box spans ``min_frac..max_frac`` of the image width (x) and height
    (y), lies inside the image with a 1 px margin, and keeps a 2 px gap to
    the others. At least one box is always returned.
    """
    boxes: list[tuple[float, float, float, float]] = []
    for attempt in range(tries):
        if len(boxes) == n:
            break
        bw = rng.uniform(min_frac, max_frac) * width
        bh = rng.uniform(min_frac, max_frac) * height
        if attempt == tries - 1 and not boxes:
            bw, bh = min_frac * width, min_frac * height
        x0 = rng.uniform(1, max(width - bw - 1, 1.0001))
        y0 = rng.uniform(1, max(height - bh - 1, 1.0001))
        new = (x0, y0, x0 + bw, y0 + bh)
        if any(new[0] < b[2] + 2 and b[0] < new[2] + 2 and new[1] < b[3] + 2
               and b[1] < new[3] + 2 for b in boxes):
            continue
        boxes.append(new)
    return [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2,
             (b[3] - b[1]) / 2) for b in boxes]


def _object_polygons(rng, shape: str, cx, cy, rx, ry, part_shape: str = ''
                     ) -> list[list[float]]:
    if shape == 'pair':
        # two parts side by side with a gap: one object, two polygons
        prx = rx * 0.42
        return [shape_polygon(part_shape, cx - rx + prx, cy, prx, ry * 0.8),
                shape_polygon(part_shape, cx + rx - prx, cy, prx, ry * 0.8)]
    if shape == 'dots':
        polys = []
        for gy in (-0.6, 0.0, 0.6):
            for gx in (-0.6, 0.0, 0.6):
                if rng.random() < 0.75:
                    polys.append(shape_polygon(
                        'square', cx + gx * rx, cy + gy * ry,
                        max(rx * 0.18, 1.2), max(ry * 0.18, 1.2)))
        return polys or [shape_polygon('square', cx, cy, rx * 0.2, ry * 0.2)]
    if shape in ('circle', 'square'):
        rx = ry = min(rx, ry)
    angle = float(rng.uniform(-0.3, 0.3)) if shape in ('rectangle', 'ellipse'
                                                         ) else 0.0
    return [shape_polygon(shape, cx, cy, rx, ry, angle)]


def make_image_scene(rng: np.random.Generator, width: int, height: int,
                     n_objects: int, min_frac: float = 0.2,
                     max_frac: float = 0.4, shapes=None,
                     special: tuple[str, ...] = ()) -> Scene:
    """A picture with up to ``n_objects`` non-overlapping objects.

    Args:
        rng: random source.
        width, height: picture size in pixels.
        n_objects: wanted object count (fewer if they do not fit).
        min_frac, max_frac: object box size as a fraction of the picture
            side (x of the width, y of the height).
        shapes: shape names to draw from (default :data:`SHAPES`).
        special: kinds to use for the first objects instead of a plain
            shape: ``'pair'`` (two-polygon object), ``'dots'`` (crowd).

    Returns:
        :class:`Scene`; colours are distinct within the picture, so a
        colour + shape phrase names one object.
    """
    shapes = tuple(shapes or SHAPES)
    img = background(rng, height, width)
    boxes = place_boxes(rng, width, height, n_objects, min_frac, max_frac)
    colors = rng.permutation(list(COLORS))[:len(boxes)]
    objects = []
    for k, ((cx, cy, rx, ry), color) in enumerate(zip(boxes, colors)):
        shape = special[k] if k < len(special) else str(rng.choice(shapes))
        part = str(rng.choice(['circle', 'square', 'triangle'])) \
            if shape in ('pair', 'dots') else ''
        if shape == 'dots':
            part = 'square'
        polys = _object_polygons(rng, shape, cx, cy, rx, ry, part)
        mask = polygon_mask(polys, height, width)
        if mask.sum() == 0:
            continue
        paint(img, mask, COLORS[str(color)], rng)
        objects.append(SceneObject(shape, str(color), polys, mask, part))
    return Scene(finish(img), objects)


# ---------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------
@dataclass
class VideoObject:
    """A moving object. ``masks[t]`` is its visible ``(H, W) uint8`` mask in
    frame ``t`` or ``None`` when absent / fully hidden; ``velocity`` in
    pixels per frame; ``enter`` the first frame it is drawn in."""
    shape: str
    color: str
    velocity: tuple[float, float]
    enter: int
    masks: list

    @property
    def noun(self) -> str:
        return f'{self.color} {self.shape}'

    @property
    def motion(self) -> str:
        """``'moving to the right'``, ``'moving up'``, ... or ``'staying
        still'``, from the dominant velocity component."""
        vx, vy = self.velocity
        if max(abs(vx), abs(vy)) < 0.3:
            return 'staying still'
        if abs(vx) >= abs(vy):
            return 'moving to the right' if vx > 0 else 'moving to the left'
        return 'moving down' if vy > 0 else 'moving up'


@dataclass
class VideoScene:
    """``frames``: list of ``(H, W, 3) uint8`` RGB; ``objects`` in drawing
    order (later ones on top)."""
    frames: list
    objects: list

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])


def make_video_scene(rng: np.random.Generator, width: int, height: int,
                     n_frames: int, n_objects: int, late_enter: int = 0,
                     min_frac: float = 0.18, max_frac: float = 0.32,
                     still_first: bool = False) -> VideoScene:
    """A clip of ``n_frames`` frames with ``n_objects`` moving shapes.

    Objects start at non-overlapping boxes, move with a constant velocity
    (reflected at the borders) and may overlap later; the visible mask of
    an object excludes the objects drawn after it.

    Args:
        late_enter: if > 0, the last object is only drawn from this frame
            on (absent before: ``None`` masks), a real case of masklets
            appearing mid-video.
        still_first: the first object does not move.
    """
    bg = background(rng, height, width)
    boxes = place_boxes(rng, width, height, n_objects, min_frac, max_frac)
    colors = rng.permutation(list(COLORS))[:len(boxes)]
    plain = [s for s in SHAPES if s != 'star']
    specs = []
    for k, ((cx, cy, rx, ry), color) in enumerate(zip(boxes, colors)):
        shape = str(rng.choice(plain))
        speed = max(width, height) / max(n_frames, 1) * rng.uniform(0.15, 0.4)
        ang = rng.uniform(0, 2 * math.pi)
        vel = (0.0, 0.0) if (still_first and k == 0) else (
            round(speed * math.cos(ang), 3), round(speed * math.sin(ang), 3))
        enter = late_enter if (late_enter and k == len(boxes) - 1) else 0
        specs.append([shape, str(color), cx, cy, rx, ry, vel, enter,
                      float(rng.uniform(-0.3, 0.3))])
    frames, full = [], [[] for _ in specs]
    for t in range(n_frames):
        img = bg.copy()
        for k, (shape, color, cx, cy, rx, ry, vel, enter, ang) in \
                enumerate(specs):
            if t < enter:
                full[k].append(None)
                continue
            x = _bounce(cx + vel[0] * (t - enter), rx, width)
            y = _bounce(cy + vel[1] * (t - enter), ry, height)
            if shape in ('circle', 'square'):
                rx = ry = min(rx, ry)
            poly = shape_polygon(shape, x, y, rx, ry,
                                 ang if shape in ('rectangle', 'ellipse')
                                 else 0.0)
            mask = polygon_mask([poly], height, width)
            paint(img, mask, COLORS[color], rng)
            full[k].append(mask)
        frames.append(finish(img))
    objects = []
    for k, spec in enumerate(specs):
        visible = []
        for t in range(n_frames):
            m = full[k][t]
            if m is not None:
                for later in full[k + 1:]:
                    if later[t] is not None:
                        m = m & (1 - later[t])
                m = m if m.any() else None
            visible.append(m)
        objects.append(VideoObject(spec[0], spec[1], spec[6], spec[7],
                                   visible))
    return VideoScene(frames, objects)


def _bounce(pos: float, radius: float, size: int) -> float:
    """Reflect a centre coordinate into ``[radius + 1, size - radius - 1]``."""
    lo, hi = radius + 1, size - radius - 1
    if hi <= lo:
        return size / 2
    span = hi - lo
    p = (pos - lo) % (2 * span)
    return lo + (p if p <= span else 2 * span - p)
