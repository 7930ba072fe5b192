"""Evaluation items of the benchmarks ``tools/test.py`` runs, parsed by the
training datasets' loaders.

The loaders take the ``tools/test.py`` argument namespace (``task``,
``data_root``, ``ann_file``, ``split_file``, ``split``, ``mask_file``,
``foreground_file``, ``img_prefix``, ``dataset_type``, ``gcg_format``,
``caption_format``, ``subsets``, ``question``) and return one dict per
evaluated item (a sentence, an expression, an image, a region).
"""
from __future__ import annotations

import json
import os.path as osp
import re

__all__ = ['file_stem', 'load_items', 'load_video_items',
           'load_caption_items', 'strip_region_label', 'caption_region',
           'decode_rle', 'OSPREY_DESCRIPTION_FILE']


def file_stem(path: str) -> str:
    """File name without folder and extension: ``'a/b/x.jpg'`` -> ``'x'``."""
    return osp.splitext(osp.basename(path.rstrip('/')))[0]


def load_items(args) -> list:
    """Evaluation items of the task (dicts), parsed by the datasets."""
    from projects.sa2va.registry import DATASETS
    if args.task == 'caption':
        return load_caption_items(args)
    ann_file = args.ann_file or 'instances.json'
    if args.task == 'refseg':
        ds = DATASETS.build(dict(
            type='RefCOCODataset', data_root=args.data_root,
            ann_file=ann_file, split_file=args.split_file,
            split=args.split, text_mode='original',
            data_prefix=dict(img_path=args.img_prefix or 'coco2014/train2014/')))
        items = []
        for i in range(len(ds)):
            rec = ds.get_data_info(i)
            for k, obj in enumerate(rec['objects']):
                items.append(dict(rec, object_index=k, item_id=f'{rec["record_id"]}/{k}'))
        return items
    if args.task == 'vos':
        return load_video_items(args, ann_file)
    ds = DATASETS.build(dict(
        type='GCGDataset', data_root=args.data_root, ann_file=ann_file,
        format=args.gcg_format,
        data_prefix=dict(img_path=args.img_prefix or '')))
    items = [ds.get_data_info(i) for i in range(len(ds))]
    # GLaMM's image id: the file name without extension
    return [dict(r, item_id=file_stem(r['img_path'])) for r in items
            if not r['defect']]


def load_video_items(args, ann_file: str) -> list:
    """One item per expression: ``record_id`` (video), ``video_dir``,
    ``frames`` (sorted stems), ``object`` (``exp``, ``exp_id``,
    ``anno_ids``), ``mask_tracks`` (None without GT), ``type_id`` (ReVOS,
    else None) and ``foreground`` (the video's per-frame foreground RLEs
    in sorted frame order, or None)."""
    from projects.sa2va.datasets.refvos import _load_meta_expressions
    from projects.sa2va.registry import DATASETS
    ann_path = osp.join(args.data_root, ann_file)
    meta = _load_meta_expressions(ann_path)
    img_dir = osp.join(args.data_root, args.img_prefix or '')
    if args.mask_file.lower() == 'none':
        records = [dict(record_id=vid, video_dir=osp.join(img_dir, vid),
                        frames=sorted(v['frames']), mask_tracks=None,
                        objects=[dict(exp=e['exp'], exp_id=str(eid))
                                 for eid, e in sorted(v['expressions'].items())])
                   for vid, v in meta.items() if v.get('expressions')]
    else:
        ds = DATASETS.build(dict(
            type=args.dataset_type, data_root=args.data_root,
            ann_file=ann_file, mask_file=args.mask_file,
            data_prefix=dict(img_path=args.img_prefix or '')))
        records = [ds.get_data_info(i) for i in range(len(ds))]
    fg_path = osp.join(args.data_root, args.foreground_file)
    foreground = None
    if args.dataset_type == 'ReVOSDataset' and osp.isfile(fg_path):
        with open(fg_path, encoding='utf-8') as f:
            foreground = json.load(f)
    items = []
    for rec in records:
        vid = rec['record_id']
        order = list(meta[vid]['frames'])
        fg = None
        if foreground is not None:
            if vid not in foreground:
                raise ValueError(f'{fg_path}: no masks for video {vid!r}')
            rles = foreground[vid]['masks_rle']
            fg = [rles[order.index(s)] for s in rec['frames']]
        for obj in rec['objects']:
            type_id = meta[vid]['expressions'][obj['exp_id']].get('type_id') \
                if args.dataset_type == 'ReVOSDataset' else None
            items.append(dict(rec, object=obj, type_id=type_id, foreground=fg,
                              item_id=f'{vid}/{obj["exp_id"]}'))
    return items


OSPREY_DESCRIPTION_FILE = 'Osprey-724K/osprey_detail_description.json'
_REGION_LABEL = re.compile(r'^\s*region\s*\d+\s*:\s*', re.I)


def strip_region_label(text: str) -> str:
    """Drop a leading ``regionN:`` label (Osprey descriptions start with
    one; each region is described alone, so the label carries no content)
    and surrounding blanks: ``'region2: A cat.'`` -> ``'A cat.'``."""
    return _REGION_LABEL.sub('', text).strip()


def load_caption_items(args) -> list:
    """Region-captioning items, one per region, numbered ``caption_id`` =
    0, 1, ... in file order.

    * ``osprey``: the detail-description JSON (``OspreyDataset``, kind
      ``description``); region k of a record is described alone (as
      ``region1``), its reference is the record's k-th description
      without its ``regionN:`` label (:func:`strip_region_label`, also
      applied to the prediction).
    * ``dam``: Describe Anything subsets (``DescribeAnythingDataset``, one
      record per region, reference = its caption).

    Each item: ``caption_id``, ``record_id``, ``region`` (1-based index in
    the record), ``segmentation`` (one encoding), ``ori_shape`` (osprey) or
    the tar fields (dam), ``img_path`` (osprey), ``reference`` (str) and
    ``question``.

    Raises:
        ValueError: an Osprey record whose description count differs from
        its region count (named).
    """
    from projects.sa2va.datasets.visual_prompt import (DAM_INSTRUCTION,
                                                       DETAILED_QUESTIONS,
                                                       OSPREY_IMAGE_FOLDERS)
    from projects.sa2va.registry import DATASETS
    items = []
    if args.caption_format == 'osprey':
        folders = (args.img_prefix.split(',') if args.img_prefix
                   else list(OSPREY_IMAGE_FOLDERS))
        question = args.question or DETAILED_QUESTIONS[0].replace(
            '<region>', 'region1')
        ds = DATASETS.build(dict(
            type='OspreyDataset', kind='description',
            data_root=args.data_root,
            ann_file=args.ann_file or OSPREY_DESCRIPTION_FILE,
            image_folders=folders))
        for i in range(len(ds)):
            rec = ds.get_data_info(i)
            segs, descs = rec['segmentations'], rec['descriptions']
            if len(segs) != len(descs):
                raise ValueError(f'{ds.ann_file}: {rec["record_id"]}: '
                                 f'{len(descs)} descriptions for '
                                 f'{len(segs)} regions')
            for k, (seg, desc) in enumerate(zip(segs, descs)):
                items.append(dict(
                    caption_id=len(items), record_id=rec['record_id'],
                    region=k + 1, segmentation=seg,
                    reference=strip_region_label(desc),
                    img_path=rec['img_path'], ori_shape=rec['ori_shape'],
                    question=question))
        return items
    ds = DATASETS.build(dict(
        type='DescribeAnythingDataset', data_root=args.data_root,
        subsets=args.subsets, instruction=args.question or DAM_INSTRUCTION))
    for i in range(len(ds)):
        rec = ds.get_data_info(i)
        items.append(dict(
            caption_id=len(items), record_id=rec['record_id'], region=1,
            segmentation=rec['segmentations'][0],
            reference=rec['conversation'][0]['output'],
            tar_path=rec['tar_path'], tar_offset=rec['tar_offset'],
            tar_size=rec['tar_size'], question=ds.instruction))
    return items


_TAR_LOADER = None  # one LoadImageFromTar (its LRU of open shards)


def caption_region(item):
    """``(image, mask)`` of a caption item: RGB PIL image and ``(H, W)
    uint8`` region mask at the image size.

    Raises:
        ValueError: missing / corrupt image, a mask whose size differs from
        the image, or an empty mask (the record and region named).
    """
    from PIL import Image

    from projects.sa2va.datasets.visual_prompt import LoadImageFromTar
    from projects.sa2va.transforms.base import RecordError
    from projects.sa2va.transforms.masks import decode_object
    where = f'{item["record_id"]} region {item["region"]}'
    try:
        if 'img_path' in item:
            image = Image.open(item['img_path']).convert('RGB')
            h, w = item['ori_shape']
        else:
            global _TAR_LOADER
            if _TAR_LOADER is None:
                _TAR_LOADER = LoadImageFromTar()
            image = _TAR_LOADER(dict(
                tar_path=item['tar_path'], tar_offset=item['tar_offset'],
                tar_size=item['tar_size']))['image']
            h, w = (int(v) for v in item['segmentation']['size'])
    except (OSError, RecordError) as exc:
        raise ValueError(f'{where}: cannot read the image: {exc}') from None
    if (h, w) != (image.height, image.width):
        raise ValueError(f'{where}: the region is annotated at {(h, w)} but '
                         f'the image is {(image.height, image.width)}')
    mask = decode_object(item['segmentation'], h, w, 'union')
    if not mask.any():
        raise ValueError(f'{where}: empty region mask')
    return image, mask


def decode_rle(rle, shape):
    """``(H, W) bool`` of a COCO RLE (str or bytes counts; a list of RLEs or
    an ``(H, W, K)`` decode is merged)."""
    import numpy as np
    from pycocotools import mask as mask_utils
    rles = rle if isinstance(rle, list) else [rle]
    out = np.zeros(shape, bool)
    for r in rles:
        r = dict(r)
        if isinstance(r['counts'], str):
            r['counts'] = r['counts'].encode('ascii')
        m = mask_utils.decode(r)
        out |= (m.sum(axis=2) if m.ndim == 3 else m) != 0
    return out
