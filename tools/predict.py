"""Run a Sa2VA checkpoint on one image or video.

    python tools/predict.py CONFIG CKPT --image cat.jpg --text "Please segment the cat." --out out/
    python tools/predict.py CONFIG CKPT --video frames_dir_or.mp4 --text "..." --out out/
    python tools/predict.py CONFIG CKPT --image cat.jpg --region mask.png --text "..." --out out/
    python tools/predict.py --export EXPORT_DIR --image ... --out out/
    python tools/predict.py --hf-dir ./pretrained/Sa2VA-4B --image ... --out out/
    python tools/predict.py CONFIG --hf-dir DIR ...   (SAM2 settings from CONFIG)

Writes to ``--out``: ``answer.txt``; per object ``object_<k>.png`` (image)
or ``object_<k>/<frame>.png`` (video), 0/255 PNGs at the original size;
``masks_rle.json`` (COCO RLE per object and frame, with the answer and the
key frames); ``overlay.png`` (the image, or the key frames side by side,
with the masks drawn). ``--region`` (a PNG, non-zero = region) asks for a
description of the region instead (visual prompt). ``CKPT`` may be ``-``.
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

def overlay(image, masks):
    """RGB uint8 ``(H, W, 3)``, enlarged to >= 480 px, each ``(H, W)`` mask
    a contour in its own colour (``projects/sa2va/visualization.py``)."""
    import numpy as np

    from projects.sa2va.visualization import overlay_masks, upscale
    image = np.asarray(image.convert('RGB')) if hasattr(image, 'convert') \
        else np.asarray(image)
    return overlay_masks(upscale(image), masks)


def _rle(mask):
    import numpy as np
    from pycocotools import mask as mask_utils
    enc = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return dict(size=list(enc['size']), counts=enc['counts'].decode('ascii'))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', help='training config (omit with --export)')
    p.add_argument('checkpoint', nargs='?', default='-',
                   help="training checkpoint ('-': the config's built weights)")
    p.add_argument('--export', help='export directory instead of CONFIG CKPT')
    p.add_argument('--hf-dir', help='Hugging Face Sa2VA directory (released or '
                   '--format hf export) instead of CKPT; an optional CONFIG gives SAM2')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--image', help='image file')
    src.add_argument('--video', help='frame folder or video file')
    p.add_argument('--text', required=True, help='the question or instruction')
    p.add_argument('--region', help='region mask PNG: describe the region')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--max-new-tokens', type=int, default=128,
                   help='answer length limit (default 128)')
    p.add_argument('--sample', action='store_true', help='sampling instead of greedy')
    p.add_argument('--temperature', type=float, default=0.7,
                   help='--sample: temperature (default 0.7)')
    p.add_argument('--top-p', type=float, default=0.9,
                   help='--sample: nucleus top-p (default 0.9)')
    p.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    args = p.parse_args(argv)

    import numpy as np
    from PIL import Image

    from projects.sa2va.evaluation.predictor import (Sa2VAPredictor,
                                                     load_frames)
    if args.export:
        predictor = Sa2VAPredictor.from_export(args.export, args.device)
    elif args.hf_dir:
        predictor = Sa2VAPredictor.from_hf(args.hf_dir, args.device, config=args.config)
    else:
        if not args.config:
            p.error('give CONFIG CKPT, --export DIR or --hf-dir DIR')
        ckpt = None if args.checkpoint == '-' else args.checkpoint
        predictor = Sa2VAPredictor.from_config(args.config, ckpt, args.device)
    gen = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample)
    if args.sample:
        gen.update(temperature=args.temperature, top_p=args.top_p)
    os.makedirs(args.out, exist_ok=True)
    record = dict(text=args.text)
    if args.region:
        if not args.image:
            p.error('--region needs --image')
        region = np.asarray(Image.open(args.region).convert('L')) > 0
        answer = predictor.describe(args.image, region, args.text, **gen)
        record.update(answer=answer, objects=[])
        Image.fromarray(overlay(Image.open(args.image), [region])).save(
            osp.join(args.out, 'overlay.png'))
    elif args.image:
        image = Image.open(args.image).convert('RGB')
        out = predictor.segment(image, args.text, **gen)
        masks = out['masks'].numpy()
        record.update(answer=out['text'], objects=[])
        for k, m in enumerate(masks):
            Image.fromarray(m.astype(np.uint8) * 255).save(
                osp.join(args.out, f'object_{k}.png'))
            record['objects'].append(dict(index=k, rle=_rle(m)))
        from projects.sa2va.visualization import (save_object_panels,
                                                  seg_phrases)
        save_object_panels(image, masks, osp.join(args.out, 'overlay.png'),
                           labels=seg_phrases(out['text'], len(masks)),
                           title=f'{args.text} -> {out["text"]}')
    else:
        frames = load_frames(args.video)
        out = predictor.segment_video(frames, args.text, **gen)
        masks = out['masks'].numpy()                     # (k, N, H, W)
        record.update(answer=out['text'], key_frames=out['key_frames'], objects=[])
        for k in range(masks.shape[0]):
            folder = osp.join(args.out, f'object_{k}')
            os.makedirs(folder, exist_ok=True)
            for t in range(masks.shape[1]):
                Image.fromarray(masks[k, t].astype(np.uint8) * 255).save(
                    osp.join(folder, f'{t:05d}.png'))
            record['objects'].append(dict(index=k, rle=[_rle(m) for m in masks[k]]))
        tiles = [overlay(frames[t], masks[:, t]) for t in out['key_frames']]
        Image.fromarray(np.concatenate(tiles, axis=1)).save(
            osp.join(args.out, 'overlay.png'))
    with open(osp.join(args.out, 'answer.txt'), 'w', encoding='utf-8') as f:
        f.write(record['answer'] + '\n')
    with open(osp.join(args.out, 'masks_rle.json'), 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=1)
    print(f'answer: {record["answer"]}')
    print(f'{len(record["objects"])} object(s); overlay: {osp.join(args.out, "overlay.png")}')
    return record


if __name__ == '__main__':
    main()
