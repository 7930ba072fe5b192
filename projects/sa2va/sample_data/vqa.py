"""VQA: LLaVA-665K (images, plus text-only records) and Chat-UniVi video
chat (``docs/datasets.md``).

Layout written::

    llava_data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json
    llava_data/llava_images/{coco/train2017, gqa/images, ocr_vqa/images,
                             textvqa/train_images, vg/VG_100K, vg/VG_100K_2}/<id>.jpg
    video_datas/chat_univi/video_chat.json
    video_datas/chat_univi/Activity_Videos/v_<11 chars>.mp4

LLaVA record: ``{id, image?, conversations}``; Chat-UniVi record:
``{id, video, conversations}`` with ``<video>\\n`` opening the first turn.
"""
from __future__ import annotations

from .common import Context, picture, unique_ids
from .scenes import make_video_scene
from .text import join_list, where

LLAVA_ROOT = 'llava_data'
LLAVA_JSON = f'{LLAVA_ROOT}/LLaVA-Instruct-150K/llava_v1_5_mix665k.json'
LLAVA_IMAGES = f'{LLAVA_ROOT}/llava_images'
CHAT_ROOT = 'video_datas/chat_univi'

#: image sources cycled through; (folder, id maker)
_SOURCES = (
    ('coco/train2017', lambda n: f'{n:012d}'),
    ('gqa/images', lambda n: str(n)),
    ('ocr_vqa/images', lambda n: str(n)),
    ('textvqa/train_images', lambda n: f'{n:016x}'),
    ('vg/VG_100K', lambda n: str(n)),
    ('vg/VG_100K_2', lambda n: str(n)),
)

_TEXT_ONLY = (
    [('Name three primary colours used in painting.',
      'Red, yellow and blue are the traditional primary colours.'),
     ('Which of them is the warmest?',
      'Red is usually described as the warmest of the three.')],
    [('How many sides does a hexagon have?', 'A hexagon has six sides.')],
)


def _image_turns(scene, k: int) -> list[tuple[str, str]]:
    objs = scene.objects
    w, h = scene.width, scene.height
    names = join_list([f'a {o.noun}' for o in objs])
    first = objs[0]
    options = [
        [('What shapes can you see in this image?', f'I can see {names}.'),
         (f'Where is the {first.noun}?',
          f'The {first.noun} is {where(first, w, h)} of the image.')],
        [(f'How many shapes are there?',
          f'There are {len(objs)} shapes: {names}.')],
        [(f'What colour is the {first.shape} {where(first, w, h)}?',
          f'It is {first.color}.'),
         ('Is the background plain?',
          'No, it is a muted, softly textured background.')],
    ]
    return options[k % len(options)]


def _conversation(pairs, placeholder: str = '<image>', at_end=False):
    turns = []
    for j, (q, a) in enumerate(pairs):
        if j == 0 and placeholder:
            q = f'{q}\n{placeholder}' if at_end else f'{placeholder}\n{q}'
        turns += [{'from': 'human', 'value': q}, {'from': 'gpt', 'value': a}]
    return turns


def write_llava(ctx: Context) -> None:
    rng = ctx.spec.rng('llava')
    records = []
    n_img = ctx.spec.n(6)
    missing = set()
    nums = unique_ids(rng, n_img, 1000, 600000)
    for i, num in enumerate(nums):
        folder, make_id = _SOURCES[i % len(_SOURCES)]
        rid = make_id(num)
        image = f'{folder}/{rid}.jpg'
        scene = picture(ctx, rng)
        if ctx.spec.bad_records and i == 1:
            missing.add(image)
            ctx.writer.absent(f'{LLAVA_IMAGES}/{image}')
        else:
            ctx.writer.jpeg(f'{LLAVA_IMAGES}/{image}', scene.image)
        records.append({'id': rid, 'image': image,
                        'conversations': _conversation(
                            _image_turns(scene, i), at_end=i == 2)})
    for j in range(ctx.spec.n(2)):
        rec = {'id': f'sharegpt_{int(rng.integers(10000, 99999))}_{j}',
               'conversations': _conversation(_TEXT_ONLY[j % 2],
                                              placeholder='')}
        records.insert(min(1 + 3 * j, len(records)), rec)
    for k, rec in enumerate(records):
        if 'image' not in rec:
            ctx.manifest.awkward('llava', LLAVA_JSON, k,
                                 'text-only record (no image key)')
        elif rec['image'] in missing:
            ctx.manifest.bad('llava', LLAVA_JSON, k, 'image missing: '
                             f"{LLAVA_IMAGES}/{rec['image']}")
        elif rec['conversations'][0]['value'].endswith('<image>'):
            ctx.manifest.awkward('llava', LLAVA_JSON, k,
                                 '<image> at the end of the first turn')
    ctx.writer.json(LLAVA_JSON, records)
    ctx.manifest.add('llava', ann_file=LLAVA_JSON, image_folder=LLAVA_IMAGES,
                     num_records=len(records))


def write_chat_univi(ctx: Context) -> None:
    rng = ctx.spec.rng('chat_univi')
    records = []
    rel = f'{CHAT_ROOT}/video_chat.json'
    w, h = ctx.spec.video_size
    for i in range(ctx.spec.n(2)):
        name = 'v_' + ''.join(str(c) for c in rng.choice(
            list('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456'
                 '789_-'), size=11))
        clip = make_video_scene(rng, w, h, ctx.spec.n_frames + 4, 2)
        ctx.writer.mp4(f'{CHAT_ROOT}/Activity_Videos/{name}.mp4', clip.frames)
        a, b = clip.objects[0], clip.objects[1]
        pairs = [(f'What happens in this video?',
                  f'A {a.noun} is {a.motion} while a {b.noun} is {b.motion}.'),
                 (f'Which shape is {b.color}?', f'The {b.shape}.')]
        video = f'{name}.mp4'
        if i == 1:
            video = f'{name}.mkv'
            ctx.manifest.awkward('chat_univi', rel, i, 'video named .mkv, '
                                 'only the .mp4 exists (loader falls back)')
        records.append({'id': f'{name}_{i}', 'video': video,
                        'conversations': _conversation(pairs, '<video>')})
    ctx.writer.json(rel, records)
    ctx.manifest.add('chat_univi', ann_file=rel,
                     video_folder=f'{CHAT_ROOT}/Activity_Videos',
                     num_records=len(records))


def write(ctx: Context) -> None:
    write_llava(ctx)
    write_chat_univi(ctx)
