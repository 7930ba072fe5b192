"""Mask <-> caption family (the owner's data, ``mask-caption-cycle.md`` 8).

Layout written::

    mask_caption/sav_npz/sav_000/masklet_data_%06d.npz   frame1, mask1, frame2, mask2
    mask_caption/sa1b/js/sa_<id>.json                    SAM per-image json
    mask_caption/sa1b/img/sa_<id>.jpg
    mask_caption/openimage_v7/train-annotations-object-segmentation.csv
    mask_caption/openimage_v7/oidv7-class-descriptions.csv
    mask_caption/openimage_v7/images/train/<ImageID>.jpg
    mask_caption/openimage_v7/masks/train/<MaskPath>    1-bit PNG at image size

plus, shared with other families: the SA-V release under
``video_datas/sam_v_full`` (mp4 + ``sav_*_manual.json`` / ``_auto.json`` and
``JPEGImages_24fps/<video>/%05d.jpg`` frames), RefCOCO under ``ref_seg/``
(caption stream) and Describe Anything.

npz variants (cycled by file index, listed in the manifest): frames HWC
uint8 0..255 / CHW float32 0..1 / HWC float32 0..1 / CHW uint8; masks uint8
0/1 or 0/255. ``frame2``/``mask2`` (the target) are a later frame of the
same object than ``frame1``/``mask1``.
"""
from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from . import refseg, refvos, visual_prompt
from .common import Context, picture, unique_ids
from .files import bbox_of, jpeg_bytes, rle_str
from .scenes import SHAPES, make_video_scene

ROOT = 'mask_caption'
NPZ_DIR = f'{ROOT}/sav_npz'
SA1B_DIR = f'{ROOT}/sa1b'
OI_DIR = f'{ROOT}/openimage_v7'
OI_CSV = f'{OI_DIR}/train-annotations-object-segmentation.csv'
OI_CLASSES = f'{OI_DIR}/oidv7-class-descriptions.csv'

# (frame layout, frame range, mask range)
NPZ_VARIANTS = (('HWC', 255, 1), ('CHW', 1, 255), ('HWC', 1, 1),
                ('CHW', 255, 255))


def _npz_arrays(frame: np.ndarray, mask: np.ndarray, variant) -> tuple:
    layout, frange, mrange = variant
    f = frame if frange == 255 else (frame.astype(np.float32) / 255.0)
    if layout == 'CHW':
        f = np.ascontiguousarray(f.transpose(2, 0, 1))
    m = (mask > 0).astype(np.uint8) * (255 if mrange == 255 else 1)
    return f, m


def write_sav_npz(ctx: Context) -> None:
    rng = ctx.spec.rng('sav_npz')
    w, h = ctx.spec.npz_size
    files = []
    for i in range(ctx.spec.n(4)):
        clip = make_video_scene(rng, w, h, 8, 2, min_frac=0.25,
                                max_frac=0.4)
        obj = clip.objects[int(rng.integers(len(clip.objects)))]
        vis = [t for t, m in enumerate(obj.masks) if m is not None]
        t1, t2 = vis[0], vis[-1]
        variant = NPZ_VARIANTS[i % len(NPZ_VARIANTS)]
        f1, m1 = _npz_arrays(clip.frames[t1], obj.masks[t1], variant)
        f2, m2 = _npz_arrays(clip.frames[t2], obj.masks[t2], variant)
        rel = f'{NPZ_DIR}/sav_{i // 2:03d}/masklet_data_{i:06d}.npz'
        ctx.writer.npz(rel, {'frame1': f1, 'mask1': m1, 'frame2': f2,
                             'mask2': m2})
        files.append({'file': rel, 'frame_layout': variant[0],
                      'frame_max': variant[1], 'mask_max': variant[2],
                      'frames': [t1, t2], 'object': obj.noun})
    if ctx.spec.bad_records:
        rel = f'{NPZ_DIR}/sav_999/masklet_data_999999.npz'
        good = ctx.writer.path(files[0]['file']).read_bytes()
        ctx.writer.bytes(rel, good[:len(good) // 3])
        ctx.manifest.bad('sav_npz', rel, 0, 'truncated npz (corrupt zip)')
    ctx.manifest.add('sav_npz', npz_dir=NPZ_DIR,
                     pattern='**/masklet_data_*.npz', files=files)


def write_sa1b(ctx: Context) -> None:
    rng = ctx.spec.rng('sa1b')
    images = []
    ann_ids = iter(unique_ids(rng, 1000, 100000, 999999))
    for i, num in enumerate(unique_ids(rng, ctx.spec.n(3), 1, 11000000)):
        w, h = ctx.spec.image_size
        if i == 1:
            w, h = h, w  # portrait
        scene = picture(ctx, rng, size=(w, h))
        stem = f'sa_{num}'
        ctx.writer.jpeg(f'{SA1B_DIR}/img/{stem}.jpg', scene.image)
        masks = [o.mask for o in scene.objects]
        # SA-1B masks nest: add the upper half of the first object
        ys = np.nonzero(masks[0])[0]
        part = masks[0].copy()
        part[int((ys.min() + ys.max() + 1) // 2):] = 0
        masks.append(part)
        if ctx.spec.bad_records and i == 0:
            masks.append(np.zeros_like(part))
            ctx.manifest.bad('sa1b', f'{SA1B_DIR}/js/{stem}.json',
                             len(masks) - 1, 'annotation with area 0 '
                             '(empty mask)')
        anns = []
        for m in masks:
            ys, xs = np.nonzero(m)
            k = int(rng.integers(max(len(xs), 1)))
            point = [[float(xs[k]) + 0.5, float(ys[k]) + 0.5]] if len(xs) \
                else [[0.0, 0.0]]
            anns.append({'bbox': bbox_of(m), 'area': int(m.sum()),
                         'segmentation': rle_str(m),
                         'predicted_iou': round(float(rng.uniform(0.86, 1.0)),
                                                6),
                         'point_coords': point,
                         'crop_box': [0.0, 0.0, float(w), float(h)],
                         'id': next(ann_ids),
                         'stability_score': round(float(rng.uniform(0.9, 1.0)
                                                        ), 6)})
        ctx.writer.json(f'{SA1B_DIR}/js/{stem}.json', {
            'image': {'image_id': num, 'width': w, 'height': h,
                      'file_name': f'{stem}.jpg'},
            'annotations': anns})
        images.append({'id': stem, 'json': f'{SA1B_DIR}/js/{stem}.json',
                       'image': f'{SA1B_DIR}/img/{stem}.jpg',
                       'num_annotations': len(anns)})
    ctx.manifest.awkward('sa1b', images[1]['json'], 0, 'portrait image '
                         '(height > width)')
    ctx.manifest.add('sa1b', root=SA1B_DIR, json_dir=f'{SA1B_DIR}/js',
                     image_dir=f'{SA1B_DIR}/img', images=images)


def _mid(name: str) -> str:
    """A stable fake Freebase-style MID for a class name (``/m/0xxxxx``)."""
    return f'/m/0{zlib.crc32(name.encode()) % 36 ** 5:x}'[:10]


def write_openimage(ctx: Context) -> None:
    rng = ctx.spec.rng('openimage')
    header = ('MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,'
              'BoxYMax,PredictedIoU,Clicks')
    rows = [header]
    n_rows = 0
    n_images = ctx.spec.n(3)
    for i, num in enumerate(unique_ids(rng, n_images, 1, 2 ** 62)):
        image_id = f'{num:016x}'
        scene = picture(ctx, rng)
        w, h = scene.width, scene.height
        img_rel = f'{OI_DIR}/images/train/{image_id}.jpg'
        corrupt = ctx.spec.bad_records and i == 1
        data = jpeg_bytes(scene.image)
        ctx.writer.bytes(img_rel, data[:len(data) // 2] if corrupt else data)
        for k, obj in enumerate(scene.objects):
            label = _mid(obj.shape.capitalize())
            box_id = f'{int(rng.integers(0, 2 ** 32)):08x}'
            mask_path = f'{image_id}_{label.replace("/", "")}_{box_id}.png'
            x, y, bw, bh = obj.bbox
            ys, xs = np.nonzero(obj.mask)
            picks = rng.choice(len(xs), size=min(len(xs), 3), replace=False)
            clicks = ';'.join(f'{(xs[p] + 0.5) / w:.5f} {(ys[p] + 0.5) / h:.5f}'
                              for p in sorted(picks))
            rows.append(f'{mask_path},{image_id},{label},{box_id},'
                        f'{x / w:.6f},{(x + bw) / w:.6f},{y / h:.6f},'
                        f'{(y + bh) / h:.6f},'
                        f'{float(rng.uniform(0.7, 0.99)):.5f},{clicks}')
            mask_rel = f'{OI_DIR}/masks/train/{mask_path}'
            if ctx.spec.bad_records and i == 0 and k == 0:
                ctx.manifest.bad('openimage', OI_CSV, n_rows,
                                 f'mask file missing: '
                                 f'{ctx.writer.absent(mask_rel)}')
            else:
                ctx.writer.png(mask_rel, Image.fromarray(obj.mask > 0)
                               .convert('1'))
            if corrupt:
                ctx.manifest.bad('openimage', OI_CSV, n_rows,
                                 f'truncated (corrupt) JPEG: {img_rel}')
            n_rows += 1
    ctx.writer.text(OI_CSV, '\n'.join(rows) + '\n')
    classes = ['LabelName,DisplayName'] + [
        f'{_mid(s.capitalize())},{s.capitalize()}' for s in SHAPES]
    ctx.writer.text(OI_CLASSES, '\n'.join(classes) + '\n')
    ctx.manifest.add('openimage', root=OI_DIR, csv=OI_CSV,
                     class_descriptions=OI_CLASSES,
                     image_dir=f'{OI_DIR}/images/train',
                     mask_dir=f'{OI_DIR}/masks/train', num_rows=n_rows)


def write(ctx: Context) -> None:
    write_sav_npz(ctx)
    refvos.write_sav_release(ctx)
    write_sa1b(ctx)
    write_openimage(ctx)
    refseg.write(ctx)
    visual_prompt.write_describe_anything(ctx)
    rc = ctx.manifest.datasets['refcoco']
    ctx.manifest.add('refcoco_caption', **{k: rc[k] for k in (
        'data_root', 'ann_file', 'split_file', 'img_prefix')})
