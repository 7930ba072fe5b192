"""Visual-prompt family: Osprey-724K (five files) and Describe Anything.

Layout written (``docs/datasets.md``)::

    osprey-724k/Osprey-724K/osprey_conversation.json         COCO_train2014_* names
    osprey-724k/Osprey-724K/osprey_detail_description.json   COCO_train2014_* names
    osprey-724k/Osprey-724K/osprey_short_form.json           bare 2017 names
    osprey-724k/Osprey-724K/osprey_part_level.json           bare 2017 names
    osprey-724k/Osprey-724K/osprey_lvis_positive_negative.json  bare 2017 names
    osprey-724k/coco/train2014/COCO_train2014_%012d.jpg
    osprey-724k/coco/train2017/%012d.jpg    (one LVIS image in val2017/)
    describe-anything-dataset/describe-anything-dataset/{COCOStuff,LVIS,PACO,SAV}/
        annotations.json          dict sample_id -> [region dict, ...]
        images/%06d.tar           {id}.jpg (SAV: {id}.{t}.jpg) + {id}.pickle

Osprey records: ``{id?, file_name, height, width, annotation: [{segmentation,
bbox, ...}], conversations | description}``. Every region keeps >= 4 cells
after the 16 x 16 nearest resize (checked with the project's
``pool_prompt_masks``). Region encodings: polygon lists (conversation,
detail, LVIS, short form), compressed RLE (part level), one uncompressed RLE
(short form record 0, region 1).
"""
from __future__ import annotations

import numpy as np

from .common import Context, picture, unique_ids
from .files import bbox_of, jpeg_bytes, rle_str, rle_uncompressed
from .scenes import SHAPES, make_video_scene
from .text import choice, detailed_description, where

OSPREY_ROOT = 'osprey-724k'
OSPREY_FILES = {
    'osprey_conversation': 'osprey_conversation.json',
    'osprey_detail_description': 'osprey_detail_description.json',
    'osprey_short_form': 'osprey_short_form.json',
    'osprey_part_level': 'osprey_part_level.json',
    'osprey_lvis_positive_negative': 'osprey_lvis_positive_negative.json',
}
#: which files use COCO-2014 names (the rest use bare 2017 names)
OSPREY_2014 = ('osprey_conversation', 'osprey_detail_description')
DAM_ROOT = 'describe-anything-dataset/describe-anything-dataset'
DAM_INSTRUCTION = ('Please generate a detailed description for the given '
                   'image region.')


def _min_cells(masks: list[np.ndarray]) -> int:
    """Smallest True-cell count over the regions after the 16 x 16 nearest
    rule (the project's one implementation of it)."""
    from projects.sa2va.transforms.functional import pool_prompt_masks
    pooled = pool_prompt_masks(np.stack(masks), mode='nearest')
    return int(pooled.flatten(1).sum(1).min())


def _osprey_scene(ctx: Context, rng, n_objects=None, min_frac=None,
                  parts=False):
    """A picture whose regions (objects, or object halves for ``parts``)
    all keep >= 4 cells on the 16 x 16 grid."""
    for attempt in range(20):
        lo = (min_frac or ctx.spec.object_frac[0]) + 0.02 * attempt
        scene = picture(ctx, rng, n_objects=n_objects, min_frac=lo,
                        max_frac=max(lo + 0.1, ctx.spec.object_frac[1]),
                        shapes=[s for s in SHAPES if s != 'star'])
        regions = _part_regions(scene) if parts else \
            [o.mask for o in scene.objects]
        if len(scene.objects) >= 1 and _min_cells(regions) >= 4:
            return scene, regions
    raise RuntimeError('could not place Osprey regions large enough for the '
                       '16 x 16 grid; use a larger image size')


def _part_regions(scene) -> list[np.ndarray]:
    """For each object: the whole object, then its upper half."""
    out = []
    for obj in scene.objects:
        ys = np.nonzero(obj.mask)[0]
        upper = obj.mask.copy()
        upper[int(round((ys.min() + ys.max() + 1) / 2)):] = 0
        out += [obj.mask, upper]
    return out


def _image_name(kind: str, image_id: int) -> tuple[str, str]:
    """``(file_name in the json, folder under coco/)``."""
    if kind in OSPREY_2014:
        return f'COCO_train2014_{image_id:012d}.jpg', 'train2014'
    return f'{image_id:012d}.jpg', 'train2017'


def _turns(pairs: list[tuple[str, str]]) -> list[dict]:
    out = []
    for q, a in pairs:
        out += [{'from': 'human', 'value': q}, {'from': 'gpt', 'value': a}]
    return out


def _conversation(scene, rng) -> list[tuple[str, str]]:
    w, h = scene.width, scene.height
    objs = scene.objects
    pairs = [(f'What is <region1>?',
              f'<region1> is a {objs[0].noun} {where(objs[0], w, h)} of '
              f'the picture.')]
    if len(objs) > 1:
        a, b = objs[0].center, objs[1].center
        rel = 'left of' if a[0] < b[0] else 'right of'
        pairs.append((f'How is <region1> placed relative to <region2>?',
                      f'<region1> is to the {rel} <region2>, which is a '
                      f'{objs[1].noun}.'))
    k = len(objs)
    pairs.append((f'What colour does <region{k}> have?',
                  f'<region{k}> is {objs[-1].color}, with a soft shading '
                  f'towards its lower edge.'))
    return pairs


def write_osprey(ctx: Context) -> None:
    """The five Osprey-724K files and their COCO images."""
    spec, w_ = ctx.spec, ctx.writer
    ann_dir = f'{OSPREY_ROOT}/Osprey-724K'
    for kind, fname in OSPREY_FILES.items():
        rng = spec.rng(kind)
        n = spec.n(3)
        ids = unique_ids(rng, n, 100000, 600000)
        records = []
        ann_rel = f'{ann_dir}/{fname}'
        for i, image_id in enumerate(ids):
            parts = kind == 'osprey_part_level'
            scene, regions = _osprey_scene(
                ctx, rng, n_objects=(int(rng.integers(1, 3)) if parts
                                     else None),
                min_frac=0.36 if parts else None, parts=parts)
            file_name, folder = _image_name(kind, image_id)
            if kind == 'osprey_lvis_positive_negative' and i == n - 1:
                folder = 'val2017'
                ctx.manifest.awkward(kind, ann_rel, i,
                                     'image found only in coco/val2017/ '
                                     '(search order train2014, val2014, '
                                     'train2017, val2017)')
            img_rel = f'{OSPREY_ROOT}/coco/{folder}/{file_name}'
            if spec.bad_records and kind == 'osprey_conversation' and i == 1:
                ctx.manifest.bad(kind, ann_rel, i, f'image file missing: '
                                 f'{w_.absent(img_rel)}')
            else:
                w_.jpeg(img_rel, scene.image)
            rec = {}
            if kind in ('osprey_conversation', 'osprey_detail_description',
                        'osprey_lvis_positive_negative'):
                rec['id'] = image_id
            rec.update(file_name=file_name, height=scene.height,
                       width=scene.width)
            rec['annotation'] = _osprey_annotation(ctx, kind, scene, regions,
                                                   i, ann_rel)
            _osprey_text(ctx, kind, rec, scene, rng, i, ann_rel)
            records.append(rec)
        w_.json(ann_rel, records)
        ctx.manifest.add(kind, ann_file=ann_rel,
                         image_folders=[f'{OSPREY_ROOT}/coco/{d}' for d in
                                        ('train2014', 'val2014', 'train2017',
                                         'val2017')],
                         num_records=len(records))


def _osprey_annotation(ctx, kind, scene, regions, i, ann_rel) -> list[dict]:
    out = []
    if kind == 'osprey_part_level':
        for m in regions:
            out.append({'segmentation': rle_str(m), 'bbox': bbox_of(m)})
        return out
    for k, obj in enumerate(scene.objects):
        seg = obj.polygons
        if kind == 'osprey_short_form' and i == 0 and k == 1:
            seg = rle_uncompressed(obj.mask)
            ctx.manifest.awkward(kind, ann_rel, i, 'region 2 segmentation is '
                                 'an uncompressed RLE (counts list)')
        entry = {'segmentation': seg, 'bbox': obj.bbox}
        if kind == 'osprey_lvis_positive_negative':
            entry['category_id'] = obj.category_id
        out.append(entry)
    return out


def _osprey_text(ctx, kind, rec, scene, rng, i, ann_rel) -> None:
    objs = scene.objects
    n = len(objs)
    if kind == 'osprey_detail_description':
        desc = [f'<region{k + 1}>: {detailed_description(o, scene)}'
                for k, o in enumerate(objs)]
        if i == 1:
            desc[0] = desc[0].replace('<region1>', '<Region1>', 1)
            ctx.manifest.awkward(kind, ann_rel, i, "description tag "
                                 "misspelt '<Region1>'")
        if i == 2 and n >= 2:
            desc[1] = desc[1].replace('<region2>', '<regin2>', 1)
            ctx.manifest.awkward(kind, ann_rel, i, "description tag "
                                 "misspelt '<regin2>'")
        rec['description'] = desc
        return
    if kind == 'osprey_conversation':
        pairs = _conversation(scene, rng)
        if i == 1:
            q, a = pairs[0]
            pairs[0] = (q.replace('<region1>', '<region1]'), a)
            ctx.manifest.awkward(kind, ann_rel, i, "malformed region tag "
                                 "'<region1]' in the first human turn")
            if n >= 2:
                q, a = pairs[1]
                pairs[1] = (q.replace('<region2>', '<region 2>'), a)
                ctx.manifest.awkward(kind, ann_rel, i, "malformed region tag "
                                     "'<region 2>' in the second human turn")
        if i == 2:
            pairs.append((f'Is there anything next to <region{n + 1}>?',
                          'No, only plain background surrounds it.'))
            ctx.manifest.awkward(kind, ann_rel, i, f'turn mentions '
                                 f'<region{n + 1}> but the record has only '
                                 f'{n} annotation entries')
    elif kind == 'osprey_short_form':
        pairs = []
        for k, o in enumerate(objs):
            if k % 2 == 0:
                pairs.append((f'What color is <region{k + 1}>?',
                              o.color.capitalize()))
            else:
                pairs.append((f'What shape is <region{k + 1}>?',
                              o.shape.capitalize()))
    elif kind == 'osprey_part_level':
        pairs = []
        for k, o in enumerate(objs):
            pairs.append((f'What is <region{2 * k + 1}>?',
                          f'A {o.noun}.'))
            pairs.append((f'Which part of the {o.shape} is <region{2 * k + 2}>'
                          f'?', 'The upper half.'))
    else:  # LVIS positive / negative
        pairs = []
        for k, o in enumerate(objs):
            pairs.append((f'Is <region{k + 1}> a {o.shape}?', 'Yes.'))
            wrong = choice(rng, [s for s in SHAPES if s != o.shape])
            pairs.append((f'Is <region{k + 1}> a {wrong}?', 'No.'))
    rec['conversations'] = _turns(pairs)


# ---------------------------------------------------------------------------
# Describe Anything
# ---------------------------------------------------------------------------
DAM_SPLITS = ('COCOStuff', 'LVIS', 'PACO', 'SAV')
DAM_PER_SHARD = 2


def write_describe_anything(ctx: Context) -> None:
    """``annotations.json`` + tar shards for four DAM subsets."""
    import pickle
    if not ctx.once('describe_anything'):
        return
    spec = ctx.spec
    entry = {'root': DAM_ROOT, 'splits': {}}
    for split in DAM_SPLITS:
        rng = spec.rng(f'dam_{split}')
        n = spec.n({'COCOStuff': 4, 'LVIS': 3, 'PACO': 2, 'SAV': 2}[split])
        annotations, shards = {}, {}
        ids = unique_ids(rng, n, 1000, 600000)
        ann_rel = f'{DAM_ROOT}/{split}/annotations.json'
        for i, num in enumerate(ids):
            shard = f'{i // DAM_PER_SHARD:06d}.tar'
            members = shards.setdefault(shard, [])
            if split == 'SAV':
                sample_id, regions, frames = _dam_sav_sample(ctx, rng, num,
                                                             shard)
                for t, frame in enumerate(frames):
                    members.append((f'{sample_id}.{t}.jpg', jpeg_bytes(frame)))
            else:
                sample_id = str(num)
                scene = picture(ctx, rng, min_frac=0.25, max_frac=0.45)
                regions = []
                for k, obj in enumerate(scene.objects[:2]):
                    regions.append({
                        'img_id': sample_id, 'image': f'{num:012d}.jpg',
                        'ann_id': int(num * 10 + k),
                        'mask_rle': rle_str(obj.mask),
                        'caption': detailed_description(obj, scene),
                        'tar_file': shard})
                members.append((f'{sample_id}.jpg', jpeg_bytes(scene.image)))
            value = regions
            if split == 'LVIS' and i == 0:
                value = regions[0]
                ctx.manifest.awkward(f'dam_{split}', ann_rel, sample_id,
                                     'a single region dict (not a list) in '
                                     'annotations.json and the pickle')
            members.append((f'{sample_id}.pickle',
                            pickle.dumps(value, protocol=4)))
            annotations[sample_id] = value
        ctx.writer.json(ann_rel, annotations)
        for shard, members in shards.items():
            ctx.writer.tar(f'{DAM_ROOT}/{split}/images/{shard}', members)
        entry['splits'][split] = {
            'ann_file': ann_rel, 'shards': sorted(
                f'{DAM_ROOT}/{split}/images/{s}' for s in shards),
            'num_samples': len(annotations),
            'num_regions': sum(len(v) if isinstance(v, list) else 1
                               for v in annotations.values())}
    entry['instruction'] = DAM_INSTRUCTION
    ctx.manifest.add('describe_anything', **entry)


def _dam_sav_sample(ctx, rng, num, shard):
    """A 4-frame SA-V style sample; the region mask is that of frame 0."""
    w, h = ctx.spec.sav_size
    clip = make_video_scene(rng, w, h, 4, 2, min_frac=0.25, max_frac=0.4)
    sample_id = f'sav_{num:06d}'
    regions = []
    for k, obj in enumerate(clip.objects):
        if obj.masks[0] is None:
            continue
        regions.append({
            'img_id': sample_id, 'image': f'{sample_id}.0.jpg',
            'ann_id': int(k), 'mask_rle': rle_str(obj.masks[0]),
            'caption': (f'A {obj.noun} with a flat, softly shaded surface, '
                        f'{obj.motion} over a muted background.'),
            'tar_file': shard})
    return sample_id, regions, clip.frames


def write(ctx: Context) -> None:
    write_osprey(ctx)
    write_describe_anything(ctx)
