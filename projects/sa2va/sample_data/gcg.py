"""Grounded conversation generation: RefCOCOg-GCG, GranDf, Flickr30k-GCG
and OpenPSG-GCG, four annotation formats (``docs/datasets.md``).

Layout written::

    glamm_data/annotations/RefCOCOg_GCG_train.json       [{"<id>": {img_file_name, caption, refs}}]
    glamm_data/annotations/GranDf_HA_GCG_train.json      [{file_name, height, width, image_id, caption, groundings}]
    glamm_data/annotations/flickr_mergedGT_GCG_train.json  COCO dict (images with caption, annotations with tokens_positive + sam_mask)
    glamm_data/annotations/OpenPsgGCG_train.json         like GranDf, bare 2017 names
    glamm_data/images/coco2014/train2014/COCO_train2014_%012d.jpg
    glamm_data/images/grandf/train/sa_%d.jpg
    glamm_data/images/flickr30k/Flickr30K/%d.jpg
    glamm_data/images/coco2017/%012d.jpg

Every span ``[start, end)`` slices its caption exactly to the phrase;
RefCOCOg-GCG sentences are lower-case substrings of the lower-cased caption
(except one deliberate ref that the caption does not mention).
"""
from __future__ import annotations

from .common import Context, picture, unique_ids
from .files import rle_str
from .text import where

ROOT = 'glamm_data'
ANN = f'{ROOT}/annotations'


def grounded_caption(scene, objects, lead: str = 'A picture of '
                     ) -> tuple[str, list[tuple[str, int, int]]]:
    """Caption naming ``objects`` in order; returns ``(caption, [(phrase,
    start, end)])`` with ``caption[start:end] == phrase``."""
    caption, spans = lead, []
    for k, obj in enumerate(objects):
        if k:
            caption += ' and ' if k == len(objects) - 1 else ', '
        phrase = f'a {obj.noun}'
        spans.append((phrase, len(caption), len(caption) + len(phrase)))
        caption += phrase + ' ' + where(obj, scene.width, scene.height)
    return caption + '.', spans


def _gcg_scene(ctx, rng):
    return picture(ctx, rng, n_objects=max(ctx.spec.n_objects(rng), 2))


def write_refcocog_gcg(ctx: Context) -> None:
    rng = ctx.spec.rng('gcg_refcocog')
    rel = f'{ANN}/RefCOCOg_GCG_train.json'
    records = []
    for i, image_id in enumerate(unique_ids(rng, ctx.spec.n(3), 1000,
                                            581000)):
        scene = _gcg_scene(ctx, rng)
        name = f'COCO_train2014_{image_id:012d}.jpg'
        ctx.writer.jpeg(f'{ROOT}/images/coco2014/train2014/{name}',
                        scene.image)
        mentioned = scene.objects[:-1] if i == 1 else scene.objects
        caption, spans = grounded_caption(scene, mentioned)
        refs = [{'sentence': phrase, 'bbox': obj.bbox,
                 'segmentation': obj.polygons}
                for (phrase, _, _), obj in zip(spans, mentioned)]
        if i == 1:
            last = scene.objects[-1]
            refs.append({'sentence': f'the {last.noun} nobody mentions',
                         'bbox': last.bbox, 'segmentation': last.polygons})
            ctx.manifest.awkward('gcg_refcocog', rel, i, 'last ref sentence '
                                 'does not occur in the caption (unused)')
        if i == 0:
            caption = f'"{caption}"'
            ctx.manifest.awkward('gcg_refcocog', rel, i,
                                 'caption wrapped in double quotes')
        records.append({str(image_id): {'img_file_name': name,
                                        'caption': caption, 'refs': refs}})
    ctx.writer.json(rel, records)
    ctx.manifest.add('gcg_refcocog', ann_file=rel,
                     image_folder=f'{ROOT}/images/coco2014/train2014',
                     num_records=len(records))


def _grounding_records(ctx: Context, dataset: str, rel: str, n: int,
                       file_name, image_id, folder: str) -> list[dict]:
    """GranDf / OpenPSG records; record 0 has a phrase with two masks."""
    rng = ctx.spec.rng(dataset)
    records = []
    for i, num in enumerate(unique_ids(rng, n, 1000, 9000000)):
        scene = _gcg_scene(ctx, rng)
        fname = file_name(num)
        ctx.writer.jpeg(f'{folder}/{fname}', scene.image)
        if i == 0:
            a, b = scene.objects[0], scene.objects[1]
            phrase = f'the {a.color} and {b.color} shapes'
            rest, rest_spans = grounded_caption(scene, scene.objects[2:],
                                                lead='') \
                if len(scene.objects) > 2 else ('', [])
            caption = f'A picture of {phrase}'
            start = len('A picture of ')
            groundings = {phrase: {'token_positives': [start,
                                                       start + len(phrase)],
                                   'rle_masks': [rle_str(a.mask),
                                                 rle_str(b.mask)]}}
            if rest:
                off = len(caption) + len(' next to ')
                caption += ' next to ' + rest
                for (p, s, e), obj in zip(rest_spans, scene.objects[2:]):
                    groundings[p] = {'token_positives': [s + off, e + off],
                                     'rle_masks': [rle_str(obj.mask)]}
            else:
                caption += '.'
            ctx.manifest.awkward(dataset, rel, i, f'phrase '
                                 f'{phrase!r} grounded by two RLE masks '
                                 f'(summed)')
        else:
            caption, spans = grounded_caption(scene, scene.objects)
            groundings = {p: {'token_positives': [s, e],
                              'rle_masks': [rle_str(obj.mask)]}
                          for (p, s, e), obj in zip(spans, scene.objects)}
        records.append({'file_name': fname, 'height': scene.height,
                        'width': scene.width, 'image_id': image_id(num),
                        'caption': caption, 'groundings': groundings})
    return records


def write_grandf(ctx: Context) -> None:
    rel = f'{ANN}/GranDf_HA_GCG_train.json'
    folder = f'{ROOT}/images/grandf/train'
    recs = _grounding_records(ctx, 'gcg_grandf', rel, ctx.spec.n(3),
                              lambda n: f'sa_{n}.jpg', lambda n: f'sa_{n}',
                              folder)
    ctx.writer.json(rel, recs)
    ctx.manifest.add('gcg_grandf', ann_file=rel, image_folder=folder,
                     num_records=len(recs))


def write_openpsg(ctx: Context) -> None:
    rel = f'{ANN}/OpenPsgGCG_train.json'
    folder = f'{ROOT}/images/coco2017'
    recs = _grounding_records(ctx, 'gcg_openpsg', rel, ctx.spec.n(3),
                              lambda n: f'{n:012d}.jpg', lambda n: str(n),
                              folder)
    ctx.writer.json(rel, recs)
    ctx.manifest.add('gcg_openpsg', ann_file=rel, image_folder=folder,
                     num_records=len(recs))


def write_flickr(ctx: Context) -> None:
    rng = ctx.spec.rng('gcg_flickr')
    rel = f'{ANN}/flickr_mergedGT_GCG_train.json'
    folder = f'{ROOT}/images/flickr30k/Flickr30K'
    images, annotations = [], []
    img_id = ann_id = 0
    for i, fid in enumerate(unique_ids(rng, ctx.spec.n(3), 10000000,
                                       9999999999)):
        scene = _gcg_scene(ctx, rng)
        fname = f'{fid}.jpg'
        ctx.writer.jpeg(f'{folder}/{fname}', scene.image)
        # two captions (two image entries) per picture, MDETR style
        for c, objs in enumerate((scene.objects, scene.objects[::-1][:2])):
            caption, spans = grounded_caption(
                scene, objs, lead='Here we see ' if c else 'A picture of ')
            if i == 0 and c == 1:
                caption, spans = 'Two shapes.', [('Two shapes', 0, 10)]
                objs = objs[:1]
                ctx.manifest.awkward('gcg_flickr', rel, img_id + 1,
                                     'caption of fewer than 3 words '
                                     '(the loaders drop it)')
            img_id += 1
            images.append({
                'file_name': fname, 'height': scene.height,
                'width': scene.width, 'id': img_id, 'caption': caption,
                'dataset_name': 'flickr',
                'tokens_positive_eval': [[[s, e]] for _, s, e in spans],
                'sentence_id': c, 'original_img_id': fid})
            for k, ((_, s, e), obj) in enumerate(zip(spans, objs)):
                ann_id += 1
                ann = {'area': float(obj.area), 'iscrowd': 0,
                       'image_id': img_id, 'category_id': 1, 'id': ann_id,
                       'bbox': obj.bbox, 'tokens_positive': [[s, e]],
                       'sam_mask': rle_str(obj.mask)}
                if i == 1 and c == 0 and k == len(objs) - 1:
                    ann['ignore'] = 1
                    ctx.manifest.awkward('gcg_flickr', rel, ann_id,
                                         "annotation with 'ignore': 1")
                annotations.append(ann)
    ctx.writer.json(rel, {'images': images, 'annotations': annotations,
                          'categories': [{'supercategory': 'object',
                                          'id': 1, 'name': 'object'}]})
    ctx.manifest.add('gcg_flickr', ann_file=rel, image_folder=folder,
                     num_images=len(images), num_annotations=len(annotations))


def write(ctx: Context) -> None:
    write_refcocog_gcg(ctx)
    write_grandf(ctx)
    write_flickr(ctx)
    write_openpsg(ctx)
