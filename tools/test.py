"""Evaluate a Sa2VA checkpoint on one benchmark; writes a metrics JSON and
prints a short table.

    python tools/test.py CONFIG CKPT --task refseg --data-root data/ref_seg/refcoco \
        --split-file 'refs(unc).p' --split val --out work_dirs/eval
    python tools/test.py CONFIG CKPT --task vos --dataset-type ReVOSDataset \
        --data-root data/video_datas/revos --ann-file meta_expressions_valid_.json \
        --mask-file mask_dict.json --out work_dirs/eval
    python tools/test.py CONFIG CKPT --task gcg --data-root data/glamm_data \
        --ann-file annotations/GranDf_HA_GCG_val.json --img-prefix images/grandf/val/ \
        --gcg-format grandf --out work_dirs/eval
    python tools/test.py CONFIG CKPT --task caption --caption-format osprey \
        --data-root data/osprey-724k \
        --ann-file Osprey-724K/osprey_detail_description.json --out work_dirs/eval
    python tools/test.py CONFIG CKPT --task caption --caption-format dam \
        --data-root data/describe-anything-dataset/describe-anything-dataset \
        --subsets LVIS PACO --out work_dirs/eval
    torchrun --nproc_per_node 2 tools/test.py ...   # items split over ranks

``CKPT`` may be ``-`` (built weights); ``--export DIR`` replaces CONFIG and
CKPT by an export directory (``tools/export.py``). The items are parsed by the
training datasets' own loaders (``load_data_list``), split
``i % world_size == rank``, and the registered metrics gather the ranks'
results. Output: ``<out>/metrics_<task>.json``; the caption task also
writes ``<out>/captions_pred.json`` (COCO caption results, ``[{"image_id",
"caption"}]``, one entry per region, ``image_id`` = the item's index) and
``<out>/captions_ref.json`` (COCO caption annotations: ``images`` with
``id``, ``record`` and ``region``; ``annotations`` with the reference
captions), the pair ``pycocoevalcap``'s ``COCOEvalCap`` reads.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

TASKS = ('refseg', 'vos', 'gcg', 'caption')
CAPTION_FORMATS = ('osprey', 'dam')
REFSEG_QUESTION = 'Please segment {} in this image.'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', help='training config')
    p.add_argument('checkpoint', nargs='?', default='-',
                   help="checkpoint ('-' for the built weights)")
    p.add_argument('--export', help='export directory instead of config+ckpt')
    p.add_argument('--task', required=True, choices=TASKS)
    p.add_argument('--data-root', required=True)
    p.add_argument('--ann-file', default=None,
                   help='annotation file under data-root (default: refseg / '
                        'vos / gcg instances.json, caption/osprey '
                        'Osprey-724K/osprey_detail_description.json)')
    p.add_argument('--split-file', default='refs(unc).p')
    p.add_argument('--split', default='val')
    p.add_argument('--mask-file', default='mask_dict.json')
    p.add_argument('--img-prefix', default=None,
                   help='image folder under data-root (refseg default '
                        'coco2014/train2014/, vos default ""; caption/osprey: '
                        'comma-separated folders searched in order, default '
                        'the COCO 2014/2017 train/val folders)')
    p.add_argument('--dataset-type', default='ReVOSDataset',
                   help='vos: ReVOSDataset | MeViSDataset | RefYTVOSDataset')
    p.add_argument('--gcg-format', default='grandf')
    p.add_argument('--caption-format', default='osprey',
                   choices=CAPTION_FORMATS,
                   help='caption: osprey (detail-description JSON, one item '
                        'per region) | dam (Describe Anything subsets)')
    p.add_argument('--subsets', nargs='+',
                   default=['COCOStuff', 'LVIS', 'PACO', 'SAV'],
                   help='caption/dam: subset folders under data-root')
    p.add_argument('--question', default=None,
                   help='caption: the question (default: osprey: the first '
                        'detail question on region1; dam: the dataset '
                        'instruction)')
    p.add_argument('--max-items', type=int, default=None,
                   help='evaluate only the first N items (smoke runs)')
    p.add_argument('--max-new-tokens', type=int, default=64)
    p.add_argument('--out', default='work_dirs/eval')
    p.add_argument('--device', default='cpu')
    p.add_argument('--cfg-options', nargs='*', default=[],
                   help='predictor settings key=value (e.g. sampled_frames=5)')
    return p.parse_args(argv)


def build_predictor(args):
    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    overrides = {}
    for item in args.cfg_options:
        key, value = item.split('=', 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.export:
        return Sa2VAPredictor.from_export(args.export, args.device, **overrides)
    if not args.config:
        raise SystemExit('give CONFIG CKPT or --export DIR')
    ckpt = None if args.checkpoint in (None, '-') else args.checkpoint
    return Sa2VAPredictor.from_config(args.config, ckpt, args.device, **overrides)


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
        ds = DATASETS.build(dict(
            type=args.dataset_type, data_root=args.data_root,
            ann_file=ann_file, mask_file=args.mask_file,
            data_prefix=dict(img_path=args.img_prefix or '')))
        items = []
        for i in range(len(ds)):
            rec = ds.get_data_info(i)
            for obj in rec['objects']:
                items.append(dict(rec, object=obj,
                                  item_id=f'{rec["record_id"]}/{obj["exp_id"]}'))
        return items
    ds = DATASETS.build(dict(
        type='GCGDataset', data_root=args.data_root, ann_file=ann_file,
        format=args.gcg_format,
        data_prefix=dict(img_path=args.img_prefix or '')))
    items = [ds.get_data_info(i) for i in range(len(ds))]
    return [dict(r, item_id=r['record_id']) for r in items if not r['defect']]


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


def _empty_first(masks, shape):
    import numpy as np
    return masks[0].numpy() if len(masks) else np.zeros(shape, bool)


def evaluate_item(predictor, args, item) -> dict:
    """Prediction of one item as a metric data sample."""
    import numpy as np
    from PIL import Image

    from projects.sa2va.datasets.refseg import polygon_parts
    from projects.sa2va.datasets.refvos import SEG_QUESTIONS, expression_question
    from projects.sa2va.evaluation.predictor import parse_gcg
    from projects.sa2va.transforms.masks import decode_object
    from projects.sa2va.transforms.video import DecodeVideoMasks
    n_tok = args.max_new_tokens
    if args.task == 'caption':
        image, mask = caption_region(item)
        text = predictor.describe(image, mask, item['question'], n_tok)
        return dict(id=item['caption_id'], caption=strip_region_label(text),
                    references=[item['reference']],
                    image_info=dict(record=item['record_id'],
                                    region=item['region']))
    if args.task == 'refseg':
        image = Image.open(item['img_path']).convert('RGB')
        obj = item['objects'][item['object_index']]
        phrase = obj['text'][:-1] if obj['text'].endswith('.') else obj['text']
        out = predictor.segment(image, REFSEG_QUESTION.format(phrase), n_tok)
        h, w = image.height, image.width
        gt = decode_object(polygon_parts(obj['segmentation']), h, w, 'union')
        return dict(pred_mask=_empty_first(out['masks'], (h, w)), gt_mask=gt)
    if args.task == 'vos':
        paths = [osp.join(item['video_dir'], s + '.jpg') for s in item['frames']]
        question = expression_question(item['object']['exp'], SEG_QUESTIONS[1])
        out = predictor.segment_video(paths, question, n_tok)
        n = len(paths)
        h, w = Image.open(paths[0]).size[::-1]
        gt = DecodeVideoMasks(allow_empty=True)(dict(
            objects=[item['object']], mask_tracks=item['mask_tracks'],
            frame_indices=list(range(n)), ori_shape=(h, w)))['masks'].numpy()
        pred = out['masks'][0].numpy() if len(out['masks']) else \
            np.zeros((n, h, w), bool)
        return dict(pred_masks=pred, gt_masks=gt)
    image = Image.open(item['img_path']).convert('RGB')
    out = predictor.segment(image, predictor_gcg_question(), n_tok)
    h, w = image.height, image.width
    try:
        phrases = parse_gcg(out['text'])
    except ValueError:
        phrases = [''] * len(out['masks'])
    gt_phrases = parse_gcg(item['answer'])
    gt = [decode_object(p, h, w, 'union') for p in item['segmentations']]
    return dict(image_id=item['item_id'], pred_masks=list(out['masks'].numpy()),
                gt_masks=gt, pred_phrases=phrases, gt_phrases=gt_phrases,
                pred_caption=_plain_caption(out['text']),
                gt_caption=_plain_caption(item['answer']))


def predictor_gcg_question():
    from projects.sa2va.evaluation.predictor import DEFAULT_GCG_QUESTION
    return DEFAULT_GCG_QUESTION


def _plain_caption(text: str) -> str:
    import re
    text = re.sub(r'</?p>|\[SEG\]', '', text)
    return re.sub(r'\s+', ' ', text).strip()


METRIC = dict(refseg='RefSegMetric', vos='VideoJFMetric', gcg='GCGMetric',
              caption='CaptionMetric')


def build_metric(args):
    from projects.sa2va.registry import METRICS
    cfg = dict(type=METRIC[args.task])
    if args.task == 'caption':
        cfg.update(pred_path=osp.join(args.out, 'captions_pred.json'),
                   ref_path=osp.join(args.out, 'captions_ref.json'))
    return METRICS.build(cfg)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.dist import get_dist_info, init_dist, is_main_process
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        init_dist('pytorch', backend='gloo')
    rank, world = get_dist_info()
    import projects.sa2va.evaluation  # noqa: F401  (registers metrics)
    items = load_items(args)
    if args.max_items:
        items = items[:args.max_items]
    predictor = build_predictor(args)
    if is_main_process():
        os.makedirs(args.out, exist_ok=True)
    metric = build_metric(args)
    for i in range(rank, len(items), world):
        metric.process(None, [evaluate_item(predictor, args, items[i])])
    results = metric.evaluate(len(items))
    if is_main_process():
        os.makedirs(args.out, exist_ok=True)
        path = osp.join(args.out, f'metrics_{args.task}.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(dict(task=args.task, items=len(items), metrics=results), f,
                      indent=1)
        width = max(len(k) for k in results)
        print(f'{"metric":<{width}}  value')
        for key, value in results.items():
            print(f'{key:<{width}}  {value:.4f}' if isinstance(value, float)
                  else f'{key:<{width}}  {value}')
        print(f'metrics: {path}')
    return results


if __name__ == '__main__':
    main()
