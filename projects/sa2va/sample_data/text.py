"""Plausible English for the sample data: phrases naming the painted
objects (colour + shape + position), captions, questions and answers."""
from __future__ import annotations

import numpy as np

from .scenes import Scene, SceneObject, VideoObject


def position(obj: SceneObject, width: int, height: int) -> str:
    """``'top left'``, ``'left'``, ``'center'``, ``'bottom'``, ... from the
    object's centroid (thirds of the picture)."""
    cx, cy = obj.center
    col = 'left' if cx < width / 3 else 'right' if cx > 2 * width / 3 else ''
    row = 'top' if cy < height / 3 else 'bottom' if cy > 2 * height / 3 \
        else ''
    return ' '.join(p for p in (row, col) if p) or 'center'


def size_word(obj: SceneObject, width: int, height: int) -> str:
    frac = obj.area / float(width * height)
    return 'large' if frac > 0.06 else 'small' if frac < 0.02 else \
        'medium-sized'


def where(obj: SceneObject, width: int, height: int) -> str:
    """``'on the left'``, ``'at the top right'``, ``'in the center'``."""
    pos = position(obj, width, height)
    if pos == 'center':
        return 'in the center'
    if pos in ('left', 'right'):
        return f'on the {pos}'
    return f'at the {pos}'


def referring(obj: SceneObject, scene: Scene, k: int,
              with_location: bool = True) -> str:
    """The ``k``-th (cycling) referring phrase for an object, lower case.

    With ``with_location=False`` (RefCOCO+ style) no location words.
    """
    w, h = scene.width, scene.height
    options = [f'the {obj.noun}', f'{size_word(obj, w, h)} {obj.noun}']
    if with_location:
        options += [f'{obj.noun} {where(obj, w, h)}',
                    f'the {obj.noun} {where(obj, w, h)} of the picture']
    else:
        options += [f'{obj.color} {obj.shape} shape', f'the {obj.color} one']
    return options[k % len(options)]


def long_referring(obj: SceneObject, scene: Scene) -> str:
    """A RefCOCOg-style full sentence relating the object to another."""
    others = [o for o in scene.objects if o is not obj]
    base = f'the {obj.noun} {where(obj, scene.width, scene.height)}'
    if not others:
        return base + ' of the picture'
    other = others[0]
    ox, oy = other.center
    cx, cy = obj.center
    if abs(cx - ox) >= abs(cy - oy):
        rel = 'to the left of' if cx < ox else 'to the right of'
    else:
        rel = 'above' if cy < oy else 'below'
    return f'{base}, {rel} the {other.noun}'


def join_list(items: list[str]) -> str:
    if len(items) <= 1:
        return ''.join(items)
    return ', '.join(items[:-1]) + ' and ' + items[-1]


def scene_caption(scene: Scene) -> str:
    """One sentence listing every object with its place."""
    w, h = scene.width, scene.height
    parts = [f'a {o.noun} {where(o, w, h)}' for o in scene.objects]
    return (f'A picture of {join_list(parts)} on a softly textured '
            f'background.')


def detailed_description(obj: SceneObject, scene: Scene) -> str:
    """Two or three sentences about one object (Osprey / DAM captions)."""
    w, h = scene.width, scene.height
    first = f'A {size_word(obj, w, h)} {obj.noun} {where(obj, w, h)}.'
    body = (f'Its {obj.color} surface is flat with a soft shading that gets '
            f'darker towards the lower right edge.')
    others = [o for o in scene.objects if o is not obj]
    if others:
        tail = (f' It stands apart from the {others[0].noun}, with plain '
                f'background between them.')
    else:
        tail = ' Nothing else is near it.'
    return first + ' ' + body + tail


def video_expression(obj: VideoObject, k: int) -> str:
    """A motion expression (MeViS style), lower case."""
    options = [f'the {obj.noun} {obj.motion}',
               f'{obj.noun} that keeps {obj.motion}',
               f'the {obj.shape} which is {obj.color}']
    return options[k % len(options)]


def video_caption(obj: VideoObject) -> str:
    """A long caption of one moving object (SA-V pseudo ``formated``)."""
    enter = (' It enters the scene partway through the clip.'
             if obj.enter else ' It is visible from the first frame.')
    return (f'A {obj.color} {obj.shape} with a flat, slightly shaded surface '
            f'is {obj.motion} across a muted textured background.{enter}')


def choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]
