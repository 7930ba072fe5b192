"""The own-data format (``docs/datasets.md``, "Fine-tune on your own
data"): one JSON list, one record per image, masks as PNG files or RLE.

Layout written::

    my_data/annotations.json
    my_data/images/img_%04d.jpg
    my_data/masks/img_%04d_%d.png      (0 = background, non-zero = object)

Every record has ``image`` and ``objects``; each object has a ``mask`` (a
PNG path relative to the data root for even records, a compressed RLE dict
with a str ``counts`` for odd ones), ``text`` (referring expressions, a list)
and ``description`` (a region description, str); every other record also
has a ``conversation`` whose answers hold one ``[SEG]`` per object, in
order. The same file serves the three tasks of ``OwnDataset``.
"""
from __future__ import annotations

from PIL import Image

from .common import Context, picture
from .files import rle_str
from .text import detailed_description, join_list, referring, scene_caption

ROOT = 'my_data'


def write(ctx: Context) -> None:
    if not ctx.once('own_data'):
        return
    rng = ctx.spec.rng('own_data')
    records = []
    n = ctx.spec.n(4)
    for i in range(n):
        scene = picture(ctx, rng)
        image = f'images/img_{i:04d}.jpg'
        ctx.writer.jpeg(f'{ROOT}/{image}', scene.image)
        objects = []
        for k, obj in enumerate(scene.objects):
            if i % 2 == 0:
                mask = f'masks/img_{i:04d}_{k}.png'
                ctx.writer.png(f'{ROOT}/{mask}',
                               Image.fromarray(obj.mask * 255))
            else:
                mask = rle_str(obj.mask)
            objects.append(dict(
                mask=mask,
                text=[referring(obj, scene, j) for j in range(2)],
                description=detailed_description(obj, scene)))
        rec = dict(image=image, objects=objects)
        if i % 2 == 0:
            named = [f'the {o.noun} [SEG]' for o in scene.objects]
            rec['conversation'] = [
                dict(**{'from': 'human'}, value='<image>\nWhat is in this '
                     'picture? Please segment what you mention.'),
                dict(**{'from': 'gpt'}, value=f'I see {join_list(named)}. '
                     f'{scene_caption(scene)}')]
        records.append(rec)
    ctx.writer.json(f'{ROOT}/annotations.json', records)
    ctx.manifest.add('own_data', data_root=ROOT, ann_file='annotations.json',
                     num_images=n, num_objects=sum(len(r['objects'])
                                                   for r in records),
                     num_conversations=sum('conversation' in r
                                           for r in records))
