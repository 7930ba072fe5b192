"""Referring segmentation (images): RefCOCO, RefCOCO+, RefCOCOg.

Layout written (``docs/datasets.md``)::

    ref_seg/refcoco/   instances.json  refs(unc).p  coco2014/train2014/COCO_train2014_%012d.jpg
    ref_seg/refcoco+/  instances.json  refs(unc).p  coco2014/train2014/...
    ref_seg/refcocog/  instances.json  refs(umd).p  coco2014/train2014/...

RefCOCO and RefCOCO+ share their pictures (as the real sets do); RefCOCOg
has its own. ``refs(*).p`` is a protocol-2 pickle of a list of ref dicts
(``ref_id, ann_id, image_id, split, sentences[{tokens, raw, sent_id,
sent}], sent_ids, category_id, file_name``); ``instances.json`` a COCO dict
(``info, images, licenses, annotations, categories``). Every train ref's
annotation is a polygon list; the images also carry unreferenced
annotations, among them one crowd annotation (``iscrowd: 1``) with an
uncompressed RLE, as COCO has.
"""
from __future__ import annotations

from .common import Context, picture, unique_ids
from .files import rle_uncompressed
from .scenes import CATEGORY_IDS
from .text import long_referring, referring

ROOT = 'ref_seg'
DATASETS = {
    # name: (split_by file, splits, expression style)
    'refcoco': ('refs(unc).p', ('train',) * 4 + ('val', 'testA', 'testB'),
                'short'),
    'refcoco+': ('refs(unc).p', ('train',) * 4 + ('val', 'testA', 'testB'),
                 'noloc'),
    'refcocog': ('refs(umd).p', ('train',) * 4 + ('val', 'test'), 'long'),
}
IMG_PREFIX = 'coco2014/train2014/'


def _pictures(ctx: Context, name: str, n: int):
    """``[(image_id, scene)]`` for one picture pool; the first picture has
    a two-polygon object and a crowd region."""
    rng = ctx.spec.rng(f'refseg_pictures_{name}')
    ids = unique_ids(rng, n, 1000, 581000)
    out = []
    for i, image_id in enumerate(ids):
        special = ('pair', 'dots') if i == 0 else ()
        out.append((image_id, picture(ctx, rng, special=special,
                                      n_objects=max(ctx.spec.n_objects(rng),
                                                    len(special) + 1))))
    return out


def write_dataset(ctx: Context, name: str, pool) -> None:
    split_file, splits, style = DATASETS[name]
    rng = ctx.spec.rng(f'refseg_{name}')
    base = f'{ROOT}/{name}'
    images, annotations, refs = [], [], []
    ann_ids = unique_ids(rng, sum(len(s.objects) for _, s in pool),
                         100000, 2200000)
    ref_id = sent_id = 0
    a = 0
    for image_id, scene in pool:
        file_name = f'COCO_train2014_{image_id:012d}.jpg'
        ctx.writer.jpeg(f'{base}/{IMG_PREFIX}{file_name}', scene.image)
        images.append({
            'license': 1, 'file_name': file_name,
            'coco_url': f'http://images.cocodataset.org/train2014/'
                        f'{file_name}',
            'height': scene.height, 'width': scene.width,
            'date_captured': '2013-11-14 16:28:13',
            'flickr_url': f'http://farm4.staticflickr.com/{image_id}.jpg',
            'id': image_id})
        for obj in scene.objects:
            ann_id = ann_ids[a]
            a += 1
            crowd = obj.shape == 'dots'
            if crowd:
                seg = rle_uncompressed(obj.mask)
                ctx.manifest.awkward(name, f'{base}/instances.json', ann_id,
                                     'crowd annotation (iscrowd 1) with an '
                                     'uncompressed RLE; no ref uses it')
            else:
                seg = obj.polygons
            annotations.append({
                'segmentation': seg, 'area': float(obj.area),
                'iscrowd': int(crowd), 'image_id': image_id,
                'bbox': obj.bbox, 'category_id': obj.category_id,
                'id': ann_id})
            if crowd:
                continue
            if obj.shape == 'pair':
                ctx.manifest.awkward(name, f'{base}/{split_file}', ref_id,
                                     'referred object with two polygons '
                                     '(multi-part segmentation)')
            split = splits[ref_id % len(splits)]
            sents = []
            for k in range(int(rng.integers(1, 4))):
                text = long_referring(obj, scene) if style == 'long' else \
                    referring(obj, scene, k + ref_id,
                              with_location=style != 'noloc')
                raw = text
                if ref_id == 0 and k == 0:
                    raw = text.upper()
                    ctx.manifest.awkward(name, f'{base}/{split_file}', ref_id,
                                         'raw sentence in capitals')
                elif k == 1:
                    raw = text[0].upper() + text[1:] + '.'
                sent = text.replace(',', ' ,')
                sents.append({'tokens': sent.split(), 'raw': raw,
                              'sent_id': sent_id, 'sent': sent})
                sent_id += 1
            refs.append({
                'sent_ids': [s['sent_id'] for s in sents],
                'file_name': f'COCO_train2014_{image_id:012d}_'
                             f'{int(rng.integers(0, 40))}.jpg',
                'ann_id': ann_id, 'ref_id': ref_id, 'image_id': image_id,
                'split': split, 'sentences': sents,
                'category_id': obj.category_id})
            ref_id += 1
    categories = [{'supercategory': 'shape', 'id': cid, 'name': cname}
                  for cname, cid in CATEGORY_IDS.items()]
    ctx.writer.json(f'{base}/instances.json', {
        'info': {'description': 'Sa2VA sample data (synthetic shapes)',
                 'version': '1.0', 'year': 2014},
        'images': images,
        'licenses': [{'url': 'http://creativecommons.org/licenses/by/4.0/',
                      'id': 1, 'name': 'Attribution License'}],
        'annotations': annotations, 'categories': categories})
    ctx.writer.pickle(f'{base}/{split_file}', refs)
    ctx.manifest.add(name, data_root=base, ann_file='instances.json',
                     split_file=split_file, img_prefix=IMG_PREFIX,
                     num_images=len(images), num_refs=len(refs),
                     num_train_refs=sum(r['split'] == 'train' for r in refs))


def write(ctx: Context) -> None:
    if not ctx.once('refseg'):
        return
    shared = _pictures(ctx, 'refcoco', ctx.spec.n(4))
    write_dataset(ctx, 'refcoco', shared)
    write_dataset(ctx, 'refcoco+', shared)
    write_dataset(ctx, 'refcocog', _pictures(ctx, 'refcocog',
                                             ctx.spec.n(4)))
