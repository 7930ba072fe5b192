"""Family 1, visual prompts (mask -> description): Osprey-724K (five files)
and Describe Anything's referring data.

Osprey on disk (``docs/datasets.md``)::

    osprey-724k/Osprey-724K/osprey_{conversation,detail_description,
        short_form,part_level,lvis_positive_negative}.json
    osprey-724k/coco/{train2014,val2014,train2017,val2017}/<file_name>

Each JSON is a list of images ``{id?, file_name, height, width, annotation:
[{segmentation}], conversations | description}``; the image is looked up in
the folders in order (first hit wins). Regions are decoded at ``(height,
width)``, pooled to the 16 x 16 grid ('nearest') and announced in the first
question (``AddVisualPromptText``).

Describe Anything on disk (extracted local form, ``docs/datasets.md``
1.2)::

    <root>/<SUBSET>/annotations.json     {sample_id: [region, ...] | region}
    <root>/<SUBSET>/images/*.tar         {id}.jpg (SAV: {id}.{t}.jpg) + {id}.pickle

One sample per region (one tile; 'area' pooling). The jpg members are
located once by reading the shard headers (a name index, cached on disk
when ``index_cache_dir`` is set); each record keeps its shard, offset and
size, and :class:`LoadImageFromTar` reads the bytes through a small LRU of
open shards.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import os.path as osp
import tarfile

from mmengine.logging import print_log
from PIL import Image, UnidentifiedImageError

from ..constants import IMAGE_PLACEHOLDER, NUM_IMAGE_TOKENS
from ..registry import DATASETS, TRANSFORMS
from ..transforms.base import BaseTransform, RecordError, require
from ..transforms.text import conversation_from_turns
from .base import (Sa2VABaseDataset, estimate_text_tokens, estimate_tiles,
                   first_text_defect, iter_json_array, load_json,
                   stated_size_defect)
from ..transforms.image_io import decode_rgb

# Sa2VA v1's region-description questions, as data (magic-research/Sa2VA,
# projects/llava_sam2/datasets/Osprey_Dataset.py: DETAILED_QUESTIONS).
DETAILED_QUESTIONS = (
    'Can you provide me with a detailed description of the region in the '
    'picture marked by <region>?',
    "I'm curious about the region represented by <region> in the picture. "
    'Could you describe it in detail?',
    'What can you tell me about the region indicated by <region> in the '
    'image?',
    "I'd like to know more about the area in the photo labeled <region>. "
    'Can you give me a detailed description?',
    'Could you describe the region shown as <region> in the picture in '
    'great detail?',
    'What details can you give me about the region outlined by <region> in '
    'the photo?',
    'Please provide me with a comprehensive description of the region '
    'marked with <region> in the image.',
    'Can you give me a detailed account of the region labeled as <region> '
    'in the picture?',
    "I'm interested in learning more about the region represented by "
    '<region> in the photo. Can you describe it in detail?',
    'What is the region outlined by <region> in the picture like? Could you '
    'give me a detailed description?',
    'Can you provide me with a detailed description of the region in the '
    'picture marked by <region>, please?',
    "I'm curious about the region represented by <region> in the picture. "
    'Could you describe it in detail, please?',
    'What can you tell me about the region indicated by <region> in the '
    'image, exactly?',
    "I'd like to know more about the area in the photo labeled <region>, "
    'please. Can you give me a detailed description?',
    'Could you describe the region shown as <region> in the picture in '
    'great detail, please?',
    'What details can you give me about the region outlined by <region> in '
    'the photo, please?',
    'Please provide me with a comprehensive description of the region '
    'marked with <region> in the image, please.',
    'Can you give me a detailed account of the region labeled as <region> '
    'in the picture, please?',
    "I'm interested in learning more about the region represented by "
    '<region> in the photo. Can you describe it in detail, please?',
    'What is the region outlined by <region> in the picture like, please? '
    'Could you give me a detailed description?',
    'Please describe the region <region> in the image in detail.',
    'Can you offer a thorough analysis of the region <region> in the image?',
    'Could you elaborate on the region highlighted by <region> in the '
    'picture provided?',
    'Please share more information about the zone emphasized with <region> '
    'in the photo.',
    'What insights can you give about the area denoted by <region> in the '
    'image presented?',
    'Can you share a comprehensive rundown of the region denoted by '
    '<region> in the presented image?',
    "I'd like to know more about the region highlighted by <region> in the "
    'picture provided.',
    'Work through the important details of the area <region> in the image.',
    'Illustrate the area represented by <region> through a descriptive '
    'explanation.',
    'Examine the region <region> closely and share its details.',
)

#: v1 ``OspreyShortDescriptionDataset.LIMIT``, appended to every question.
SHORT_ANSWER_SUFFIX = ' Answer the question using a single word or phrase.'

#: the owner fork's Describe Anything instruction (its sa2va_4b config).
DAM_INSTRUCTION = ('Please generate a detailed description for the given '
                   'image region.')

OSPREY_KINDS = ('conversation', 'description', 'short')
OSPREY_IMAGE_FOLDERS = ('coco/train2014', 'coco/val2014', 'coco/train2017',
                        'coco/val2017')


def strip_angle_brackets(text: str) -> str:
    """Sa2VA's Osprey text cleanup: delete every ``<`` and ``>``
    (``<region1>`` -> ``region1``)."""
    return text.replace('<', '').replace('>', '')


def _estimate_region_cells(annotation: dict, height: int, width: int) -> int:
    """Grid cells of a region from its box (no decoding); 16 without a
    box."""
    bbox = annotation.get('bbox') if isinstance(annotation, dict) else None
    if not bbox or len(bbox) != 4 or height <= 0 or width <= 0:
        return 16
    return max(1, round(NUM_IMAGE_TOKENS * bbox[2] * bbox[3]
                        / (height * width)))


@DATASETS.register_module()
class OspreyDataset(Sa2VABaseDataset):
    """One of the five Osprey-724K files.

    Args:
        ann_file: the JSON list (relative to ``data_root``).
        image_folders: folders searched in order for ``file_name``
            (relative to ``data_root``; Sa2VA: COCO train2014, val2014,
            train2017, val2017).
        kind: ``'conversation'`` (conversation, part-level and LVIS files:
            the file's turns), ``'short'`` (short form: the turns, every
            question + :data:`SHORT_ANSWER_SUFFIX`) or ``'description'``
            (detail description: one question per region, drawn by
            :class:`OspreyDescriptionQuestions`).
        max_num_tiles: tiling limit of the length estimate.
        **kwargs: see :class:`Sa2VABaseDataset`.

    Text (Sa2VA v1): every ``<``/``>`` is deleted from the raw turns (so
    malformed tags such as ``<region1]`` never break anything); the first
    turn must be a question and loses trailing blanks; the region prompt is
    added by ``AddVisualPromptText``.

    Each record: ``record_id``, ``file_name``, ``ori_shape`` ((H, W) of the
    annotation, the size the regions are decoded at), ``segmentations``
    (one encoding per region), and ``conversation`` (pairs) or
    ``descriptions`` (list of str, cleaned). ``img_path`` is resolved when
    the record is read (first folder holding the file).
    """

    def __init__(self, *args, image_folders=OSPREY_IMAGE_FOLDERS,
                 kind: str = 'conversation', max_num_tiles: int = 12,
                 **kwargs):
        if kind not in OSPREY_KINDS:
            raise ValueError(f'kind must be one of {OSPREY_KINDS}, got '
                             f'{kind!r}')
        if isinstance(image_folders, str):
            image_folders = [image_folders]
        self.kind = kind
        self.max_num_tiles = max_num_tiles
        self._image_folders = list(image_folders)
        super().__init__(*args, **kwargs)

    def _join_prefix(self):
        super()._join_prefix()
        self.image_folders = [
            f if osp.isabs(f) or not self.data_root
            else osp.join(self.data_root, f) for f in self._image_folders]

    def _record_error(self, i, rec, msg):
        rid = rec.get('id') if isinstance(rec, dict) else None
        return ValueError(f'{self.ann_file}: record {i} (id {rid!r}): {msg}')

    def load_data_list(self):
        """Yield one record per image, streaming the JSON list (the index
        is serialized as the records come)."""
        for i, rec in enumerate(iter_json_array(self.ann_file)):
            try:
                info = dict(
                    record_id=f'{osp.basename(self.ann_file)}[{i}] id='
                              f'{rec.get("id")}',
                    file_name=str(rec['file_name']),
                    ori_shape=(int(rec['height']), int(rec['width'])),
                    segmentations=[a['segmentation']
                                   for a in rec['annotation']])
                if not info['segmentations']:
                    raise ValueError('"annotation" has no region')
                cells = sum(_estimate_region_cells(a, *info['ori_shape'])
                            for a in rec['annotation'])
                if self.kind == 'description':
                    descriptions = [strip_angle_brackets(d)
                                    for d in rec['description']]
                    if not all(isinstance(d, str) for d in descriptions):
                        raise TypeError('description entries must be str')
                    info['descriptions'] = descriptions
                    text = 20 * len(descriptions) + sum(
                        estimate_text_tokens(d) for d in descriptions)
                else:
                    info['conversation'] = self._conversation(
                        rec['conversations'])
                    text = sum(estimate_text_tokens(t['input'] + t['output'])
                               for t in info['conversation'])
                texts = [(f'description {k}', d) for k, d in enumerate(
                    info.get('descriptions', ()))] + [
                    (f'turn {k} {role}', t[role])
                    for k, t in enumerate(info.get('conversation', ()))
                    for role in ('input', 'output')]
                bad = first_text_defect(
                    [(f'{self.ann_file}: record {i} {w}', t)
                     for w, t in texts], allow=(IMAGE_PLACEHOLDER,))
                bad = bad or stated_size_defect(
                    *info['ori_shape'], f'{self.ann_file}: record {i}')
                if bad:
                    info['record_error'] = bad
            except (KeyError, TypeError, AttributeError, IndexError,
                    OverflowError) as exc:
                raise self._record_error(
                    i, rec, f'malformed: {type(exc).__name__}: '
                    f'{exc}') from None
            except ValueError as exc:
                raise self._record_error(i, rec, str(exc)) from None
            h, w = info['ori_shape']
            n_regions = len(info['segmentations'])
            info['length_estimate'] = (
                text + 12 + 6 * n_regions + cells
                + NUM_IMAGE_TOKENS * estimate_tiles(
                    w, h, max_num=self.max_num_tiles))
            yield info

    def _conversation(self, turns) -> list[dict]:
        if not turns or turns[0].get('from') != 'human':
            raise ValueError('the first turn must be from "human"')
        suffix = SHORT_ANSWER_SUFFIX if self.kind == 'short' else ''
        cleaned = []
        for k, turn in enumerate(turns):
            value = turn['value']
            if not isinstance(value, str):
                raise ValueError(f'turn {k} has no string "value"')
            value = strip_angle_brackets(value)
            if turn.get('from') == 'human':
                value += suffix
            if k == 0:
                value = value.rstrip()
            cleaned.append({'from': turn.get('from'), 'value': value})
        conv = conversation_from_turns(cleaned)
        if not conv:
            raise ValueError('no question/answer pair')
        conv[0]['input'] = IMAGE_PLACEHOLDER + '\n' + conv[0]['input']
        return conv

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        candidates = [osp.join(folder, info['file_name'])
                      for folder in self.image_folders]
        # The first folder holding the file; if none does, the first
        # candidate (LoadImage then reports it missing).
        info['img_path'] = next((p for p in candidates if osp.isfile(p)),
                                candidates[0])
        return info

    def modality_length_of(self, info: dict) -> int:
        return info['length_estimate']


@TRANSFORMS.register_module()
class OspreyDescriptionQuestions(BaseTransform):
    """Osprey detail description: one question per region (Sa2VA v1).

    Turn ``i``: ``{input: questions[q].strip() with '<region>' ->
    'region{i+1}', output: descriptions[i]}``, ``q`` drawn per region from
    ``results['rng']``; the first input is prefixed by ``<image>\\n``.

    Args:
        questions: templates with a ``<region>`` slot (default v1's 30).

    Required Keys: ``descriptions`` (list of str, one per region),
    ``segmentations`` (list, one per region), ``rng``.

    Added Keys: ``conversation`` (pairs, one per region).

    Raises:
        RecordError: ``'description_mismatch'`` when the description count
        differs from the region count, ``'no_regions'`` when there is none.
    """

    def __init__(self, questions=DETAILED_QUESTIONS):
        self.questions = tuple(questions)

    def transform(self, results: dict) -> dict:
        descs, segs, rng = require(results, 'descriptions', 'segmentations',
                                   'rng', where='OspreyDescriptionQuestions')
        if not descs:
            raise RecordError('no_regions', 'record has no description')
        if len(descs) != len(segs):
            raise RecordError('description_mismatch',
                              f'{len(descs)} descriptions for {len(segs)} '
                              f'regions')
        conv = []
        for i, desc in enumerate(descs):
            q = self.questions[int(rng.integers(len(self.questions)))]
            q = q.strip().replace('<region>', f'region{i + 1}')
            if i == 0:
                q = IMAGE_PLACEHOLDER + '\n' + q
            conv.append(dict(input=q, output=desc))
        results['conversation'] = conv
        return results


# ---------------------------------------------------------------------------
# Describe Anything
# ---------------------------------------------------------------------------
def _regions_of(value) -> list:
    """An ``annotations.json`` value as a list of region dicts (the file
    holds a list, or a single region dict)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise TypeError(f'expected a list of region dicts or one region dict, '
                    f'got {type(value).__name__}')


def tar_member_index(tar_path: str) -> dict:
    """``{member name: (offset_data, size)}`` of the regular files of a tar
    shard (reads the headers only)."""
    out = {}
    try:
        with tarfile.open(tar_path, 'r:') as tf:
            for m in tf:
                if m.isfile():
                    out[m.name] = (m.offset_data, m.size)
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(f'{tar_path}: not a readable tar shard (cut or '
                         f'corrupt): {type(exc).__name__}: {exc}') from None
    size = osp.getsize(tar_path)
    for name, (off, n) in out.items():
        if off + n > size:
            raise ValueError(f'{tar_path}: member {name} ends at byte '
                             f'{off + n}, past the end of the file ({size} '
                             f'bytes): the shard is cut')
    return out


class ShardIndex:
    """Member index of every ``*.tar`` in a folder, cached on disk.

    Args:
        images_dir: folder holding the shards.
        cache_dir: where to keep ``<hash>.json`` (None: no disk cache). The
            cache is keyed on the folder path and each shard's name, size
            and mtime, so a changed shard is re-read.

    Attributes:
        shards: sorted shard paths.
        members: ``{basename of member: (shard index, offset, size)}`` (the
            first shard wins on duplicates).
    """

    def __init__(self, images_dir: str, cache_dir: str | None = None):
        if not osp.isdir(images_dir):
            raise FileNotFoundError(f'shard folder not found: {images_dir}')
        names = sorted(n for n in os.listdir(images_dir)
                       if n.endswith('.tar'))
        self.shards = [osp.join(images_dir, n) for n in names]
        stamp = [(n, osp.getsize(p), int(osp.getmtime(p)))
                 for n, p in zip(names, self.shards)]
        key = hashlib.sha1(json.dumps([osp.abspath(images_dir), stamp])
                           .encode()).hexdigest()[:16]
        cache = osp.join(cache_dir, f'dam_shards_{key}.json') \
            if cache_dir else None
        if cache and osp.isfile(cache):
            self.members = {k: tuple(v)
                            for k, v in load_json(cache).items()}
            return
        self.members = {}
        for s, path in enumerate(self.shards):
            for name, (off, size) in tar_member_index(path).items():
                self.members.setdefault(osp.basename(name), (s, off, size))
        if cache:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f'{cache}.{os.getpid()}.tmp'
            with open(tmp, 'w', encoding='utf-8') as f:
                json.dump(self.members, f)
            os.replace(tmp, cache)

    def locate(self, names) -> tuple[int, int, int] | None:
        """``(shard index, offset, size)`` of the first of ``names`` found,
        or None."""
        for name in names:
            hit = self.members.get(name)
            if hit is not None:
                return tuple(hit)
        return None


def dam_member_candidates(sample_id: str, region: dict) -> list[str]:
    """Shard member names that may hold a sample's image, in order:
    ``{id}.jpg``, ``{id}.0.jpg`` (SAV frames), the region's ``image``
    basename, and that name without leading zeros."""
    names = [f'{sample_id}.jpg', f'{sample_id}.0.jpg']
    image = region.get('image')
    if isinstance(image, str) and image:
        base = osp.basename(image)
        names += [base, base.lstrip('0')]
    return list(dict.fromkeys(names))


@DATASETS.register_module()
class DescribeAnythingDataset(Sa2VABaseDataset):
    """Describe Anything referring data, one sample per region.

    Args:
        data_root: the folder holding the subsets.
        subsets: subset folders to read (e.g. ``['COCOStuff', 'LVIS',
            'PACO', 'SAV']``).
        instruction: the question (owner fork: :data:`DAM_INSTRUCTION`).
        index_cache_dir: folder for the shard name index (None: rebuilt in
            each run, reading every shard's headers).
        **kwargs: see :class:`Sa2VABaseDataset` (``ann_file`` is not used).

    Regions with an empty caption are dropped when the index is built (a
    logged count; the owner fork drops them too). Each record:
    ``record_id`` (``SUBSET/sample_id#k``), ``segmentations``
    (``[mask_rle]``), ``conversation`` (``[{input: '<image>\\n' +
    instruction, output: caption.strip()}]``), ``tar_shard`` (index into
    ``shard_paths``; -1 when no shard holds the image: the sample then fails
    as ``missing_image``), ``tar_offset``, ``tar_size`` and the length
    estimate. ``get_data_info`` turns ``tar_shard`` into ``tar_path``.
    """

    def __init__(self, *args, subsets=('COCOStuff', 'LVIS', 'PACO', 'SAV'),
                 instruction: str = DAM_INSTRUCTION,
                 index_cache_dir: str | None = None, **kwargs):
        self.subsets = [subsets] if isinstance(subsets, str) \
            else list(subsets)
        self.instruction = instruction.strip()
        self.index_cache_dir = index_cache_dir
        self.shard_paths: list[str] = []
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        from pycocotools import mask as mask_utils
        out = []
        prompt = IMAGE_PLACEHOLDER + '\n' + self.instruction
        for subset in self.subsets:
            folder = osp.join(self.data_root or '', subset)
            ann_path = osp.join(folder, 'annotations.json')
            ann = load_json(ann_path)
            if not isinstance(ann, dict):
                raise ValueError(f'{ann_path}: expected a dict sample_id -> '
                                 f'regions, got {type(ann).__name__}')
            shards = ShardIndex(osp.join(folder, 'images'),
                                self.index_cache_dir)
            first_shard = len(self.shard_paths)
            self.shard_paths += shards.shards
            missing = empty = 0
            for sample_id, value in ann.items():
                try:
                    regions = _regions_of(value)
                except TypeError as exc:
                    raise ValueError(f'{ann_path}: sample {sample_id!r}: '
                                     f'{exc}') from None
                for k, region in enumerate(regions):
                    try:
                        caption = region['caption'].strip()
                        rle = region['mask_rle']
                        h, w = (int(v) for v in rle['size'])
                        if h <= 0 or w <= 0:
                            raise ValueError(f'mask size {h}x{w}')
                        counts = rle['counts']
                        area = int(mask_utils.area(dict(
                            size=[h, w], counts=counts.encode('ascii')
                            if isinstance(counts, str) else counts)))
                    except (KeyError, TypeError, AttributeError,
                            ValueError, OverflowError) as exc:
                        raise ValueError(
                            f'{ann_path}: sample {sample_id!r} region {k} is '
                            f'malformed: {type(exc).__name__}: '
                            f'{exc}') from None
                    if not caption:
                        empty += 1
                        continue
                    where = shards.locate(
                        dam_member_candidates(str(sample_id), region))
                    missing += where is None
                    cells = max(1, round(NUM_IMAGE_TOKENS * area
                                         / max(1, h * w)))
                    info = dict(
                        record_id=f'{subset}/{sample_id}#{k}',
                        segmentations=[rle],
                        conversation=[dict(input=prompt, output=caption)],
                        tar_shard=(first_shard + where[0]) if where else -1,
                        tar_offset=where[1] if where else -1,
                        tar_size=where[2] if where else -1,
                        length_estimate=(
                            estimate_text_tokens(self.instruction + caption)
                            + 20 + cells + NUM_IMAGE_TOKENS))
                    bad = first_text_defect([(
                        f'{ann_path}: sample {sample_id!r} region {k} '
                        f'caption', caption)])
                    if bad:
                        info['record_error'] = bad
                    out.append(info)
            if empty:
                print_log(f'{self.dataset_name}: dropped {empty} regions of '
                          f'{subset} with an empty caption',
                          logger='current', level=30)
            if missing:
                print_log(f'{self.dataset_name}: {missing} regions of '
                          f'{subset} have no image in {folder}/images '
                          f'(they will be skipped as missing_image)',
                          logger='current', level=30)
        return out

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        shard = info.pop('tar_shard')
        info['tar_path'] = self.shard_paths[shard] if shard >= 0 else None
        return info

    def modality_length_of(self, info: dict) -> int:
        return info['length_estimate']


@TRANSFORMS.register_module()
class LoadImageFromTar(BaseTransform):
    """Load one image stored inside a tar shard.

    Reads ``tar_size`` bytes at ``tar_offset`` of the shard (no tar parsing
    per sample) through an LRU of at most ``max_open`` open files per
    process (a forked worker opens its own).

    Args:
        max_open: open shards kept per process.

    Required Keys: ``tar_path`` (str or None), ``tar_offset``, ``tar_size``
    (ints).

    Added Keys: ``image`` (PIL RGB), ``ori_shape`` ((H, W)).

    Raises:
        RecordError: ``'missing_image'`` (no shard holds it, or the shard
        is gone), ``'corrupt_image'`` (short read or undecodable bytes).
    """

    def __init__(self, max_open: int = 8):
        self.max_open = int(max_open)
        self._files: collections.OrderedDict = collections.OrderedDict()
        self._pid = os.getpid()

    def _open(self, path: str):
        if self._pid != os.getpid():  # forked: never share file offsets
            self._files = collections.OrderedDict()
            self._pid = os.getpid()
        f = self._files.get(path)
        if f is not None:
            self._files.move_to_end(path)
            return f
        f = open(path, 'rb')
        self._files[path] = f
        while len(self._files) > self.max_open:
            _, old = self._files.popitem(last=False)
            old.close()
        return f

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_files'] = collections.OrderedDict()
        return state

    def transform(self, results: dict) -> dict:
        path, offset, size = require(results, 'tar_path', 'tar_offset',
                                     'tar_size', where='LoadImageFromTar')
        if path is None:
            raise RecordError('missing_image', 'no tar shard holds the image '
                              'of this record')
        try:
            f = self._open(path)
        except OSError as exc:
            raise RecordError('missing_image',
                              f'cannot open shard {path}: {exc}') from None
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise RecordError('corrupt_image', f'{path}: short read at '
                              f'offset {offset} ({len(data)} of {size} '
                              f'bytes)')
        image = decode_rgb(io.BytesIO(data), f'{path} at offset {offset}')
        results['image'] = image
        results['ori_shape'] = (image.height, image.width)
        return results


__all__ = [
    'OspreyDataset', 'OspreyDescriptionQuestions', 'DescribeAnythingDataset',
    'LoadImageFromTar', 'ShardIndex', 'DETAILED_QUESTIONS',
    'SHORT_ANSWER_SUFFIX', 'DAM_INSTRUCTION', 'strip_angle_brackets'
]
