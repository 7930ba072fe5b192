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
``i % world_size == rank`` (torchrun: the ranks join a gloo group, on CPU
too; each rank uses ``cuda:LOCAL_RANK`` when CUDA is there), and the
registered metrics gather the ranks' results in item order.

Outputs, named by the run (``--name``, default ``<task>_<dataset>``, see
:func:`run_name`): ``<out>/metrics_<run>.json`` (metrics + checkpoint,
config, split, dates, settings); caption and GCG: ``<out>/<run>_captions_pred.json``
/ ``<out>/<run>_captions_ref.json`` (COCO caption files, what
``pycocoevalcap``'s ``COCOEvalCap`` reads); ``--save-preds``: vos:
``<out>/<run>_preds/Annotations/<video>/<exp_id>/<frame>.png`` (0 / 255,
the Ref-YouTube-VOS / MeViS server layout: zip ``Annotations``), gcg:
``<out>/<run>_preds/<image_id>.json`` (GLaMM's prediction files).
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

from projects.sa2va.evaluation.benchmark_items import (  # noqa: E402
    OSPREY_DESCRIPTION_FILE, caption_region, decode_rle, file_stem,
    load_caption_items, load_items, strip_region_label)

TASKS = ('refseg', 'vos', 'gcg', 'caption')
CAPTION_FORMATS = ('osprey', 'dam')
REFSEG_QUESTION = 'Please segment {} in this image.'


# Official max_new_tokens: Sa2VA's evaluation scripts generate with its
# predict_forward default (2048); GLaMM's GCG inference uses 512.
MAX_NEW_TOKENS = dict(refseg=2048, vos=2048, caption=2048, gcg=512)


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', help='training config')
    p.add_argument('checkpoint', nargs='?', default='-',
                   help="checkpoint ('-' for the built weights)")
    p.add_argument('--export', help='export directory instead of config+ckpt')
    p.add_argument('--task', required=True, choices=TASKS,
                   help='what to evaluate (protocol: docs/evaluation.md)')
    p.add_argument('--data-root', required=True,
                   help='the benchmark folder (annotation files, images)')
    p.add_argument('--ann-file', default=None,
                   help='annotation file under data-root (default: refseg / '
                        'vos / gcg instances.json, caption/osprey '
                        'Osprey-724K/osprey_detail_description.json)')
    p.add_argument('--split-file', default='refs(unc).p',
                   help="refseg: the refs pickle (default 'refs(unc).p')")
    p.add_argument('--split', default='val',
                   help="refseg: the refs split (default 'val')")
    p.add_argument('--mask-file', default='mask_dict.json',
                   help="vos: GT masks under data-root; 'none' for a split "
                        'without GT (predictions only, with --save-preds)')
    p.add_argument('--foreground-file', default='mask_dict_foreground.json',
                   help='vos/ReVOS: foreground masks for R (used when the '
                        'file exists)')
    p.add_argument('--img-prefix', default=None,
                   help='image folder under data-root (refseg default '
                        'coco2014/train2014/, vos default ""; caption/osprey: '
                        'comma-separated folders searched in order, default '
                        'the COCO 2014/2017 train/val folders)')
    p.add_argument('--dataset-type', default='ReVOSDataset',
                   help='vos: ReVOSDataset | MeViSDataset | RefYTVOSDataset')
    p.add_argument('--gcg-format', default='grandf',
                   help="gcg: annotation format (default 'grandf')")
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
    p.add_argument('--max-new-tokens', type=int, default=None,
                   help='generation limit (default per task as the official '
                        f'evaluations: {MAX_NEW_TOKENS})')
    p.add_argument('--text-sim-model', default=None,
                   help='gcg: local BERT-like model directory for the phrase '
                        "similarity of recall (GLaMM: bert-base-uncased); "
                        'without it a word-overlap stand-in is used')
    p.add_argument('--caption-backend', default='auto',
                   choices=('auto', 'pycocoevalcap', 'builtin'),
                   help='caption / gcg figures: pycocoevalcap (METEOR; needs '
                        'Java), builtin, or auto (the first when available)')
    p.add_argument('--save-preds', action='store_true',
                   help='vos: PNG masks in the server layout; gcg: GLaMM '
                        'prediction JSON per image')
    p.add_argument('--name', default=None,
                   help='run name of the output files (default '
                        '<task>_<dataset>)')
    p.add_argument('--out', default='work_dirs/eval',
                   help='results folder (default work_dirs/eval)')
    p.add_argument('--device', default=None,
                   help='torch device (default cuda when available, else cpu;'
                        ' torchrun: cuda:LOCAL_RANK)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys (mmengine, as tools/train.py), '
                        'e.g. model.mllm.max_length=4096')
    p.add_argument('--predictor-options', nargs='+', default=[],
                   help='predictor settings key=value (JSON values), e.g. '
                        'sampled_frames=5 max_num_tiles=1 prompt_pool=area')
    args = p.parse_args(argv)
    if args.max_new_tokens is None:
        args.max_new_tokens = MAX_NEW_TOKENS[args.task]
    return args


def default_device(args) -> str:
    """``--device``, else ``cuda:LOCAL_RANK`` when CUDA is there, else
    ``cpu``."""
    import torch
    if args.device:
        return args.device
    if torch.cuda.is_available():
        return f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
    return 'cpu'


def predictor_options(args) -> dict:
    """``--predictor-options`` as a dict (values parsed as JSON when they
    are, else kept as strings)."""
    out = {}
    for item in args.predictor_options:
        if '=' not in item:
            raise SystemExit(f'--predictor-options: expected key=value, got '
                             f'{item!r}')
        key, value = item.split('=', 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_predictor(args):
    from mmengine.config import Config

    from projects.sa2va.evaluation.predictor import Sa2VAPredictor
    overrides = predictor_options(args)
    if args.export:
        if args.cfg_options:
            raise SystemExit('--cfg-options needs CONFIG (not --export)')
        return Sa2VAPredictor.from_export(args.export, args.device, **overrides)
    if not args.config:
        raise SystemExit('give CONFIG CKPT or --export DIR')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    ckpt = None if args.checkpoint in (None, '-') else args.checkpoint
    return Sa2VAPredictor.from_config(cfg, ckpt, args.device, **overrides)


def run_name(args) -> str:
    """``--name`` or ``<task>_<dataset>``: refseg ``<root>_<split file
    tag>_<split>`` (``refseg_refcocog_umd_val``), vos / gcg ``<root>_<ann
    stem>``, caption ``<format>_<ann stem>`` or ``dam_<subsets>``; only
    letters, digits, ``.``, ``-`` and ``_``."""
    if args.name:
        tag = args.name
    elif args.task == 'refseg':
        split_tag = re.sub(r'^refs\((\w+)\)\.p$', r'\1', args.split_file)
        tag = f'{args.task}_{file_stem(args.data_root)}_{split_tag}_{args.split}'
    elif args.task == 'caption' and args.caption_format == 'dam':
        tag = f'caption_dam_{"-".join(args.subsets)}'
    elif args.task == 'caption':
        tag = f'caption_osprey_{file_stem(args.ann_file or OSPREY_DESCRIPTION_FILE)}'
    else:
        tag = (f'{args.task}_{file_stem(args.data_root)}_'
               f'{file_stem(args.ann_file or "instances.json")}')
    return re.sub(r'[^A-Za-z0-9._-]+', '_', tag).strip('_')


def evaluate_item(predictor, args, item) -> dict:
    """Prediction of one item as a metric data sample (``pred_*`` keys and,
    with GT, the ``gt_*`` keys of the task's metric)."""
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
        # no [SEG] in the answer: None (Sa2VA: skipped in cIoU, 0 in gIoU)
        pred = out['masks'][0].numpy() if len(out['masks']) else None
        return dict(pred_mask=pred, gt_mask=gt)
    if args.task == 'vos':
        paths = [osp.join(item['video_dir'], s + '.jpg') for s in item['frames']]
        question = expression_question(item['object']['exp'], SEG_QUESTIONS[1])
        out = predictor.segment_video(paths, question, n_tok)
        n = len(paths)
        h, w = Image.open(paths[0]).size[::-1]
        pred = out['masks'][0].numpy() if len(out['masks']) else \
            np.zeros((n, h, w), bool)
        sample = dict(pred_masks=pred, video=item['record_id'],
                      exp_id=item['object']['exp_id'], frames=item['frames'])
        if item['mask_tracks'] is not None:
            sample['gt_masks'] = DecodeVideoMasks(allow_empty=True)(dict(
                objects=[item['object']], mask_tracks=item['mask_tracks'],
                frame_indices=list(range(n)), ori_shape=(h, w)))['masks'].numpy()
            sample['type_id'] = item['type_id']
            if item['foreground'] is not None:
                sample['foreground_masks'] = np.stack(
                    [decode_rle(r, (h, w)) for r in item['foreground']])
        return sample
    image = Image.open(item['img_path']).convert('RGB')
    out = predictor.segment(image, predictor_gcg_question(), n_tok)
    h, w = image.height, image.width
    try:
        phrases = parse_gcg(out['text'])
    except ValueError:
        phrases = []
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
    text = re.sub(r'</?p>|\[SEG\]', '', text)
    return re.sub(r'\s+', ' ', text).strip()


def save_prediction(sample: dict, args, folder: str) -> None:
    """``--save-preds`` files of one item. vos: ``folder/Annotations/
    <video>/<exp_id>/<frame>.png``, mode L, 255 = object (Sa2VA's
    ``ref_vos_eval.py --submit`` layout, what the Ref-YouTube-VOS and MeViS
    servers score as a zip of ``Annotations``); gcg: ``folder/<image_id>.json``
    = ``{"image_id", "caption", "phrases", "pred_masks": [COCO RLE]}``
    (GLaMM's ``infer.py`` output, read by its ``evaluate.py``)."""
    import numpy as np
    from PIL import Image

    from projects.sa2va.evaluation.gcg_metrics import mask_to_rle
    if args.task == 'vos':
        where = osp.join(folder, 'Annotations', sample['video'],
                         sample['exp_id'])
        os.makedirs(where, exist_ok=True)
        for stem, mask in zip(sample['frames'], sample['pred_masks']):
            Image.fromarray((np.asarray(mask) != 0).astype(np.uint8) * 255,
                            mode='L').save(osp.join(where, stem + '.png'))
    elif args.task == 'gcg':
        os.makedirs(folder, exist_ok=True)
        with open(osp.join(folder, f'{sample["image_id"]}.json'), 'w',
                  encoding='utf-8') as f:
            json.dump(dict(image_id=sample['image_id'],
                           caption=sample['pred_caption'],
                           phrases=sample['pred_phrases'],
                           pred_masks=[mask_to_rle(m)
                                       for m in sample['pred_masks']]), f)
    else:
        raise SystemExit(f'--save-preds is for vos and gcg, not {args.task}')


METRIC = dict(refseg='RefSegMetric', vos='VideoJFMetric', gcg='GCGMetric',
              caption='CaptionMetric')


def build_metric(args, name: str):
    from projects.sa2va.registry import METRICS
    cfg = dict(type=METRIC[args.task])
    if args.task in ('caption', 'gcg'):
        cfg.update(pred_path=osp.join(args.out, f'{name}_captions_pred.json'),
                   ref_path=osp.join(args.out, f'{name}_captions_ref.json'),
                   caption_backend=args.caption_backend)
    if args.task == 'gcg':
        cfg.update(text_sim_model=args.text_sim_model, device=args.device)
    return METRICS.build(cfg)


def init_distributed() -> None:
    """Join the torchrun process group with gloo (CPU or GPU: the results
    are gathered as Python objects); each rank's CUDA device is
    ``LOCAL_RANK``. mmengine's ``init_dist`` sets a CUDA device first and
    fails without one."""
    import torch
    import torch.distributed as dist
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    dist.init_process_group(backend='gloo',
                            rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']))


def main(argv=None) -> dict:
    import datetime
    import sys

    from mmengine.dist import get_dist_info, is_main_process
    from mmengine.utils import ProgressBar
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')
    init_distributed()
    rank, world = get_dist_info()
    args.device = default_device(args)
    import projects.sa2va.evaluation  # noqa: F401  (registers metrics)
    name = run_name(args)
    items = load_items(args)
    if args.max_items:
        items = items[:args.max_items]
    has_gt = not (args.task == 'vos' and args.mask_file.lower() == 'none')
    if not has_gt and not args.save_preds:
        raise SystemExit('--mask-file none evaluates nothing: add --save-preds')
    predictor = build_predictor(args)
    os.makedirs(args.out, exist_ok=True)
    metric = build_metric(args, name) if has_gt else None
    preds_dir = osp.join(args.out, f'{name}_preds')
    mine = range(rank, len(items), world)
    bar = ProgressBar(len(mine), file=sys.stderr) if rank == 0 else None
    for i in mine:
        sample = evaluate_item(predictor, args, items[i])
        if args.save_preds:
            save_prediction(sample, args, preds_dir)
        if metric is not None:
            metric.process(None, [sample])
        if bar is not None:
            bar.update()
    if bar is not None:
        sys.stderr.write('\n')
    results = metric.evaluate(len(items)) if metric is not None else {}
    if not is_main_process():
        return results
    record = dict(
        task=args.task, dataset=name, items=len(items), metrics=results,
        checkpoint=None if args.export else args.checkpoint,
        config=args.config, export=args.export, data_root=args.data_root,
        ann_file=args.ann_file, split=args.split if args.task == 'refseg'
        else None, split_file=args.split_file if args.task == 'refseg'
        else None, started=started,
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        settings=dict(
            device=args.device, world_size=world,
            max_new_tokens=args.max_new_tokens, max_items=args.max_items,
            cfg_options=args.cfg_options and dict(args.cfg_options),
            predictor=predictor.settings,
            dataset_type=args.dataset_type if args.task == 'vos' else None,
            gcg_format=args.gcg_format if args.task == 'gcg' else None,
            caption_format=args.caption_format
            if args.task == 'caption' else None,
            caption_backend=args.caption_backend,
            text_sim_model=args.text_sim_model),
        predictions=preds_dir if args.save_preds else None)
    path = osp.join(args.out, f'metrics_{name}.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=1, default=str)
    width = max([len(k) for k in results] + [6])
    print(f'{"metric":<{width}}  value')
    for key, value in results.items():
        print(f'{key:<{width}}  {value:.4f}' if isinstance(value, float)
              else f'{key:<{width}}  {value}')
    print(f'metrics: {path}')
    return results


if __name__ == '__main__':
    main()
