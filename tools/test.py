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
    torchrun --nproc_per_node 2 tools/test.py ...   # items split over ranks

``CKPT`` may be ``-`` (built weights); ``--export DIR`` replaces CONFIG and
CKPT by an export directory (``tools/export.py``). The items are parsed by the
training datasets' own loaders (``load_data_list``), split
``i % world_size == rank``, and the registered metrics gather the ranks'
results. Output: ``<out>/metrics_<task>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

TASKS = ('refseg', 'vos', 'gcg')
REFSEG_QUESTION = 'Please segment {} in this image.'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', help='training config')
    p.add_argument('checkpoint', nargs='?', default='-',
                   help="checkpoint ('-' for the built weights)")
    p.add_argument('--export', help='export directory instead of config+ckpt')
    p.add_argument('--task', required=True, choices=TASKS)
    p.add_argument('--data-root', required=True)
    p.add_argument('--ann-file', default='instances.json')
    p.add_argument('--split-file', default='refs(unc).p')
    p.add_argument('--split', default='val')
    p.add_argument('--mask-file', default='mask_dict.json')
    p.add_argument('--img-prefix', default=None,
                   help='image folder under data-root (refseg default '
                        'coco2014/train2014/, vos default "")')
    p.add_argument('--dataset-type', default='ReVOSDataset',
                   help='vos: ReVOSDataset | MeViSDataset | RefYTVOSDataset')
    p.add_argument('--gcg-format', default='grandf')
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
    if args.task == 'refseg':
        ds = DATASETS.build(dict(
            type='RefCOCODataset', data_root=args.data_root,
            ann_file=args.ann_file, split_file=args.split_file,
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
            ann_file=args.ann_file, mask_file=args.mask_file,
            data_prefix=dict(img_path=args.img_prefix or '')))
        items = []
        for i in range(len(ds)):
            rec = ds.get_data_info(i)
            for obj in rec['objects']:
                items.append(dict(rec, object=obj,
                                  item_id=f'{rec["record_id"]}/{obj["exp_id"]}'))
        return items
    ds = DATASETS.build(dict(
        type='GCGDataset', data_root=args.data_root, ann_file=args.ann_file,
        format=args.gcg_format,
        data_prefix=dict(img_path=args.img_prefix or '')))
    items = [ds.get_data_info(i) for i in range(len(ds))]
    return [dict(r, item_id=r['record_id']) for r in items if not r['defect']]


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


METRIC = dict(refseg='RefSegMetric', vos='VideoJFMetric', gcg='GCGMetric')


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.dist import get_dist_info, init_dist, is_main_process
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        init_dist('pytorch', backend='gloo')
    rank, world = get_dist_info()
    import projects.sa2va.evaluation  # noqa: F401  (registers metrics)
    from projects.sa2va.registry import METRICS
    items = load_items(args)
    if args.max_items:
        items = items[:args.max_items]
    predictor = build_predictor(args)
    metric = METRICS.build(dict(type=METRIC[args.task]))
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
