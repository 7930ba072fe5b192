"""Referring segmentation (video): MeViS, ReVOS, Ref-YouTube-VOS, and the
SA-V pseudo-referring data with the SA-V release it points into.

Layout written (``docs/datasets.md``)::

    video_datas/mevis/train/JPEGImages/<video>/%05d.jpg
    video_datas/mevis/train/meta_expressions.json      {"videos": {v: {vid_id, frames, expressions}}}
    video_datas/mevis/train/mask_dict.json             str(anno_id) -> [RLE(str) | null per frame]
    video_datas/revos/<video>/%05d.jpg                 (no JPEGImages/ level)
    video_datas/revos/meta_expressions_train_.json     + height, width, type_id
    video_datas/revos/mask_dict.json
    video_datas/revos/mask_dict_foreground.json        v -> {"masks_rle": [RLE per frame]}
    video_datas/rvos/train/JPEGImages/<video>/%05d.jpg  (stems 00000, 00005, ...)
    video_datas/rvos/train/Annotations/<video>/%05d.png (palette, value = obj id)
    video_datas/rvos/train/meta.json
    video_datas/rvos/meta_expressions/train/meta_expressions.json   obj_id str, no anno_id
    video_datas/rvos/mask_dict.pkl                      str(counter) -> [RLE(bytes) | None]
    video_datas/sam_v_final_v3.json                     v -> {video_path, anno_path, objects}
    video_datas/sam_v_full/sav_train/sav_000/sav_%06d.mp4 + _manual.json + _auto.json
    video_datas/sam_v_full/sav_000/sav_train/sav_000/...   (second video: the
        released duplicated-folder form, as its video_path says)
    video_datas/sam_v_full/JPEGImages_24fps/<video>/%05d.jpg (all frames)
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .common import Context, unique_ids
from .files import rle_bytes, rle_str
from .scenes import VideoScene, make_video_scene
from .text import video_caption, video_expression

ROOT = 'video_datas'


def _hex_ids(rng, n: int, length: int) -> list[str]:
    out = []
    while len(out) < n:
        v = ''.join('0123456789abcdef'[int(d)]
                    for d in rng.integers(0, 16, size=length))
        if v not in out:
            out.append(v)
    return out


def _clip(ctx: Context, rng, n_frames: int, n_objects: int | None = None,
          late: bool = False, size=None) -> VideoScene:
    w, h = size or ctx.spec.video_size
    if n_objects is None:
        n_objects = min(ctx.spec.n_objects(rng), 4 if not
                        ctx.spec.realistic else 6)
    return make_video_scene(rng, w, h, n_frames, max(n_objects, 2),
                            late_enter=2 if late else 0)


def _write_frames(ctx, folder: str, clip: VideoScene, stems: list[str]):
    for stem, frame in zip(stems, clip.frames):
        ctx.writer.jpeg(f'{folder}/{stem}.jpg', frame)


def _expressions(clip: VideoScene, anno_ids: list[int], reasoning: bool
                 ) -> dict:
    """One expression per object, one two-object expression and (ReVOS)
    a reasoning question; ``anno_id`` lists of ints, ``obj_id`` ints."""
    exps = {}
    for k, obj in enumerate(clip.objects):
        exps[str(len(exps))] = {'exp': video_expression(obj, k),
                                'obj_id': [k], 'anno_id': [anno_ids[k]]}
    a, b = clip.objects[0], clip.objects[1]
    exps[str(len(exps))] = {'exp': f'the {a.noun} and the {b.noun}',
                            'obj_id': [0, 1],
                            'anno_id': [anno_ids[0], anno_ids[1]]}
    if reasoning:
        obj = clip.objects[-1]
        exps[str(len(exps))] = {
            'exp': f'Which {obj.shape} would you follow if you were tracking '
                   f'the {obj.color} object?',
            'obj_id': [len(clip.objects) - 1], 'anno_id': [anno_ids[-1]]}
    return exps


def write_mevis_like(ctx: Context, name: str) -> None:
    """MeViS (``name='mevis'``) or ReVOS (``name='revos'``)."""
    rng = ctx.spec.rng(name)
    revos = name == 'revos'
    base = f'{ROOT}/revos' if revos else f'{ROOT}/mevis/train'
    img_dir = base if revos else f'{base}/JPEGImages'
    meta_rel = f'{base}/meta_expressions_train_.json' if revos else \
        f'{base}/meta_expressions.json'
    n_videos = ctx.spec.n(2)
    keys = _hex_ids(rng, n_videos, 12)
    videos, mask_dict, foreground = {}, {}, {}
    next_anno = int(rng.integers(100, 900))
    for i, key in enumerate(keys):
        short = i == 1 and not revos
        n_frames = 4 if short else ctx.spec.n_frames
        clip = _clip(ctx, rng, n_frames, late=(i == 0))
        stems = [f'{t:05d}' for t in range(n_frames)]
        _write_frames(ctx, f'{img_dir}/{key}', clip, stems)
        anno_ids = list(range(next_anno, next_anno + len(clip.objects)))
        next_anno += len(clip.objects) + int(rng.integers(1, 5))
        for aid, obj in zip(anno_ids, clip.objects):
            mask_dict[str(aid)] = [None if m is None else rle_str(m)
                                   for m in obj.masks]
        if i == 0:
            ctx.manifest.awkward(name, f'{base}/mask_dict.json',
                                 str(anno_ids[-1]),
                                 'object absent in frames 0-1: null entries')
        if short:
            ctx.manifest.awkward(name, meta_rel, key, f'video of only '
                                 f'{n_frames} frames (frame sampling with '
                                 f'replacement)')
        entry = {'vid_id': i}
        if revos:
            entry.update(height=clip.height, width=clip.width)
        entry['frames'] = stems
        exps = _expressions(clip, anno_ids, reasoning=revos)
        if revos:
            for e in exps.values():
                e['type_id'] = 1 if '?' in e['exp'] else 0
            union = []
            for t in range(n_frames):
                m = np.zeros((clip.height, clip.width), np.uint8)
                for obj in clip.objects:
                    if obj.masks[t] is not None:
                        m |= obj.masks[t]
                union.append(rle_str(m))
            foreground[key] = {'masks_rle': union}
        entry['expressions'] = exps
        videos[key] = entry
    ctx.writer.json(meta_rel, {'videos': videos})
    ctx.writer.json(f'{base}/mask_dict.json', mask_dict)
    paths = {'image_folder': img_dir, 'expression_file': meta_rel,
             'mask_file': f'{base}/mask_dict.json'}
    if revos:
        ctx.writer.json(f'{base}/mask_dict_foreground.json', foreground)
        paths['foreground_file'] = f'{base}/mask_dict_foreground.json'
    ctx.manifest.add(name, **paths, num_videos=len(videos),
                     num_expressions=sum(len(v['expressions'])
                                         for v in videos.values()))


# Ref-YouTube-VOS palette: index 0 black, then distinct colours.
_PALETTE = [0, 0, 0, 236, 95, 103, 249, 145, 87, 250, 200, 99, 153, 199, 148,
            98, 179, 178, 102, 153, 204, 197, 148, 197, 171, 121, 103]


def write_ref_ytvos(ctx: Context) -> None:
    rng = ctx.spec.rng('ref_ytvos')
    base = f'{ROOT}/rvos'
    keys = sorted(_hex_ids(rng, ctx.spec.n(2), 10))
    meta_videos, exp_videos, mask_dict = {}, {}, {}
    counter = 0
    exp_rel = f'{base}/meta_expressions/train/meta_expressions.json'
    for i, key in enumerate(keys):
        n_frames = ctx.spec.n_frames
        clip = _clip(ctx, rng, n_frames, late=(i == 1))
        stems = [f'{5 * t:05d}' for t in range(n_frames)]
        _write_frames(ctx, f'{base}/train/JPEGImages/{key}', clip, stems)
        labels = []
        for t, stem in enumerate(stems):
            lab = np.zeros((clip.height, clip.width), np.uint8)
            for k, obj in enumerate(clip.objects):
                if obj.masks[t] is not None:
                    lab[obj.masks[t] > 0] = k + 1
            labels.append(lab)
            png = Image.fromarray(lab, 'P')
            png.putpalette(_PALETTE)
            ctx.writer.png(f'{base}/train/Annotations/{key}/{stem}.png', png)
        meta_videos[key] = {'objects': {
            str(k + 1): {'category': obj.shape,
                         'frames': [s for s, lab in zip(stems, labels)
                                    if (lab == k + 1).any()]}
            for k, obj in enumerate(clip.objects)}}
        # expressions: two per object; video 0 gets 11+ so that the string
        # sort of expression ids ("0", "1", "10", "2", ...) matters
        n_exp = 11 if i == 0 else 2 * len(clip.objects)
        exps = {}
        for e in range(n_exp):
            k = e % len(clip.objects)
            exps[str(e)] = {'exp': video_expression(clip.objects[k], e // len(
                clip.objects)), 'obj_id': str(k + 1)}
        if i == 0:
            ctx.manifest.awkward('ref_ytvos', exp_rel, key,
                                 f'{n_exp} expressions: mask_dict.pkl '
                                 f'counter follows ids sorted as strings')
        exp_videos[key] = {'expressions': exps, 'frames': stems}
        for eid in sorted(exps):
            obj_id = int(exps[eid]['obj_id'])
            mask_dict[str(counter)] = [
                rle_bytes(lab == obj_id) if (lab == obj_id).any() else None
                for lab in labels]
            counter += 1
    ctx.writer.json(f'{base}/train/meta.json', {'videos': meta_videos})
    ctx.writer.json(exp_rel, {'videos': exp_videos})
    ctx.writer.pickle(f'{base}/mask_dict.pkl', mask_dict)
    ctx.manifest.add('ref_ytvos', image_folder=f'{base}/train/JPEGImages',
                     expression_file=exp_rel,
                     mask_file=f'{base}/mask_dict.pkl',
                     annotations_folder=f'{base}/train/Annotations',
                     meta_file=f'{base}/train/meta.json',
                     num_videos=len(keys), num_expressions=counter)


# ---------------------------------------------------------------------------
# SA-V release + pseudo-referring json
# ---------------------------------------------------------------------------
SAV_ROOT = f'{ROOT}/sam_v_full'
SAV_FRAME_COUNTS = (25, 30)


def _sav_json(video_id: str, clip: VideoScene, objects, kind: str, rng
              ) -> dict:
    """An SA-V ``_manual``/``_auto`` annotation dict (key order and value
    types as in the real example files)."""
    n = len(clip.frames)
    h, w = clip.height, clip.width
    ann_t = list(range(0, n, 4))
    empty = np.zeros((h, w), np.uint8)
    masklet = [[rle_str(obj.masks[t] if obj.masks[t] is not None else empty)
                for obj in objects] for t in ann_t]
    areas = [[int(obj.masks[t].sum()) if obj.masks[t] is not None else 0
              for t in ann_t] for obj in objects]
    size_abs, first, changes = [], [], []
    for a in areas:
        vis = [x > 0 for x in a]
        size_abs.append(float(np.mean([x for x in a if x > 0])) if any(vis)
                        else 0.0)
        f = vis.index(True) if any(vis) else 0
        first.append(float(f) if kind == 'manual' else 0)
        changes.append(int(sum(vis[j] != vis[j + 1]
                               for j in range(f, len(vis) - 1))))
    bucket = ['small' if s < 32 ** 2 else 'medium' if s < 96 ** 2 else 'large'
              for s in size_abs]
    m = len(objects)
    if kind == 'manual':
        stability = [None] * m
        edited = [int(rng.integers(1, len(ann_t) + 1)) for _ in objects]
    else:
        stability = [[round(float(rng.uniform(0.9, 1.0)), 6) for _ in objects]
                     for _ in ann_t]
        edited = [0] * m
    return {
        'video_id': video_id, 'video_duration': n / 24.0,
        'video_frame_count': float(n), 'video_height': float(h),
        'video_width': float(w), 'video_resolution': float(h * w),
        'video_environment': 'Outdoor' if rng.random() < 0.5 else 'Indoor',
        'video_split': 'train', 'masklet': masklet,
        'masklet_id': list(range(m)),
        'masklet_size_rel': [s / (h * w) for s in size_abs],
        'masklet_size_abs': size_abs, 'masklet_size_bucket': bucket,
        'masklet_visibility_changes': changes,
        'masklet_first_appeared_frame': first,
        'masklet_frame_count': [len(ann_t)] * m,
        'masklet_edited_frame_count': edited,
        'masklet_type': [kind] * m,
        'masklet_stability_score': stability, 'masklet_num': m}


def write_sav_release(ctx: Context) -> list[dict]:
    """SA-V train videos (mp4 + manual/auto json) and their frames;
    returns per video ``{video_id, folder, mp4, manual, auto, frames_dir,
    clip}``. Written once per sample set."""
    if not ctx.once('sav_release'):
        return ctx.manifest.datasets['sav_release']['_videos']
    rng = ctx.spec.rng('sav_release')
    videos = []
    n_videos = ctx.spec.n(2)
    ids = unique_ids(rng, n_videos, 1, 50000)
    for i, num in enumerate(ids):
        vid = f'sav_{num:06d}'
        n_frames = SAV_FRAME_COUNTS[i % 2]
        w, h = ctx.spec.sav_size
        clip = make_video_scene(rng, w, h, n_frames, 3, late_enter=9,
                                min_frac=0.22, max_frac=0.35)
        folder = f'{SAV_ROOT}/sav_train/sav_000' if i % 2 == 0 else \
            f'{SAV_ROOT}/sav_000/sav_train/sav_000'
        mp4 = ctx.writer.mp4(f'{folder}/{vid}.mp4', clip.frames)
        manual = ctx.writer.json(f'{folder}/{vid}_manual.json',
                                 _sav_json(vid, clip, clip.objects, 'manual',
                                           rng))
        auto = ctx.writer.json(f'{folder}/{vid}_auto.json',
                               _sav_json(vid, clip, clip.objects[::-1],
                                         'auto', rng))
        frames_dir = f'{SAV_ROOT}/JPEGImages_24fps/{vid}'
        _write_frames(ctx, frames_dir, clip, [f'{t:05d}'
                                              for t in range(n_frames)])
        videos.append({'video_id': vid, 'folder': folder, 'mp4': mp4,
                       'manual': manual, 'auto': auto,
                       'frames_dir': frames_dir, 'num_frames': n_frames,
                       'num_annotated': math.ceil(n_frames / 4),
                       'clip': clip})
    ctx.manifest.add('sav_release', root=SAV_ROOT,
                     videos=[{k: v for k, v in d.items() if k != 'clip'}
                             for d in videos],
                     _videos=videos)
    return videos


def write_sav_pseudo(ctx: Context) -> None:
    videos = write_sav_release(ctx)
    rng = ctx.spec.rng('sav_pseudo')
    entries = {}
    rel = f'{ROOT}/sam_v_final_v3.json'
    for v in videos:
        objs = {}
        clip = v['clip']
        keys = [k for k in range(len(clip.objects)) if rng.random() < 0.8] \
            or [0]
        for k in keys:
            obj = clip.objects[k]
            objs[str(k)] = {'formated': video_caption(obj),
                            'short_caps': [f'{obj.noun}',
                                           f'{obj.color} shape']}
        sub = v['folder'][len(SAV_ROOT) + 1:]
        entries[v['video_id']] = {
            'video_path': f'{sub}/{v["video_id"]}.mp4',
            'anno_path': f'{sub}/{v["video_id"]}_manual.json',
            'objects': objs}
        if sub.count('sav_000') == 2:
            ctx.manifest.awkward('sav_pseudo', rel, v['video_id'],
                                 'released duplicated-folder path '
                                 f'{sub}/...; the file exists at that path '
                                 '(v2 strips the leading sav_000/)')
    ctx.writer.json(rel, entries)
    ctx.manifest.add('sav_pseudo', ann_file=rel, video_folder=SAV_ROOT,
                     num_videos=len(entries))


def write(ctx: Context) -> None:
    write_mevis_like(ctx, 'mevis')
    write_mevis_like(ctx, 'revos')
    write_ref_ytvos(ctx)
    write_sav_pseudo(ctx)
